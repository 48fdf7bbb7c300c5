"""docs/configuration.md documents every config key the models accept."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bulletproof.config import WatchFolder, config_model
from bulletproof.profiles import Profile

DOC = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += keys(annotation, f"{path}.")
    return out


def test_every_top_level_and_nested_key_is_documented() -> None:
    missing = [k for k in keys(config_model()) if f"`{k}`" not in DOC]
    assert missing == []


def test_watch_folder_and_profile_keys_are_documented() -> None:
    missing = [k for k in keys(WatchFolder) + keys(Profile) if f"`{k}`" not in DOC]
    assert missing == []
