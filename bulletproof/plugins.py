"""The plugin seam: plugins are found by entry point and get a `PluginContext`, never the Monitor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol

from bulletproof.config_sections import PLUGIN_GROUP
from bulletproof.controls import Controls
from bulletproof.events import EventBus
from bulletproof.view import MonitorView

log = logging.getLogger(__name__)

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
    """Instantiate every installed plugin (or those named in `only`) with this context.

    A plugin whose config section says `enabled: false` is left out.
    """
    plugins: list[Plugin] = []
    for entry in entry_points(group=PLUGIN_GROUP):
        if only is not None and entry.name not in only:
            continue
        try:
            factory: PluginFactory = entry.load()
            if not _enabled(factory, context):
                log.info("plugin disabled by its config section", extra={"plugin": entry.name})
                continue
            plugins.append(factory(context))
        except Exception:  # a broken plugin is reported, the transcoder keeps running
            log.exception("plugin failed to load", extra={"plugin": entry.name})
            continue
        log.info("plugin loaded", extra={"plugin": entry.name})
    return plugins


def _enabled(factory: PluginFactory, context: PluginContext) -> bool:
    section = getattr(factory, "config_section", None)
    settings = getattr(context.view.config, section, None) if isinstance(section, str) else None
    return getattr(settings, "enabled", True) is not False
