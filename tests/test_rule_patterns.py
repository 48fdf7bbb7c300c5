"""Rule regexes and globs are matched by RE2: correct answers for patterns that make a
backtracking engine explode, RE2-only syntax refused at validation, and the API stays live."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bulletproof import events as ev
from bulletproof.config import parse_config
from bulletproof.errors import ConfigError
from bulletproof.models import IgnoreReason
from bulletproof.patterns import compile_rule_regex, glob_to_regex
from bulletproof.rules import RuleMatcher
from tests.api_fixtures import TEST_API, Api, api_factory_fixture  # noqa: F401 (fixture)
from tests.conftest import until

HOSTILE_NAME = "a" * 40 + "!.mp4"  # `(a+)+$` backtracks for minutes on this in Python's re


def matcher(tmp_path: Path, rules: list[dict]) -> RuleMatcher:
    return RuleMatcher(parse_config({"monitor_folder": "in", "output_folder": "out", "rules": rules},
                                    base_dir=tmp_path))


def test_catastrophic_patterns_answer_correctly(tmp_path: Path) -> None:
    rules = matcher(tmp_path, [{"name": "evil", "regex": "(a+)+$", "profile": "h264_mp4"},
                               {"name": "stars", "glob": "*a*a*a*a*a*a*a*a*a*a*b", "profile": "aac_m4a"}])
    assert rules.match(HOSTILE_NAME) is None
    assert rules.match("x/" + "a" * 255 + ".mp4") is None
    found = rules.match("clips/" + "a" * 40)
    assert found is not None and found.rule_name == "evil"
    found = rules.match("a" * 30 + "b")
    assert found is not None and found.rule_name == "stars"
    assert compile_rule_regex(r"^raw/.*_4k").search("raw/x_4k.mov") is not None
    assert glob_to_regex("**/c.mp4").match("x/y/c.mp4") is not None


@pytest.mark.parametrize(("regex", "message"), [
    ("(?=a)b", "lookarounds and backreferences are not supported"),
    ("(?<!x)y", "lookarounds and backreferences are not supported"),
    (r"(a)\1", "lookarounds and backreferences are not supported"),
    ("a{1001}", "invalid regular expression: invalid repetition size"),
    ("(", "invalid regular expression: missing )"),
    ("a" * 1001, "longer than 1000 characters"),
])
def test_regexes_outside_re2_are_refused_with_a_reason(tmp_path: Path, regex: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"monitor_folder": "in", "output_folder": "out",
                      "rules": [{"regex": regex, "profile": "h264_mp4"}]}, base_dir=tmp_path)
    found = {i.location: i.message for i in info.value.issues}
    assert message in found["rules.0.regex"], found


def test_globs_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"monitor_folder": "in", "output_folder": "out",
                      "rules": [{"glob": ["*.mp4", "[z-a].mov"], "profile": "h264_mp4"}]}, base_dir=tmp_path)
    assert "invalid glob" in {i.location: i.message for i in info.value.issues}["rules.0.glob"]


async def test_the_api_stays_live_while_hostile_names_are_matched(api_factory, clip_cache) -> None:
    api: Api = await api_factory(api=dict(TEST_API),
                                 rules=[{"name": "evil", "regex": "(a+)+$", "profile": "h264_mp4"}])
    names = [f"{'a' * (30 + i % 10)}!{i:03d}.mp4" for i in range(100)]

    async def match_all() -> None:
        for name in names:
            status, body = await api.get("/api/v1/rules/match", params={"path": name})
            assert status == 200 and body["matched"] is False

    ignored: list[ev.FileIgnored] = []
    api.monitor.bus.subscribe(lambda e: ignored.append(e) if isinstance(e, ev.FileIgnored) else None)
    for name in names:  # the watcher matches them too, on the same event loop
        (api.incoming / name).write_bytes(b"x")
    healthy = 0

    async def probe() -> None:
        nonlocal healthy
        while True:
            status, _ = await api.get("/healthz")
            healthy += status == 200
            await asyncio.sleep(0.01)

    prober = asyncio.create_task(probe())
    try:
        await asyncio.wait_for(match_all(), timeout=60)
        await until(lambda: len(ignored) == 100 and healthy > 0, timeout=60)
    finally:
        prober.cancel()
    assert {e.reason for e in ignored} == {IgnoreReason.NO_RULE}
    assert api.monitor.view.list_jobs(limit=10)[1] == 0
