"""The exporter's own config section, `api`: its model, validated by the core as the section this
plugin owns (`ExporterPlugin.config_section`), and the accessor the exporter reads it with."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from bulletproof.config import Config, ConfigModel, resolve_config_path

#: The top-level key of monitor.yaml this plugin owns.
SECTION = "api"

_ROLE_ORDER = ("Viewer", "Editor", "Admin")
# A host name or an IP address, as `api.allowed_hosts` lists them (no scheme, no port).
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$")


class GrafanaAuth(ConfigModel):
    """Accept a Grafana session (forwarded by the same-origin proxy) in place of the token."""

    url: str | None = None
    min_role: Literal["Viewer", "Editor", "Admin"] = "Editor"
    config_role: Literal["Viewer", "Editor", "Admin"] = "Admin"
    cache_seconds: float = Field(default=10.0, ge=0, le=3600)

    @field_validator("config_role")
    @classmethod
    def _config_role_not_below_min_role(cls, value: str, info: ValidationInfo) -> str:
        # Changing the config can do everything a control can (and more): a lower bar for it
        # than for pressing Pause is always a mistake.
        min_role = info.data.get("min_role")
        if min_role in _ROLE_ORDER and _ROLE_ORDER.index(value) < _ROLE_ORDER.index(min_role):
            raise ValueError(f"{value} is below min_role ({min_role}): changing the config must "
                             f"need at least the role that controls the queue")
        return value


def check_public_url(value: str) -> str:
    """An http(s) URL with a host (the front door's URL); raises ValueError otherwise."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"not a URL: {value[:200]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {value[:200]!r}")
    return text


# `api.listen` hosts that bind every address: not an address another host can reach.
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})
_ADVERTISE_FORM = "must be host:port (a host name or IP address and a port; no scheme, no path)"


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def own_host_name() -> str:
    """This host's name as other hosts may know it: its fully qualified name, or its plain host
    name when the resolver knows it only as loopback (an /etc/hosts mapping it to 127.0.0.1)."""
    fqdn = socket.getfqdn()
    if fqdn.lower().rstrip(".") in _LOOPBACK_NAMES or fqdn.lower().startswith("localhost."):
        return socket.gethostname()
    return fqdn


def check_advertise_address(value: str) -> str:
    """A host:port others can reach this API on (IPv6 in brackets); raises ValueError otherwise."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    name = host[1:-1] if bracketed else host
    if not sep or not host or not port.isdigit() or len(port) > 5:
        raise ValueError(f"{_ADVERTISE_FORM}: {value[:200]!r}")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if bracketed or not _HOST_NAME.fullmatch(name):
            raise ValueError(f"{_ADVERTISE_FORM}: {value[:200]!r}") from None
    else:
        if address.version == 6 and not bracketed:
            raise ValueError(f"an IPv6 address goes in brackets ([{name}]:{port}): {value[:200]!r}")
        if address.is_unspecified:
            raise ValueError(f"{name} is not an address others can reach: give this node's host "
                             "name or IP address")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"the port must be 1 to 65535, not {port}")
    return text


class ApiSettings(ConfigModel):
    """The control API and /metrics server (served by the exporter plugin)."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1:8080", pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$")
    token_file: Path | None = None
    require_token_for_reads: bool = False
    cors_origins: list[str] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    public_url: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list, max_length=100)
    # Where others (Prometheus's service discovery) reach this API; default: from `listen`.
    advertise_address: str | None = None
    rate_limit_per_minute: int = Field(default=100, ge=1, le=1_000_000)
    auth_failures_per_minute: int = Field(default=100, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    grafana: GrafanaAuth = Field(default_factory=GrafanaAuth)
    config_roots: list[Path] | None = None

    @field_validator("config_roots")
    @classmethod
    def _resolve_roots(cls, value: list[Path] | None, info: ValidationInfo) -> list[Path] | None:
        return None if value is None else [resolve_config_path(root, info) for root in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else check_public_url(value)

    @field_validator("advertise_address")
    @classmethod
    def _advertise_address(cls, value: str | None) -> str | None:
        return None if value is None else check_advertise_address(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            name = item.strip().strip("[]").lower()
            try:
                ipaddress.ip_address(name)
            except ValueError:
                if not _HOST_NAME.fullmatch(name):
                    raise ValueError(f"not a host name or IP address (no scheme, no port): "
                                     f"{item[:100]!r}") from None
            out.append(name.rstrip("."))
        return out

    @field_validator("token_file")
    @classmethod
    def _resolve_token_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_config_path(value, info)

    @property
    def host(self) -> str:
        """Host part of `listen`, without IPv6 brackets."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of `listen`."""
        return int(self.listen.rsplit(":", 1)[1])

    def advertised_host(self) -> str:
        """The host others reach this API by: that of `advertise_address`, else the host
        `listen` binds (`own_host_name()` for a wildcard); no brackets."""
        if self.advertise_address is not None:
            return self.advertise_address.rsplit(":", 1)[0].strip("[]")
        return own_host_name() if self.host in _WILDCARDS else self.host

    def advertised(self, bound_port: int) -> str:
        """The host:port this node advertises: `advertise_address`, else `advertised_host()`
        and the port actually bound."""
        if self.advertise_address is not None:
            return self.advertise_address
        host = self.advertised_host()
        return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"


def api_settings(config: Config) -> ApiSettings:
    """The `api` section of a config the core validated (the defaults when the file has none)."""
    settings = getattr(config, SECTION, None)
    if not isinstance(settings, ApiSettings):
        raise TypeError("this config was not validated with the exporter's api section")
    return settings
