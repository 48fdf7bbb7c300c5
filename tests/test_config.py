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
    assert found["bogus"].startswith("unknown key; known keys: monitor_folder, output_folder")


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


def test_a_type_error_does_not_hide_the_cross_checks(tmp_path: Path) -> None:
    found = issues("monitor_folder: in\noutput_folder: in\non_success: move\n"
                   "retry: {retry_on: stalled}\nmax_workers: many\n"
                   "rules: [{profile: nope}, {profile: h264_mp4, regex: '(['}, {profile: gone}]\n",
                   tmp_path)
    assert set(found) == {"retry.retry_on", "max_workers", "output_folder", "done_folder",
                          "rules.0.profile", "rules.1.regex", "rules.2.profile"}
    assert found["retry.retry_on"] == "Input should be a valid list"
    assert found["rules.0.profile"].startswith("unknown profile 'nope'; known: aac_m4a, h264_mp4")
    assert "unknown profile 'gone'" in found["rules.2.profile"]
    assert found["done_folder"] == "required when on_success is 'move'"
    assert "must not be a watch folder" in found["output_folder"]


def test_an_empty_watch_folder_list(tmp_path: Path) -> None:
    assert issues("monitor_folder: []\noutput_folder: out\n", tmp_path) == {
        "monitor_folder": "at least one watch folder is required"}


def test_unknown_keys_get_the_closest_known_one(tmp_path: Path) -> None:
    found = issues("monitor_folders: in\noutput_folder: out\nretry: {max_attemps: 3}\n"
                   "monitor_folder: [{path: in, pathh: x}]\napi: {grafana: {urll: x}}\n"
                   "profiles: {p: {vide_codec: libx264}}\nrules: [{profile: p, globs: '*'}]\n",
                   tmp_path)
    assert found == {
        "monitor_folders": "unknown key; did you mean 'monitor_folder'?",
        "retry.max_attemps": "unknown key; did you mean 'max_attempts'?",
        "monitor_folder.0.pathh": "unknown key; did you mean 'path'?",
        "api.grafana.urll": "unknown key; did you mean 'url'?",
        "profiles.p.vide_codec": "unknown key; did you mean 'video_codec'?",
        "rules.0.globs": "unknown key; did you mean 'glob'?",
    }


BILLION_LAUGHS = "".join(
    ['lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"lol{i}: &lol{i} [{','.join([f'*lol{i - 1}'] * 9)}]\n" for i in range(1, 10)])


def test_yaml_aliases_that_expand_too_far_are_refused(tmp_path: Path) -> None:
    found = issues(MINIMAL + BILLION_LAUGHS, tmp_path)
    (location, message), = found.items()
    assert location.startswith("line ")
    assert message == "invalid YAML: aliases expand to more than 100000 values; refusing the document"
    (loop_issue,) = issues(MINIMAL + "rules: &r [*r]\n", tmp_path).values()
    assert "refers to the node that contains it" in loop_issue
    # Ordinary anchors and aliases still work.
    shared = parse_config_text(MINIMAL + "profiles: {a: &p {crf: 30}, b: *p}\n"
                               "rules: [{profile: a, glob: 'a/**'}, {profile: b}]\n", base_dir=tmp_path)
    assert shared.profiles["a"] == shared.profiles["b"] and shared.profiles["a"].crf == 30


COMMENTED = """\
# Our NAS transcoder.
monitor_folder: ./incoming   # the share's drop folder
output_folder: processed
stability_seconds: 5         # copies over Wi-Fi are slow

retry:
    max_attempts: 4          # four tries
    backoff_seconds: 30

# House profiles.
profiles:
    small:
        crf: 30
        preset: veryfast

# First match wins.
rules:
    - name: small
      glob: "small/**"
      profile: small
    - profile: h264_mp4

# The API.
api:
    listen: "127.0.0.1:8080"
"""


def apply_as_config_get(path: Path, change) -> str:
    """What `config apply` of an edited `config get` output writes (every key, absolute paths)."""
    import json

    from bulletproof.config_file import updated_config_text

    data = json.loads(json.dumps(load_config(path).model_dump(mode="json")))
    change(data)
    new = parse_config(data, base_dir=path.parent)
    text = updated_config_text(path, data, new)
    assert parse_config_text(text, base_dir=path.parent) == new  # says exactly the new config
    return text


def test_config_apply_keeps_comments_paths_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(COMMENTED)

    def change(data: dict) -> None:
        data["max_workers"] = 3
        data["retry"]["max_attempts"] = 6
        data["profiles"]["audio"] = {"video_codec": None, "container": "m4a"}

    text = apply_as_config_get(path, change)
    lines = text.splitlines()
    assert text.startswith("# Our NAS transcoder.\nmonitor_folder: ./incoming   # the share's drop folder\n"
                           "output_folder: processed\nstability_seconds: 5         # copies over Wi-Fi")
    assert "max_workers: 3" in lines  # a new key: added
    assert "    max_attempts: 6          # four tries" in lines  # changed: its comment stays
    assert "    backoff_seconds: 30" in lines  # not `30.0`
    assert '      glob: "small/**"' in lines and '    listen: "127.0.0.1:8080"' in lines
    assert "        video_codec: null" in lines and "        container: m4a" in lines
    assert text.index("    audio:") < text.index("# First match wins.")  # comments keep their place
    for comment in ("# House profiles.", "# First match wins.", "# The API."):
        assert comment in lines
    assert "backoff_factor" not in text and "poll_interval" not in text  # defaults not spelled out


def test_config_apply_replaces_lists_whole_and_drops_keys_it_resets(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(COMMENTED)

    def change(data: dict) -> None:
        data["rules"] = [{"profile": "web_720p", "extensions": ["mov"]}]
        data["stability_seconds"] = 5.0  # the same value, spelled differently: untouched
        data["retry"]["max_attempts"] = 3  # back to the default
        del data["profiles"]

    text = apply_as_config_get(path, change)
    assert "stability_seconds: 5         # copies over Wi-Fi are slow" in text
    assert "rules:\n    - profile: web_720p\n      extensions:\n          - mov\n" in text
    assert "# The API.\napi:" in text
    assert "    max_attempts: 3          # four tries" in text  # set back to the default
    # A key the new config leaves out is removed when the file set it to something else.
    assert "small/**" not in text and "crf: 30" not in text


def test_config_apply_over_an_invalid_file_writes_plain_yaml(tmp_path: Path) -> None:
    from bulletproof.config_file import updated_config_text

    path = tmp_path / "monitor.yaml"
    path.write_text("# broken by hand\nmonitor_folder: [\n")
    data = {"monitor_folder": "in", "output_folder": "out"}
    text = updated_config_text(path, data, parse_config(data, base_dir=tmp_path))
    assert text == config_to_yaml(data)
