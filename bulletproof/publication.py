"""Putting a finished job's file at its output name: the step a fenced store write runs.

The store runs `place` inside the transaction that checks the claim and records the outcome
(`JobStore.mark_completed(publish=...)`), so only the current claim ever publishes. `place` is
idempotent: when the commit after it was lost (the database went away at that moment), the
retry finds the file already placed by this very attempt (by inode) and does nothing more.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from bulletproof.ffmpeg import place_output
from bulletproof.paths import temp_path_for

log = logging.getLogger(__name__)

_EARLIER_ATTEMPTS_CHECKED = 100  # how many attempts back a new claim looks for leftovers


def _inode(path: Path) -> int | None:
    try:
        return path.lstat().st_ino
    except OSError:
        return None


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove temporary output %s: %s", path, exc)


class OutputPublication:
    """A checked temporary output to rename into place."""

    def __init__(self, temp: Path, output: Path, *, replace_existing: bool) -> None:
        self.temp, self.output = temp, output
        self._replace_existing = replace_existing
        self._inode = _inode(temp)  # tells this attempt's output from any other at the name

    def place(self) -> None:
        """Rename the temporary into place (TranscodeError when it cannot be); once is enough."""
        if not self.placed():
            place_output(self.temp, self.output, replace_existing=self._replace_existing)

    def placed(self) -> bool:
        """True when the file at the output name is this temporary, renamed (an earlier place)."""
        return (self._inode is not None and not os.path.lexists(self.temp)
                and _inode(self.output) == self._inode)

    def discard(self) -> None:
        """Remove the temporary: the output is not published."""
        _remove(self.temp)


class KeptSource:
    """The source itself put at the output name (a skip's `skip_action`: copy or link).

    `stage` does the slow part (a copy beside the output) before any transaction; `place` only
    links the staged copy, or the source, to the output name, and never replaces a file there.
    """

    def __init__(self, source: Path, output: Path, temp: Path, action: str) -> None:
        self.source, self.output, self.temp = source, output, temp
        self.action = action
        self.size: int | None = None  # bytes of the kept output, known once staged
        self._staged_inode: int | None = None

    def stage(self) -> None:
        """Prepare the output (FileExistsError when its name is taken; OSError on failure)."""
        if os.path.lexists(self.output):
            raise FileExistsError(self.output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.size = self.source.stat().st_size
        if self.action == "link" and self.source.stat().st_dev == self.output.parent.stat().st_dev:
            return  # a hard link needs no copy
        shutil.copyfile(self.source, self.temp)
        self._staged_inode = _inode(self.temp)

    def place(self) -> None:
        """Link the staged copy (or the source) at the output name; once is enough."""
        if self.placed():
            return
        if self._staged_inode is not None:
            os.link(self.temp, self.output)  # fails instead of replacing a file that appeared
            _remove(self.temp)
            return
        try:
            os.link(self.source, self.output)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system after all: copy (the slow way)
            shutil.copyfile(self.source, self.temp)
            self._staged_inode = _inode(self.temp)
            os.link(self.temp, self.output)
            _remove(self.temp)

    def placed(self) -> bool:
        """True when the file at the output name is the one an earlier `place` put there."""
        mine = self._staged_inode if self._staged_inode is not None else _inode(self.source)
        if self._staged_inode is not None and os.path.lexists(self.temp):
            return False
        return mine is not None and _inode(self.output) == mine

    def discard(self) -> None:
        """Remove a staged (or half-made) copy: nothing is published."""
        _remove(self.temp)  # this attempt's own name: never another attempt's file


def remove_earlier_attempts(output: Path, job_id: int, token: int) -> list[Path]:
    """Remove what earlier attempts of the job left at their temporary names beside `output`
    (a node killed or frozen mid-transcode); `token` is the current claim, so they are all stale."""
    removed = []
    for attempt in range(max(1, token - _EARLIER_ATTEMPTS_CHECKED), token):
        path = temp_path_for(output, job_id, attempt=attempt)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove temporary output %s: %s", path, exc)
            continue
        log.info("removed the temporary of an earlier attempt", extra={"job": job_id, "path": str(path)})
        removed.append(path)
    return removed
