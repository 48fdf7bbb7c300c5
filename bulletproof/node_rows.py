"""The node registry's rows in portable SQL (`?` placeholders): both stores keep nodes alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bulletproof.errors import NodeNotFound
from bulletproof.store import NodeInfo

# The columns in NodeInfo's order; `draining` is the one a heartbeat never writes.
NODE_COLUMNS: tuple[str, ...] = (
    "name", "instance", "host", "pid", "version", "workers", "busy", "started_at", "last_seen",
    "heartbeat_seconds", "draining", "stopped_at", "api_address")
_BEAT_COLUMNS = tuple(c for c in NODE_COLUMNS if c != "draining")

HEARTBEAT = (
    f"INSERT INTO nodes ({', '.join(_BEAT_COLUMNS)}) VALUES ({', '.join('?' * len(_BEAT_COLUMNS))}) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _BEAT_COLUMNS if c != "name"))
SET_DRAINING = "UPDATE nodes SET draining = ? WHERE name = ?"
FORGET = "DELETE FROM nodes WHERE name = ?"
_SELECT = f"SELECT {', '.join(NODE_COLUMNS)} FROM nodes"

Query = Callable[[str, Iterable[Any]], list[Any]]


def heartbeat_params(node: NodeInfo) -> tuple[Any, ...]:
    """The HEARTBEAT statement's parameters for `node`."""
    return tuple(getattr(node, c) for c in _BEAT_COLUMNS)


def node_from_row(row: Any) -> NodeInfo:
    """A registry row as a NodeInfo."""
    values = dict(zip(NODE_COLUMNS, row, strict=True))
    values["draining"] = bool(values["draining"])
    return NodeInfo(**values)


def read_nodes(query: Query) -> list[NodeInfo]:
    """Every node, by name."""
    return [node_from_row(r) for r in query(f"{_SELECT} ORDER BY name", ())]


def read_node(query: Query, name: str) -> NodeInfo:
    """One node by name (NodeNotFound when there is none)."""
    rows = query(f"{_SELECT} WHERE name = ?", (name,))
    if not rows:
        raise NodeNotFound(name)
    return node_from_row(rows[0])
