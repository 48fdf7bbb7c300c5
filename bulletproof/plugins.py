"""The plugin seam: plugins are found by entry point and get a `PluginContext`, never the Monitor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

from bulletproof.controls import Controls
from bulletproof.events import EventBus
from bulletproof.view import MonitorView

log = logging.getLogger(__name__)

PLUGIN_GROUP = "bulletproof.plugins"
COMMAND_GROUP = "bulletproof.commands"


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a plugin may use: the events, a read-only view of the state, and the controls."""

    bus: EventBus
    view: MonitorView
    controls: Controls


class Plugin(Protocol):
    """What a plugin offers: started after the monitor, stopped before it."""

    name: str

    async def start(self) -> None:
        """Begin serving (subscribe to events, open sockets)."""

    async def stop(self) -> None:
        """Stop serving and release what it holds."""


PluginFactory = Callable[[PluginContext], Plugin]


def load_plugins(context: PluginContext, *, only: set[str] | None = None) -> list[Plugin]:
    """Instantiate every installed plugin (or those named in `only`) with this context."""
    plugins: list[Plugin] = []
    for entry in entry_points(group=PLUGIN_GROUP):
        if only is not None and entry.name not in only:
            continue
        try:
            factory: PluginFactory = entry.load()
            plugins.append(factory(context))
        except Exception:  # a broken plugin is reported, the transcoder keeps running
            log.exception("plugin failed to load", extra={"plugin": entry.name})
            continue
        log.info("plugin loaded", extra={"plugin": entry.name})
    return plugins
