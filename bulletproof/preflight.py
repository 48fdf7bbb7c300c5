"""OS-level checks of a validated config before anything is written or stopped: can the output
and done folders be created and written?"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from bulletproof.config import Config
from bulletproof.errors import ConfigError, ConfigIssue


def _written_folders(config: Config) -> list[tuple[str, Path]]:
    folders = [("output_folder", config.output_folder)]
    if config.done_folder is not None:
        folders.append(("done_folder", config.done_folder))
    return folders


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_folders(config: Config) -> list[ConfigIssue]:
    """Problems creating or writing the output and done folders, found without changing anything."""
    issues = []
    for key, folder in _written_folders(config):
        existing = _nearest_existing(folder)
        if not existing.is_dir():
            where = "" if existing == folder else f" ({existing} is not a folder)"
            issues.append(ConfigIssue(key, f"cannot be created: not a folder{where}"))
        elif not os.access(existing, os.W_OK | os.X_OK):
            verb = "written" if existing == folder else f"created ({existing} is not writable)"
            issues.append(ConfigIssue(key, f"cannot be {verb}"))
    return issues


def prepare_folders(config: Config) -> list[Path]:
    """Create the output and done folders and prove them writable; returns the folders created.

    Raises ConfigError naming the key (and removes what it created) when one cannot be made.
    """
    created: list[Path] = []
    for key, folder in _written_folders(config):
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
