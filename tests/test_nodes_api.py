"""The fleet routes against a real monitor on a real socket: the nodes in the status and in
GET /api/v1/nodes, drain and undrain, forgetting a node, the Prometheus service discovery list
and the address the exporter advertises (api.advertise_address)."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bulletproof.config import load_config
from bulletproof.errors import ConfigError
from bulletproof.store import NodeInfo
from exporter.plugin import ExporterPlugin
from exporter.security.origins import OriginPolicy
from exporter.settings import ApiSettings, own_host_name
from tests.api_fixtures import TEST_API, Api, api_factory_fixture  # noqa: F401 (fixtures)
from tests.conftest import until, write_config
from tests.test_api import assert_error

FAST = {"heartbeat_seconds": 1, "lease_seconds": 5}
NODE_FIELDS = {"name", "host", "version", "workers", "busy", "started_at", "last_seen", "alive",
               "draining", "stopped_at", "api_address"}


async def fleet_api(api_factory, name: str = "alpha", **overrides: Any) -> Api:
    return await api_factory(node_name=name, fleet=FAST, **overrides)


def other_node(api: Api, name: str, *, stopped: bool = False, age: float = 0.0,
               api_address: str | None = "127.0.0.1:9") -> NodeInfo:
    """Write another node's registry row into the monitor's store (as its heartbeat would)."""
    now = time.time() - age
    node = NodeInfo(name=name, instance=f"{name}-run", host="elsewhere", pid=4242,
                    version="9.9", workers=3, busy=1, started_at=now - 60, last_seen=now,
                    heartbeat_seconds=1.0, stopped_at=now if stopped else None,
                    api_address=api_address)
    return api.monitor.store.heartbeat(node)


# -- the nodes in the status and in GET /api/v1/nodes -------------------------------------------


async def test_a_single_monitor_lists_itself_in_the_status_and_the_nodes(api_factory) -> None:
    api = await fleet_api(api_factory, max_workers=2)
    status, body = await api.get("/api/v1/status")
    assert status == 200 and body["node"] == "alpha"
    [me] = body["nodes"]
    assert set(me) == NODE_FIELDS
    assert (me["name"], me["workers"], me["busy"], me["alive"], me["draining"], me["stopped_at"],
            me["version"]) == ("alpha", 2, 0, True, False, None, api.monitor.version)
    assert me["host"] == socket.gethostname()
    status, listed = await api.get("/api/v1/nodes")
    assert status == 200 and listed["node"] == "alpha"
    assert [n["name"] for n in listed["nodes"]] == ["alpha"]


async def test_other_nodes_are_listed_alive_gone_or_stopped(api_factory) -> None:
    api = await fleet_api(api_factory)
    other_node(api, "beta")
    other_node(api, "gamma", age=30)  # no heartbeat for 30 beats: gone
    other_node(api, "delta", stopped=True)
    _, body = await api.get("/api/v1/nodes")
    by_name = {n["name"]: n for n in body["nodes"]}
    assert list(by_name) == ["alpha", "beta", "delta", "gamma"]
    assert {name: n["alive"] for name, n in by_name.items()} == {
        "alpha": True, "beta": True, "delta": False, "gamma": False}
    assert by_name["beta"]["api_address"] == "127.0.0.1:9" and by_name["beta"]["busy"] == 1
    assert by_name["delta"]["stopped_at"] is not None


# -- drain, undrain --------------------------------------------------------------------------


async def test_drain_and_undrain_a_node_through_the_api(api_factory) -> None:
    api = await fleet_api(api_factory)
    other_node(api, "beta")
    status, node = await api.post("/api/v1/nodes/beta/drain")
    assert status == 200 and set(node) == NODE_FIELDS
    assert (node["name"], node["draining"], node["host"]) == ("beta", True, "elsewhere")
    assert not api.monitor.view.draining  # another node's drain leaves this one taking jobs
    status, node = await api.post("/api/v1/nodes/alpha/drain")
    assert status == 200 and node["name"] == "alpha" and node["draining"] is True
    assert api.monitor.view.draining  # this node follows at once
    _, body = await api.get("/api/v1/status")
    assert [(n["name"], n["draining"]) for n in body["nodes"]] == [("alpha", True), ("beta", True)]
    status, node = await api.post("/api/v1/nodes/alpha/undrain")
    assert status == 200 and node["draining"] is False and not api.monitor.view.draining
    actions = [e.action for e in api.monitor.view.audit_entries(limit=10)]
    assert actions == ["node.undrain", "node.drain", "node.drain"]


async def test_an_unknown_node_is_404_with_the_stores_message(api_factory) -> None:
    api = await fleet_api(api_factory)
    for path in ("/api/v1/nodes/nobody/drain", "/api/v1/nodes/nobody/undrain"):
        status, body = await api.post(path)
        error = assert_error(status, body, 404, "node_not_found")
        assert error["message"] == "no node named 'nobody' is known to the job store"
        assert error["details"] == {"name": "nobody"}
    status, body = await api.call("DELETE", "/api/v1/nodes/nobody")
    assert assert_error(status, body, 404, "node_not_found")["message"] == (
        "no node named 'nobody' is known to the job store")


HOSTILE_NAMES = ["'; DROP TABLE nodes; --", "alpha' OR '1'='1", "-alpha", ".hidden", "a" * 64,
                 "al pha", "alpha\x00", "ålpha", "alpha\n", "%2e%2e"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_hostile_node_name_is_400_and_changes_nothing(api_factory, name: str) -> None:
    api = await fleet_api(api_factory)
    for method, suffix in (("POST", "/drain"), ("POST", "/undrain"), ("DELETE", "")):
        status, body = await api.call(method, f"/api/v1/nodes/{quote(name, safe='')}{suffix}")
        error = assert_error(status, body, 400, "invalid_node_name")
        assert error["message"].startswith("invalid node name ")
        assert error["message"].endswith(": must be 1 to 63 letters, digits, '.', '_' or '-', "
                                         "starting with a letter or digit")
    nodes = api.monitor.view.nodes()  # the table is there, the row untouched
    assert [(n.name, n.draining) for n in nodes] == [("alpha", False)]


# -- forget ----------------------------------------------------------------------------------


async def test_forget_refuses_a_running_node_and_removes_a_gone_one(api_factory) -> None:
    api = await fleet_api(api_factory)
    status, body = await api.call("DELETE", "/api/v1/nodes/alpha")
    error = assert_error(status, body, 409, "node_running")
    assert error["message"] == "node 'alpha' is running; stop it first"
    other_node(api, "beta")
    status, body = await api.call("DELETE", "/api/v1/nodes/beta")
    assert status == 409 and body["error"]["message"] == "node 'beta' is running; stop it first"
    other_node(api, "gone", age=30)
    other_node(api, "retired", stopped=True)
    for name in ("gone", "retired"):
        assert (await api.call("DELETE", f"/api/v1/nodes/{name}"))[0] == 204
    assert [n.name for n in api.monitor.view.nodes()] == ["alpha", "beta"]
    assert (await api.call("DELETE", "/api/v1/nodes/retired"))[0] == 404
    actions = [e.action for e in api.monitor.view.audit_entries(limit=10)]
    assert actions == ["node.forget"] * 5


# -- Prometheus HTTP service discovery -------------------------------------------------------


async def test_sd_is_an_empty_list_when_no_node_advertises(api_factory) -> None:
    api = await fleet_api(api_factory)  # the app without the plugin: nothing advertised
    other_node(api, "quiet", api_address=None)
    async with api.client.get("/api/v1/sd") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await resp.json() == []


async def test_sd_lists_each_alive_node_that_advertises_its_api(config_factory,
                                                                monitor_factory) -> None:
    config, path = config_factory(node_name="alpha", fleet=FAST, api=dict(TEST_API))
    monitor = await monitor_factory(config, path)
    plugin = ExporterPlugin(monitor.context())
    await plugin.start()
    try:
        now = time.time()
        base = NodeInfo(name="", instance="x", host="elsewhere", pid=1, version="9.9", workers=1,
                        busy=0, started_at=now, last_seen=now, heartbeat_seconds=1.0,
                        api_address="10.0.0.7:8080")
        monitor.store.heartbeat(replace(base, name="beta"))
        monitor.store.heartbeat(replace(base, name="stopped", stopped_at=now))
        monitor.store.heartbeat(replace(base, name="gone", last_seen=now - 30))
        monitor.store.heartbeat(replace(base, name="no-api", api_address=None))
        monitor.drain_node("beta")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{plugin.url}/api/v1/sd") as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                groups = await resp.json()
        assert groups == [
            {"targets": [f"127.0.0.1:{plugin.port}"],
             "labels": {"__meta_bulletproof_node": "alpha", "__meta_bulletproof_host": socket.gethostname(),
                        "__meta_bulletproof_version": monitor.version,
                        "__meta_bulletproof_draining": "false"}},
            {"targets": ["10.0.0.7:8080"],
             "labels": {"__meta_bulletproof_node": "beta", "__meta_bulletproof_host": "elsewhere",
                        "__meta_bulletproof_version": "9.9",
                        "__meta_bulletproof_draining": "true"}},
        ]
    finally:
        await plugin.stop()


async def test_the_advertised_address_is_the_configured_one(config_factory,
                                                            monitor_factory) -> None:
    config, path = config_factory(node_name="alpha", fleet=FAST,
                                  api={**TEST_API, "advertise_address": "encoder-1.example.net:8443"})
    monitor = await monitor_factory(config, path)
    plugin = ExporterPlugin(monitor.context())
    await plugin.start()
    try:
        # In the registry at once, not a heartbeat later.
        assert monitor.view.nodes()[0].api_address == "encoder-1.example.net:8443"
        async with aiohttp.ClientSession() as session:  # a discovered scrape names that host
            for host, expected in (("encoder-1.example.net:8443", 200), ("elsewhere.example", 421)):
                async with session.get(f"{plugin.url}/metrics", headers={"Host": host}) as resp:
                    assert resp.status == expected, host
    finally:
        await plugin.stop()


def test_the_default_advertised_address_follows_listen() -> None:
    fqdn = own_host_name()
    assert fqdn not in ("localhost", "") and fqdn in (socket.getfqdn(), socket.gethostname())
    assert ApiSettings(listen="127.0.0.1:0").advertised(41234) == "127.0.0.1:41234"
    assert ApiSettings(listen="[::1]:8080").advertised(8080) == "[::1]:8080"
    assert ApiSettings(listen="encoder-1.lan:8080").advertised(8080) == "encoder-1.lan:8080"
    assert ApiSettings(listen="0.0.0.0:8080").advertised(8080) == f"{fqdn}:8080"
    assert ApiSettings(listen="[::]:8080").advertised(8081) == f"{fqdn}:8081"
    assert ApiSettings(listen="0.0.0.0:8080",
                       advertise_address="10.1.2.3:80").advertised(8080) == "10.1.2.3:80"


@pytest.mark.parametrize("value,message", [
    ("encoder-1", "must be host:port (a host name or IP address and a port; no scheme, no path): "
                  "'encoder-1'"),
    ("http://encoder-1:8080", "must be host:port (a host name or IP address and a port; no "
                              "scheme, no path): 'http://encoder-1:8080'"),
    ("encoder-1:8080/metrics", "must be host:port (a host name or IP address and a port; no "
                               "scheme, no path): 'encoder-1:8080/metrics'"),
    ("encoder-1:0", "the port must be 1 to 65535, not 0"),
    ("encoder-1:70000", "the port must be 1 to 65535, not 70000"),
    ("0.0.0.0:8080", "0.0.0.0 is not an address others can reach: give this node's host name or "
                     "IP address"),
    ("[::]:8080", ":: is not an address others can reach: give this node's host name or IP "
                  "address"),
    ("fd00::1:8080", "an IPv6 address goes in brackets ([fd00::1]:8080): 'fd00::1:8080'"),
])
def test_a_bad_advertise_address_is_refused_with_its_reason(tmp_path, value: str,
                                                            message: str) -> None:
    path = write_config(tmp_path, api={"listen": "127.0.0.1:0", "advertise_address": value})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [(i.location, i.message) for i in caught.value.issues] == [
        ("api.advertise_address", message)]


# -- across nodes on one PostgreSQL store ----------------------------------------------------


async def test_one_nodes_api_drains_and_forgets_another_node(api_factory, monitor_factory,
                                                             postgres_url: str, tmp_path) -> None:
    api = await fleet_api(api_factory, database=postgres_url)
    beta = await monitor_factory(load_config(write_config(
        tmp_path / "beta", node_name="beta", fleet=FAST, database=postgres_url)))
    _, body = await api.get("/api/v1/status")
    assert [(n["name"], n["alive"]) for n in body["nodes"]] == [("alpha", True), ("beta", True)]
    status, node = await api.post("/api/v1/nodes/beta/drain")
    assert status == 200 and node["draining"] is True
    await until(lambda: beta.view.draining, timeout=10)  # beta follows (notification or beat)
    assert not api.monitor.view.draining
    status, body = await api.call("DELETE", "/api/v1/nodes/beta")
    assert status == 409 and body["error"]["message"] == "node 'beta' is running; stop it first"
    await beta.stop()
    _, body = await api.get("/api/v1/nodes")
    [gone] = [n for n in body["nodes"] if n["name"] == "beta"]
    assert gone["alive"] is False and gone["stopped_at"] is not None and gone["draining"] is True
    assert (await api.call("DELETE", "/api/v1/nodes/beta"))[0] == 204
    assert [n["name"] for n in (await api.get("/api/v1/nodes"))[1]["nodes"]] == ["alpha"]


def test_the_advertised_host_is_one_the_api_answers_for() -> None:
    explicit = OriginPolicy(ApiSettings(listen="127.0.0.1:0",
                                        advertise_address="encoder-1.example.net:8443"))
    assert explicit.host_allowed("encoder-1.example.net:8443")  # Prometheus scrapes it so
    assert not explicit.host_allowed("encoder-2.example.net:8443")
    wildcard = OriginPolicy(ApiSettings(listen="0.0.0.0:8080"))
    assert wildcard.host_allowed(f"{own_host_name()}:8080")
    assert not wildcard.host_allowed("0.0.0.0:8080") and not wildcard.host_allowed("evil.example")
