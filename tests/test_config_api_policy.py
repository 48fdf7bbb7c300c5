"""The config API cannot reach past what the operator declared: file-only keys, folders inside
`api.config_roots`, the on_success ceiling, OS-level bad values; a refused config changes nothing.

Real monitor, real app on a socket, real files; a sentinel folder outside the roots must stay
untouched whatever is sent.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from bulletproof.config import config_model, load_config
from bulletproof.config_policy import (
    FILE_ONLY_KEYS,
    KEY_POLICY,
    RESTART_KEYS,
    Applies,
    Owner,
    policy_for,
    restart_required,
    value_at,
)
from tests.api_fixtures import TEST_API, Api, api_factory_fixture, api_fixture  # noqa: F401 (fixtures)
from tests.conftest import until
from tests.test_api import assert_error
from tests.test_docs_config import keys


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below a folder with a digest of its content (symlinks by their target)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def sentinel(tmp_path: Path, clip_cache) -> Path:
    """A folder outside every root with three videos and a `passwd`: nothing may touch it."""
    folder = tmp_path / "sentinel"
    folder.mkdir()
    for name in ("one.mp4", "two.mp4", "three.mp4"):
        (folder / name).write_bytes(clip_cache().read_bytes())
    (folder / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return folder


async def current(api: Api) -> dict[str, Any]:
    status, body = await api.get("/api/v1/config")
    assert status == 200
    return copy.deepcopy(body["config"])


def with_change(config: dict[str, Any], key_path: str, value: Any) -> dict[str, Any]:
    """A copy of a config dump with one dotted key set."""
    out = copy.deepcopy(config)
    target = out
    parts = key_path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[parts[-1]] = value
    return out


async def refused(api: Api, data: dict[str, Any]) -> dict[str, str]:
    """Validate says invalid and PUT answers 422; both name the same key paths. Nothing changes."""
    before = api.config_path.read_text()
    backup = api.config_path.with_name("monitor.yaml.bak")
    backup_before = backup.read_text() if backup.exists() else None
    status, body = await api.post("/api/v1/config/validate", json=data)
    assert status == 200 and body["valid"] is False, body
    dry = {e["location"]: e["message"] for e in body["errors"]}
    status, body = await api.call("PUT", "/api/v1/config", json=data)
    error = assert_error(status, body, 422, "invalid_config")
    put = {d["location"]: d["message"] for d in error["details"]}
    assert put == dry
    assert api.config_path.read_text() == before
    assert (backup.read_text() if backup.exists() else None) == backup_before
    return put


OPERATOR_CHANGES = [
    ("database", "/etc/bp.db", "database"),
    ("ffmpeg.path", "/bin/sh", "ffmpeg.path"),
    ("ffmpeg.ffprobe_path", "/bin/sh", "ffmpeg.ffprobe_path"),
    ("api.trusted_proxies", ["0.0.0.0/0"], "api.trusted_proxies"),
    ("api.listen", "0.0.0.0:8080", "api.listen"),
    ("api.token_file", "/etc/shadow", "api.token_file"),
    ("api.config_roots", ["/"], "api.config_roots"),
    ("api.enabled", False, "api.enabled"),
    ("log.level", "error", "log.level"),
]


@pytest.mark.parametrize(("key", "value", "location"), OPERATOR_CHANGES)
async def test_file_only_keys_are_refused_with_their_key_path(api: Api, sentinel: Path, key: str,
                                                              value: Any, location: str) -> None:
    before = snapshot(sentinel)
    config = await current(api)
    found = await refused(api, with_change(config, key, value))
    assert found == {location: "set in the config file only; restart to change"}
    assert snapshot(sentinel) == before
    assert api.monitor.config.model_dump(mode="json") == config


async def test_listen_everywhere_with_viewer_role_names_both_keys(api: Api) -> None:
    config = await current(api)
    data = with_change(with_change(config, "api.listen", "0.0.0.0:8080"), "api.grafana.min_role", "Viewer")
    assert set(await refused(api, data)) == {"api.listen", "api.grafana.min_role"}


async def test_unchanged_file_only_keys_are_fine_even_spelled_relative(api: Api) -> None:
    config = await current(api)
    # What the client sends back is the whole file: the same database, named as the file does.
    data = with_change(config, "database", "state/bulletproof.db")
    data["max_workers"] = 2
    status, body = await api.call("PUT", "/api/v1/config", json=data)
    assert status == 200, body
    assert body["restart_required"] == [] and body["config"]["max_workers"] == 2


@pytest.mark.parametrize("folder", ["/", "/etc", "sentinel", "incoming/../sentinel"])
async def test_watch_folders_outside_the_roots_are_refused(api: Api, sentinel: Path, folder: str) -> None:
    before = snapshot(sentinel)
    config = await current(api)
    data = with_change(config, "monitor_folder", [{"path": folder}])
    data["on_success"] = "delete"
    data["output_template"] = "passwd"
    found = await refused(api, data)
    assert "outside the folders the operator allows the API to use (api.config_roots: " \
        in found["monitor_folder.0.path"]
    assert str(api.incoming) in found["monitor_folder.0.path"]
    assert "on_success" in found  # the file says keep: delete is more destructive
    assert api.monitor.watcher is not None and api.monitor.watcher.running
    assert snapshot(sentinel) == before


@pytest.mark.parametrize(("key", "value"), [("output_folder", "/etc/cron.d"),
                                            ("output_folder", "sentinel"),
                                            ("done_folder", "/var/spool")])
async def test_output_and_done_folders_outside_the_roots_are_refused(api: Api, key: str, value: str) -> None:
    config = await current(api)
    found = await refused(api, with_change(config, key, value))
    assert list(found) == [key] and "api.config_roots" in found[key]


async def test_a_symlink_inside_a_root_does_not_lead_out(api: Api, sentinel: Path) -> None:
    (api.root / "processed" / "escape").symlink_to(sentinel, target_is_directory=True)
    before = snapshot(sentinel)
    config = await current(api)
    found = await refused(api, with_change(config, "output_folder", str(api.root / "processed" / "escape")))
    assert list(found) == ["output_folder"]
    (api.incoming / "escape").symlink_to(sentinel, target_is_directory=True)
    found = await refused(api, with_change(config, "monitor_folder", [{"path": "incoming/escape/x/.."}]))
    assert list(found) == ["monitor_folder.0.path"]
    assert snapshot(sentinel) == before


async def test_folders_inside_the_roots_are_created_and_applied(api: Api) -> None:
    config = await current(api)
    data = with_change(config, "output_folder", "processed/new/deeper")
    data["monitor_folder"] = [{"path": "incoming/sub"}, {"path": "incoming"}]
    status, body = await api.call("PUT", "/api/v1/config", json=data)
    assert status == 200, body
    assert (api.root / "processed" / "new" / "deeper").is_dir()
    assert body["config"]["output_folder"] == str(api.root / "processed" / "new" / "deeper")
    assert body["restart_required"] == []


async def test_declared_roots_replace_the_default_ones(api_factory, tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "in").mkdir(parents=True)
    api = await api_factory(api={**TEST_API, "config_roots": ["media"]})
    config = await current(api)
    # The file's own folders stay acceptable as they are, although they lie outside the roots.
    status, body = await api.call("PUT", "/api/v1/config", json={**config, "max_workers": 2})
    assert status == 200, body
    status, body = await api.call("PUT", "/api/v1/config",
                                  json={**config, "monitor_folder": "media/in", "output_folder": "media/out"})
    assert status == 200, body
    assert (media / "out").is_dir()
    found = await refused(api, {**config, "output_folder": "processed/elsewhere"})
    assert found["output_folder"].endswith(f"(api.config_roots: {media})")


@pytest.mark.parametrize(("file_value", "allowed", "refused_values"), [
    ("keep", ["keep"], ["move", "delete"]),
    ("move", ["keep", "move"], ["delete"]),
    ("delete", ["keep", "move", "delete"], []),
])
async def test_on_success_at_most_as_destructive_as_the_file(api_factory, file_value: str, allowed: list[str],
                                                             refused_values: list[str]) -> None:
    api = await api_factory(on_success=file_value, done_folder="done")
    config = await current(api)
    for value in refused_values:
        found = await refused(api, {**config, "on_success": value})
        assert list(found) == ["on_success"]
        assert f"the config file says {file_value!r}; keep < move < delete" in found["on_success"]
    for value in allowed:
        status, body = await api.call("PUT", "/api/v1/config", json={**config, "on_success": value})
        assert status == 200, body
        assert api.monitor.config.on_success == value


async def test_output_conflict_overwrite_only_when_the_file_says_so(api_factory) -> None:
    api = await api_factory(output_conflict="rename")
    config = await current(api)
    found = await refused(api, {**config, "output_conflict": "overwrite"})
    assert list(found) == ["output_conflict"]
    assert "the config file says 'rename'; rename, skip, fail < overwrite" in found["output_conflict"]
    for value in ("skip", "fail", "rename"):
        status, body = await api.call("PUT", "/api/v1/config", json={**config, "output_conflict": value})
        assert status == 200, body
        assert api.monitor.config.output_conflict == value


async def test_reset_keeps_the_file_settings(api: Api) -> None:
    config = await current(api)
    status, body = await api.post("/api/v1/config/reset")
    assert status == 200, body
    for key in FILE_ONLY_KEYS + ("monitor_folder", "output_folder", "done_folder"):
        assert policy_for(key) is KEY_POLICY[key]
        assert value_at(body["config"], key) == value_at(config, key), key
    assert body["config"]["max_workers"] == 2 and body["config"]["ffmpeg"]["nice"] == 19
    assert body["restart_required"] == []


# -- values only the OS rejects -----------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("output_folder", "processed/bad\x00name"),
    ("monitor_folder", [{"path": "incoming/\x00"}]),
    ("output_template", "{stem}\x00.{ext}"),
    ("rules.0.name", "a\x00b"),
    ("profiles", {"p": {"extra_args": ["-tune", "film\x00"]}}),
    ("rules.0.name", "lone \udcff surrogate"),
    ("output_folder", str(Path("/x") / "\udcff")),
])
async def test_nul_bytes_and_lone_surrogates_are_a_422_and_change_nothing(api: Api, key: str,
                                                                        value: Any) -> None:
    config = await current(api)
    found = await refused(api, with_change(config, key, value))
    assert any("NUL byte" in m or "lone surrogate" in m for m in found.values()), found
    assert api.monitor.watcher is not None and api.monitor.watcher.running
    status, _ = await api.get("/api/v1/status")
    assert status == 200


async def test_after_a_nul_byte_the_next_start_is_fine(api: Api, monitor_factory) -> None:
    config = await current(api)
    await refused(api, with_change(config, "output_folder", "processed/\x00"))
    await api.monitor.stop()
    again = await monitor_factory(load_config(api.config_path), api.config_path)
    await until(lambda: again.watcher is not None and again.watcher.running)
    assert again.config.output_folder == api.root / "processed"


@pytest.mark.parametrize(("value", "message"), [
    ("processed/" + "n" * 256, "longer than 255 bytes"),
    ("processed/" + "/".join(["d" * 200] * 21), "longer than 4095 bytes"),
    ("processed/\udcff\ud800", "not valid Unicode text"),
])
async def test_over_long_and_unencodable_names_are_a_422(api: Api, value: str, message: str) -> None:
    config = await current(api)
    found = await refused(api, with_change(config, "output_folder", value))
    assert message in found["output_folder"], found


async def test_a_folder_that_cannot_be_created_is_a_422(api: Api) -> None:
    (api.root / "processed").mkdir(exist_ok=True)
    (api.root / "processed" / "a-file").write_text("not a folder")
    config = await current(api)
    found = await refused(api, with_change(config, "output_folder", "processed/a-file/sub"))
    assert found["output_folder"].startswith("cannot be created: not a folder")
    assert not (api.root / "processed" / "a-file" / "sub").exists()
    assert api.monitor.watcher is not None and api.monitor.watcher.running


# -- restart-only keys, from the one table ------------------------------------------------------


def test_every_model_key_has_a_policy_and_every_policy_key_exists() -> None:
    every = keys(config_model())
    for key in [k for k in every if not any(o.startswith(k + ".") for o in every)]:
        policy_for(key)  # KeyError when a leaf key is not covered
    assert set(KEY_POLICY) <= set(every)
    assert set(RESTART_KEYS) == {"ffmpeg.path", "ffmpeg.ffprobe_path", "database", "node_name",
                                 "fleet", "libraries", "log", "api"}
    # What the API may change always applies live: a PUT never leaves a change waiting silently.
    assert all(p.applies is Applies.LIVE for p in KEY_POLICY.values() if p.owner is Owner.API)


async def test_restart_required_tells_what_still_waits_for_a_restart(api: Api) -> None:
    config = await current(api)
    # The operator edits the file and reloads (SIGHUP): ffmpeg.path waits for a restart ...
    text = api.config_path.read_text().replace("ffmpeg:\n  nice: 0\n",
                                               "ffmpeg:\n  nice: 0\n  path: /usr/bin/ffmpeg\n")
    assert "/usr/bin/ffmpeg" in text
    api.config_path.write_text(text)
    await api.monitor.reload_config()
    assert restart_required(api.monitor.startup_config, api.monitor.config) == ["ffmpeg.path"]
    # ... and a later PUT through the API says so, truthfully.
    data = {**(await current(api)), "max_workers": 2}
    assert data["ffmpeg"]["path"] == "/usr/bin/ffmpeg" and config["ffmpeg"]["path"] is None
    status, body = await api.call("PUT", "/api/v1/config", json=data)
    assert status == 200, body
    assert body["restart_required"] == ["ffmpeg.path"]


def test_the_documented_table_mirrors_the_policy() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- policy-table -->")[1].split("<!-- /policy-table -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        key, changed_by, takes_effect = (c.strip() for c in line.strip("|").split("|"))
        rows[key.strip("`")] = (changed_by, takes_effect)
    assert list(rows) == list(KEY_POLICY)
    for key, policy in KEY_POLICY.items():
        changed_by, takes_effect = rows[key]
        assert changed_by.startswith(policy.owner.value), key
        assert ("inside `api.config_roots`" in changed_by) == policy.confined, key
        assert takes_effect.split(" ")[0] == policy.applies.value, key


async def test_a_pending_database_edit_survives_a_put(api: Api) -> None:
    # The operator moves the database in the file and reloads: it waits for a restart.
    api.config_path.write_text(api.config_path.read_text().replace("state/bulletproof.db", "state/next.db"))
    await api.monitor.reload_config()
    data = {**(await current(api)), "max_workers": 2}
    assert data["database"] == str(api.root / "state" / "next.db")
    status, body = await api.call("PUT", "/api/v1/config", json=data)
    assert status == 200, body
    assert body["restart_required"] == ["database"]
    assert "next.db" in api.config_path.read_text()  # the API's write kept the operator's edit
    assert api.monitor.store is not None and (api.root / "state" / "bulletproof.db").exists()


async def test_a_symlinked_root_is_taken_by_its_target(api_factory, tmp_path: Path) -> None:
    real = tmp_path / "real-media"
    (real / "in").mkdir(parents=True)
    (tmp_path / "media").symlink_to(real, target_is_directory=True)
    api = await api_factory(api={**TEST_API, "config_roots": ["media"]})
    config = await current(api)
    # Named through the link or by the real path, the same folder is inside the root.
    for folder in ("media/in", str(real / "in")):
        status, body = await api.call("PUT", "/api/v1/config", json={**config, "monitor_folder": folder})
        assert status == 200, body
    found = await refused(api, {**config, "monitor_folder": "media/../incoming/x"})
    assert list(found) == ["monitor_folder.0.path"]
    assert api.monitor.change_policy.roots == [real]
