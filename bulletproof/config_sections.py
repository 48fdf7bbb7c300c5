"""Which top-level config sections the installed plugins own, and the model each validates with.

A plugin (an entry point in `PLUGIN_GROUP`) may declare `config_section` (a top-level key of
monitor.yaml) and `settings_model` (a pydantic model, best derived from
`bulletproof.config.ConfigModel`). The core validates that section with that model; a section no
plugin claims is an unknown key.
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points

from pydantic import BaseModel

log = logging.getLogger(__name__)

PLUGIN_GROUP = "bulletproof.plugins"


@functools.cache
def plugin_sections() -> dict[str, type[BaseModel]]:
    """Section name → settings model, for every installed plugin that declares one."""
    sections: dict[str, type[BaseModel]] = {}
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            factory = entry.load()
        except Exception:  # its section then reads as an unknown key: say why
            log.warning("plugin cannot be loaded; its config section is not known",
                        extra={"plugin": entry.name}, exc_info=True)
            continue
        name = getattr(factory, "config_section", None)
        model = getattr(factory, "settings_model", None)
        if not isinstance(name, str) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        if name in sections:
            log.warning("two plugins claim one config section; the first keeps it",
                        extra={"plugin": entry.name, "section": name})
            continue
        sections[name] = model
    return sections
