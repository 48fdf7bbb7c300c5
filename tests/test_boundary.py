"""The plugin boundary: the core never loads prometheus_client or aiohttp."""

from __future__ import annotations

import json
import subprocess
import sys

CORE_MODULES = [
    "bulletproof", "bulletproof.config", "bulletproof.errors", "bulletproof.events",
    "bulletproof.ffmpeg", "bulletproof.logs", "bulletproof.models", "bulletproof.paths",
    "bulletproof.plugins", "bulletproof.profiles", "bulletproof.rules", "bulletproof.runner",
    "bulletproof.samples", "bulletproof.service", "bulletproof.store", "bulletproof.sqlite_store",
    "bulletproof.queries", "bulletproof.scan", "bulletproof.view", "bulletproof.state",
    "bulletproof.controls",
    "bulletproof.watcher", "bulletproof.workers", "bulletproof.cli", "bulletproof.demo",
]
FORBIDDEN = ("aiohttp", "prometheus_client", "aiohttp_cors", "exporter")


def loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_core_imports_no_http_or_metrics_library() -> None:
    loaded = loaded_after_import(CORE_MODULES)
    leaked = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert leaked == [], f"the core loaded {leaked}"


def test_the_check_can_fail() -> None:
    # The same probe sees the exporter's imports, so an empty result above means something.
    loaded = loaded_after_import(["exporter.api.errors"])
    assert "aiohttp" in loaded


def test_reading_a_config_loads_the_plugins_settings_models_only(tmp_path) -> None:
    # The `api` section is the exporter's: validating a config loads its model (pydantic), never
    # the plugin's server.
    (tmp_path / "monitor.yaml").write_text(
        "monitor_folder: in\noutput_folder: out\napi: {listen: '127.0.0.1:0'}\n", encoding="utf-8")
    code = ("import json, sys\nfrom bulletproof.config import load_config\n"
            f"config = load_config({str(tmp_path / 'monitor.yaml')!r})\n"
            "assert config.api.listen == '127.0.0.1:0'\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "exporter.settings" in loaded
    leaked = sorted(m for m in loaded if m.split(".")[0] in ("aiohttp", "prometheus_client"))
    assert leaked == [], f"reading a config loaded {leaked}"
