"""OS-level checks of a validated config before anything is written or stopped: can the output
and done folders be created and written?"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from bulletproof.config import Config
from bulletproof.errors import ConfigError, ConfigIssue


def _written_folders(config: Config, current: Config | None) -> list[tuple[str, Path]]:
    """The output and done folders that are new compared with `current` (the config in force):
    one already in use is not re-checked, so a full disk cannot block lowering `max_workers`."""
    folders = [("output_folder", config.output_folder, current.output_folder if current else None)]
    if config.done_folder is not None:
        folders.append(("done_folder", config.done_folder, current.done_folder if current else None))
    return [(key, folder) for key, folder, in_use in folders if folder != in_use]


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_folders(config: Config, current: Config | None = None) -> list[ConfigIssue]:
    """Problems creating or writing the new output and done folders, found without changing
    anything."""
    issues = []
    for key, folder in _written_folders(config, current):
        existing = _nearest_existing(folder)
        if not existing.is_dir():
            where = "" if existing == folder else f" ({existing} is not a folder)"
            issues.append(ConfigIssue(key, f"cannot be created: not a folder{where}"))
        elif not os.access(existing, os.W_OK | os.X_OK):
            verb = "written" if existing == folder else f"created ({existing} is not writable)"
            issues.append(ConfigIssue(key, f"cannot be {verb}"))
    return issues


def prepare_folders(config: Config, current: Config | None = None) -> list[Path]:
    """Create the new output and done folders and prove them writable; returns those created.

    Raises ConfigError naming the key (and removes what it created) when one cannot be made.
    """
    created: list[Path] = []
    for key, folder in _written_folders(config, current):
        try:
            missing = []
            probe = folder
            while not os.path.lexists(probe) and probe.parent != probe:
                missing.append(probe)
                probe = probe.parent
            folder.mkdir(parents=True, exist_ok=True)
            created += reversed(missing)
            fd, name = tempfile.mkstemp(prefix=".bp-preflight-", dir=folder)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            remove_created(created)
            raise ConfigError([ConfigIssue(key, f"cannot be created or written: "
                                                f"{exc.strerror or exc}")], source="request") from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove folders `prepare_folders` created (deepest first), if they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()
