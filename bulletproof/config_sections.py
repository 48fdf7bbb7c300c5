"""Which top-level config sections the installed plugins own, and the model each validates with.

A plugin package registers its section in the entry-point group `SECTION_GROUP`: the entry point's
name is the top-level key of monitor.yaml, its value a pydantic model (best derived from
`bulletproof.config.ConfigModel`). The core validates that section with that model; a section no
plugin claims is an unknown key. A group of its own, apart from the plugins', so that reading a
config loads the settings models only, never a plugin's server.
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points

from pydantic import BaseModel

log = logging.getLogger(__name__)

PLUGIN_GROUP = "bulletproof.plugins"
SECTION_GROUP = "bulletproof.config_sections"


@functools.cache
def plugin_sections() -> dict[str, type[BaseModel]]:
    """Section name → settings model, for every installed plugin that declares one."""
    sections: dict[str, type[BaseModel]] = {}
    for entry in entry_points(group=SECTION_GROUP):
        try:
            model = entry.load()
        except Exception:  # the section then reads as an unknown key: say why
            log.warning("a config section's model cannot be loaded; the section is not known",
                        extra={"section": entry.name, "model": entry.value}, exc_info=True)
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            log.warning("a config section's entry point is not a pydantic model; ignored",
                        extra={"section": entry.name, "model": entry.value})
            continue
        if entry.name in sections:
            log.warning("two plugins claim one config section; the first keeps it",
                        extra={"section": entry.name, "model": entry.value})
            continue
        sections[entry.name] = model
    return sections
