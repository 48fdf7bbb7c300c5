"""The documentation shows only what exists: commands, config keys, metrics and links.

Over README.md and every docs/*.md:

* every `bulletproof ...` command line (in shell code blocks and in inline code) names a real
  command of the CLI, nested `config get|validate|apply` included, with real options. The CLI is
  read from `python -m bulletproof --help` and each command's `--help`, in a subprocess, so the
  API client's commands (added through the `bulletproof.commands` entry point) count too;
* every YAML code block that is a monitor.yaml fragment uses only keys of
  `bulletproof.config.config_model()` (the core's keys and the sections plugins own; nested
  models, watch folders, profiles and rules included), and the fragment, laid over the default
  config, validates;
* every metric name (`bulletproof_...`) is in docs/metrics.md's tables (histogram and counter
  sample suffixes allowed), and every recording rule name is one of prometheus/rules/;
* every relative link resolves to a file or folder of the repository, and its `#anchor` to a
  heading of the target (GitHub's anchors);
* docs/README.md indexes every page of docs/, and README.md links the index.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from bulletproof.config import config_model, default_config_text, parse_config
from bulletproof.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
METRICS_DOC = DOCS / "metrics.md"
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
SHELL_LANGS = {"", "sh", "bash", "shell", "console", "shell-session"}
# Top-level keys of the other YAML formats the docs show (compose, Prometheus, Alertmanager,
# Grafana provisioning, promtool tests): a block with one of them is not a monitor.yaml fragment.
OTHER_FORMATS = {"services", "volumes", "networks", "secrets", "configs", "scrape_configs",
                 "rule_files", "alerting", "route", "receivers", "inhibit_rules", "groups",
                 "templates", "global", "apiVersion", "datasources", "providers", "tests",
                 "evaluation_interval", "scrape_interval", "job_name", "targets", "name"}


# -- markdown ------------------------------------------------------------------------------------


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    prose: str = ""  # the text outside fenced code blocks

    def where(self, line: int) -> str:
        return f"{self.path.relative_to(REPO)}:{line}"


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")


@functools.cache
def page(path: Path) -> Page:
    result = Page(path)
    prose: list[str] = []
    fence: str | None = None
    body: list[str] = []
    start, lang = 0, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence, lang, start, body = m[1], m[2].lower(), number, []
            prose.append("")
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                result.blocks.append(Block(path, start, lang, "\n".join(body)))
                fence = None
                prose.append("")
            else:
                body.append(line)
            continue
        prose.append(line)
    assert fence is None, f"{path}: unclosed code fence opened at line {start}"
    result.prose = "\n".join(prose)
    return result


_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def inline_code(page_: Page) -> list[tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    out = []
    for m in _INLINE.finditer(page_.prose):
        line = page_.prose.count("\n", 0, m.start()) + 1
        out.append((line, " ".join(m[2].split())))
    return out


# -- the CLI -------------------------------------------------------------------------------------


@dataclass
class Command:
    name: str
    options: set[str]
    subcommands: dict[str, Command]


def _help(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bulletproof", *args, "--help"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, f"bulletproof {' '.join(args)} --help: {done.stderr}"
    return done.stdout


def _section(text: str, title: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            inside = line.strip() == f"{title}:"
            continue
        if inside:
            lines.append(line)
    return lines


def _command(path: tuple[str, ...]) -> Command:
    text = _help(*path)
    options: set[str] = set()
    for line in _section(text, "Options"):
        stripped = line.strip()
        if stripped.startswith("-"):
            spec = re.split(r"\s{2,}", stripped)[0]
            options |= set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", spec))
    subcommands = {}
    for line in _section(text, "Commands"):
        m = re.match(r"^  (\S+)", line)
        if m:
            subcommands[m[1]] = _command((*path, m[1]))
    return Command(path[-1] if path else "bulletproof", options, subcommands)


@pytest.fixture(scope="module")
def cli() -> Command:
    return _command(())


def test_the_cli_tree_is_read_from_help(cli: Command) -> None:
    expected = {"init", "check-config", "run", "demo", "profiles", "status", "jobs", "job", "pause",
                "resume", "clear", "cancel", "retry", "retry-failed", "config"}
    assert expected <= set(cli.subcommands)
    assert set(cli.subcommands["config"].subcommands) == {"get", "validate", "apply"}
    assert {"--config", "--log-format"} <= cli.subcommands["run"].options
    assert {"--url", "--token", "--json"} <= cli.subcommands["config"].subcommands["apply"].options


_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<", "2>", "&>", "2>&1", "<<"}
_PREFIXES = {"sudo", "exec", "time", "env", "nohup"}


def _simple_commands(text: str) -> list[list[str]]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in _SEPARATORS:
            commands.append([])
        elif token in _REDIRECTS or re.fullmatch(r"\d?[<>]+&?\d?", token):
            skip_next = not token.endswith("&1")
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def bulletproof_args(words: list[str]) -> list[str] | None:
    """The arguments given to `bulletproof` by one simple command, or None if it runs another."""
    words = list(words)
    while words and (words[0] in _PREFIXES or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0])):
        if words.pop(0) == "sudo":
            while words and words[0].startswith("-"):
                if words.pop(0) in ("-u", "-g", "--user", "--group") and words:
                    words.pop(0)
    if not words:
        return None
    if Path(words[0]).name in ("docker", "docker-compose"):
        rest = words[1:]
        if rest and rest[0] == "compose":
            rest = rest[1:]
        if not rest or rest[0] not in ("exec", "run"):
            return None
        verb, rest = rest[0], rest[1:]
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            if option in ("-e", "--env", "-u", "--user", "-w", "--workdir", "--name",
                          "--entrypoint", "-v", "--volume", "-p", "--publish") and rest:
                rest.pop(0)
        if not rest:
            return None
        service, rest = rest[0], rest[1:]
        image = service == "bulletproof" or service.startswith("bulletproof:")
        if verb == "run" and image and rest and Path(rest[0]).name != "bulletproof":
            return rest  # the image's ENTRYPOINT is `bulletproof`
        words = rest
        if not words:
            return None
    if Path(words[0]).name == "bulletproof":
        return words[1:]
    if re.fullmatch(r"python3?(\.\d+)?", Path(words[0]).name) and words[1:3] == ["-m", "bulletproof"]:
        return words[3:]
    return None


def check_command(cli: Command, args: list[str]) -> list[str]:
    """Problems with `bulletproof ARGS`: unknown commands or options."""
    problems = []
    current = cli
    trail = "bulletproof"
    for arg in args:
        arg = arg.strip("[]")
        if not arg or arg in ("...", "…"):
            continue
        if arg.startswith("-"):
            option = arg.split("=", 1)[0]
            if option not in current.options:
                problems.append(f"`{trail}` has no option {option}")
            continue
        if current.subcommands:
            if arg not in current.subcommands:
                problems.append(f"`{trail}` has no command {arg!r}")
                return problems
            current = current.subcommands[arg]
            trail += f" {arg}"
    return problems


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """(where, text, args) of every bulletproof command the docs show."""
    found = []
    for path in PAGES:
        p = page(path)
        candidates: list[tuple[int, str]] = []
        for block in p.blocks:
            if block.lang not in SHELL_LANGS:
                continue
            joined = block.text.replace("\\\n", " ")
            for offset, line in enumerate(joined.splitlines()):
                line = re.sub(r"^\s*\$\s+", "", line)
                candidates.append((block.line + 1 + offset, line))
        candidates += inline_code(p)
        for line, text in candidates:
            if not re.search(r"(^|[\s/;|&(])bulletproof(\s|$|:\d)", text):
                continue
            try:
                commands = _simple_commands(text)
            except ValueError:
                continue  # not shell (a diagram, prose); a real command line always lexes
            for words in commands:
                args = bulletproof_args(words)
                if args is not None:
                    found.append((p.where(line), text, args))
    return found


def test_every_documented_command_exists(cli: Command) -> None:
    commands = doc_commands()
    assert len(commands) > 30, "the command scan found too little: is the parser broken?"
    problems = [f"{where}: {text}\n    {problem}" for where, text, args in commands
                for problem in check_command(cli, args)]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_mistakes(cli: Command) -> None:
    assert check_command(cli, ["config", "apply", "x.yaml"]) == []
    assert check_command(cli, ["jobs", "--state", "failed", "--json"]) == []
    assert check_command(cli, ["config", "show"])
    assert check_command(cli, ["jobs", "--status", "failed"])
    assert check_command(cli, ["retry-all"])
    assert bulletproof_args(shlex.split(".venv/bin/bulletproof run --config m.yaml")) == [
        "run", "--config", "m.yaml"]
    assert bulletproof_args(shlex.split("docker compose exec bulletproof bulletproof status")) == [
        "status"]
    assert bulletproof_args(shlex.split("docker compose run --rm bulletproof check-config /c.yaml")) == [
        "check-config", "/c.yaml"]
    assert bulletproof_args(shlex.split("docker run --rm bulletproof:0.1.0 profiles")) == ["profiles"]
    assert bulletproof_args(shlex.split("sudo -u bulletproof /opt/bp/bin/bulletproof init x")) == [
        "init", "x"]
    assert bulletproof_args(shlex.split("pip install bulletproof")) is None
    assert bulletproof_args(shlex.split("journalctl -u bulletproof -f")) is None


# -- config keys ---------------------------------------------------------------------------------


def _key_problems(annotation: Any, value: Any, prefix: str) -> list[str]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        problems: list[str] = []
        for option in args:
            if option is type(None):
                continue
            problems = _key_problems(option, value, prefix)
            if not problems:
                return []
        return problems
    if origin is typing.Annotated:
        return _key_problems(args[0], value, prefix)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict):
            return []
        problems = []
        for key, item in value.items():
            if key not in annotation.model_fields:
                problems.append(f"{prefix}{key}")
                continue
            problems += _key_problems(annotation.model_fields[key].annotation, item, f"{prefix}{key}.")
        return problems
    if origin is list and isinstance(value, list) and args:
        return [p for i, item in enumerate(value) for p in _key_problems(args[0], item, f"{prefix}{i}.")]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return [p for k, item in value.items() for p in _key_problems(args[1], item, f"{prefix}{k}.")]
    return []


def config_key_problems(fragment: dict[str, Any]) -> list[str]:
    return _key_problems(config_model(), fragment, "")


def is_monitor_fragment(data: Any) -> bool:
    if not isinstance(data, dict) or not data:
        return False
    keys = set(data)
    return bool(keys & set(config_model().model_fields)) and not keys & OTHER_FORMATS


def yaml_fragments() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in PAGES:
        p = page(path)
        for block in p.blocks:
            if block.lang not in ("yaml", "yml"):
                continue
            try:
                data = yaml.safe_load(block.text)
            except yaml.YAMLError as exc:
                # Unparseable: a problem only if it claims to be monitor.yaml (a compose or
                # Prometheus snippet is another page's business).
                keys = re.findall(r"^([A-Za-z_][\w-]*):", block.text, re.M)
                if is_monitor_fragment(dict.fromkeys(keys, None)):
                    raise AssertionError(f"{p.where(block.line)}: invalid YAML: {exc}") from None
                continue
            if is_monitor_fragment(data):
                out.append((p.where(block.line), data))
    return out


def test_every_documented_config_key_exists() -> None:
    fragments = yaml_fragments()
    assert len(fragments) >= 5, "the YAML scan found too little: is the parser broken?"
    problems = [f"{where}: unknown key {key}" for where, data in fragments
                for key in config_key_problems(data)]
    assert not problems, "\n".join(problems)


def test_every_documented_config_fragment_validates(tmp_path: Path) -> None:
    base = yaml.safe_load(default_config_text())
    problems = []
    for where, data in yaml_fragments():
        try:
            parse_config(overlay(base, data), base_dir=tmp_path, source=where)
        except ConfigError as exc:
            problems += [f"{where}: {issue}" for issue in exc.issues]
    assert not problems, "\n".join(problems)


def overlay(base: Any, fragment: Any) -> Any:
    """The fragment laid over the base config: mappings merge (a fragment's new profile joins
    the default ones), anything else is replaced."""
    if isinstance(base, dict) and isinstance(fragment, dict):
        return {**base, **{k: overlay(base.get(k), v) for k, v in fragment.items()}}
    return fragment


def test_the_key_check_catches_mistakes() -> None:
    assert config_key_problems({"api": {"grafana": {"url": "x", "min_rol": "Editor"}}}) == [
        "api.grafana.min_rol"]
    assert config_key_problems({"monitor_folder": [{"path": "/a", "poll": True}, "/b"]}) == [
        "monitor_folder.0.poll"]
    assert config_key_problems({"profiles": {"p": {"video_codec": "libx264", "crf": 20,
                                                   "bitrate": "2M"}}}) == ["profiles.p.bitrate"]
    assert config_key_problems({"rules": [{"profile": "x", "globs": ["*"]}]}) == ["rules.0.globs"]
    assert config_key_problems({"max_worker": 2}) == ["max_worker"]
    assert not is_monitor_fragment({"services": {"bulletproof": {}}, "volumes": {}})


# -- metrics ---------------------------------------------------------------------------------------

# A whole word: `bulletproof_bulletproof-data` (a volume) or `x/bulletproof_y.yml` are no metric.
_METRIC_TOKEN = re.compile(r"(?<![\w:/.-])[A-Za-z0-9_:]*bulletproof_[A-Za-z0-9_:]*(?![\w:/.-])")
_SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count", "_created", "_total")


def documented_metrics() -> set[str]:
    names = set()
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`(bulletproof_[a-z0-9_]+)`", line)
        if m:
            names.add(m[1])
    return names


def recording_rules() -> set[str]:
    names = set()
    for path in RULE_FILES:
        for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups", []):
            names |= {rule["record"] for rule in group.get("rules", []) if "record" in rule}
    return names


def metric_known(token: str, metrics: set[str], records: set[str]) -> bool:
    if ":" in token:
        return token in records
    if token in metrics:
        return True
    for suffix in _SAMPLE_SUFFIXES:
        if token.endswith(suffix) and token[: -len(suffix)] in metrics:
            return True
    return token + "_total" in metrics  # a counter's family name (OpenMetrics)


def test_every_documented_metric_is_in_the_metrics_reference() -> None:
    metrics, records = documented_metrics(), recording_rules()
    assert len(metrics) > 30 and records
    problems = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        for m in _METRIC_TOKEN.finditer(text):
            token = m[0].strip(":_")
            if ":" not in token and not token.startswith("bulletproof_"):
                continue  # part of another word
            if not metric_known(token, metrics, records):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(REPO)}:{line}: {token}")
    assert not problems, "not in docs/metrics.md (or prometheus/rules/):\n" + "\n".join(problems)


# -- links -----------------------------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*([^)\s]+)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.M)


def github_anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in page(path).prose.splitlines():
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m[2])
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    for m in re.finditer(r'<a\s+(?:name|id)="([^"]+)"', path.read_text(encoding="utf-8")):
        anchors.add(m[1])
    return anchors


def links(path: Path) -> list[tuple[int, str]]:
    p = page(path)
    prose = _INLINE.sub(lambda m: " " * len(m[0]), p.prose)  # no links inside inline code
    out = []
    for regex in (_LINK, _IMAGE, _REFERENCE):
        for m in regex.finditer(prose):
            out.append((prose.count("\n", 0, m.start()) + 1, m[1]))
    return out


def test_every_relative_link_resolves() -> None:
    problems = []
    checked = 0
    for path in PAGES:
        for line, target in links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO)}:{line}: {target}"
            checked += 1
            if not resolved.exists():
                problems.append(f"{where}: no such file")
                continue
            if REPO not in resolved.parents and resolved != REPO:
                problems.append(f"{where}: outside the repository")
                continue
            if anchor and resolved.suffix == ".md" and anchor not in github_anchors(resolved):
                problems.append(f"{where}: no heading with anchor #{anchor}")
    assert checked > 20, "the link scan found too little: is the parser broken?"
    assert not problems, "\n".join(problems)


def test_the_docs_index_lists_every_page() -> None:
    index = DOCS / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for _, t in links(index)
              if not re.match(r"^[a-z]+:", t)}
    for doc in sorted(DOCS.glob("*.md")):
        if doc.name != "README.md":
            assert doc.resolve() in linked, f"docs/README.md does not link {doc.name}"
    readme = {(REPO / t.partition("#")[0]).resolve() for _, t in links(REPO / "README.md")
              if not re.match(r"^[a-z]+:", t)}
    assert index.resolve() in readme, "README.md links the documentation index"
    required = {"user-guide.md", "deployment.md", "configuration.md", "api.md", "metrics.md",
                "alerting.md", "runbook.md", "dashboards.md", "security.md", "architecture.md"}
    assert required <= {p.name for p in DOCS.glob("*.md")}


def test_the_anchor_rules_follow_github() -> None:
    sample = DOCS / "configuration.md"
    anchors = github_anchors(sample)
    assert {"top-level", "watch-folders", "api", "signals"} <= anchors
    assert "configuration-monitoryaml" in anchors  # "# Configuration (`monitor.yaml`)"
