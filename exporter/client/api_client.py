"""A small synchronous client for the Bulletproof control API (what `bulletproof status` & co. use).

Every method makes one blocking HTTP request and returns the API's decoded JSON. Plain requests
use the standard library's http.client (a command starts in a fraction of the time aiohttp's
import takes, and needs no event loop); the event stream (`events`, `follow`) uses aiohttp's
WebSocket client, imported only then. Failures are raised as one of these exceptions, so callers
never see either library:

- `ApiError`: the API answered with an error status (`status`, `code`, `message`, `details` from
  its `{"error": {...}}` body; `Unauthorized` for 401 and 403).
- `ConnectError`: nothing answered at the URL (refused, unknown host, connect timeout).
- `ClientError`: anything else on the way (timeout while waiting, a reply that is not the API's).

The token is sent as `Authorization: Bearer <token>` and never appears in an exception message or
a repr.

    client = BulletproofClient("http://127.0.0.1:8080", token="...")
    client.pause_queue()
    for job in client.jobs(states=["failed"])["jobs"]: ...
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

if TYPE_CHECKING:  # imported for the event stream only: the core's CLI loads the client
    import aiohttp  # commands on every start, `bulletproof init` must not pay for aiohttp

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "BULLETPROOF_URL"
TOKEN_ENV = "BULLETPROOF_API_TOKEN"
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
API = "/api/v1"
WS_PATH = "/ws/updates"
# Close codes after which following the event stream ended normally.
NORMAL_CLOSE_CODES = frozenset({1000, 1001})

JSON = dict[str, Any]


class ClientError(Exception):
    """A request did not get a usable answer from the API."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectError(ClientError):
    """Nothing answered at the API's URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(ClientError):
    """The API answered with an error status and its JSON error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 details: Any = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.body = body  # the decoded error document, when the reply was JSON

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


class Unauthorized(ApiError):
    """401 (no or a wrong token) or 403 (not allowed)."""


class InvalidUrl(ClientError):
    """The base URL given is not an http(s) URL."""


def _check_url(url: str) -> str:
    base = url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidUrl(f"invalid API URL {url!r}: expected http://host:port or https://host[:port][/prefix]")
    if parts.query or parts.fragment:
        raise InvalidUrl(f"invalid API URL {url!r}: no query string or fragment allowed")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidUrl(f"invalid API URL {url!r}: bad port") from None
    return base


class BulletproofClient:
    """The control API at `url` (a base URL, with an optional path prefix behind a proxy)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = _check_url(url)
        self._token = token or None
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"BulletproofClient({self.url!r}, token={'***' if self._token else None})"

    # -- plumbing -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "bulletproof-cli"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _session(self, *, total: float | None) -> aiohttp.ClientSession:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=total, connect=min(CONNECT_TIMEOUT, self.timeout),
                                        sock_connect=min(CONNECT_TIMEOUT, self.timeout))
        return aiohttp.ClientSession(headers=self._headers(), timeout=timeout)

    def _connect_error(self, exc: BaseException) -> ConnectError:
        reason = getattr(exc, "os_error", None) or exc  # aiohttp wraps the OSError
        if isinstance(reason, TimeoutError):
            return ConnectError(self.url, "connection timed out")
        if type(reason).__module__ == "ssl":  # ssl.SSLError & co.: errno is OpenSSL's, not the OS's
            why = getattr(reason, "reason", None) or getattr(reason, "verify_message", None) or reason
            return ConnectError(self.url, f"TLS failed: {why}")
        errno = getattr(reason, "errno", None)
        if isinstance(reason, ConnectionError) and isinstance(errno, int) and errno > 0:
            text = os.strerror(errno)  # asyncio's "Connect call failed (...)" says less
        else:
            text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return ConnectError(self.url, text)

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        connect_timeout = min(CONNECT_TIMEOUT, self.timeout)
        if parts.scheme == "https":
            import ssl

            return http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                               timeout=connect_timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=connect_timeout)

    def _request(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
                 body: Any = None) -> Any:
        target = urlsplit(self.url).path + path
        if params:
            target += "?" + urlencode(list(params))
        headers = self._headers()
        data: bytes | None = None
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise ClientError(f"cannot send this as JSON: {exc}") from None
            headers["Content-Type"] = "application/json"
        elif method not in ("GET", "HEAD", "DELETE"):
            headers["Content-Length"] = "0"
        conn = self._connection()
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused, unknown host, connect timeout, TLS handshake
                raise self._connect_error(exc) from None
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except TimeoutError:
                raise ClientError(f"no answer from {self.url} within {self.timeout:g} s "
                                  f"({method} {path})") from None
            except (OSError, http.client.HTTPException) as exc:
                raise ClientError(f"{method} {path} failed: {exc or type(exc).__name__}") from None
            return self._decode(resp.status, resp.headers.get_content_type(), raw, method, path)
        finally:
            conn.close()

    def _decode(self, status: int, content_type: str, raw: bytes, method: str, path: str) -> Any:
        data: Any = None
        if raw and (content_type == "application/json" or content_type.endswith("+json")):
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                data = None
        if status < 400:
            if status == 204:
                return None
            if data is None:
                raise ClientError(f"{method} {path}: HTTP {status} without a JSON body "
                                  f"(is {self.url} the Bulletproof API?)")
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
            if status in (404, 405) and error.get("code") in (None, "not_found", "method_not_allowed"):
                # No such route (not an unknown job): most likely a wrong URL or an older server.
                message = f"{message}: {method} {path} (is {self.url} the Bulletproof API?)"
            cls = Unauthorized if status in (401, 403) else ApiError
            raise cls(status, message, code=error.get("code"),
                      details=error.get("details"), body=data)
        snippet = raw[:200].decode("utf-8", "replace").strip()
        cls = Unauthorized if status in (401, 403) else ApiError
        raise cls(status, f"{method} {path}: HTTP {status}"
                  f"{f': {snippet}' if snippet else ''} (is {self.url} the Bulletproof API?)")

    def call(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
             body: Any = None) -> Any:
        """One request to `path` (relative to the base URL); the decoded JSON (None for 204)."""
        return self._request(method, path, params=params, body=body)

    # -- reads --------------------------------------------------------------------------------

    def health(self) -> JSON:
        """GET /healthz."""
        return self.call("GET", "/healthz")

    def status(self) -> JSON:
        """GET /api/v1/status: paused, workers, counts by state, versions, uptime, folders."""
        return self.call("GET", f"{API}/status")

    def stats_summary(self) -> JSON:
        """GET /api/v1/stats/summary: totals, space saved, the last 24 h."""
        return self.call("GET", f"{API}/stats/summary")

    def jobs(self, *, states: Iterable[str] = (), profile: str | None = None,
             search: str | None = None, sort: str | None = None, order: str | None = None,
             limit: int | None = None, offset: int | None = None) -> JSON:
        """GET /api/v1/jobs: `{"jobs", "total", "limit", "offset", "next_offset"}`."""
        params: list[tuple[str, str]] = [("state", s) for s in states]
        for name, value in (("profile", profile), ("q", search), ("sort", sort),
                            ("order", order), ("limit", limit), ("offset", offset)):
            if value is not None:
                params.append((name, str(value)))
        return self.call("GET", f"{API}/jobs", params=params)

    def job(self, job_id: int) -> JSON:
        """GET /api/v1/jobs/{id}: everything the store knows about one job."""
        return self.call("GET", f"{API}/jobs/{int(job_id)}")

    def queue(self, *, limit: int | None = None, offset: int | None = None) -> JSON:
        """GET /api/v1/queue: queued jobs in run order."""
        params = [(k, str(v)) for k, v in (("limit", limit), ("offset", offset)) if v is not None]
        return self.call("GET", f"{API}/queue", params=params)

    def profiles(self) -> JSON:
        """GET /api/v1/profiles."""
        return self.call("GET", f"{API}/profiles")

    def audit(self, *, limit: int | None = None, before: int | None = None) -> JSON:
        """GET /api/v1/audit: `{"entries", "limit", "next_before"}`, newest first."""
        params = [(k, str(v)) for k, v in (("limit", limit), ("before", before)) if v is not None]
        return self.call("GET", f"{API}/audit", params=params)

    def get_config(self) -> JSON:
        """GET /api/v1/config: `{"path", "last_reload_ok", "last_reload_success_at", "config"}`."""
        return self.call("GET", f"{API}/config")

    # -- job actions --------------------------------------------------------------------------

    def enqueue(self, path: str, *, profile: str | None = None,
                priority: int | None = None) -> JSON:
        """POST /api/v1/jobs: queue a file inside a watch folder; the new job."""
        body: JSON = {"path": path}
        if profile is not None:
            body["profile"] = profile
        if priority is not None:
            body["priority"] = priority
        return self.call("POST", f"{API}/jobs", body=body)

    def _job_action(self, job_id: int, action: str) -> JSON:
        return self.call("POST", f"{API}/jobs/{int(job_id)}/{action}")

    def cancel(self, job_id: int) -> JSON:
        """Cancel a queued job, or stop a running one (its state then is still active)."""
        return self._job_action(job_id, "cancel")

    def retry(self, job_id: int) -> JSON:
        """Queue a failed, cancelled or completed job again."""
        return self._job_action(job_id, "retry")

    def prioritize(self, job_id: int) -> JSON:
        """Move a queued job to the front of the queue."""
        return self._job_action(job_id, "prioritize")

    def pause_job(self, job_id: int) -> JSON:
        """Suspend a running job's ffmpeg."""
        return self._job_action(job_id, "pause")

    def resume_job(self, job_id: int) -> JSON:
        """Continue a paused job."""
        return self._job_action(job_id, "resume")

    def delete_job(self, job_id: int) -> None:
        """Remove a finished job from history."""
        self.call("DELETE", f"{API}/jobs/{int(job_id)}")

    def retry_failed(self) -> JSON:
        """Queue every failed job again: `{"retried", "ids"}`."""
        return self.call("POST", f"{API}/jobs/retry-failed")

    # -- queue actions ------------------------------------------------------------------------

    def pause_queue(self) -> JSON:
        """Stop starting jobs: `{"paused", "paused_since"}`."""
        return self.call("POST", f"{API}/queue/pause")

    def resume_queue(self) -> JSON:
        """Start taking jobs again: `{"paused", "paused_since"}`."""
        return self.call("POST", f"{API}/queue/resume")

    def clear_queue(self) -> JSON:
        """Cancel every queued job: `{"cleared": n}`."""
        return self.call("POST", f"{API}/queue/clear")

    # -- nodes --------------------------------------------------------------------------------

    def nodes(self) -> JSON:
        """GET /api/v1/nodes: `{"node": this node's name, "nodes": [...]}`."""
        return self.call("GET", f"{API}/nodes")

    def _node_path(self, name: str) -> str:
        return f"{API}/nodes/{quote(name, safe='')}"

    def drain_node(self, name: str) -> JSON:
        """Let a node finish its running jobs and take no new ones; the node."""
        return self.call("POST", f"{self._node_path(name)}/drain")

    def undrain_node(self, name: str) -> JSON:
        """Let a draining node take jobs again; the node."""
        return self.call("POST", f"{self._node_path(name)}/undrain")

    def forget_node(self, name: str) -> None:
        """Remove a node that is not alive from the registry."""
        self.call("DELETE", self._node_path(name))

    # -- config -------------------------------------------------------------------------------

    def validate_config(self, config: Mapping[str, Any]) -> JSON:
        """POST /api/v1/config/validate: `{"valid": true, "config"}` or `{"valid": false, "errors"}`
        (each error `{"location", "message"}`)."""
        return self.call("POST", f"{API}/config/validate", body=dict(config))

    def apply_config(self, config: Mapping[str, Any]) -> JSON:
        """PUT /api/v1/config: validate, write, apply. A rejected config raises ApiError 422 whose
        `details` lists `{"location", "message"}`."""
        return self.call("PUT", f"{API}/config", body=dict(config))

    # -- events -------------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """The event stream's URL."""
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{WS_PATH}"

    async def events(self) -> AsyncIterator[JSON]:
        """The messages of /ws/updates (the `snapshot` first), until the server closes the stream.

        Raises ConnectError, Unauthorized or ApiError when the stream cannot be opened, and
        `StreamClosed` when it ends with anything but a normal close (1000, 1001).
        """
        import aiohttp

        try:
            async with self._session(total=None) as session:
                async with session.ws_connect(self.ws_url, heartbeat=30.0,
                                              max_msg_size=16 * 1024 * 1024) as ws:
                    while True:
                        msg = await ws.receive()
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                data = json.loads(msg.data)
                            except ValueError:
                                continue
                            if isinstance(data, dict):
                                yield data
                        elif msg.type == aiohttp.WSMsgType.ERROR:
                            raise StreamClosed(None, f"stream error: {ws.exception() or msg.data}")
                        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                          aiohttp.WSMsgType.CLOSED):
                            break
                    code = ws.close_code
                    reason = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE else None
                    if code is None or code == 1006:
                        raise StreamClosed(code, f"lost the connection to {self.url} (the event "
                                                 "stream ended without a close from the server)")
                    if code not in NORMAL_CLOSE_CODES:
                        raise StreamClosed(code, f"the server closed the event stream (code {code}"
                                                 f"{f': {reason}' if reason else ''})")
        except aiohttp.WSServerHandshakeError as exc:
            why = {401: "invalid or missing API token", 403: "forbidden"}.get(exc.status, exc.message)
            cls = Unauthorized if exc.status in (401, 403) else ApiError
            raise cls(exc.status, f"cannot open {WS_PATH}: {why}") from None
        except aiohttp.ClientConnectorError as exc:
            raise self._connect_error(exc) from None
        except _connect_timeouts() as exc:
            raise ConnectError(self.url, f"connection timed out ({exc or 'no answer'})") from None
        except TimeoutError:
            raise ClientError(f"no answer from {self.url} within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ClientError(f"event stream failed: {exc or type(exc).__name__}") from None

    def follow(self, on_message: Callable[[JSON], None]) -> None:
        """Call `on_message` for every message of the event stream until the server closes it
        normally. Runs its own event loop and blocks; Ctrl-C ends it with KeyboardInterrupt."""
        async def run() -> None:
            async for message in self.events():
                on_message(message)

        asyncio.run(run())


class StreamClosed(ClientError):
    """The event stream ended abnormally (dropped as too slow, server error...)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code


def _connect_timeouts() -> tuple[type[BaseException], ...]:
    """aiohttp's "connect timed out" exception (aiohttp >= 3.10), to tell it from a slow answer."""
    import aiohttp

    timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
    return (timeout,) if timeout is not None else ()
