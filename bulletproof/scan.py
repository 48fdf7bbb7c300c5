"""Scanning helpers for the watcher: folder probes, tree scans and file fingerprints.

Plain functions on strings (not Path objects) because a scan of 10,000 files should cost
milliseconds; they run in the watcher's thread pool.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from bulletproof.paths import has_hidden_part, is_own_temporary, is_temporary_name, is_within

log = logging.getLogger(__name__)

Fingerprint = tuple[int, int]  # (size, mtime_ns)


def is_inside(root: str, path: str) -> bool:
    """True when `path` lies strictly below `root` (both absolute, same spelling)."""
    return path != root and path.startswith(root.rstrip(os.sep) + os.sep)


def leads_outside(real_root: str, path: str) -> bool:
    """True when `path`, symlinks resolved, is not below `real_root` (the root's own realpath)."""
    return not is_inside(real_root, os.path.realpath(path))


def rel_under(root: str, path: str) -> str:
    """`path` relative to `root`, with forward slashes."""
    return path[len(root):].lstrip(os.sep).replace(os.sep, "/")


def is_temporary_rel(rel: str) -> bool:
    """True for temporary, hidden or our own temporary names, or anything in a hidden folder."""
    name = rel.rpartition("/")[2]
    return is_temporary_name(name) or is_own_temporary(name) or has_hidden_part(rel)


def exclusions_for(root: str, excluded: list[str]) -> frozenset[str]:
    """Excluded folders strictly inside `root`, spelled under `root` so prefix checks work."""
    out: set[str] = set()
    real_root = os.path.realpath(root)
    for folder in excluded:
        # Compare lexically and through symlinks: the output folder may be named either way.
        for candidate, base in ((folder, root), (os.path.realpath(folder), real_root)):
            if candidate != base and is_within(Path(candidate), Path(base)):
                out.add(os.path.join(root, os.path.relpath(candidate, base)))
    return frozenset(out)


def probe_folder(root: str) -> tuple[tuple[int, int] | None, str | None]:
    """(identity, None) when the folder can be listed, else (None, reason)."""
    try:
        st = os.stat(root)
        if not stat.S_ISDIR(st.st_mode):
            return None, "not a directory"
        with os.scandir(root) as entries:
            next(entries, None)
    except FileNotFoundError:
        return None, "does not exist"
    except OSError as exc:
        return None, exc.strerror or str(exc)
    return (st.st_dev, st.st_ino), None


def scan_tree(root: str, recursive: bool, excluded: frozenset[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every regular file below root; raises only if root is unreadable."""
    found: list[tuple[str, int, int]] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive and entry.path not in excluded:
                                stack.append(entry.path)
                            continue
                        # Follows a symlink to a file (the watcher drops one that leads outside);
                        # skips dangling ones. Symlinked folders are never entered (above).
                        st = entry.stat()
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.append((entry.path, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            if directory == root:
                raise
            log.debug("cannot list %r: %s", directory, exc)
    return found


def fingerprint(path: str) -> Fingerprint | None:
    """(size, mtime_ns) of a regular file, None when it is gone or something else."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def fingerprints(paths: list[str]) -> list[Fingerprint | None]:
    """`fingerprint` of each path (run in a worker thread for large batches)."""
    return [fingerprint(path) for path in paths]
