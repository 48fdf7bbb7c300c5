"""The plugin seam: plugins are found by entry point and get the Monitor (controls + view + events)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bulletproof.service import Monitor

log = logging.getLogger(__name__)

PLUGIN_GROUP = "bulletproof.plugins"
COMMAND_GROUP = "bulletproof.commands"


class Plugin(Protocol):
    """What a plugin offers: started after the monitor, stopped before it."""

    name: str

    async def start(self) -> None:
        """Begin serving (subscribe to events, open sockets)."""

    async def stop(self) -> None:
        """Stop serving and release what it holds."""


def load_plugins(monitor: Monitor, *, only: set[str] | None = None) -> list[Plugin]:
    """Instantiate every installed plugin (or those named in `only`) for this monitor."""
    plugins: list[Plugin] = []
    for entry in entry_points(group=PLUGIN_GROUP):
        if only is not None and entry.name not in only:
            continue
        try:
            factory = entry.load()
            plugins.append(factory(monitor))
        except Exception:  # a broken plugin is reported, the transcoder keeps running
            log.exception("plugin failed to load", extra={"plugin": entry.name})
            continue
        log.info("plugin loaded", extra={"plugin": entry.name})
    return plugins
