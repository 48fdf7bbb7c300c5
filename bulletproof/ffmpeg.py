"""Running ffmpeg: the command line and one supervised process per job attempt.

Binary discovery, probing, progress parsing and failure classification are `bulletproof.ffprobe`'s.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bulletproof.config import FfmpegSettings, Timeouts
from bulletproof.errors import TranscodeError
from bulletproof.ffprobe import (
    FfmpegBinaries,
    Progress,
    ProgressParser,
    classify_failure,
    failure_message,
    is_output_io_error,
    media_arg,
)
from bulletproof.models import FailureReason
from bulletproof.profiles import Profile

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 3.0  # SIGTERM, then SIGKILL when ffmpeg has not exited after this long
WATCH_INTERVAL_SECONDS = 0.25  # how often the stall/timeout/kill clocks are checked
_MAX_LINE_BYTES = 64 * 1024


def build_command(
    binaries: FfmpegBinaries,
    profile: Profile,
    source: Path,
    temp_output: Path,
    settings: FfmpegSettings,
) -> list[str]:
    """The full ffmpeg argument list for one transcode (no shell ever sees it)."""
    # -threads before -i limits the decoder, after it the encoder; a profile's own wins.
    threads = ["-threads", str(settings.threads)] if settings.threads else []
    return [
        binaries.ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "warning",
        "-progress", "pipe:1", "-nostats",
        *threads, "-i", media_arg(source),
        *threads, *profile.output_args(), media_arg(temp_output),
    ]


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    """A finished output: renamed into place, or discarded when `published` is False.

    With `defer_publish` the checked output is left at `temp_output` for the caller to rename
    into place (`place_output`, under its claim on the job).
    """

    output_path: Path
    output_bytes: int
    elapsed_seconds: float
    stderr_tail: str
    published: bool = True
    temp_output: Path | None = None  # set when the caller publishes (defer_publish)


def place_output(temp: Path, output: Path, *, replace_existing: bool) -> None:
    """Rename a checked temporary into place; TranscodeError (the temporary kept) when it cannot be.

    Without `replace_existing` a file already at `output` is left alone (OUTPUT_CONFLICT).
    """
    try:
        if replace_existing:
            os.replace(temp, output)
        else:
            _publish_no_clobber(temp, output)
    except FileExistsError:
        raise TranscodeError(f"the output {output} appeared while the job ran; it is left alone",
                             reason=FailureReason.OUTPUT_CONFLICT) from None
    except OSError as exc:
        raise TranscodeError(f"cannot move the output into place: {exc}",
                             reason=FailureReason.OUTPUT_ERROR) from None


def _publish_no_clobber(temp: Path, output: Path) -> None:
    """Rename `temp` to `output` unless a file of that name exists (FileExistsError)."""
    try:
        os.link(temp, output)  # atomic, and fails when the name is taken
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(output):
            raise FileExistsError(output) from None
        os.replace(temp, output)
        return
    temp.unlink()


#: Called with (temporary output, last progress, stderr tail) after ffmpeg succeeded and before
#: the rename: returns True to publish, False to discard the output; raises TranscodeError to fail.
BeforePublish = Callable[[Path, "Progress | None", str], Awaitable[bool]]


async def _read_lines(stream: asyncio.StreamReader | None, handle: Callable[[str], None]) -> None:
    """Feed each line of a pipe to `handle` until EOF; over-long lines are cut, never fatal."""
    if stream is None:
        return
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk.replace(b"\r", b"\n")
        *lines, pending = pending.split(b"\n")
        if len(pending) > _MAX_LINE_BYTES:
            lines.append(pending[:_MAX_LINE_BYTES])
            pending = b""
        for raw in lines:
            if raw:
                handle(raw.decode("utf-8", "replace"))
    if pending:
        handle(pending.decode("utf-8", "replace"))


def _retrieve(task: asyncio.Task[TranscodeResult]) -> None:
    # Nobody may await a transcode whose waiter was cancelled; keep asyncio from complaining.
    if not task.cancelled():
        task.exception()


class RunningTranscode:
    """One ffmpeg process for one job attempt."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        *,
        command: list[str],
        source: Path,
        output: Path,
        temp_output: Path,
        duration: float | None,
        on_progress: Callable[[Progress], None],
        settings: FfmpegSettings,
        timeouts: Timeouts,
        before_publish: BeforePublish | None = None,
        replace_existing: bool = True,
        defer_publish: bool = False,
    ) -> None:
        self.command = command
        self.last_progress: Progress | None = None
        self._process = process
        self._source, self._output, self._temp = source, output, temp_output
        self._on_progress = on_progress
        self._timeouts = timeouts
        self._parser = ProgressParser(duration)
        self._stderr: deque[str] = deque(maxlen=settings.stderr_tail_lines)
        self._io_error: str | None = None
        self._started = time.monotonic()
        self._paused_at: float | None = None
        self._paused_total = 0.0
        self._last_headway = 0.0  # on the active clock
        self._quiet_marker: tuple[int, int] | None = None
        self._abort_reason: FailureReason | None = None
        self._abort_message = ""
        self._term_sent_at: float | None = None
        self._before_publish = before_publish
        self._replace_existing = replace_existing
        self._defer_publish = defer_publish
        self._checking: asyncio.Task[bool] | None = None  # the before-publish check, while it runs
        self._task = asyncio.get_running_loop().create_task(self._supervise())
        self._task.add_done_callback(_retrieve)

    @property
    def pid(self) -> int | None:
        """ffmpeg's process id while it runs, else None."""
        return self._process.pid if self._process.returncode is None else None

    @property
    def paused(self) -> bool:
        """True between pause() and resume()."""
        return self._paused_at is not None

    @property
    def stopping(self) -> FailureReason | None:
        """Why ffmpeg is being stopped (cancel, stall, timeout...), once it is; else None."""
        return self._abort_reason

    def pause(self) -> None:
        """SIGSTOP the process; paused time counts towards neither the stall nor the timeout."""
        if self._paused_at is not None or self._abort_reason is not None or self._task.done():
            return
        self._signal(signal.SIGSTOP)
        self._paused_at = time.monotonic()

    def resume(self) -> None:
        """SIGCONT a paused process."""
        if self._paused_at is None:
            return
        self._signal(signal.SIGCONT)
        self._paused_total += time.monotonic() - self._paused_at
        self._paused_at = None

    def cancel(self) -> None:
        """Ask ffmpeg to stop; wait() then raises TranscodeError(reason=CANCELLED)."""
        self._abort(FailureReason.CANCELLED, "cancelled")

    async def wait(self) -> TranscodeResult:
        """The result once renamed into place; TranscodeError on any failure."""
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            # Our caller is going away (shutdown): leave neither a process nor a temp file.
            if not self._task.done():
                self._abort(FailureReason.INTERRUPTED, "interrupted", kill_now=True)
                self._remove_temp()
            raise

    def _active_seconds(self, now: float | None = None) -> float:
        """Seconds since start, less the time spent paused."""
        now = time.monotonic() if now is None else now
        paused = self._paused_total + (now - self._paused_at if self._paused_at is not None else 0)
        return now - self._started - paused

    def _signal(self, sig: int) -> None:
        if self._process.returncode is None:
            try:
                self._process.send_signal(sig)
            except ProcessLookupError:
                pass  # it exited between the check and the signal

    def _abort(self, reason: FailureReason, message: str, *, kill_now: bool = False) -> None:
        """Stop ffmpeg for `reason`; the first reason given wins."""
        if self._abort_reason is None:
            if self._task.done():
                return
            self._abort_reason, self._abort_message = reason, message
            self.resume()  # a stopped process cannot act on SIGTERM
            self._signal(signal.SIGTERM)
            self._term_sent_at = time.monotonic()
            if self._checking is not None:
                self._checking.cancel()
        if kill_now:
            self._signal(signal.SIGKILL)

    def _remove_temp(self) -> None:
        try:
            self._temp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove temporary output %s: %s", self._temp, exc)

    def _on_stdout(self, line: str) -> None:
        progress = self._parser.feed(line)
        if progress is None:
            return
        if progress.ended and self._abort_reason is not None:
            return  # ffmpeg prints its final block when stopped too: that is not completion
        if self._parser.advanced:
            self._last_headway = self._active_seconds()
        self.last_progress = progress
        try:
            self._on_progress(progress)
        except Exception:
            log.exception("progress callback failed")

    def _on_stderr(self, line: str) -> None:
        self._stderr.append(line)
        if self._io_error is None and is_output_io_error(line, source=self._source):
            self._io_error = line.strip()

    async def _watch(self) -> None:
        """Enforce the timeout and the stall limit, and escalate SIGTERM to SIGKILL."""
        job_limit, stall_limit = self._timeouts.job_seconds, self._timeouts.stall_seconds
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            now = time.monotonic()
            if self._term_sent_at is not None:
                if now - self._term_sent_at >= KILL_GRACE_SECONDS:
                    self._signal(signal.SIGKILL)
                continue
            if self._paused_at is not None:
                continue
            active = self._active_seconds(now)
            if job_limit and active > job_limit:
                self._abort(FailureReason.TIMEOUT, f"timed out after {job_limit:g} s of running")
            elif stall_limit:
                self._check_stall(active, stall_limit)

    def _check_stall(self, active: float, limit: float) -> None:
        """Abort when neither progress blocks nor the temp file have moved for `limit` seconds."""
        quiet = active - self._last_headway
        if quiet <= limit / 2:
            self._quiet_marker = None
            return
        # After the last progress block ffmpeg may still be busy writing (the +faststart rewrite
        # of a large file): a temp file that changed since halfway through the quiet spell counts.
        marker = self._temp_marker()
        if self._quiet_marker is None:
            self._quiet_marker = marker
        elif marker != self._quiet_marker:
            self._last_headway, self._quiet_marker = active, None
            return
        if quiet > limit:
            self._abort(FailureReason.STALLED, f"stalled: no progress for {limit:g} s")

    def _temp_marker(self) -> tuple[int, int]:
        try:
            st = os.stat(self._temp)
        except OSError:
            return (-1, -1)  # not written yet
        return st.st_size, st.st_mtime_ns

    async def _supervise(self) -> TranscodeResult:
        watcher = asyncio.create_task(self._watch())
        try:
            # Both pipes are drained concurrently so a chatty ffmpeg never blocks on a full pipe.
            await asyncio.gather(
                _read_lines(self._process.stdout, self._on_stdout),
                _read_lines(self._process.stderr, self._on_stderr),
            )
            returncode = await self._process.wait()
        except BaseException:
            self._signal(signal.SIGKILL)
            self._remove_temp()
            raise
        finally:
            watcher.cancel()
        size = self._check_exit(returncode)
        publish = await self._run_check(returncode)
        return self._publish(size, returncode, publish)

    async def _run_check(self, returncode: int) -> bool:
        """Run the before-publish hook; the temporary goes on any failure or cancellation."""
        if self._before_publish is None:
            return True
        tail = "\n".join(self._stderr)
        self._checking = asyncio.ensure_future(
            self._before_publish(self._temp, self.last_progress, tail))
        try:
            return await self._checking
        except TranscodeError as exc:
            raise self._fail_with(exc, returncode) from None
        except asyncio.CancelledError:
            if self._abort_reason is None:
                self._remove_temp()
                raise
            raise self._fail(self._abort_message, self._abort_reason, returncode) from None
        except BaseException:
            self._remove_temp()
            raise
        finally:
            self._checking = None

    def _fail_with(self, exc: TranscodeError, returncode: int | None) -> TranscodeError:
        self._remove_temp()
        tail = exc.stderr_tail or "\n".join(self._stderr)
        return TranscodeError(str(exc), reason=exc.reason, returncode=returncode, stderr_tail=tail)

    def _fail(self, message: str, reason: FailureReason, returncode: int | None) -> TranscodeError:
        self._remove_temp()
        return TranscodeError(
            message, reason=reason, returncode=returncode, stderr_tail="\n".join(self._stderr)
        )

    def _check_exit(self, returncode: int) -> int:
        """The temporary's size once ffmpeg's own exit looks like success; else TranscodeError."""
        tail = "\n".join(self._stderr)
        if self._abort_reason is not None:
            raise self._fail(self._abort_message, self._abort_reason, returncode)
        if returncode != 0:
            reason = classify_failure(returncode, tail, source=self._source, output=self._temp)
            raise self._fail(failure_message(returncode, tail), reason, returncode)
        if self._io_error is not None:
            message = f"ffmpeg reported success but writing the output failed: {self._io_error}"
            raise self._fail(message, FailureReason.OUTPUT_ERROR, returncode)
        try:
            size = self._temp.stat().st_size
        except OSError:
            size = 0
        if size == 0:
            raise self._fail("ffmpeg reported success but wrote no output",
                             FailureReason.OUTPUT_ERROR, returncode)
        return size

    def _publish(self, size: int, returncode: int, publish: bool) -> TranscodeResult:
        """Rename the checked temporary into place (or drop it when the check said not to)."""
        elapsed = self._active_seconds()
        tail = "\n".join(self._stderr)
        if self._abort_reason is not None:  # cancelled while the check ran
            raise self._fail(self._abort_message, self._abort_reason, returncode)
        if not publish:
            self._remove_temp()
            return TranscodeResult(self._output, size, elapsed, tail, published=False)
        if self._defer_publish:
            return TranscodeResult(self._output, size, elapsed, tail, temp_output=self._temp)
        try:
            place_output(self._temp, self._output, replace_existing=self._replace_existing)
        except TranscodeError as exc:
            raise self._fail(str(exc), exc.reason, returncode) from None
        return TranscodeResult(self._output, size, elapsed, tail)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux only: SIGKILL the child when the monitor dies, even by SIGKILL, even while stopped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the broken progress pipe still ends ffmpeg
        pass


