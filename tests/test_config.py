"""monitor.yaml: defaults, every kind of error with its key path, path resolution, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletproof.config import (
    config_to_yaml,
    default_config_text,
    load_config,
    parse_config,
    parse_config_text,
    write_config_atomically,
)
from bulletproof.errors import ConfigError

MINIMAL = "monitor_folder: in\noutput_folder: out\n"


def issues(text: str, tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, base_dir=tmp_path, source=tmp_path / "monitor.yaml")
    return {i.location: i.message for i in info.value.issues}


def test_default_config_is_valid_and_commented(tmp_path: Path) -> None:
    text = default_config_text()
    assert text.count("#") > 20
    config = parse_config_text(text, base_dir=tmp_path)
    assert config.monitor_folder[0].path == tmp_path / "videos" / "incoming"
    assert config.max_workers == 2
    assert {"h264_mp4", "web_720p", "hevc_mkv", "aac_m4a", "small_h264"} <= set(config.all_profiles())


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = parse_config_text(MINIMAL, base_dir=tmp_path)
    assert config.output_folder == tmp_path / "out"
    assert config.database == tmp_path / "bulletproof.db"
    assert config.api.listen == "127.0.0.1:8080"
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8080)
    assert config.rules == []


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "monitor.yaml"
    path.write_text(MINIMAL + "database: ../state/jobs.db\n")
    config = load_config(path)
    assert config.monitor_folder[0].path == tmp_path / "sub" / "in"
    assert config.database == tmp_path / "state" / "jobs.db"


def test_watch_folders_as_string_list_or_mappings(tmp_path: Path) -> None:
    text = ("monitor_folder:\n  - a\n  - path: /mnt/nas\n    polling: true\n    poll_interval: 30\n"
            "    recursive: false\noutput_folder: out\n")
    folders = parse_config_text(text, base_dir=tmp_path).monitor_folder
    assert [f.path for f in folders] == [tmp_path / "a", Path("/mnt/nas")]
    assert folders[1].polling and folders[1].poll_interval == 30 and not folders[1].recursive


def test_every_issue_is_reported_with_its_key_path(tmp_path: Path) -> None:
    found = issues(MINIMAL + "max_workers: 0\nbogus: 1\nretry: {max_attempts: x}\n"
                   "api: {listen: nowhere}\n", tmp_path)
    assert set(found) == {"max_workers", "bogus", "retry.max_attempts", "api.listen"}
    assert "greater than or equal to 1" in found["max_workers"]
    assert "Extra inputs are not permitted" in found["bogus"]


def test_unknown_nested_key_is_an_error(tmp_path: Path) -> None:
    assert "timeouts.stall" in issues(MINIMAL + "timeouts: {stall: 5}\n", tmp_path)


def test_rule_naming_an_unknown_profile(tmp_path: Path) -> None:
    found = issues(MINIMAL + "rules: [{profile: nope}]\n", tmp_path)
    assert "unknown profile 'nope'" in found["rules.0.profile"]


def test_invalid_regex_and_template(tmp_path: Path) -> None:
    found = issues(MINIMAL + "rules: [{profile: h264_mp4, regex: '(['}]\noutput_template: '{stem}.{bad}'\n",
                   tmp_path)
    assert "invalid regular expression" in found["rules.0.regex"]
    assert "unknown field(s) ['bad']" in found["output_template"]


def test_template_must_be_a_plain_name(tmp_path: Path) -> None:
    assert "plain file name" in issues(MINIMAL + "output_template: 'a/{stem}.{ext}'\n", tmp_path)["output_template"]


def test_move_needs_a_done_folder(tmp_path: Path) -> None:
    assert "required" in issues(MINIMAL + "on_success: move\n", tmp_path)["done_folder"]


def test_profile_extra_args_cannot_set_io(tmp_path: Path) -> None:
    found = issues(MINIMAL + "profiles: {x: {extra_args: ['-i', 'other.mp4']}}\n", tmp_path)
    assert "not an allowed ffmpeg option" in found["profiles.x.extra_args"]


def test_sizes_accept_units(tmp_path: Path) -> None:
    config = parse_config_text(MINIMAL + "rules: [{profile: h264_mp4, min_size: 10MB, max_size: 2GiB}]\n",
                               base_dir=tmp_path)
    assert config.rules[0].min_size == 10_000_000
    assert config.rules[0].max_size == 2 * 1024**3


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    found = issues("monitor_folder: [a\noutput_folder: b\n", tmp_path)
    (location, message), = found.items()
    assert location.startswith("line ") and "invalid YAML" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in next(iter(issues("- a\n- b\n", tmp_path).values()))
    with pytest.raises(ConfigError):
        parse_config(None, base_dir=tmp_path)


def test_missing_required_keys(tmp_path: Path) -> None:
    assert set(issues("max_workers: 2\n", tmp_path)) == {"monitor_folder", "output_folder"}


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(info.value) and "cannot read" in str(info.value)


def test_binary_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_atomic_write_keeps_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    assert write_config_atomically(path, "first: 1\n") is None
    backup = write_config_atomically(path, "second: 2\n")
    assert backup == tmp_path / "monitor.yaml.bak"
    assert path.read_text() == "second: 2\n" and backup.read_text() == "first: 1\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_yaml_round_trip_keeps_order_and_unicode() -> None:
    text = config_to_yaml({"monitor_folder": "vidéos", "output_folder": "out"})
    assert text.index("monitor_folder") < text.index("output_folder") and "vidéos" in text


def test_retry_backoff_grows_and_caps(tmp_path: Path) -> None:
    retry = parse_config_text(MINIMAL + "retry: {backoff_seconds: 10, backoff_factor: 3, max_backoff_seconds: 50}\n",
                              base_dir=tmp_path).retry
    assert [retry.delay(n) for n in (1, 2, 3)] == [10, 30, 50]


def test_output_folder_cannot_be_a_watch_folder(tmp_path: Path) -> None:
    found = issues("monitor_folder: in\noutput_folder: in\n", tmp_path)
    assert "must not be a watch folder" in found["output_folder"]
    parse_config_text("monitor_folder: in\noutput_folder: in/out\n", base_dir=tmp_path)
    # A folder that contains a watch folder would receive outputs under it too.
    found = issues("monitor_folder: out/in\noutput_folder: out\n", tmp_path)
    assert "must not be a watch folder or contain one" in found["output_folder"]
    found = issues("monitor_folder: in\noutput_folder: o\non_success: move\ndone_folder: .\n", tmp_path)
    assert "must not be a watch folder or contain one" in found["done_folder"]
