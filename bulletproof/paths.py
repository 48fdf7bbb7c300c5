"""File-name policy: what counts as temporary or hidden, where outputs and temporaries go."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from bulletproof.config import Config
from bulletproof.profiles import Profile

# Names that downloaders, copiers and editors use while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".!qb", ".filepart")
# rsync writes `.name.XXXXXX` (hidden, so caught below); this catches the monitor's temporaries.
TEMP_MARKER = ".bp-tmp-"
_TEMP_RE = re.compile(r"^\..*\.bp-tmp-\d+(\.[A-Za-z0-9]+)?$")


def is_temporary_name(name: str) -> bool:
    """True for hidden files, partial downloads, editor backups and our own temporaries."""
    if not name or name.startswith(".") or name.endswith("~"):
        return True
    if name.startswith("~$") or name.startswith("#"):
        return True
    return name.lower().endswith(_PARTIAL_SUFFIXES)


def is_own_temporary(name: str) -> bool:
    """True for a temporary output name this monitor writes."""
    return _TEMP_RE.match(name) is not None


def has_hidden_part(rel_path: str) -> bool:
    """True when any folder in a relative path is hidden (e.g. `.sync/`, `.Trash-1000/`)."""
    return any(part.startswith(".") for part in PurePosixPath(rel_path).parts[:-1])


def is_within(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies below it (lexically, after normalising)."""
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(folder))
    except ValueError:
        return False
    return True


def relative_posix(path: Path, folder: Path) -> str:
    """`path` relative to `folder`, with forward slashes."""
    return Path(os.path.normpath(path)).relative_to(os.path.normpath(folder)).as_posix()


def output_path_for(config: Config, rel_path: str, profile_name: str, profile: Profile, rule: str) -> Path:
    """Where a job's finished output goes: the output folder, the source's sub-folders, the template."""
    rel = PurePosixPath(rel_path)
    name = config.output_template.format(
        stem=rel.stem,
        name=rel.name,
        ext=profile.extension,
        source_ext=rel.suffix.lstrip("."),
        profile=profile_name,
        rule=rule,
    )
    return Path(config.output_folder, *rel.parent.parts, name)


def temp_path_for(output: Path, job_id: int) -> Path:
    """The hidden temporary name a job writes to, beside its final output (same filesystem)."""
    return output.with_name(f".{output.stem}{TEMP_MARKER}{job_id}{output.suffix}")


def excluded_folders(config: Config) -> list[Path]:
    """Folders under a watch folder that are never scanned: the output and done folders."""
    folders = [config.output_folder]
    if config.done_folder is not None:
        folders.append(config.done_folder)
    return folders
