"""The exporter plugin: found through the entry point, binds, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest

from bulletproof.plugins import load_plugins
from exporter.plugin import ExporterPlugin
from tests.api_fixtures import TEST_API


async def test_the_plugin_loads_through_the_entry_point_binds_serves_and_stops(
        config_factory, monitor_factory, caplog) -> None:
    config, path = config_factory(api=dict(TEST_API))
    monitor = await monitor_factory(config, path)
    plugins = load_plugins(monitor.context(), only={"exporter"})
    assert len(plugins) == 1
    plugin = plugins[0]
    assert isinstance(plugin, ExporterPlugin) and plugin.name == "exporter"

    with caplog.at_level(logging.INFO):
        await plugin.start()
    try:
        assert plugin.port and plugin.port != 0  # the port actually bound (config asks for 0)
        assert plugin.url == f"http://127.0.0.1:{plugin.port}"
        messages = [r.getMessage() for r in caplog.records]
        assert "api listening" in messages
        assert any("no API token configured" in m for m in messages)  # the security warning
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{plugin.url}/healthz") as resp:
                assert resp.status == 200 and await resp.json() == {"status": "ok"}
            async with session.get(f"{plugin.url}/api/v1/status") as resp:
                assert resp.status == 200 and (await resp.json())["workers"]["max"] == 1
            async with session.ws_connect(f"{plugin.url}/ws/updates") as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
                await plugin.stop()  # with a client still connected
                msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.CLOSING)
    finally:
        await plugin.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{plugin.url}/healthz"):
                pass
    monitor.pause_queue()  # the bus has no stale subscriber from the stopped app
    await asyncio.sleep(0)


async def test_a_port_in_use_fails_start_and_releases_everything(config_factory,
                                                                 monitor_factory) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config, path = config_factory(api={**TEST_API, "listen": f"127.0.0.1:{port}"})
        monitor = await monitor_factory(config, path)
        plugin = ExporterPlugin(monitor.context())
        with pytest.raises(OSError):
            await plugin.start()
        assert plugin.port is None
        await plugin.stop()


async def test_the_token_from_the_environment_guards_mutating_calls(
        config_factory, monitor_factory, monkeypatch, caplog) -> None:
    monkeypatch.setenv("BULLETPROOF_API_TOKEN", "s3cret-token-for-tests-0123456789")
    config, path = config_factory(api=dict(TEST_API))
    monitor = await monitor_factory(config, path)
    plugin = ExporterPlugin(monitor.context())
    caplog.set_level(logging.INFO, logger="exporter")
    await plugin.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{plugin.url}/api/v1/queue/pause") as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"]
            headers = {"Authorization": "Bearer s3cret-token-for-tests-0123456789"}
            async with session.post(f"{plugin.url}/api/v1/queue/pause", headers=headers) as resp:
                assert resp.status == 200 and (await resp.json())["paused"] is True
            async with session.get(f"{plugin.url}/api/v1/status") as resp:
                assert resp.status == 200  # reads stay open by default
    finally:
        await plugin.stop()
    audit = [(r.status, r.principal) for r in caplog.records if r.getMessage() == "api call"]
    assert audit == [(401, None), (200, "token")]
    assert not any("s3cret" in r.getMessage() + str(r.__dict__) for r in caplog.records)
