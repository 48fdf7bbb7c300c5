"""The owners of the monitor's run-time state: one object per piece, written by the monitor, read
by the worker pool and the view (nobody keeps a copy).

- `QueueState`: whether the queue is paused and since when (persisted through the store).
- `ConfigState`: the config in force (and its compiled rules), the one the process started
  with, and how the last reload went.
- `Lifecycle`: when the monitor started.
"""

from __future__ import annotations

import time
from pathlib import Path

from bulletproof.config import Config
from bulletproof.config_policy import restart_required
from bulletproof.rules import RuleMatcher
from bulletproof.store import JobStore

_PAUSED = "queue_paused"
_PAUSED_SINCE = "queue_paused_since"


class QueueState:
    """Whether the queue is paused: kept in the store's meta table, so a restart keeps it (and,
    on a shared store, every node follows it: `refresh`)."""

    KEYS = frozenset({_PAUSED, _PAUSED_SINCE})  # the meta keys whose change `refresh` follows

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self.paused_since: float | None = None
        if store.get_meta(_PAUSED) == "1":
            self.paused_since = float(store.get_meta(_PAUSED_SINCE) or time.time())

    @property
    def paused(self) -> bool:
        """True while no new job is started."""
        return self.paused_since is not None

    def pause(self) -> bool:
        """Pause (persisted first: a store error changes nothing); False when already paused."""
        if self.paused_since is not None:
            return False
        since = time.time()
        self._store.set_meta(_PAUSED_SINCE, repr(since))
        self._store.set_meta(_PAUSED, "1")
        self.paused_since = since
        return True

    def resume(self) -> bool:
        """Resume (persisted first); False when not paused."""
        if self.paused_since is None:
            return False
        self._store.set_meta(_PAUSED, "0")
        self.paused_since = None
        return True

    def refresh(self) -> bool:
        """Read the pause state from the store, where another node of a shared store may have
        changed it; True when it changed here."""
        paused = self._store.get_meta(_PAUSED) == "1"
        if paused == self.paused:
            return False
        self.paused_since = float(self._store.get_meta(_PAUSED_SINCE) or time.time()) if paused else None
        return True


class ConfigState:
    """The config in force and the one this process started with (restart-only keys keep it)."""

    def __init__(self, config: Config, path: Path | None) -> None:
        self.current = config
        self.rules = RuleMatcher(config)
        self.startup = config
        self.path = path
        self.last_reload_ok = True
        self.last_reload_success_at: float | None = time.time()

    def restart_pending(self) -> list[str]:
        """Restart-only keys whose value in force differs from the one the process started with."""
        return restart_required(self.startup, self.current)

    def applied(self, config: Config) -> None:
        """A new config is in force."""
        self.current = config
        self.rules = RuleMatcher(config)
        self.last_reload_ok = True
        self.last_reload_success_at = time.time()

    def reload_failed(self) -> None:
        """A reload was rejected; the config in force stays."""
        self.last_reload_ok = False


class Lifecycle:
    """When the monitor started (None before it has)."""

    def __init__(self) -> None:
        self.started_at: float | None = None
