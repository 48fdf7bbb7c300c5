"""Property: whatever config is sent to validate and PUT (paths mixing `..`, absolute paths,
symlinks, NUL bytes, long names, template fields), the answer is 200 or 422, every accepted
config's folders lie inside the declared roots, and nothing outside the roots is written or
deleted (a sentinel folder, and everything else beside the roots, snapshotted before and after).
"""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulletproof.config_policy import ON_SUCCESS_ORDER
from tests.api_fixtures import Api, api_factory_fixture, api_fixture  # noqa: F401 (fixtures)
from tests.test_config_api_policy import snapshot

SEGMENTS = ["incoming", "processed", "sentinel", "..", ".", "sub", "link", "plink", "etc",
            "n" * 256, "a\x00b", "\udcff", "~", "-rf", "new"]
ABSOLUTE = ["/", "/etc", "/etc/cron.d", "/tmp", "/var/spool", "/dev/shm"]


def paths(root: Path) -> st.SearchStrategy[str]:
    relative = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map("/".join)
    absolute = st.tuples(st.sampled_from(ABSOLUTE + [str(root), str(root / "sentinel"),
                                                     str(root / "incoming"), str(root / "processed")]),
                         relative).map(lambda t: t[0].rstrip("/") + "/" + t[1])
    # Paths that start inside a root: most are accepted, unless a `..` or a symlink leads out.
    starts = ["incoming", "processed", str(root / "incoming"), str(root / "processed")]
    near = st.tuples(st.sampled_from(starts),
                     st.lists(st.sampled_from(["sub", "new", "deep", "..", "link", "plink"]), max_size=3)
                     ).map(lambda t: "/".join([t[0], *t[1]]))
    return st.one_of(near, near, near, relative, absolute, st.sampled_from(ABSOLUTE), st.text(max_size=20))


TEMPLATES = st.one_of(st.sampled_from(["{stem}.{ext}", "passwd", "{name}", "{profile}-{rule}.{ext}"]),
                      st.sampled_from(["../x", "{bogus}", ".hidden", "{stem}\x00.{ext}", "a/b"]))


def changes(root: Path) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "monitor_folder": st.lists(st.builds(lambda p: {"path": p}, paths(root)), min_size=1, max_size=2),
        "output_folder": paths(root),
        "done_folder": st.one_of(st.none(), paths(root)),
        "output_template": TEMPLATES,
        "on_success": st.sampled_from(ON_SUCCESS_ORDER),
        "database": st.one_of(st.just("state/bulletproof.db"), paths(root)),
    })


def outside_the_roots(root: Path) -> dict[str, str]:
    """Everything under the test folder except the roots and the monitor's own files."""
    own = {"incoming", "processed", "monitor.yaml", "monitor.yaml.bak", "state"}
    return {k: v for k, v in snapshot(root).items()
            if k.split("/")[0] not in own and not k.startswith(".monitor.yaml.")}


def inside(folder: Path, roots: list[Path]) -> bool:
    real = Path(os.path.realpath(folder))
    return any(real == r or real.is_relative_to(r) for r in roots)


async def test_generated_configs_never_reach_past_the_roots(api: Api, tmp_path: Path) -> None:
    (tmp_path / "sentinel").mkdir()
    (tmp_path / "sentinel" / "victim.mp4").write_bytes(b"video")
    (tmp_path / "sentinel" / "passwd").write_text("root:x:0:0\n")
    (api.incoming / "link").symlink_to(tmp_path / "sentinel", target_is_directory=True)
    (tmp_path / "processed").mkdir(exist_ok=True)
    (tmp_path / "processed" / "plink").symlink_to(tmp_path / "sentinel", target_is_directory=True)
    status, body = await api.get("/api/v1/config")
    original = body["config"]
    roots = [Path(os.path.realpath(tmp_path / "incoming")), Path(os.path.realpath(tmp_path / "processed"))]
    before = outside_the_roots(tmp_path)
    seen = {"accepted": 0, "refused": 0}

    async def one(change: dict[str, Any]) -> None:
        data = {**copy.deepcopy(original), **change}
        text = api.config_path.read_text()
        status, body = await api.post("/api/v1/config/validate", json=data)
        assert status == 200, body
        status, body = await api.call("PUT", "/api/v1/config", json=data)
        assert status in (200, 422), (status, body)
        if status == 422:
            seen["refused"] += 1
            assert api.config_path.read_text() == text
            assert api.monitor.config.model_dump(mode="json") == original
        else:
            seen["accepted"] += 1
            config = api.monitor.config
            folders = [f.path for f in config.monitor_folder] + [config.output_folder]
            folders += [config.done_folder] if config.done_folder is not None else []
            assert all(inside(f, roots) for f in folders), folders
            assert config.on_success == "keep" and str(config.database) == original["database"]
            status, body = await api.call("PUT", "/api/v1/config", json=original)
            assert status == 200, body
        assert outside_the_roots(tmp_path) == before

    loop = asyncio.get_running_loop()

    # Hypothesis drives a plain function; it runs in a thread and hands each example to the
    # event loop, which keeps serving the API meanwhile.
    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(change=changes(tmp_path))
    def check(change: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(one(change), loop).result(timeout=60)

    await asyncio.to_thread(check)
    assert seen["accepted"] > 0 and seen["refused"] > 0, seen
