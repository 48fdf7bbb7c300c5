"""Config routes: read, validate (dry run), replace and reset the config; profiles; rule matching."""

from __future__ import annotations

import asyncio
import logging
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bulletproof.config import Config
from bulletproof.errors import ConfigError
from bulletproof.paths import is_within, relative_posix
from bulletproof.profiles import BUILTIN_PROFILES
from bulletproof.rules import rule_display_name
from exporter.api.errors import ApiError
from exporter.api.keys import context_of
from exporter.api.params import bad_param, int_param, query_one, read_json
from exporter.api.responses import ok
from exporter.api.schemas import (
    ConfigApplied,
    ConfigInfo,
    ConfigInvalid,
    ConfigValid,
    Issue,
    Profiles,
    RuleMatch,
)

if TYPE_CHECKING:
    from bulletproof.view import MonitorView

log = logging.getLogger(__name__)

CONFIG_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("bulletproof.config_lock", asyncio.Lock)


def config_json(config: Config) -> dict[str, Any]:
    """The effective config as JSON (paths as absolute strings, defaults filled in)."""
    return config.model_dump(mode="json")


def _issues(exc: ConfigError) -> list[Issue]:
    return [Issue(location=i.location, message=i.message) for i in exc.issues]


async def get_config(request: web.Request) -> web.Response:
    """The config in force and where it was loaded from."""
    view = context_of(request).view
    reload_ok, reload_at = view.config_status()
    return ok(ConfigInfo(
        path=str(view.config_path) if view.config_path else None,
        last_reload_ok=reload_ok,
        last_reload_success_at=reload_at,
        config=config_json(view.config),
    ))


async def _replace(request: web.Request, change: str, data: Any = None) -> web.Response:
    """Validate whole, pre-flight, write (keeping a .bak) and apply a new config, or the defaults of
    what the API may change; a ConfigError (422 with every issue) changes nothing."""
    context = context_of(request)
    async with request.app[CONFIG_LOCK]:
        path = context.view.config_path
        had_file = path is not None and path.exists()
        try:
            if change == "reset":
                await context.controls.reset_config()
            else:
                await context.controls.update_config(data)
        except OSError as exc:
            log.error("cannot write the config file", extra={"path": str(path), "error": str(exc)})
            raise ApiError(500, f"cannot write the config file: {exc.strerror or exc}",
                           code="config_write_failed", details={"path": str(path)}) from None
        # Measured against what the process runs on, so an earlier file edit still waiting shows.
        restart = context.view.restart_pending()
        applied = context.view.config
    backup = path.with_name(path.name + ".bak") if path is not None and had_file else None
    log.info("config %s through the API", "reset" if change == "reset" else "replaced",
             extra={"path": str(path), "restart_required": ",".join(restart)})
    return ok(ConfigApplied(
        applied=True,
        written=path is not None,
        path=str(path) if path is not None else None,
        backup=str(backup) if backup is not None else None,
        restart_required=restart,
        config=config_json(applied),
    ))


async def put_config(request: web.Request) -> web.Response:
    """Replace the whole config: validate, write atomically with a .bak, apply without restart."""
    data = await read_json(request)
    return await _replace(request, "update", data)


async def reset_config(request: web.Request) -> web.Response:
    """Back to the default config (same safety as PUT)."""
    return await _replace(request, "reset")


async def validate_config(request: web.Request) -> web.Response:
    """Dry run: 200 with `valid` and either the effective config or every problem found."""
    data = await read_json(request)
    try:
        config = context_of(request).controls.validate_config(data)
    except ConfigError as exc:
        return ok(ConfigInvalid(valid=False, errors=_issues(exc)))
    return ok(ConfigValid(valid=True, config=config_json(config)))


async def list_profiles(request: web.Request) -> web.Response:
    """Every profile (built-in and configured) with its settings."""
    config = context_of(request).view.config
    profiles = {}
    for name, profile in sorted(config.all_profiles().items()):
        data = profile.model_dump(mode="json")
        data["extension"] = profile.extension
        data["builtin"] = name in BUILTIN_PROFILES and name not in config.profiles
        data["used_by_rules"] = [rule_display_name(r, i) for i, r in enumerate(config.rules)
                                 if r.profile == name]
        profiles[name] = data
    return ok(Profiles(profiles=profiles))


def rel_path_for(view: MonitorView, raw: str) -> str:
    """The path as rules see it: relative, forward slashes; an absolute path must be inside a
    watch folder."""
    if "\\" in raw and "/" not in raw:
        raw = raw.replace("\\", "/")
    if Path(raw).is_absolute():
        for folder in view.config.monitor_folder:
            if is_within(Path(raw), folder.path) and Path(posixpath.normpath(raw)) != folder.path:
                return relative_posix(Path(raw), folder.path)
        raise ApiError(422, f"not inside a watch folder: {raw[:4096]}", code="invalid_path",
                       details={"path": raw[:4096]})
    rel = posixpath.normpath(raw)
    if rel in (".", "..") or rel.startswith("../"):
        raise bad_param("path", "must name a file inside a watch folder")
    return rel


async def match_rule(request: web.Request) -> web.Response:
    """Which rule and profile a file would get, and where its output would go."""
    raw = query_one(request, "path")
    if raw is None:
        raise bad_param("path", "required")
    if len(raw) > 4096:
        raise bad_param("path", "longer than 4096 characters")
    size = int_param(request, "size", -1, lo=0, hi=2**62) if query_one(request, "size") else None
    view = context_of(request).view
    rel = rel_path_for(view, raw)
    match = view.match(rel, size)
    if match is None:
        return ok(RuleMatch(matched=False, path=rel, size=size, rule=None, rule_index=None,
                            profile=None, priority=None, output_path=None))
    output = view.output_for(rel, match)
    return ok(RuleMatch(matched=True, path=rel, size=size, rule=match.rule_name,
                        rule_index=match.rule_index, profile=match.profile_name,
                        priority=match.priority, output_path=str(output)))


def add_routes(app: web.Application) -> None:
    """Register the config, profile and rule routes."""
    app[CONFIG_LOCK] = asyncio.Lock()
    r = app.router
    r.add_get("/api/v1/config", get_config)
    r.add_put("/api/v1/config", put_config)
    r.add_post("/api/v1/config/validate", validate_config)
    r.add_post("/api/v1/config/reset", reset_config)
    r.add_get("/api/v1/profiles", list_profiles)
    r.add_get("/api/v1/rules/match", match_rule)
