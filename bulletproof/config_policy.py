"""Who may change which config key, and when a change takes effect: the one table, and the
checks the control API's config changes must pass.

Settings that decide where the monitor reads, writes and deletes, what it executes and who may
talk to it are the operator's: they come from the config file (or the environment) and take
effect on a restart. The API may change the rest, and may point the watch, output and done
folders only inside the folders the operator declared (`api.config_roots`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from bulletproof.config import Config
from bulletproof.errors import ConfigIssue


class Owner(StrEnum):
    """Who may change a key."""

    FILE = "file only"
    API = "API-changeable"


class Applies(StrEnum):
    """When a changed key takes effect."""

    LIVE = "live"
    RESTART = "restart"


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """How one key (and everything below it) may change."""

    owner: Owner
    applies: Applies
    confined: bool = False  # a folder the API may set only inside api.config_roots


_API_LIVE = KeyPolicy(Owner.API, Applies.LIVE)
_FOLDER = KeyPolicy(Owner.API, Applies.LIVE, confined=True)
_FILE_RESTART = KeyPolicy(Owner.FILE, Applies.RESTART)

# Every key of monitor.yaml, or the section holding it. docs/configuration.md mirrors this
# table (tests/test_config_policy.py checks both ways).
KEY_POLICY: dict[str, KeyPolicy] = {
    "monitor_folder": _FOLDER,
    "output_folder": _FOLDER,
    "output_template": _API_LIVE,
    "output_conflict": _API_LIVE,  # and at most as destructive as the file's (DESTRUCTIVENESS)
    "verify": _API_LIVE,
    "max_workers": _API_LIVE,
    "stability_seconds": _API_LIVE,
    "rescan_interval": _API_LIVE,
    "retry": _API_LIVE,
    "timeouts": _API_LIVE,
    "ffmpeg.path": _FILE_RESTART,  # what the monitor executes
    "ffmpeg.ffprobe_path": _FILE_RESTART,
    "ffmpeg.nice": _API_LIVE,
    "ffmpeg.threads": _API_LIVE,
    "ffmpeg.stderr_tail_lines": _API_LIVE,
    "on_success": _API_LIVE,  # and at most as destructive as the file's (DESTRUCTIVENESS)
    "done_folder": _FOLDER,
    "database": _FILE_RESTART,
    "node_name": _FILE_RESTART,  # who holds the claims: changing it under running jobs orphans them
    "fleet": _FILE_RESTART,
    "libraries": _FILE_RESTART,  # where this node mounts the fleet's storage; jobs name it
    "log": _FILE_RESTART,  # the operator's record of what happened, API changes included
    "profiles": _API_LIVE,
    "rules": _API_LIVE,
    "api": _FILE_RESTART,  # who may talk to the monitor, and the API's own limits
}

RESTART_KEYS: tuple[str, ...] = tuple(k for k, p in KEY_POLICY.items() if p.applies is Applies.RESTART)
FILE_ONLY_KEYS: tuple[str, ...] = tuple(k for k, p in KEY_POLICY.items() if p.owner is Owner.FILE)
FOLDER_KEYS: tuple[str, ...] = tuple(k for k, p in KEY_POLICY.items() if p.confined)
# Least to most destructive to the source files.
ON_SUCCESS_ORDER: tuple[str, ...] = ("keep", "move", "delete")
# Keys whose values destroy files to different degrees, each value's rank: the API may choose a
# value ranked at most as high as the file's at start.
DESTRUCTIVENESS: dict[str, dict[str, int]] = {
    "on_success": {value: rank for rank, value in enumerate(ON_SUCCESS_ORDER)},
    # Only `overwrite` replaces a file in the output folder.
    "output_conflict": {"rename": 0, "skip": 0, "fail": 0, "overwrite": 1},
}


def policy_for(key_path: str) -> KeyPolicy:
    """The policy of a dotted key path: its own entry, or its closest section's."""
    parts = key_path.split(".")
    for end in range(len(parts), 0, -1):
        found = KEY_POLICY.get(".".join(parts[:end]))
        if found is not None:
            return found
    raise KeyError(key_path)


def value_at(data: Any, key_path: str) -> Any:
    """The value at a dotted key path of a config dump (None when absent)."""
    for part in key_path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _differences(old: Any, new: Any, where: str) -> list[str]:
    """Leaf key paths whose values differ (whole lists and scalars count as leaves)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _differences(old.get(key), new.get(key), f"{where}.{key}")
        return out
    return [] if old == new else [where]


def changed_keys(old: Config, new: Config, keys: tuple[str, ...]) -> list[str]:
    """The table keys (of those given) whose values differ between two configs."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [k for k in keys if value_at(a, k) != value_at(b, k)]


