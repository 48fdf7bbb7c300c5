"""update_config's order: validate whole -> pre-flight the folders -> write the file -> apply; a
failure at any step leaves the config in force, the file and the folders as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bulletproof.config import Config
from bulletproof.service import Monitor
from tests.api_fixtures import Api, api_factory_fixture, api_fixture  # noqa: F401 (fixtures)
from tests.test_api import assert_error


async def test_a_file_that_cannot_be_written_changes_nothing(api: Api) -> None:
    # The .bak cannot be written (a folder is in its way): a real OSError from the write step.
    backup = api.config_path.with_name("monitor.yaml.bak")
    backup.mkdir()
    before = api.config_path.read_text()
    status, body = await api.get("/api/v1/config")
    data = {**body["config"], "output_folder": "processed/fresh", "max_workers": 3}
    status, body = await api.call("PUT", "/api/v1/config", json=data)
    assert_error(status, body, 500, "config_write_failed")
    assert api.config_path.read_text() == before
    assert not (api.root / "processed" / "fresh").exists()  # the pre-flight's folder is removed
    assert api.monitor.config.max_workers == 1
    assert api.monitor.watcher is not None and api.monitor.watcher.running
    assert (await api.get("/api/v1/status"))[0] == 200


class _ApplyFailsOnce(Monitor):
    """A monitor whose next apply of a new config raises (an unexpected fault in a live step)."""

    fail_next = False

    async def apply_config(self, new: Config) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the watcher could not be restarted")
        await super().apply_config(new)


async def test_a_failed_apply_puts_the_old_config_and_file_back(config_factory, ffmpeg_binaries) -> None:
    config, path = config_factory()
    monitor = _ApplyFailsOnce(config, config_path=path, binaries=ffmpeg_binaries)
    await monitor.start()
    try:
        before = path.read_text()
        backup = path.with_name("monitor.yaml.bak")
        backup.write_text("# the previous backup\n")
        data: dict[str, Any] = {**config.model_dump(mode="json"), "max_workers": 4,
                                "output_folder": "processed/fresh"}
        monitor.fail_next = True
        with pytest.raises(RuntimeError):
            await monitor.update_config(data)
        assert path.read_text() == before and backup.read_text() == "# the previous backup\n"
        assert not (path.parent / "processed" / "fresh").exists()
        assert monitor.config.max_workers == 1 and monitor.view.max_workers == 1
        assert monitor.watcher is not None and monitor.watcher.running
        await monitor.update_config(data)  # and the next good one goes through
        assert monitor.config.max_workers == 4 and (path.parent / "processed" / "fresh").is_dir()
    finally:
        await monitor.stop()


async def test_validate_creates_nothing(api: Api, tmp_path: Path) -> None:
    status, body = await api.get("/api/v1/config")
    data = {**body["config"], "output_folder": "processed/not/yet", "done_folder": "processed/done"}
    status, body = await api.post("/api/v1/config/validate", json=data)
    assert status == 200 and body["valid"] is True, body
    assert not (tmp_path / "processed" / "not").exists() and not (tmp_path / "processed" / "done").exists()


async def test_a_broken_output_folder_in_use_does_not_block_other_changes(api: Api) -> None:
    # The output folder in force went bad (here: a file took its place). Lowering the workers
    # must still work; pointing the output at a new folder below it is refused.
    output = api.root / "processed"
    output.rmdir()
    output.write_text("not a folder any more")
    status, body = await api.get("/api/v1/config")
    config = body["config"]
    status, body = await api.call("PUT", "/api/v1/config", json={**config, "max_workers": 2})
    assert status == 200, body
    status, body = await api.call("PUT", "/api/v1/config", json={**config, "output_folder": "processed/sub"})
    error = assert_error(status, body, 422, "invalid_config")
    assert [d["location"] for d in error["details"]] == ["output_folder"]
