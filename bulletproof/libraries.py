"""Translating paths between this node and the fleet: `PathMap` (the `libraries` config key).

A fleet of monitors shares one job store and one storage, which each node may mount at its
own place. A library is a named root folder: `libraries: {media: /mnt/nas/media}` on one node,
`{media: /Volumes/media}` on another. What the store keeps is the *fleet form* of a path:

- under a library, `<id>:<path relative to its root>` (`media:incoming/a.mp4`; the root itself
  is `media:`). It never starts with `/`, so it can never be taken for a local path, not even
  by code that forgets to translate it (`//media/...` would be the local `/media/...` to the
  OS); and it reads like rsync's or scp's `host:path`, in the API and the dashboards alike.
- under no library, the absolute local path exactly as before: with no `libraries`, the store
  holds what a lone monitor always held, byte for byte.

The store compares fleet forms only, so one file version is one job however many nodes see it,
and output names are reserved across nodes. `to_local` is the only way back; it refuses a fleet
form whose relative part would leave its library (`..`, an absolute part), so a hostile row in a
shared database cannot lead a node outside its folders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from bulletproof.config import LIBRARY_ID
from bulletproof.errors import PathError, UnknownLibrary
from bulletproof.paths import is_within

_FLEET_FORM = re.compile(rf"(?P<library>{LIBRARY_ID.pattern}):(?P<rel>.*)", re.DOTALL)


def split_fleet_path(value: str) -> tuple[str, str] | None:
    """(library id, relative part) of a fleet form, None for a local path (absolute)."""
    if value.startswith("/"):
        return None
    found = _FLEET_FORM.fullmatch(value)
    if found is None:
        raise PathError(f"{value!r} is neither an absolute local path nor a library path "
                        "(library:relative/path)", path=value)
    return found["library"], found["rel"]


def _checked_relative(rel: str, fleet: str) -> PurePosixPath:
    """The relative part of a fleet form, refused when it could lead out of its library."""
    if "\x00" in rel:
        raise PathError(f"the library path {fleet!r} contains a NUL character", path=fleet)
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise PathError(f"the library path {fleet!r} has an absolute part after the library",
                        path=fleet)
    if any(part in ("..", ".") for part in rel.split("/")):
        raise PathError(f"the library path {fleet!r} has a '.' or '..' part: it could leave "
                        "its library", path=fleet)
    return pure


class PathMap:
    """This node's libraries: fleet forms to local paths and back."""

    def __init__(self, libraries: Mapping[str, Path] | None = None) -> None:
        self._roots: dict[str, Path] = {name: Path(os.path.normpath(root))
                                        for name, root in (libraries or {}).items()}
        # What a path below each root starts with, as text: `to_fleet` runs once per path
        # queued, so it compares strings rather than building Path objects per library.
        self._heads = {name: str(root).rstrip("/") + "/" for name, root in self._roots.items()}

    @property
    def libraries(self) -> dict[str, Path]:
        """Library id -> this node's root folder of it."""
        return dict(self._roots)

    def _split_local(self, local: Path | str) -> tuple[str, str] | None:
        """(library id, relative part) of a local path under a library, else None."""
        norm = os.path.normpath(os.fspath(local))
        for name, head in self._heads.items():
            if norm.startswith(head):
                return name, norm[len(head):]
            if norm == head.rstrip("/") or norm + "/" == head:
                return name, ""
        return None

    def library_of(self, local: Path | str) -> str | None:
        """The id of the library a local path lies in (roots are never nested), or None."""
        found = self._split_local(local)
        return None if found is None else found[0]

    def to_fleet(self, local: Path | str) -> str:
        """The form the store keeps: `id:relative/path` under a library, else `str(local)`."""
        found = self._split_local(local)
        if found is None:
            return str(local)
        return f"{found[0]}:{found[1]}"

    def to_local(self, fleet: str) -> Path:
        """This node's path for a stored one. Raises UnknownLibrary (a library not mounted
        here) or PathError (a relative part that would leave its library)."""
        split = split_fleet_path(fleet)
        if split is None:
            return Path(fleet)
        name, rel = split
        root = self._roots.get(name)
        if root is None:
            raise UnknownLibrary(name, path=fleet, known=sorted(self._roots))
        local = Path(os.path.normpath(root / _checked_relative(rel, fleet)))
        if not is_within(local, root):  # belt and braces: the checks above make it so
            raise PathError(f"the library path {fleet!r} leaves {root}", path=fleet)
        return local

    def former_form(self, local: Path | str) -> str | None:
        """The absolute local path a job of `local` was stored by before its library was
        configured, when that differs from the fleet form now stored (else None)."""
        return str(local) if self.library_of(local) is not None else None

    def claim_prefixes(self) -> list[str]:
        """How the stored paths this node can resolve begin: `/` (local paths) and `id:` for
        each of its libraries; the worker claims only such jobs (`JobStore.claim(within=)`),
        leaving those of other libraries to the nodes that mount them."""
        return ["/", *(f"{name}:" for name in self._roots)]

    def exists(self, fleet: str) -> bool:
        """True when something (a file, a dangling symlink) is at a stored path on this node."""
        return os.path.lexists(self.to_local(fleet))
