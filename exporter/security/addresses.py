"""Network addresses of API requests: loopback checks, Host headers, X-Forwarded-For hops."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped), and the name "localhost"."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def host_of(host_header: str) -> str:
    """The host part of a Host header ("[::1]:8080" -> "::1", "localhost:80" -> "localhost")."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _ip(text: str) -> IPAddress | None:
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def trusted_networks(networks: Iterable[str]) -> list[IPNetwork]:
    """The networks whose X-Forwarded-For is believed (`api.trusted_proxies`)."""
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def _is_trusted(addr: IPAddress, trusted: list[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def client_address(request: web.Request, trusted: list[IPNetwork]) -> str:
    """The client's address: the peer, or from a trusted proxy the right-most untrusted hop of
    X-Forwarded-For.

    The chain is walked from the right, skipping trusted proxies: everything left of the first
    untrusted hop was written by that client and may be made up (a fresh address per request
    would give a client a fresh rate-limit and lockout budget each time).
    """
    peer = request.remote or "unknown"
    addr = _ip(peer)
    if addr is None or not _is_trusted(addr, trusted):
        return peer
    hops = [h for value in request.headers.getall("X-Forwarded-For", [])
            for h in value.split(",") if h.strip()]
    client = str(addr)
    for hop in reversed(hops):
        hop_addr = _ip(hop)
        if hop_addr is None:
            break
        client = str(hop_addr)
        if not _is_trusted(hop_addr, trusted):
            break
    return client