def _child_setup(nice: int) -> Callable[[], None]:
    """A preexec_fn that ties ffmpeg's life to ours and renices it (no `nice` wrapper process)."""

    def apply() -> None:
        _die_with_parent()
        if nice > 0:
            os.nice(nice)

    return apply


class FfmpegRunner:
    """Starts supervised ffmpeg processes with one set of binaries, settings and limits."""

    def __init__(
        self, binaries: FfmpegBinaries, settings: FfmpegSettings, timeouts: Timeouts
    ) -> None:
        self.binaries = binaries
        self.settings = settings
        self.timeouts = timeouts

    async def start(
        self,
        *,
        source: Path,
        output: Path,
        temp_output: Path,
        profile: Profile,
        duration: float | None,
        on_progress: Callable[[Progress], None],
        before_publish: BeforePublish | None = None,
        replace_existing: bool = True,
        defer_publish: bool = False,
    ) -> RunningTranscode:
        """Start ffmpeg writing to temp_output; TranscodeError if it cannot even start.

        `defer_publish` leaves the checked output at temp_output (TranscodeResult.temp_output):
        the caller renames it into place, under its claim on the job.
        """
        source, output, temp_output = Path(source), Path(output), Path(temp_output)
        if not source.exists():
            raise TranscodeError(f"input file is missing: {source}",
                                 reason=FailureReason.INPUT_MISSING)
        if source.is_dir():  # FIFOs and devices are allowed: ffmpeg reads them as streams
            raise TranscodeError(f"input is a folder: {source}", reason=FailureReason.INPUT_INVALID)
        try:
            for folder in dict.fromkeys((output.parent, temp_output.parent)):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TranscodeError(f"cannot create the output folder {output.parent}: {exc}",
                                 reason=FailureReason.OUTPUT_ERROR) from None
        command = build_command(self.binaries, profile, source, temp_output, self.settings)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not ffmpeg directly
                preexec_fn=_child_setup(self.settings.nice),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise TranscodeError(f"cannot start ffmpeg ({self.binaries.ffmpeg}): {exc}",
                                 reason=FailureReason.FFMPEG_ERROR) from None
        return RunningTranscode(
            process, command=command, source=source, output=output, temp_output=temp_output,
            duration=duration, on_progress=on_progress, settings=self.settings,
            timeouts=self.timeouts, before_publish=before_publish,
            replace_existing=replace_existing, defer_publish=defer_publish,
        )
