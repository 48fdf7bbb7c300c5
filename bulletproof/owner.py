"""One owner per state: exclusive locks on the state database and on the output folder.

`<database>.lock` is held with `fcntl.flock` for as long as the monitor runs; it records who holds
it (pid, host, since) as JSON so a second monitor can say whom it met. The kernel drops the lock
when the process dies (SIGKILL included), so a stale file never blocks a restart; the file itself
is left in place, because deleting it would let two processes lock two different inodes.

The output folder is locked too (a flock on the directory itself, so no file is added there):
two monitors with different databases but one output folder would otherwise delete each other's
temporaries at start and race for the same output names. Monitors sharing one PostgreSQL store
share the folder (a shared flock): their store reserves output names across them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulletproof.errors import BulletproofError, StoreError, StoreLocked

_HOLDER_MAX_BYTES = 4096  # a lock file is a few dozen bytes; never read a huge one
# Which shared job store the monitors holding an output folder use (see FolderLock).
_STORE_XATTR = "user.bulletproof.store"
# How long a node joining a shared output folder waits out the first node's moment of holding
# it exclusively (while it marks the folder with its store), before taking that for a
# monitor that holds it for good: nodes of a fleet start at the same moment.
_JOIN_SECONDS = 2.0
_JOIN_POLL = 0.01


def lock_path_for(database: Path) -> Path:
    """The lock file that guards a database."""
    return database.with_name(database.name + ".lock")


def _read_holder(fd: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        raw = os.pread(fd, _HOLDER_MAX_BYTES, 0)
        data = json.loads(raw.decode("utf-8", "replace") or "{}")
        if isinstance(data, dict):
            return data
    return {}


def describe_holder(holder: dict[str, Any]) -> str:
    """'pid 123 on host h since 2026-01-01T00:00:00Z' from a lock file's contents."""
    since = holder.get("since")
    when = (datetime.fromtimestamp(float(since), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(since, int | float) else "an unknown time")
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"


class StateLock:
    """An exclusive, non-blocking lock on one database; released by `release` or process exit."""

    def __init__(self, database: Path) -> None:
        self.path = lock_path_for(database)
        self._fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {self.path}: {exc.strerror or exc}",
                             path=database) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLocked(
                f"the state database {database} is in use by another monitor "
                f"({describe_holder(holder)}; lock file {self.path}); stop that one first, "
                "or give this one its own database", path=database, holder=holder) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}", path=database) from None
        self._fd = fd
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        # Who holds it is a courtesy for the next one to come; a full disk must not stop us.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.holder).encode(), 0)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _flock_holder(fd: int) -> int | None:
    """The pid holding a flock on the same inode as `fd`, from /proc/locks (Linux; best effort)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/locks", encoding="ascii") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
                    return int(fields[4])
    return None


class FolderLock:
    """A non-blocking flock on a folder; a file system without flock only warns.

    Exclusive by default. With `shared_store` (the identity of a shared PostgreSQL store) the
    lock is shared, and only with monitors of that same store: the identity is kept in the
    folder's `user.bulletproof.store` extended attribute by whoever took the folder first.
    """

    def __init__(self, folder: Path, *, shared_store: str | None = None) -> None:
        self.path = folder
        self._fd: int | None = None
        self.alone = True  # no other monitor held the folder when this one took it
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BulletproofError(f"cannot open the output folder {folder}: "
                                   f"{exc.strerror or exc}") from None
        try:
            if shared_store is None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                self.alone = self._lock_shared(fd, folder, shared_store)
        except BlockingIOError:
            pid = _flock_holder(fd)
            os.close(fd)
            holder = {"pid": pid} if pid is not None else {}
            raise StoreLocked(
                f"the output folder {folder} is in use by another monitor"
                f"{f' (pid {pid})' if pid is not None else ''}; two monitors must not share "
                "an output folder unless they share one PostgreSQL job store",
                path=folder, holder=holder) from None
        except StoreLocked:
            os.close(fd)
            raise
        except OSError:  # e.g. a network share without flock: nothing to hold, nothing to fear
            os.close(fd)
            return
        self._fd = fd

    @staticmethod
    def _lock_shared(fd: int, folder: Path, store: str) -> bool:
        """Share the folder with monitors of `store` only (BlockingIOError: held exclusively);
        True when no other monitor held it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            FolderLock._join(fd)  # others hold it: join them, if ours
            try:
                holder_store = os.getxattr(fd, _STORE_XATTR).decode("utf-8", "replace")
            except OSError:
                holder_store = None
            if holder_store is not None and holder_store != store:
                raise StoreLocked(
                    f"the output folder {folder} is in use by monitors of another job store "
                    f"({holder_store}); monitors share an output folder only when they share "
                    "one PostgreSQL job store", path=folder, holder={"store": holder_store}) from None
            return False
        # Alone: say which store the folder is shared with, then let that store's monitors in.
        with contextlib.suppress(OSError):  # no xattrs here: sharing stays possible, unchecked
            os.setxattr(fd, _STORE_XATTR, store.encode())
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True

    @staticmethod
    def _join(fd: int) -> None:
        """Take the shared lock the folder's other holders have; BlockingIOError when one holds
        it exclusively for longer than a first node marking the folder does."""
        deadline = time.monotonic() + _JOIN_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(_JOIN_POLL)

    @property
    def held(self) -> bool:
        """True while the lock is held (False on a file system that has no flock)."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
