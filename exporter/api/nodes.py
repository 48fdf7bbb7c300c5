"""The fleet's routes: the nodes of the job store, draining one, forgetting a gone one, and the
Prometheus HTTP service discovery list of every alive node's API."""

from __future__ import annotations

import re
import time

from aiohttp import web

from bulletproof.config import NODE_NAME_PATTERN
from bulletproof.store import NodeInfo
from exporter.api.errors import ApiError
from exporter.api.keys import context_of
from exporter.api.responses import dumps, ok
from exporter.api.schemas import SdTargetGroup, node_model
from exporter.api.shapes import nodes_answer

NODE = "/api/v1/nodes/{name}"
_NAME = re.compile(NODE_NAME_PATTERN)
# The message of an invalid name: what config.node_name accepts.
NAME_RULE = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"


def node_name_of(request: web.Request) -> str:
    """The `{name}` path segment, a valid node_name (400 `invalid_node_name` otherwise)."""
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise ApiError(400, f"invalid node name {name[:80]!r}: must be {NAME_RULE}",
                       code="invalid_node_name", details={"name": name[:80]})
    return name


async def list_nodes(request: web.Request) -> web.Response:
    """Every node of the job store, by name (this one included), and this node's name."""
    return ok(nodes_answer(context_of(request).view, time.time()))


async def drain_node(request: web.Request) -> web.Response:
    """Let a node finish its running jobs and take no new ones (survives its restarts)."""
    node = context_of(request).controls.drain_node(node_name_of(request), True)
    return ok(node_model(node, time.time()))


async def undrain_node(request: web.Request) -> web.Response:
    """Let a draining node take jobs again."""
    node = context_of(request).controls.drain_node(node_name_of(request), False)
    return ok(node_model(node, time.time()))


async def forget_node(request: web.Request) -> web.Response:
    """Remove a node that is not alive from the registry (409 while it runs)."""
    context_of(request).controls.forget_node(node_name_of(request))
    return web.Response(status=204)


def sd_group(node: NodeInfo) -> SdTargetGroup:
    """A node's target group for Prometheus's HTTP service discovery."""
    assert node.api_address is not None
    return SdTargetGroup(targets=[node.api_address], labels={
        # Meta labels only: a `node` target label would clash with the `node` label of the
        # registry metrics every node exports (Prometheus would rename those `exported_node`).
        "__meta_bulletproof_node": node.name,
        "__meta_bulletproof_host": node.host,
        "__meta_bulletproof_version": node.version,
        "__meta_bulletproof_draining": "true" if node.draining else "false",
    })


async def service_discovery(request: web.Request) -> web.Response:
    """Prometheus HTTP SD: one target group per alive node that advertises its API address."""
    now = time.time()
    groups = [sd_group(n).model_dump(mode="json") for n in context_of(request).view.nodes()
              if n.alive(now) and n.api_address]
    return web.Response(text=dumps(groups), content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register the fleet routes."""
    r = app.router
    r.add_get("/api/v1/nodes", list_nodes)
    r.add_post(NODE + "/drain", drain_node)
    r.add_post(NODE + "/undrain", undrain_node)
    r.add_delete(NODE, forget_node)
    r.add_get("/api/v1/sd", service_discovery)
