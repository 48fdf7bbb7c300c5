"""Running a monitor with its plugins until a signal stops it (used by `run` and `demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from bulletproof.config import Config
from bulletproof.errors import ConfigError, PluginError
from bulletproof.plugins import Plugin, load_plugins
from bulletproof.service import Monitor

log = logging.getLogger(__name__)


async def serve(config: Config, *, config_path: Path | None, with_plugins: bool = True,
                until: Callable[[Monitor], Awaitable[None]] | None = None,
                on_started: Callable[[Monitor], None] | None = None) -> Monitor:
    """Start a monitor and its plugins, run until SIGINT/SIGTERM (or `until` returns), stop cleanly.

    The order makes a failed start change nothing: the monitor's constructor takes the lock on
    the state database and checks it, the output folder is locked, the plugins bind their
    ports, and only then does `Monitor.start` recover interrupted jobs, delete stale
    temporaries and start workers.
    """
    monitor = Monitor(config, config_path=config_path)
    try:
        monitor.lock_output_folder()
    except BaseException:
        await monitor.stop()
        raise
    loop = asyncio.get_running_loop()
    plugins: list[Plugin] = []
    # Before anything starts: a SIGTERM during start-up is a clean stop, not a kill.
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, monitor.request_stop)
    try:
        if with_plugins:
            plugins = load_plugins(monitor.context())
            for plugin in plugins:
                try:
                    await plugin.start()
                except OSError as exc:  # typically the API's address is taken or not ours
                    raise PluginError(f"plugin {plugin.name!r} cannot start: {exc.strerror or exc}",
                                      plugin=plugin.name) from None
        await monitor.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(monitor)))
        if on_started is not None:
            on_started(monitor)
        waiters = [asyncio.ensure_future(monitor.wait_stopped())]
        if until is not None:
            waiters.append(asyncio.ensure_future(until(monitor)))
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        for plugin in reversed(plugins):
            try:
                await plugin.stop()
            except Exception:
                log.exception("plugin failed to stop", extra={"plugin": plugin.name})
        await monitor.stop()
    return monitor


async def _reload(monitor: Monitor) -> None:
    with contextlib.suppress(ConfigError):  # logged and published by the monitor
        await monitor.reload_config()
