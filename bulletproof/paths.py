"""File-name policy: what counts as temporary or hidden, where outputs and temporaries go."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath

from bulletproof.config import Config
from bulletproof.errors import PathError
from bulletproof.profiles import Profile

# Names that downloaders, copiers and editors use while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".!qb", ".filepart")
# rsync writes `.name.XXXXXX` (hidden, so caught below); this catches the monitor's temporaries.
TEMP_MARKER = ".bp-tmp-"
NAME_MAX = 255  # bytes in one file name on Linux file systems (ext4, xfs, btrfs, tmpfs)
_HASH_CHARS = 8  # hex digits of the stable hash a shortened name ends with
_MAX_NUMBER = 10_000  # `name (n).ext` candidates tried before a name is declared unavailable
_TEMP_RE = re.compile(r"^\..*\.bp-tmp-\d+(-\d+)?(\.[A-Za-z0-9]+)?$")


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


def locate_source(folders: list[Path], raw: str) -> tuple[Path, Path | None]:
    """The absolute source path a request names, and the watch folder it lies in (or None).

    An absolute path is taken as it is (normalised). A relative one is looked up in each watch
    folder in order; the first that has the file wins (the first watch folder when none has it,
    so the error names a real place). `..` never leaves the folder: such a path lies in none.
    """
    if "\x00" in raw:
        raise PathError("the path contains a NUL character", path=raw)
    given = Path(raw)
    if given.is_absolute():
        path = Path(os.path.normpath(given))
        return path, next((f for f in folders if is_within(path, f) and path != f), None)
    candidates = [(Path(os.path.normpath(f / given)), f) for f in folders]
    inside = [(p, f) for p, f in candidates if is_within(p, f) and p != f]
    for path, folder in inside:
        try:
            if path.is_file():
                return path, folder
        except (OSError, ValueError):  # too long a name, undecodable: the caller reports it
            continue
    return inside[0] if inside else (candidates[0][0], None)


def shorten_name(name: str, limit: int = NAME_MAX) -> str:
    """`name` itself when it fits in `limit` bytes, else its stem cut (on a UTF-8 boundary) plus
    `~` and a short hash of the whole name, so the same long name is always shortened the same way."""
    if len(name.encode("utf-8")) <= limit:
        return name
    pure = PurePosixPath(name)
    suffix = pure.suffix if len(pure.suffix.encode("utf-8")) <= 32 else ""
    stem = name[: len(name) - len(suffix)]
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_CHARS]
    room = limit - len(suffix.encode("utf-8")) - 1 - _HASH_CHARS
    cut = stem.encode("utf-8", "surrogateescape")[:max(0, room)].decode("utf-8", "ignore")
    return f"{cut}~{digest}{suffix}"


def _check_plain_name(name: str, what: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise PathError(f"the {what} {name!r} is not a plain file name", path=name)
    if name.startswith("."):
        raise PathError(f"the {what} {name!r} would be a hidden file", path=name)


def confine(path: Path, folder: Path, what: str = "output") -> Path:
    """`path` when it stays inside `folder` after resolving `..` and existing symlinks, else PathError."""
    path, folder = Path(os.path.normpath(path)), Path(os.path.normpath(folder))
    if not is_within(path, folder) or path == folder:
        raise PathError(f"the {what} path {path} leaves {folder}", path=str(path))
    # The deepest folder that exists decides where a symlinked sub-folder really leads.
    real_folder = Path(os.path.realpath(folder))
    existing = path.parent
    while not existing.exists() and is_within(existing, folder) and existing != folder:
        existing = existing.parent
    if not is_within(Path(os.path.realpath(existing)), real_folder):
        raise PathError(f"the {what} path {path} leads out of {folder} through a symlink",
                        path=str(path))
    if path.is_symlink():
        raise PathError(f"the {what} path {path} is a symlink", path=str(path))
    return path


def output_path_for(config: Config, rel_path: str, profile_name: str, profile: Profile, rule: str) -> Path:
    """Where a job's finished output goes: the output folder, the source's sub-folders, the template.

    Raises PathError when a value put into the template (rule or profile name, the source's own
    name) would make a name that is not a plain file name or would lead out of the output folder.
    """
    rel = PurePosixPath(rel_path)
    name = config.output_template.format(
        stem=rel.stem,
        name=rel.name,
        ext=profile.extension,
        source_ext=rel.suffix.lstrip("."),
        profile=profile_name,
        rule=rule,
    )
    _check_plain_name(name, "output name")
    for part in rel.parent.parts:
        _check_plain_name(part, "sub-folder")
    parts = [shorten_name(p) for p in rel.parent.parts]
    return confine(Path(config.output_folder, *parts, shorten_name(name)), config.output_folder)


def numbered_path(path: Path, number: int) -> Path:
    """`name (number).ext` beside `path`, shortened to fit when needed."""
    return path.with_name(shorten_name(f"{path.stem} ({number}){path.suffix}"))


def candidate_paths(path: Path) -> list[Path]:
    """`path`, then `name (1).ext`, `name (2).ext`... : the names a renamed output may take."""
    return [path, *(numbered_path(path, n) for n in range(1, _MAX_NUMBER))]


def temp_path_for(output: Path, job_id: int, attempt: int | None = None) -> Path:
    """The hidden temporary name a job writes to, beside its final output (same filesystem).

    `attempt` (the claim's token) gives every attempt a name of its own: a node resumed after
    its claim was lost never writes to, nor removes, the temporary of the attempt that took over.
    """
    tail = f"{TEMP_MARKER}{job_id}{'' if attempt is None else f'-{attempt}'}{output.suffix}"
    room = NAME_MAX - 1 - len(tail.encode("utf-8"))
    stem = output.stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return output.with_name(f".{stem}{tail}")


def done_path_for(config: Config, rel_path: str) -> Path:
    """Where `on_success: move` puts a source: the done folder and the source's sub-folders."""
    assert config.done_folder is not None
    rel = PurePosixPath(rel_path)
    for part in rel.parts:
        _check_plain_name(part, "source name" if part == rel.name else "sub-folder")
    return confine(Path(config.done_folder, *rel.parts), config.done_folder, "done-folder")


def excluded_folders(config: Config) -> list[Path]:
    """Folders under a watch folder that are never scanned: the output and done folders."""
    folders = [config.output_folder]
    if config.done_folder is not None:
        folders.append(config.done_folder)
    return folders
