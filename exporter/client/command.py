"""How a client command runs: its shared options, the client, where it writes, and exit codes.

Exit codes: 0 ok; 1 API or runtime error (404 unknown job, 409 state conflict, 429, 5xx, a lost
stream); 2 invalid input or config (usage errors, 400/413/415/422, an invalid config file);
4 cannot connect to the API; 5 unauthorized or forbidden (401/403).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import click

from exporter.client.api_client import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    ApiError,
    BulletproofClient,
    ClientError,
    ConnectError,
    InvalidUrl,
    Unauthorized,
)

if TYPE_CHECKING:  # rich is imported when a command prints (the core loads this module always)
    from rich.console import Console

EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_CONNECT = 4
EXIT_AUTH = 5

_INVALID_STATUSES = frozenset({400, 413, 415, 422})
_WIDE = 200  # console width when the output is not a terminal (pipes, logs): no wrapped names


class Output:
    """Where a command writes: rich tables for people, raw JSON with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = _WIDE
        return console

    def json(self, data: Any) -> None:
        """The API's JSON, as received (indented)."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))

    def result(self, data: Any, text: str) -> None:
        """The API's JSON with --json, else one line for people."""
        if self.as_json:
            self.json(data)
        else:
            self.line(text)

    def line(self, text: str) -> None:
        """A plain line on stdout, flushed (a follower reads it right away)."""
        click.echo(text)
        sys.stdout.flush()

    def print(self, renderable: Any) -> None:
        """A rich renderable; in a pipe without the padding at the ends of lines."""
        if self.console.is_terminal:
            self.console.print(renderable)
            return
        with self.console.capture() as capture:
            self.console.print(renderable)
        for line in capture.get().splitlines():
            click.echo(line.rstrip())

    def error(self, text: str) -> None:
        """A line on stderr."""
        click.echo(text, err=True)


def fail(out: Output, message: str, code: int, details: Any = None) -> NoReturn:
    """Print `error: message` (and the details' lines) on stderr and exit with `code`."""
    out.error(f"error: {message}")
    for line in _detail_lines(details):
        out.error(f"  {line}")
    sys.exit(code)


def _detail_lines(details: Any) -> list[str]:
    """`[{"location", "message"}]` as `location: message` lines (the config's key paths)."""
    lines: list[str] = []
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and "message" in item:
                location = item.get("location") or ""
                lines.append(f"{location}: {item['message']}" if location else str(item["message"]))
            else:
                lines.append(str(item))
    return lines


def _exit_code(exc: ApiError) -> int:
    if isinstance(exc, Unauthorized) or exc.status in (401, 403):
        return EXIT_AUTH
    if exc.status in _INVALID_STATUSES:
        return EXIT_INVALID
    return EXIT_ERROR


@contextlib.contextmanager
def _api_errors(out: Output) -> Iterator[None]:
    """Turn the client's exceptions into a message on stderr and the exit code."""
    try:
        yield
    except ApiError as exc:
        if out.as_json and exc.body is not None:
            out.json(exc.body)
        message = exc.message
        if exc.status == 401:
            message += f" (check --token or ${TOKEN_ENV})"
        elif exc.status == 429 and isinstance(exc.details, dict):
            wait = exc.details.get("retry_after_seconds")
            if wait:
                message += f" (retry in {wait} s)"
        fail(out, message, _exit_code(exc), exc.details)
    except ConnectError as exc:
        fail(out, f"{exc.message} (is `bulletproof run` serving the API there? set --url or "
                   f"${URL_ENV})", EXIT_CONNECT)
    except InvalidUrl as exc:
        fail(out, exc.message, EXIT_INVALID)
    except ClientError as exc:
        fail(out, exc.message, EXIT_ERROR)


class Api:
    """What a command gets: the client and the output."""

    def __init__(self, client: BulletproofClient, out: Output) -> None:
        self.client = client
        self.out = out


def api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared options (--url, --token, --timeout, --json) and an `Api` as its
    first argument; API errors become messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, url: str, token: str | None, timeout: float, as_json: bool,
                **kwargs: Any) -> None:
        out = Output(as_json)
        try:
            with _api_errors(out):
                client = BulletproofClient(url, token, timeout=timeout)
                func(Api(client, out), *args, **kwargs)
        except BrokenPipeError:  # `bulletproof jobs | head`: the reader has all it wanted
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the exit flush quiet

    options = [
        click.option("--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True,
                     metavar="URL", help=f"The API's base URL [env: {URL_ENV}]."),
        click.option("--token", envvar=TOKEN_ENV, default=None, show_default=False,
                     metavar="TOKEN",
                     help=f"The API token [env: {TOKEN_ENV}; prefer the variable: a flag shows "
                          f"in the process list]."),
        click.option("--timeout", type=click.FloatRange(min=0.1, max=3600.0),
                     default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
                     help="How long to wait for an answer."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the API's JSON instead of tables (for scripts)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper

