"""Which Host and Origin headers the API answers: the allow-list against DNS rebinding and
cross-site pages.

A page on another site can make the browser send requests to the monitor (a form post, a
WebSocket, or reads after rebinding its own name to the monitor's address). Such requests carry
the attacker's name in `Host` (rebinding) or its site in `Origin`. Every request, token or not,
is checked before anything else:

- `Host` (when present) must name an allowed host, with any port: loopback names and addresses,
  the host of `api.listen` (unless it is a wildcard address), the host of the front door's URL
  (`api.public_url`, or the environment variable BULLETPROOF_PUBLIC_URL, which wins), the host
  this node advertises for discovery (`ApiSettings.advertised_host`: Prometheus scrapes it by
  that name), and `api.allowed_hosts`. Otherwise: 421 `host_not_allowed`.
- `Origin` (when present) must be one of `api.cors_origins` exactly, or name an allowed host.
  Otherwise (including the opaque origin `null`): 403 `origin_not_allowed`, before any
  WebSocket upgrade.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from bulletproof.errors import ConfigError, ConfigIssue
from exporter.security.addresses import host_of, is_loopback
from exporter.settings import ApiSettings, check_public_url

PUBLIC_URL_ENV = "BULLETPROOF_PUBLIC_URL"
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def resolve_public_url(settings: ApiSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """The front door's URL: BULLETPROOF_PUBLIC_URL wins over `api.public_url`.

    Raises ConfigError when the environment variable is set but is not an http(s) URL.
    """
    raw = env.get(PUBLIC_URL_ENV, "").strip()
    if not raw:
        return settings.public_url
    try:
        return check_public_url(raw)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(PUBLIC_URL_ENV, str(exc))]) from None


def normalise_host(name: str) -> str:
    """A host name or address as compared: lower case, no brackets, no trailing dot, IPv6 and
    IPv4-mapped addresses in their canonical form."""
    value = name.strip().strip("[]").lower().rstrip(".")
    try:
        addr = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return value
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


class OriginPolicy:
    """The allow-list of Host and Origin headers (see the module's docstring)."""

    def __init__(self, settings: ApiSettings, public_url: str | None = None) -> None:
        hosts: set[str] = set()
        listen = normalise_host(settings.host)
        if listen not in _WILDCARDS:
            hosts.add(listen)
        self.public_url = public_url if public_url is not None else settings.public_url
        if self.public_url:
            public_host = urlsplit(self.public_url).hostname
            if public_host:
                hosts.add(normalise_host(public_host))
        hosts.update(normalise_host(h) for h in settings.allowed_hosts)
        # What the operator named (the listen host, the front door, allowed_hosts)...
        self.declared = frozenset(hosts)
        # ...and the name this node publishes in the registry: its discovered scrapes carry it.
        self.hosts = self.declared | {normalise_host(settings.advertised_host())}
        self._cors = frozenset(o.strip().rstrip("/") for o in settings.cors_origins if o.strip())

    def host_allowed(self, host_header: str) -> bool:
        """True when a Host header (`name[:port]`) names an allowed host."""
        name = normalise_host(host_of(host_header))
        return is_loopback(name) or name in self.hosts

    def origin_allowed(self, origin: str) -> bool:
        """True when an Origin header is an allowed CORS origin or names an allowed host."""
        value = origin.strip().rstrip("/")
        if value in self._cors or "*" in self._cors:
            return True
        try:
            parts = urlsplit(value)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False  # "null" (sandboxed frames, file: pages) and anything odd
        name = normalise_host(parts.hostname)
        return is_loopback(name) or name in self.hosts

    def describe(self) -> list[str]:
        """The allowed hosts besides loopback, sorted (for messages and the start-up log)."""
        return sorted(self.hosts)


def allowed_hosts_hint(policy: OriginPolicy) -> str:
    """How to allow a host, naming what is allowed now."""
    allowed = ", ".join(["loopback", *policy.describe()])
    return (f"allowed hosts: {allowed}; add the name to api.allowed_hosts, or set api.public_url "
            f"({PUBLIC_URL_ENV}) to the front door's URL")
