"""Writing a changed config back into the user's monitor.yaml, comments and formatting kept.

The current file is loaded in ruamel.yaml's round-trip mode and only the keys whose validated
value changes are replaced (recursively through mappings; lists are replaced whole). A key whose
value stays the same keeps its spelling: relative paths, `5` rather than `5.0`, its comments.
A key the new config leaves out while the file sets it to something else is removed (so its
default applies). When the current file cannot be read or is not a valid config, the new one is
written plainly.
"""

from __future__ import annotations

import io
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError as RoundTripError
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.util import load_yaml_guess_indent

from bulletproof.config import Config, config_to_yaml, parse_config_text
from bulletproof.errors import ConfigError

_MISSING = object()


def _child_type(annotation: Any, key: Any) -> Any:
    """The type of `key`'s value inside a value of type `annotation` (None when unknown)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(key))
        return None if field is None else field.annotation
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _compact(value: Any, annotation: Any) -> Any:
    """A value to write, without the keys that only repeat a default (what `config get` adds)."""
    if isinstance(value, Mapping):
        model = _model_of(annotation)
        out = CommentedMap()
        for key, item in value.items():
            field = model.model_fields.get(str(key)) if model is not None else None
            if field is not None and not field.is_required():
                default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
                if default is not PydanticUndefined and item == default:
                    continue
            out[key] = _compact(item, _child_type(annotation, key))
        return out
    if isinstance(value, list):
        return CommentedSeq(_compact(item, _child_type(annotation, i)) for i, item in enumerate(value))
    return value


def _last_entry(node: Any) -> tuple[Any, Any] | None:
    """The (container, key) of the last scalar in a block collection, where ruamel keeps the
    comment lines that follow the collection (those that precede the next key)."""
    while isinstance(node, (CommentedMap, CommentedSeq)) and len(node):
        key = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        child = node[key]
        if not (isinstance(child, (CommentedMap, CommentedSeq)) and len(child)):
            return node, key
        node = child
    return None


def _take_comment_after(node: Any) -> Any:
    """Remove and return the comment lines that follow a block collection."""
    found = _last_entry(node)
    if found is None:
        return None
    container, key = found
    entry = container.ca.items.get(key)
    slot = 2 if isinstance(container, CommentedMap) else 0
    if not entry or len(entry) <= slot:
        return None
    comment, entry[slot] = entry[slot], None
    return comment


def _set_comment_after(doc: CommentedMap, key: Any, value: Any, comment: Any) -> None:
    found = _last_entry(value)
    if found is None:  # a scalar or an empty collection: the comment follows the key's line
        entry = doc.ca.items.setdefault(key, [None, None, None, None])
        entry[2] = comment
        return
    container, last = found
    if isinstance(container, CommentedMap):
        container.ca.items[last] = [None, None, comment, None]
    else:
        container.ca.items[last] = [comment, None]


def _replace(doc: CommentedMap, key: Any, value: Any) -> None:
    """Set doc[key], keeping the comment lines that followed the old value (or, for a new last
    key, the mapping) in their place."""
    if key in doc:
        comment = _take_comment_after(doc[key])
    else:
        comment = _take_comment_after(doc)
    doc[key] = value
    if comment is not None:
        _set_comment_after(doc, key, value, comment)


def _apply_changes(doc: CommentedMap, data: Mapping[str, Any], old: Mapping[str, Any],
                   new: Mapping[str, Any], annotation: Any) -> None:
    """Edit `doc` (the file) so it says `data` where the validated `old` and `new` differ."""
    for key in list(doc):
        if key not in data and old.get(key, _MISSING) != new.get(key, _MISSING):
            del doc[key]
    for key, value in data.items():
        before, after = old.get(key, _MISSING), new.get(key, _MISSING)
        if before == after:
            continue  # same meaning: the file's own spelling (or its absence) stays
        current = doc.get(key)
        child = _child_type(annotation, key)
        if (isinstance(current, CommentedMap) and isinstance(value, Mapping)
                and isinstance(before, Mapping) and isinstance(after, Mapping)):
            _apply_changes(current, value, before, after, child)
        else:
            _replace(doc, key, _compact(value, child))


def _represent_null(representer: RoundTripRepresenter, _: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _mapping_indent(text: str) -> int:
    """Spaces before the first nested mapping key (2 when there is none)."""
    match = re.search(r"^[^\s#-][^\n]*:[ \t]*(?:#[^\n]*)?\n(?:[ \t]*(?:#[^\n]*)?\n)*( +)[^\s#-]",
                      text, re.MULTILINE)
    return len(match.group(1)) if match else 2


def _round_trip(text: str) -> tuple[YAML, Any]:
    _, _, block_seq_indent = load_yaml_guess_indent(text)
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap the user's long lines
    rt.representer.add_representer(type(None), _represent_null)
    indent = _mapping_indent(text)
    offset = block_seq_indent or 0
    rt.indent(mapping=indent, sequence=offset + 2, offset=offset)  # "- " then the item
    return rt, rt.load(text)


def updated_config_text(path: Path, data: Mapping[str, Any], new: Config) -> str:
    """The text to write to `path` for the validated config `new` given as `data`."""
    path = Path(path)
    try:
        current = path.read_text(encoding="utf-8")
        # Validated first: this also refuses an alias bomb before the round-trip loader.
        old = parse_config_text(current, base_dir=path.resolve().parent, source=path)
        rt, doc = _round_trip(current)
    except (OSError, UnicodeDecodeError, ConfigError, RoundTripError):
        return config_to_yaml(dict(data))
    if not isinstance(doc, CommentedMap):
        return config_to_yaml(dict(data))
    _apply_changes(doc, data, old.model_dump(), new.model_dump(), Config)
    out = io.StringIO()
    rt.dump(doc, out)
    return out.getvalue()
