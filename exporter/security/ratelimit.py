"""Rate limits of the control API: token buckets, and the keys requests are charged to.

A request is charged to its authenticated identity per route (`identity_key`), else to its
client address per route (`address_key`); failed authentication attempts also spend from one
bucket per address across all routes (`failures_key`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from aiohttp import web

from exporter.api.errors import json_error

Clock = Callable[[], float]

_FAILURES_ROUTE = "*"
_MAX_BUCKETS = 50_000


class RateLimiter:
    """Token buckets keyed by (client, route): a burst of `per_minute`, refilled at `per_minute`
    per minute. Buckets untouched for a minute are full again and are dropped; the number of
    buckets is capped (least recently used first out), so memory stays bounded."""

    def __init__(self, per_minute: int, *, clock: Clock = time.monotonic,
                 max_buckets: int = _MAX_BUCKETS) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: Hashable, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.capacity
        return min(self.capacity, bucket[0] + max(0.0, now - bucket[1]) * self.rate)

    def _store(self, key: Hashable, level: float, now: float) -> None:
        self._buckets[key] = [level, now]
        self._buckets.move_to_end(key)

    def _expire(self, now: float) -> None:
        idle = self.capacity / self.rate  # seconds for an empty bucket to fill up
        while self._buckets:
            key, (_, stamp) = next(iter(self._buckets.items()))
            if now - stamp < idle and len(self._buckets) < self._max:  # room for one more
                break
            self._buckets.popitem(last=False)

    def take(self, key: Hashable) -> float:
        """Spend one request; 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        self._expire(now)
        level = self._level(key, now)
        if level >= 1.0:
            self._store(key, level - 1.0, now)
            return 0.0
        self._store(key, level, now)
        return (1.0 - level) / self.rate

    def refund(self, key: Hashable) -> None:
        """Give back one request taken by `take` (a reservation that turned out not to count)."""
        if key in self._buckets:
            now = self._clock()
            self._store(key, min(self.capacity, self._level(key, now) + 1.0), now)


def route_key(request: web.Request) -> str:
    """The matched route's canonical path, or the raw path when nothing matched."""
    resource = getattr(request.match_info.route, "resource", None)
    canonical = getattr(resource, "canonical", None) if resource is not None else None
    return canonical if isinstance(canonical, str) else request.path


def address_key(address: str, route: str) -> tuple[str, str, str]:
    """The bucket of an unauthenticated client address on one route."""
    return ("addr", address, route)


def identity_key(rate_key: str, route: str) -> tuple[str, str, str]:
    """The bucket of an authenticated identity (`Principal.rate_key`) on one route."""
    return ("id", rate_key, route)


def failures_key(address: str) -> tuple[str, str, str]:
    """The bucket of failed authentication attempts from one address, across all routes."""
    return ("failed", address, _FAILURES_ROUTE)


def too_many(wait: float, per_minute: int, message: str | None = None) -> web.Response:
    """The 429 response for a request that must wait `wait` seconds (Retry-After rounded up)."""
    seconds = max(1, math.ceil(wait))
    return json_error(
        429, message or f"rate limit exceeded: {per_minute} requests per minute per client and route",
        details={"retry_after_seconds": seconds, "limit_per_minute": per_minute},
        headers={"Retry-After": str(seconds)})