def restart_required(running: Config, new: Config) -> list[str]:
    """Restart-only keys whose value in `new` differs from the one the process started with."""
    return changed_keys(running, new, RESTART_KEYS)


def default_roots(config: Config) -> list[Path]:
    """The folders a config file declares: its watch folders, output folder and done folder."""
    roots = [f.path for f in config.monitor_folder] + [config.output_folder]
    if config.done_folder is not None:
        roots.append(config.done_folder)
    return roots


def _real(path: Path) -> Path:
    # realpath: a symlinked root or a `..` must not let a folder look inside when it is not.
    return Path(os.path.realpath(path))


def declared_roots(config: Config) -> list[Path] | None:
    """`api.config_roots` of the API plugin's section, None when not set (or no plugin owns `api`)."""
    section = getattr(config, "api", None)
    roots = getattr(section, "config_roots", None)
    return list(roots) if roots is not None else None


class ApiChangePolicy:
    """The checks a config submitted through the API must pass, fixed from the file at start."""

    def __init__(self, file_config: Config) -> None:
        declared = declared_roots(file_config)
        self.roots: list[Path] = [_real(p) for p in (declared if declared is not None
                                                      else default_roots(file_config))]
        self.roots_declared = declared is not None
        self.limits: dict[str, str] = {key: getattr(file_config, key) for key in DESTRUCTIVENESS}

    def describe_roots(self) -> str:
        """The roots as the error messages name them."""
        shown = ", ".join(str(r) for r in self.roots) or "none"
        return shown if self.roots_declared else f"{shown}, the folders of the config file at start"

    def inside_roots(self, folder: Path) -> bool:
        """True when the folder, symlinks resolved, is a root or lies below one."""
        real = _real(folder)
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def check(self, current: Config, new: Config) -> list[ConfigIssue]:
        """Every reason the API may not replace `current` with `new` (empty: it may)."""
        issues: list[ConfigIssue] = []
        old_dump, new_dump = current.model_dump(mode="json"), new.model_dump(mode="json")
        for key in FILE_ONLY_KEYS:
            for leaf in _differences(value_at(old_dump, key), value_at(new_dump, key), key):
                issues.append(ConfigIssue(leaf, "set in the config file only; restart to change"))
        issues += self._folder_issues(current, new)
        issues += self._destructiveness_issues(current, new)
        return issues

    def _folder_issues(self, current: Config, new: Config) -> list[ConfigIssue]:
        outside = (f"outside the folders the operator allows the API to use "
                   f"(api.config_roots: {self.describe_roots()})")
        issues: list[ConfigIssue] = []
        watched = {f.path for f in current.monitor_folder}
        for i, folder in enumerate(new.monitor_folder):
            # A folder the config in force already uses for the same role is the operator's.
            if folder.path not in watched and not self.inside_roots(folder.path):
                issues.append(ConfigIssue(f"monitor_folder.{i}.path", outside))
        for key, old_value, new_value in (("output_folder", current.output_folder, new.output_folder),
                                          ("done_folder", current.done_folder, new.done_folder)):
            if new_value is not None and new_value != old_value and not self.inside_roots(new_value):
                issues.append(ConfigIssue(key, outside))
        return issues

    def _destructiveness_issues(self, current: Config, new: Config) -> list[ConfigIssue]:
        issues = []
        for key, ranks in DESTRUCTIVENESS.items():
            limit, wanted = self.limits[key], getattr(new, key)
            if wanted == getattr(current, key) or ranks[wanted] <= ranks[limit]:
                continue
            allowed = ", ".join(v for v, r in ranks.items() if r <= ranks[limit])
            order = " < ".join(", ".join(v for v, r in ranks.items() if r == rank)
                               for rank in sorted(set(ranks.values())))
            issues.append(ConfigIssue(key, f"the API may choose only {allowed} here (the config "
                                           f"file says {limit!r}; {order})"))
        return issues


def keep_file_settings(data: dict[str, Any], current: Config) -> dict[str, Any]:
    """A copy of `data` with the file-only keys and the folders taken from `current`.

    Used by a reset through the API: it resets what the API may change, nothing else.
    """
    out = dict(data)
    dump = current.model_dump(mode="json")
    for key in FILE_ONLY_KEYS + FOLDER_KEYS:
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[parts[-1]] = value_at(dump, key)
    return out
