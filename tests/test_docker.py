"""The container image (Dockerfile) and the compose stack (docker-compose.yml), tested without an engine.

No Docker engine runs on our machines, so this checks everything around one:

* docker-compose.yml validates against the Compose Specification's JSON schema (vendored in
  tests/data/, see compose-spec.README.md) and, where Debian's `docker-compose` is installed,
  `docker-compose config -q` accepts it (and refuses it without the required secrets);
* everything it builds from or mounts exists in the repository (only the video folders are the
  user's), every named volume is declared, every image is pinned to a version;
* every service name, port and environment variable agrees with prometheus/prometheus.yml, the
  Alertmanager config, the Grafana provisioning, the nginx template, the monitor's config in
  the image (examples/monitor.compose.yaml) and .env.example;
* every service has a health check, and every `depends_on` waits for a healthy, existing service;
* the Dockerfile parses into a builder and a runtime stage on the same pinned base, with Debian's
  ffmpeg, a wheel installed offline, a non-root user, the volumes, EXPOSE 8080, a HEALTHCHECK on
  /healthz, exec-form ENTRYPOINT/CMD, STOPSIGNAL SIGTERM and no secret in ENV or ARG; every COPY
  source is in the build context that .dockerignore lets through;
* the fleet (the `fleet` profile with the override docker-compose.fleet.yml): `postgres` on a
  pinned image with a health check and a volume, `worker` nodes that scale (no fixed name,
  address or port) and wait for a healthy database, the single-monitor stack asking for no
  PostgreSQL setting, the fleet's config (examples/fleet/monitor.yaml) valid and naming that
  database, and prometheus/fleet.yml accepted by promtool and, run by the real Prometheus
  through the override's entrypoint, discovering nodes over HTTP SD with the API token; two
  nodes running the worker's command with that config on one real PostgreSQL share the output
  folder and transcode each clip once;
* the image's command works as-is: the wheel built from exactly the builder stage's inputs,
  installed in a fresh virtual environment, runs `bulletproof run --config <the image's config>`
  with the container paths mapped to temporary folders; /healthz and the image's HEALTHCHECK
  command answer, clips dropped by the demo feeder (examples/demo_feed.py) are transcoded or
  failed as they should, and SIGTERM ends it with exit code 0.
"""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from bulletproof.config import config_model, parse_config_text
from bulletproof.samples import make_clip
from exporter.security.origins import OriginPolicy, resolve_public_url
from tests.postgres import psycopg
from tests.promstack import PROMETHEUS_BIN, PROMTOOL_BIN, free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
FLEET_FILE = REPO / "docker-compose.fleet.yml"
FLEET_CONFIG = REPO / "examples" / "fleet" / "monitor.yaml"
PROM_FLEET_CONFIG = REPO / "prometheus" / "fleet.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
MONITOR_CONFIG = REPO / "examples" / "monitor.compose.yaml"
DEMO_FEED = REPO / "examples" / "demo_feed.py"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
SCHEMA_NOTE = REPO / "tests" / "data" / "compose-spec.README.md"
PROM_CONFIG = REPO / "prometheus" / "prometheus.yml"
AM_CONFIG = REPO / "prometheus" / "alertmanager.yml"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources"
DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards"
NGINX_TEMPLATES = REPO / "grafana" / "nginx"

# Values for the variables the compose file requires (`${VAR:?...}`), as a user's .env would.
TEST_ENV = {"BULLETPROOF_API_TOKEN": "test-token-not-a-secret",
            "GF_SECURITY_ADMIN_PASSWORD": "test-password-not-a-secret"}
# ... and what the fleet's override requires on top.
FLEET_ENV = {**TEST_ENV, "POSTGRES_PASSWORD": "test-db-password-not-a-secret"}
# Host folders that are the user's data, created by the user (README, docs/deployment.md).
DATA_FOLDERS = {"videos/incoming", "videos/processed"}
# The container paths of the image's config (examples/monitor.compose.yaml) and their volumes.
CONTAINER_WATCH, CONTAINER_OUTPUT, CONTAINER_DATA, CONTAINER_CONFIG = (
    "/watch", "/output", "/data", "/config")
# Where the fleet's nodes find their config (the read-only mount of examples/fleet/).
FLEET_CONFIG_DIR = "/etc/bulletproof"
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE|CREDENTIAL", re.I)
VERSION_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([.-][0-9A-Za-z.-]+)?$")


# -- helpers: compose ----------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
    recursively through lists and mappings; unset variables take their defaults."""
    env = {**TEST_ENV, **(env or {})}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        current = env.get(name)
        if op in (":-", "-"):
            if current is None or (op == ":-" and current == ""):
                return arg
            return current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise AssertionError(f"compose requires {name}: {arg}")
            return current
        return current or ""

    return _VAR.sub(repl, value)


def compose_variables() -> dict[str, str | None]:
    """Every variable the compose files read, with its operator (None, ':-', ':?'...)."""
    return {m["name"]: m["op"] for path in (COMPOSE_FILE, FLEET_FILE)
            for m in _VAR.finditer(path.read_text(encoding="utf-8"))}


def services() -> dict[str, dict[str, Any]]:
    return interpolate(load_compose()["services"])


def load_fleet_override() -> dict[str, Any]:
    return yaml.safe_load(FLEET_FILE.read_text(encoding="utf-8"))


def _merge_service(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an override into a service: mappings (environment, depends_on) merge,
    volumes merge by target, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key in ("environment", "depends_on") and isinstance(value, dict):
            merged[key] = {**(base.get(key) or {}), **value}
        elif key == "volumes":
            by_target = {item.split(":")[1]: item for item in base.get(key) or []}
            by_target.update({item.split(":")[1]: item for item in value})
            merged[key] = list(by_target.values())
        else:
            merged[key] = value
    return merged


def fleet_services() -> dict[str, dict[str, Any]]:
    """The services as `-f docker-compose.yml -f docker-compose.fleet.yml --profile fleet` runs them."""
    base = interpolate(load_compose()["services"], FLEET_ENV)
    override = interpolate(load_fleet_override()["services"], FLEET_ENV)
    assert set(override) <= set(base), f"the override names unknown services: {set(override) - set(base)}"
    return {name: _merge_service(svc, override.get(name, {})) for name, svc in base.items()
            if "profiles" not in svc or "fleet" in svc["profiles"]}


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment: its env_files, then `environment` (which wins, as in compose)."""
    env: dict[str, str] = {}
    files = service.get("env_file") or []
    for item in [files] if isinstance(files, str) else files:
        path = item["path"] if isinstance(item, dict) else item
        env.update(parse_env_file(REPO / path))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(e.split("=", 1) if "=" in e else (e, "") for e in environment)
    env.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return env


def parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip()
    return env


def env_references(value: Any) -> set[str]:
    """`$VAR` / `${VAR}` in the string values of a parsed YAML document."""
    if isinstance(value, dict):
        return set().union(*(env_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_references(v) for v in value)) if value else set()
    if isinstance(value, str):
        return {a or b for a, b in re.findall(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", value)}
    return set()


def short_volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    out = []
    for item in service.get("volumes") or []:
        assert isinstance(item, str), f"long volume syntax not expected here: {item}"
        parts = item.split(":")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else "rw"
        out.append((source, target, mode))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def container_path_source(service: dict[str, Any], path: str) -> tuple[str, str] | None:
    """Which volume of `service` holds container path `path`: (source, target), deepest first."""
    best: tuple[str, str] | None = None
    for source, target, _ in short_volumes(service):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    return best


def repo_file_for(service: dict[str, Any], container_path: str) -> Path:
    """The repository file that a bind mount of `service` puts at `container_path`."""
    found = container_path_source(service, container_path)
    assert found is not None, f"{container_path} is not mounted"
    source, target = found
    assert is_bind(source), f"{container_path} comes from volume {source}, not the repository"
    rest = container_path[len(target):].lstrip("/")
    return (REPO / source / rest).resolve()


def flag_value(service: dict[str, Any], flag: str) -> str | None:
    for arg in service.get("command") or []:
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def listen_ports() -> dict[str, int]:
    """The port each service listens on inside the compose network, from its own configuration."""
    svc = services()
    config = monitor_config()
    return {
        "bulletproof": config.api.port,
        "prometheus": port_of(flag_value(svc["prometheus"], "--web.listen-address") or ":9090"),
        "alertmanager": port_of(flag_value(svc["alertmanager"], "--web.listen-address") or ":9093"),
        "grafana": int(service_env(svc["grafana"]).get("GF_SERVER_HTTP_PORT", "3000")),
        "frontdoor": int(service_env(svc["frontdoor"])["FRONTDOOR_PORT"]),
        "worker": fleet_config().api.port,
        "postgres": 5432,  # the official image's default (no PGPORT, no `-c port=`)
    }


def monitor_config():
    return parse_config_text(MONITOR_CONFIG.read_text(encoding="utf-8"),
                             base_dir=Path(CONTAINER_CONFIG), source=MONITOR_CONFIG)


def fleet_config():
    return parse_config_text(FLEET_CONFIG.read_text(encoding="utf-8"),
                             base_dir=Path(FLEET_CONFIG_DIR), source=FLEET_CONFIG)


def published(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) of each published port."""
    out = []
    for item in service.get("ports") or []:
        parts = str(item).split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append((None, int(parts[0]), int(parts[1])))
    return out


def assert_service_url(url: str, what: str, *, self_service: str | None = None) -> None:
    """`url` (or host:port) names a compose service on the port that service listens on."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    ports = listen_ports()
    if host in ("localhost", "127.0.0.1") and self_service is not None:
        host = self_service
    assert host in ports, f"{what}: {url} names no service of docker-compose.yml"
    assert port == ports[host], f"{what}: {url} but {host} listens on {ports[host]}"


# -- helpers: Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, line) with continuations joined and comments dropped."""
    out: list[tuple[str, str, int]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        line = " ".join(part for part in buffer if part)
        buffer = []
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip(), start))
    assert not buffer, "the Dockerfile ends inside a continued line"
    return out


class Stage:
    def __init__(self, base: str, name: str | None) -> None:
        self.base = base
        self.name = name
        self.instructions: list[tuple[str, str]] = []
        self.args: dict[str, str] = {}

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]

    def one(self, instruction: str) -> str:
        found = self.all(instruction)
        assert len(found) == 1, f"stage {self.name}: expected one {instruction}, found {found}"
        return found[0]


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: variables.get(m[1] or m[2], m[0]), text)


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ARGs expanded in each stage."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction, args, _ in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(expand(words[0], global_args), name))
            continue
        if instruction == "ARG":
            name, _, default = args.partition("=")
            target = stages[-1].args if stages else global_args
            target[name.strip()] = default.strip().strip('"')
            if not stages:
                continue
        assert stages, f"{instruction} before the first FROM"
        stage = stages[-1]
        stage.instructions.append((instruction, expand(args, {**global_args, **stage.args})))
    return global_args, stages


def exec_form(args: str, what: str) -> list[str]:
    assert args.startswith("["), f"{what} must be in exec (JSON) form, not {args!r}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), what
    return value


def healthcheck_command(args: str) -> list[str]:
    assert " CMD " in f" {args} ", f"HEALTHCHECK without CMD: {args!r}"
    return exec_form(args.split("CMD", 1)[1].strip(), "HEALTHCHECK CMD")


def _glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regex: `*` and `?` stay within a folder, `**` crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def dockerignore_allows(path: str) -> bool:
    """Whether the build context keeps `path`: the last pattern matching it or one of its parent
    folders wins, as in Docker."""
    allowed = True
    candidates = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _glob_regex((line[1:] if negate else line).strip("/"))
        if any(re.fullmatch(regex, c) for c in candidates):
            allowed = negate
    return allowed


# == the compose file ===========================================================================


def test_vendored_schema_is_the_recorded_upstream_copy() -> None:
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    note = SCHEMA_NOTE.read_text(encoding="utf-8")
    assert digest in note, "tests/data/compose-spec.json differs from the copy its note records"
    assert "Apache" in note and "compose-spec/compose-spec" in note


def test_compose_file_validates_against_the_compose_specification_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The schema is not a rubber stamp: an unknown service key is refused.
    broken = load_compose()
    broken["services"]["bulletproof"]["healthcheck"]["intreval"] = "5s"
    assert list(validator.iter_errors(broken))


def _docker_compose(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env_file = tmp_path / "compose.env"  # never the developer's own .env
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in TEST_ENV and not k.startswith("COMPOSE")}
    return subprocess.run(
        ["docker-compose", "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), *args],
        capture_output=True, text=True, env=clean, timeout=120)


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (apt-get install docker-compose)")
def test_docker_compose_config_accepts_the_file_and_demands_the_secrets(tmp_path: Path) -> None:
    done = _docker_compose("config", "-q", env=TEST_ENV, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _docker_compose("--profile", "demo", "--profile", "fleet", "config", "--services",
                           env=TEST_ENV, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == set(load_compose()["services"])
    assert "POSTGRES_PASSWORD" not in done.stderr, "the single-monitor stack needs no database password"
    for missing in TEST_ENV:
        env = {k: v for k, v in TEST_ENV.items() if k != missing}
        done = _docker_compose("config", "-q", env=env, tmp_path=tmp_path)
        assert done.returncode != 0 and missing in done.stderr, (missing, done.stderr)


def test_the_stack_has_the_expected_services() -> None:
    svc = services()
    assert set(svc) == {"bulletproof", "prometheus", "alertmanager", "grafana", "frontdoor", "demo",
                        "postgres", "worker"}
    assert svc["demo"].get("profiles") == ["demo"], "the demo feeder is optional"
    assert svc["postgres"].get("profiles") == ["fleet"] and svc["worker"].get("profiles") == ["fleet"]
    optional = {"demo", "postgres", "worker"}
    assert all("profiles" not in s for name, s in svc.items() if name not in optional), \
        "`docker compose up` starts the single-monitor stack exactly as before"


def test_everything_built_or_mounted_exists_in_the_repository() -> None:
    compose = load_compose()
    declared_volumes = set(compose.get("volumes") or {})
    used_volumes: set[str] = set()
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile_name = ("Dockerfile" if isinstance(build, str)
                               else build.get("dockerfile", "Dockerfile"))
            assert (REPO / context).is_dir() and (REPO / context / dockerfile_name).is_file(), name
        for source, target, mode in short_volumes(service):
            assert target.startswith("/"), f"{name}: {target}"
            assert mode in ("ro", "rw"), f"{name}: {source}:{target}:{mode}"
            if not is_bind(source):
                used_volumes.add(source)
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
                continue
            relative = os.path.normpath(source)
            if relative in DATA_FOLDERS:
                assert mode == "rw", f"{name}: the video folders are written"
                continue
            assert not Path(source).is_absolute(), f"{name}: {source} is outside the repository"
            assert (REPO / source).exists(), f"{name}: {source} does not exist in the repository"
            assert mode == "ro", f"{name}: repository files are mounted read-only ({source})"
        files = service.get("env_file") or []
        for item in [files] if isinstance(files, str) else files:
            path = item["path"] if isinstance(item, dict) else item
            assert (REPO / path).is_file(), f"{name}: env_file {path} does not exist"
    assert used_volumes == declared_volumes, "declared volumes that no service uses"
    assert declared_volumes == {"bulletproof-data", "bulletproof-config", "prometheus-data",
                                "alertmanager-data", "grafana-data", "postgres-data"}
    # The override mounts repository files only, read-only, and declares no volume of its own.
    override = load_fleet_override()
    assert not override.get("volumes") and not override.get("networks")
    for name, service in override["services"].items():
        for source, target, mode in short_volumes(service):
            assert is_bind(source) and (REPO / source).exists() and mode == "ro", \
                f"{name} (docker-compose.fleet.yml): {source}:{target}:{mode}"


def test_images_are_pinned_to_versions() -> None:
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version is not None
    for name, service in services().items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service is tagged too)"
        assert "@" not in image or ":" in image.split("@")[0], f"{name}: {image}"
        repository, _, tag = image.split("@")[0].rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
        assert VERSION_TAG.match(tag), f"{name}: {image} has no version tag"
        if "build" in service:
            assert image == f"bulletproof:{version[1]}", \
                f"{name}: tag the built image with the package version"


def test_every_service_has_a_healthcheck_and_depends_on_healthy_services() -> None:
    svc = services()
    for name, service in svc.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), f"{name}: no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for other, condition in (service.get("depends_on") or {}).items():
            assert other in svc, f"{name} depends on unknown {other}"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {other}: {condition}"
            # A service of a profile may wait for one of the same profile, never an always-on
            # service for an optional one (`docker compose up` would refuse the file).
            assert set(svc[other].get("profiles", [])) <= set(service.get("profiles", [])), \
                f"{name} depends on optional {other}"
    # No cycle: a topological order exists.
    remaining = {n: set(s.get("depends_on") or {}) for n, s in svc.items()}
    while remaining:
        ready = [n for n, deps in remaining.items() if not deps & set(remaining)]
        assert ready, f"depends_on cycle among {sorted(remaining)}"
        for n in ready:
            del remaining[n]
    # The front door resolves both upstreams at start: both must be up first.
    assert set(svc["frontdoor"]["depends_on"]) >= {"grafana", "bulletproof"}
    assert "bulletproof" in svc["grafana"]["depends_on"]


def test_health_checks_probe_each_service_on_its_own_port() -> None:
    ports = listen_ports()
    for name, service in services().items():
        if name in ("demo", "postgres"):  # a heartbeat file; pg_isready (its own test below)
            continue
        text = " ".join(service["healthcheck"]["test"][1:])
        urls = re.findall(r"https?://[^\s'\"]+", text)
        assert urls, f"{name}: the health check calls no URL"
        for url in urls:
            assert_service_url(url, f"{name} healthcheck", self_service=name)
    frontdoor = " ".join(services()["frontdoor"]["healthcheck"]["test"])
    assert "/api/health" in frontdoor and "/bulletproof/healthz" in frontdoor, \
        "the front door's check goes through both of its routes"
    assert ports["frontdoor"] == 80


def test_the_monitor_service_matches_the_image_and_its_config() -> None:
    svc = services()["bulletproof"]
    config = monitor_config()
    global_args, stages = dockerfile()
    runtime = stages[-1]
    # The image's HEALTHCHECK and the compose one are the same command.
    assert svc["healthcheck"]["test"][1:] == healthcheck_command(runtime.one("HEALTHCHECK"))
    assert svc["stop_signal"] == "SIGTERM"
    assert str(config.api.port) in svc["expose"]
    assert runtime.one("EXPOSE").split() == [str(config.api.port)]
    assert config.api.host in ("0.0.0.0", "::"), "the monitor must listen beyond loopback in a container"
    # The config's paths are the container's volumes, and each is mounted.
    assert [str(f.path) for f in config.monitor_folder] == [CONTAINER_WATCH]
    assert str(config.output_folder) == CONTAINER_OUTPUT
    assert str(config.database.parent) == CONTAINER_DATA
    volume = runtime.one("VOLUME")
    assert set(json.loads(volume)) == {CONTAINER_DATA, CONTAINER_WATCH, CONTAINER_OUTPUT}
    targets = {target: source for source, target, _ in short_volumes(svc)}
    assert os.path.normpath(targets[CONTAINER_WATCH]) == "videos/incoming"
    assert os.path.normpath(targets[CONTAINER_OUTPUT]) == "videos/processed"
    assert targets[CONTAINER_DATA] == "bulletproof-data"
    assert targets[CONTAINER_CONFIG] == "bulletproof-config", "config changes made through the API persist"
    # The token comes from .env, never from a file in the repository.
    assert config.api.token_file is None
    assert "${BULLETPROOF_API_TOKEN:?" in json.dumps(load_compose()["services"]["bulletproof"]["environment"])
    # Grafana sessions: the monitor asks the compose Grafana.
    assert config.api.grafana.url is not None
    assert_service_url(config.api.grafana.url, "api.grafana.url")
    # The front door's X-Forwarded-For is trusted from the front door's own fixed address only,
    # never from the subnet the browsers' connections also come from (the Docker gateway).
    subnets = [ipaddress.ip_network(c["subnet"])
               for c in load_compose()["networks"]["default"]["ipam"]["config"]]
    door = ipaddress.ip_address(services()["frontdoor"]["networks"]["default"]["ipv4_address"])
    assert any(door in net for net in subnets), f"{door} is not in the declared subnet {subnets}"
    assert [ipaddress.ip_network(p) for p in config.api.trusted_proxies] == [
        ipaddress.ip_network(f"{door}/32")]
    gateway = next(subnets[0].hosts())
    assert not any(gateway in ipaddress.ip_network(p) for p in config.api.trusted_proxies)
    # The other containers' addresses come from a range without the front door's: Docker hands
    # them out in order, and the tenth container (workers of a fleet) would take it otherwise.
    (pool,) = load_compose()["networks"]["default"]["ipam"]["config"]
    dynamic = ipaddress.ip_network(pool["ip_range"])
    assert dynamic.subnet_of(subnets[0]) and door not in dynamic and gateway not in dynamic
    assert dynamic.num_addresses >= 64, "room for the stack and dozens of fleet workers"
    # Runs as the host user, with the image's group for /data and /config.
    assert svc["user"] == "1000:1000"
    assert [str(g) for g in svc["group_add"]] == [runtime.args["BULLETPROOF_GID"]]
    assert global_args["PYTHON_IMAGE"]


def monitor_origin_policy() -> OriginPolicy:
    """The Host/Origin allow-list of the monitor as the compose stack starts it."""
    config = monitor_config()
    env = service_env(services()["bulletproof"])
    return OriginPolicy(config.api, resolve_public_url(config.api, env))


def test_every_name_the_stack_calls_the_monitor_by_is_allowed() -> None:
    policy = monitor_origin_policy()
    callers: list[tuple[str, str]] = []
    prom = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    for job in prom["scrape_configs"]:
        if job["job_name"] == "bulletproof":
            callers += [(t, "prometheus.yml target") for sc in job["static_configs"]
                        for t in sc["targets"]]
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        for ds in yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", []):
            if ds.get("type") == "yesoreyeram-infinity-datasource":
                callers.append((urlsplit(ds["url"]).netloc, f"datasource {ds['name']}"))
    upstream = service_env(services()["frontdoor"])["BULLETPROOF_UPSTREAM"]
    callers.append((upstream, "the front door's upstream (health check)"))
    # The browser's Host and Origin through the front door: the URL users type, by default and
    # when .env sets another one (compose passes it to the monitor too).
    root = service_env(services()["grafana"])["GF_SERVER_ROOT_URL"]
    callers.append((urlsplit(root).netloc, "GF_SERVER_ROOT_URL"))
    healthcheck = " ".join(services()["bulletproof"]["healthcheck"]["test"])
    callers += [(h, "the monitor's health check") for h in re.findall(r"https?://([^/'\"]+)", healthcheck)]
    assert len(callers) >= 4
    for host, what in callers:
        assert policy.host_allowed(host), f"{what} calls the monitor as {host}: not allowed"
    assert policy.origin_allowed(root.rstrip("/"))
    custom = {**TEST_ENV, "BULLETPROOF_PUBLIC_URL": "https://media.example.org/"}
    env = service_env(interpolate(load_compose()["services"], custom)["bulletproof"])
    other = OriginPolicy(monitor_config().api, resolve_public_url(monitor_config().api, env))
    assert other.host_allowed("media.example.org") and other.origin_allowed("https://media.example.org")
    # And nothing else: a rebinding name is refused.
    assert not policy.host_allowed("attacker.example") and not policy.origin_allowed("https://attacker.example")


def test_prometheus_scrapes_the_monitor_and_alerts_alertmanager() -> None:
    svc = services()["prometheus"]
    config_path = flag_value(svc, "--config.file")
    assert config_path is not None
    mounted = repo_file_for(svc, config_path)
    assert mounted == PROM_CONFIG.resolve()
    prom = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    targets = [t for sc in jobs["bulletproof"]["static_configs"] for t in sc["targets"]]
    assert targets == ["bulletproof:8080"]
    for target in targets:
        assert_service_url(target, "prometheus.yml bulletproof job")
    assert jobs["bulletproof"].get("metrics_path", "/metrics") == "/metrics"
    for name, job in jobs.items():
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                assert_service_url(target, f"prometheus.yml job {name}", self_service="prometheus")
    for am in prom["alerting"]["alertmanagers"]:
        for sc in am["static_configs"]:
            for target in sc["targets"]:
                assert_service_url(target, "prometheus.yml alertmanagers")
    # Rule files and file_sd files, relative to the config file, are mounted.
    config_dir = Path(config_path).parent
    for pattern in prom["rule_files"]:
        folder = repo_file_for(svc, str(config_dir / pattern)).parent
        assert list(folder.glob(Path(pattern).name)), f"no rule file for {pattern}"
    for job in jobs.values():
        for sd in job.get("file_sd_configs", []):
            for pattern in sd["files"]:
                folder = repo_file_for(svc, str(config_dir / pattern)).parent
                assert list(folder.glob(Path(pattern).name)), f"no target file for {pattern}"
    assert flag_value(svc, "--storage.tsdb.path") == "/prometheus"
    assert container_path_source(svc, "/prometheus") == ("prometheus-data", "/prometheus")


def test_alertmanager_gets_its_config_templates_and_a_state_volume() -> None:
    svc = services()["alertmanager"]
    config_path = flag_value(svc, "--config.file")
    assert config_path is not None and repo_file_for(svc, config_path) == AM_CONFIG.resolve()
    am = yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))
    for pattern in am.get("templates", []):
        folder = repo_file_for(svc, str(Path(config_path).parent / pattern)).parent
        assert list(folder.glob(Path(pattern).name)), f"no template for {pattern}"
    # Its secrets are files under /etc/alertmanager/secrets/: that folder must stay mountable,
    # so no read-only bind mount may cover it.
    secrets_dir = "/etc/alertmanager/secrets"
    holder = container_path_source(svc, secrets_dir + "/x")
    assert holder is None, f"{holder} covers {secrets_dir}: mount secrets would fail"
    assert flag_value(svc, "--storage.path") == "/alertmanager"
    assert container_path_source(svc, "/alertmanager") == ("alertmanager-data", "/alertmanager")


def test_grafana_provisioning_agrees_with_the_stack() -> None:
    svc = services()["grafana"]
    env = service_env(svc)
    assert container_path_source(svc, "/var/lib/grafana") == ("grafana-data", "/var/lib/grafana")
    assert repo_file_for(svc, "/etc/grafana/provisioning/datasources") == DATASOURCES.resolve()
    assert repo_file_for(svc, "/etc/grafana/provisioning/dashboards") == DASHBOARD_PROVIDERS.resolve()
    referenced: set[str] = set()
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        provisioning = yaml.safe_load(path.read_text(encoding="utf-8"))
        referenced |= env_references(provisioning)  # Grafana expands these in values
        for ds in provisioning.get("datasources", []):
            if ds.get("url"):
                assert_service_url(ds["url"], f"datasource {ds['name']}")
            for host in (ds.get("jsonData") or {}).get("allowedHosts", []):
                assert_service_url(host, f"datasource {ds['name']} allowedHosts")
    for variable in referenced:
        assert variable in env, f"the provisioning reads ${variable}; grafana's environment lacks it"
    for path in sorted(DASHBOARD_PROVIDERS.glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text(encoding="utf-8")).get("providers", []):
            folder = repo_file_for(svc, provider["options"]["path"])
            assert folder.is_dir() and list(folder.glob("*.json")), provider["name"]
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert repo_file_for(svc, home).is_file(), home
    assert env.get("GF_PLUGINS_PREINSTALL_SYNC"), "plugins are installed at start (grafana/plugins.env)"
    # Users reach Grafana through the front door: its root URL is the published one.
    host_ip, host_port, container_port = published(services()["frontdoor"])[0]
    root = urlsplit(env["GF_SERVER_ROOT_URL"])
    assert root.port == host_port and container_port == listen_ports()["frontdoor"]
    # grafana.env (for set-ups without compose) says the same by default.
    grafana_env = parse_env_file(REPO / "grafana" / "grafana.env")
    assert grafana_env.get("GF_SERVER_ROOT_URL", env["GF_SERVER_ROOT_URL"]) == env["GF_SERVER_ROOT_URL"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == TEST_ENV["GF_SECURITY_ADMIN_PASSWORD"]
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false"
    assert not published(svc), "Grafana is published only through the front door"


def test_the_front_door_template_gets_every_variable_and_upstream() -> None:
    svc = services()["frontdoor"]
    env = service_env(svc)
    assert repo_file_for(svc, "/etc/nginx/templates") == NGINX_TEMPLATES.resolve()
    templates = sorted(NGINX_TEMPLATES.glob("*.template"))
    assert templates, "the official nginx image renders /etc/nginx/templates/*.template"
    used: set[str] = set()
    for template in templates:
        used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", template.read_text(encoding="utf-8")))
    assert used and used <= set(env), f"unset in the frontdoor service: {sorted(used - set(env))}"
    assert_service_url(env["GRAFANA_UPSTREAM"], "GRAFANA_UPSTREAM")
    assert_service_url(env["BULLETPROOF_UPSTREAM"], "BULLETPROOF_UPSTREAM")
    assert env["GRAFANA_UPSTREAM"].split(":")[0] == "grafana"
    assert env["BULLETPROOF_UPSTREAM"].split(":")[0] == "bulletproof"
    ports = published(svc)
    assert len(ports) == 1 and ports[0][2] == int(env["FRONTDOOR_PORT"])
    assert ports[0][0] == "127.0.0.1", "published on loopback unless the user opts in (.env)"
    for name, other in services().items():
        for host_ip, _, _ in published(other):
            assert host_ip == "127.0.0.1", f"{name} is published beyond loopback by default"


def test_env_example_documents_every_variable_and_holds_no_secret() -> None:
    example = parse_env_file(ENV_EXAMPLE)
    variables = compose_variables()
    assert set(variables) <= set(example), f"undocumented: {sorted(set(variables) - set(example))}"
    unused = set(example) - set(variables) - {"COMPOSE_PROJECT_NAME"}
    assert not unused, f".env.example lists variables the stack does not read: {sorted(unused)}"
    for name, op in variables.items():
        if op == ":?":
            assert example[name] == "", f"{name}: the example must not ship a value for a secret"
        if SECRET_NAME.search(name):
            assert op == ":?" and example[name] == "", f"{name} is a secret: required, and empty here"
    # Defaults in .env.example equal the compose file's own defaults.
    defaults = {m["name"]: m["arg"] for m in _VAR.finditer(COMPOSE_FILE.read_text()) if m["op"] == ":-"}
    for name, default in defaults.items():
        assert example[name] == default, f"{name}: .env.example says {example[name]!r}, compose {default!r}"
    assert example["BULLETPROOF_PUBLIC_URL"] == f"http://localhost:{example['BULLETPROOF_HTTP_PORT']}/"
    gitignore = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in gitignore, ".env holds the secrets: it must stay out of git"


# == the fleet ===================================================================================


def fleet_database_url() -> Any:
    config = fleet_config()
    assert isinstance(config.database, str), "the fleet's config must name a PostgreSQL database"
    return urlsplit(config.database)


def test_fleet_files_validate_against_the_compose_specification_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    for document, what in ((load_fleet_override(), FLEET_FILE.name),
                           ({"services": fleet_services()}, "the merged fleet")):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        assert not errors, what + ": " + "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}"
                                                   for e in errors)


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (apt-get install docker-compose)")
def test_docker_compose_config_merges_the_fleet_and_demands_its_password(tmp_path: Path) -> None:
    files = ("-f", str(FLEET_FILE))
    done = _docker_compose(*files, "--profile", "fleet", "config", env=FLEET_ENV, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)["services"]
    ours = fleet_services()
    for name in ("bulletproof", "worker", "postgres", "prometheus"):
        assert merged[name]["command" if name != "postgres" else "image"] == \
            ours[name]["command" if name != "postgres" else "image"], name
        for key in ("PGPASSWORD", "POSTGRES_PASSWORD"):
            if key in ours[name].get("environment", {}):
                assert merged[name]["environment"][key] == FLEET_ENV["POSTGRES_PASSWORD"], (name, key)
    assert set(merged["bulletproof"]["depends_on"]) == {"postgres"}
    assert any(v.endswith(f"examples/fleet:{FLEET_CONFIG_DIR}:ro") for v in merged["bulletproof"]["volumes"])
    # The fleet refuses to start without its database password, and says which variable.
    done = _docker_compose(*files, "--profile", "fleet", "config", "-q", env=TEST_ENV,
                           tmp_path=tmp_path)
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr, done.stderr
    # ... while the single-monitor stack, postgres and worker defined but not enabled, never asks.
    done = _docker_compose("config", "-q", env=TEST_ENV, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr


def test_the_worker_scales_and_matches_the_first_node() -> None:
    raw = load_compose()["services"]["worker"]
    fleet = fleet_services()
    worker, first = fleet["worker"], fleet["bulletproof"]
    # Any number of replicas: nothing that names or addresses one container.
    for key in ("container_name", "hostname", "ports", "mac_address"):
        assert key not in raw, f"worker: {key} would stop `--scale worker=N`"
    for network in (raw.get("networks") or {}).values():
        assert not (network or {}).get("ipv4_address"), "worker: a fixed address does not scale"
    assert worker["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # The same image, user, health check and stop behaviour as the first node ...
    for key in ("build", "image", "user", "group_add", "healthcheck", "stop_signal",
                "stop_grace_period", "restart", "expose", "command"):
        assert worker[key] == first[key], f"worker and bulletproof differ in {key}"
    # ... the same video folders, and the fleet's config, both nodes on the same file.
    targets = {t: src for src, t, _ in short_volumes(worker)}
    first_targets = {t: src for src, t, _ in short_volumes(first)}
    for path in (CONTAINER_WATCH, CONTAINER_OUTPUT, FLEET_CONFIG_DIR):
        assert targets[path] == first_targets[path], f"{path} is not the same folder on every node"
    config_path = worker["command"][worker["command"].index("--config") + 1]
    assert repo_file_for(worker, config_path) == FLEET_CONFIG.resolve()
    assert repo_file_for(first, config_path) == FLEET_CONFIG.resolve()
    assert str(fleet_config().api.port) in worker["expose"]
    assert "${BULLETPROOF_API_TOKEN:?" in json.dumps(raw["environment"])
    # The password reaches the nodes from .env, through the override only.
    override = load_fleet_override()["services"]
    for name in ("worker", "bulletproof"):
        assert override[name]["environment"]["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?"), name
    assert "POSTGRES_PASSWORD" not in {m["name"] for m in _VAR.finditer(COMPOSE_FILE.read_text())}, \
        "a required variable in docker-compose.yml would be demanded by `docker compose up` too"
    # The first node's host name is its node name and a name its API answers for.
    assert first["hostname"] in fleet_config().api.allowed_hosts


def test_postgres_is_pinned_healthy_persistent_and_private() -> None:
    pg = fleet_services()["postgres"]
    image = pg["image"]
    match = re.fullmatch(r"postgres:(?P<major>\d+)\.(?P<minor>\d+)-(bookworm|trixie)", image)
    assert match, f"{image}: pin an exact PostgreSQL release on a named Debian base"
    assert int(match["major"]) >= 12, "the store needs PostgreSQL 12 or newer (docs/configuration.md)"
    # From 18 on the image keeps its data in /var/lib/postgresql/<major>/docker instead.
    data_dir = "/var/lib/postgresql/data" if int(match["major"]) < 18 else "/var/lib/postgresql"
    assert container_path_source(pg, data_dir) == ("postgres-data", data_dir)
    assert not pg.get("ports"), "the database is reached on the compose network only"
    check = pg["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "pg_isready"
    env = service_env(pg)
    url = fleet_database_url()
    assert f"--username={env['POSTGRES_USER']}" in check and f"--dbname={env['POSTGRES_DB']}" in check
    assert "--host=127.0.0.1" in check, "healthy only once it takes TCP connections, not during init"
    # The fleet's database URL names this service, its port, its role and its database.
    assert url.hostname == "postgres" and (url.port or 5432) == listen_ports()["postgres"]
    assert url.username == env["POSTGRES_USER"] and url.path.strip("/") == env["POSTGRES_DB"]
    assert url.password is None, "the password comes from PGPASSWORD, never the config file"
    assert env["POSTGRES_PASSWORD"] == FLEET_ENV["POSTGRES_PASSWORD"]
    assert load_fleet_override()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] \
        .startswith("${POSTGRES_PASSWORD:?")


def test_the_fleet_config_is_the_image_config_on_postgresql() -> None:
    config = fleet_config()
    assert isinstance(config.database, str) and config.database.startswith("postgresql://")
    # Everything but the database is the image's config: one set of rules, profiles and API
    # settings for the first node (behind the front door) and the workers.
    image = yaml.safe_load(MONITOR_CONFIG.read_text(encoding="utf-8"))
    fleet = yaml.safe_load(FLEET_CONFIG.read_text(encoding="utf-8"))
    assert {k: v for k, v in fleet.items() if k != "database"} == \
        {k: v for k, v in image.items() if k != "database"}
    assert "node_name" not in fleet, "each replica is its own node: the host name (the default)"
    assert [str(f.path) for f in config.monitor_folder] == [CONTAINER_WATCH]
    assert str(config.output_folder) == CONTAINER_OUTPUT
    done = subprocess.run([sys.executable, "-m", "bulletproof", "check-config", str(FLEET_CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_the_fleet_config_refuses_a_database_url_without_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "monitor.yaml"
    bad.write_text(FLEET_CONFIG.read_text(encoding="utf-8").replace(
        "database: postgresql://bulletproof@postgres/bulletproof",
        "database: postgresql://bulletproof:hunter2@postgres/"), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "bulletproof", "check-config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "names no database" in done.stdout + done.stderr
    assert "hunter2" not in done.stdout + done.stderr, "the password is never shown"


def test_prometheus_in_the_fleet_discovers_the_nodes_through_http_sd() -> None:
    fleet = fleet_services()
    svc, base = fleet["prometheus"], services()["prometheus"]
    config_path = flag_value(svc, "--config.file")
    assert config_path is not None and repo_file_for(svc, config_path) == PROM_FLEET_CONFIG.resolve()
    # The same flags as the single stack's Prometheus but the config file.
    assert [a for a in svc["command"] if not a.startswith("--config.file=")] == \
        [a for a in base["command"] if not a.startswith("--config.file=")]
    prom = yaml.safe_load(PROM_FLEET_CONFIG.read_text(encoding="utf-8"))
    single = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    # The same rules and alerting, rule files that exist where they are mounted.
    assert prom["rule_files"] == single["rule_files"] and prom["alerting"] == single["alerting"]
    config_dir = Path(config_path).parent
    for pattern in prom["rule_files"]:
        folder = repo_file_for(svc, str(config_dir / pattern)).parent
        assert list(folder.glob(Path(pattern).name)), f"no rule file for {pattern}"
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert set(jobs) == {job["job_name"] for job in single["scrape_configs"]}
    nodes = jobs["bulletproof"]
    assert "static_configs" not in nodes and "file_sd_configs" not in nodes, \
        "a node listed statically as well would be scraped twice (and counted twice)"
    (sd,) = nodes["http_sd_configs"]
    url = urlsplit(sd["url"])
    assert url.path == "/api/v1/sd"
    assert_service_url(sd["url"], "fleet.yml http_sd_configs")
    assert url.hostname == "bulletproof", "the first node, which the fleet always has"
    assert sd.get("refresh_interval"), "say how soon a new node is scraped"
    # The first node answers for the name it is asked by ...
    config = fleet_config()
    env = service_env(fleet["bulletproof"])
    assert OriginPolicy(config.api, resolve_public_url(config.api, env)).host_allowed(url.netloc)
    # ... and the fleet's nodes want a token for reads: Prometheus sends one, from the file the
    # override's entrypoint writes on the tmpfs.
    assert config.api.require_token_for_reads
    credentials = sd["authorization"]["credentials_file"]
    # Explicit: an http_sd authorization without `type` sends the bare token (Prometheus 2.42).
    assert sd["authorization"]["type"] == "Bearer"
    script = svc["entrypoint"][2]
    assert f"> {credentials} " in script and "umask 077" in script
    assert any(credentials.startswith(mount.rstrip("/") + "/") for mount in svc["tmpfs"])
    assert "BULLETPROOF_API_TOKEN" in service_env(svc)
    for name, job in jobs.items():
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                assert_service_url(target, f"fleet.yml job {name}", self_service="prometheus")


@pytest.mark.skipif(PROMTOOL_BIN is None, reason="promtool is not installed")
def test_promtool_accepts_the_fleet_prometheus_config(tmp_path: Path) -> None:
    done = subprocess.run([PROMTOOL_BIN, "check", "config", str(PROM_FLEET_CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rule files found" in done.stdout + done.stderr
    # Not a rubber stamp: a misspelt SD key is refused.
    broken = tmp_path / "fleet.yml"
    broken.write_text(PROM_FLEET_CONFIG.read_text(encoding="utf-8").replace(
        "refresh_interval: 30s", "refresh_intreval: 30s"), encoding="utf-8")
    shutil.copytree(REPO / "prometheus" / "rules", tmp_path / "rules")
    done = subprocess.run([PROMTOOL_BIN, "check", "config", str(broken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "refresh_intreval" in done.stdout + done.stderr


class _SdStandIn:
    """The nodes' GET /api/v1/sd as the fleet answers it, for Prometheus to discover from: the
    HTTP SD JSON of `targets`, only for the bearer `token` (401 otherwise, as a node with
    api.require_token_for_reads). It records the Authorization headers it got."""

    def __init__(self, token: str, targets: list[str]) -> None:
        self.token, self.targets, self.seen = token, targets, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                outer.seen.append(self.headers.get("Authorization"))
                ok = (self.path == "/api/v1/sd"
                      and self.headers.get("Authorization") == f"Bearer {outer.token}")
                body = json.dumps([{"targets": outer.targets, "labels": {"fleet": "compose"}}] if ok
                                  else {"error": "unauthorized"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/sd"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(PROMETHEUS_BIN is None, reason="prometheus is not installed")
@pytest.mark.timeout(120)
def test_the_fleet_prometheus_runs_through_the_override_entrypoint(tmp_path: Path) -> None:
    """prometheus/fleet.yml as the override starts it: its entrypoint writes the token file,
    execs the real Prometheus, which asks the SD endpoint with that token and scrapes what it
    lists. Only the addresses are local: the SD URL, the token file, the rule files."""
    token = FLEET_ENV["BULLETPROOF_API_TOKEN"]
    nodes = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    sd = _SdStandIn(token, nodes)
    svc = fleet_services()["prometheus"]
    prom = yaml.safe_load(PROM_FLEET_CONFIG.read_text(encoding="utf-8"))
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "bulletproof")
    (http_sd,) = job["http_sd_configs"]
    container_token = http_sd["authorization"]["credentials_file"]
    token_file = tmp_path / "run" / "api-token"
    token_file.parent.mkdir()
    http_sd["url"] = sd.url
    http_sd["refresh_interval"] = "1s"
    http_sd["authorization"]["credentials_file"] = str(token_file)
    prom["rule_files"] = [str(REPO / "prometheus" / p) for p in prom["rule_files"]]
    port = free_port()
    prom["scrape_configs"] = [job]
    prom.pop("alerting")
    config_file = tmp_path / "fleet.yml"
    config_file.write_text(yaml.safe_dump(prom, sort_keys=False), encoding="utf-8")
    # The override's entrypoint and command, as the container runs them (compose turns `$$`
    # into `$`), with the container's paths mapped.
    entrypoint = [a.replace("$$", "$").replace(container_token, str(token_file))
                  .replace("/bin/prometheus", PROMETHEUS_BIN) for a in svc["entrypoint"]]
    mapped = {"--config.file": str(config_file), "--storage.tsdb.path": str(tmp_path / "data"),
              "--web.listen-address": f"127.0.0.1:{port}",
              "--web.external-url": f"http://127.0.0.1:{port}/"}
    command = [f"{flag}={mapped.get(flag, value)}"
               for flag, value in (arg.split("=", 1) for arg in svc["command"])]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BULLETPROOF_API_TOKEN": token}
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(entrypoint + command, env=env, cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        def discovered() -> set[str]:
            status, body = _get(f"{base}/api/v1/targets")
            if status != 200:
                return set()
            return {t["labels"]["instance"] for t in json.loads(body)["data"]["activeTargets"]
                    if t["labels"]["job"] == "bulletproof"}

        assert _wait(lambda: discovered() == set(nodes), 60, "the SD targets", proc)
        assert token_file.read_text() == token and (token_file.stat().st_mode & 0o777) == 0o600
        assert sd.seen and set(sd.seen) == {f"Bearer {token}"}
        # A node that joins is scraped after the next refresh, with no file edited.
        sd.targets = [*nodes, f"127.0.0.1:{free_port()}"]
        assert _wait(lambda: discovered() == set(sd.targets), 30, "the new node", proc)
    finally:
        stop_process(proc)
        log.close()
        sd.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_nodes_run_the_fleet_config_on_one_postgresql(tmp_path: Path, postgres_cluster) -> None:
    """The worker service's command with examples/fleet/monitor.yaml, twice, on one real
    PostgreSQL: only the container paths, the listen port and the database's address are mapped
    (the compose service `postgres` becomes the test cluster). Both nodes share the output
    folder, every clip is transcoded once, and each node's API shows the whole queue."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("the image has Debian's ffmpeg; this machine has none on PATH")
    url = urlsplit(fleet_config().database)  # type: ignore[arg-type]
    database = urlsplit(postgres_cluster.database()).path.strip("/")
    with psycopg.connect(postgres_cluster.url(database), autocommit=True) as conn:
        # The fleet's role (POSTGRES_USER), owning the database as the image's init makes it.
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (url.username,)).fetchone():
            conn.execute(f'CREATE ROLE "{url.username}" LOGIN')
        conn.execute(f'ALTER DATABASE "{database}" OWNER TO "{url.username}"')
    # The compose service `postgres` becomes the test cluster; the role and the rest stay.
    test_database = urlunsplit(url._replace(netloc=f"{url.username}@127.0.0.1:{postgres_cluster.port}",
                                            path=f"/{database}"))
    folders = {path: tmp_path / path.strip("/") for path in (CONTAINER_WATCH, CONTAINER_OUTPUT)}
    for folder in folders.values():
        folder.mkdir()
    text = FLEET_CONFIG.read_text(encoding="utf-8")
    for container, host in folders.items():
        text = re.sub(rf"(?<![\w/]){re.escape(container)}(?=/|\b|$)", str(host), text)
    worker = fleet_services()["worker"]
    token = FLEET_ENV["BULLETPROOF_API_TOKEN"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1", "BULLETPROOF_API_TOKEN": token,
           "PGPASSWORD": worker["environment"]["PGPASSWORD"]}
    nodes: list[tuple[subprocess.Popen, str, Path]] = []
    try:
        for index in range(2):
            data = yaml.safe_load(text)
            port = free_port()
            data["api"]["listen"] = f"127.0.0.1:{port}"
            data["database"] = test_database
            if "node_name" in config_model().model_fields:  # two nodes on one host: two names
                data["node_name"] = f"node-{index}"
            config_file = tmp_path / f"node-{index}.yaml"
            config_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            # ENTRYPOINT `bulletproof` + the worker's command, with the config path mapped.
            command = list(worker["command"])
            command[command.index("--config") + 1] = str(config_file)
            log_path = tmp_path / f"node-{index}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "bulletproof", *command], env=env,
                                        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            nodes.append((proc, f"http://127.0.0.1:{port}", log_path))
        for proc, base, _ in nodes:
            _wait(lambda base=base: _get(f"{base}/readyz")[0] == 200, 60, "/readyz", proc)
        ffmpeg = shutil.which("ffmpeg")
        assert ffmpeg is not None
        names = [f"clip-{i}.mp4" for i in range(4)]
        for name in names:  # written beside, then renamed in: whole files only
            made = make_clip(ffmpeg, tmp_path / name, seconds=1.0)
            made.rename(folders[CONTAINER_WATCH] / name)

        def completed(base: str) -> list[dict[str, Any]]:
            status, body = _get(f"{base}/api/v1/jobs?state=completed", token)
            return json.loads(body)["jobs"] if status == 200 else []

        jobs = _wait(lambda: len(completed(nodes[0][1])) == len(names) and completed(nodes[0][1]),
                     180, "every clip transcoded", nodes[0][0])
        assert sorted(j["filename"] for j in jobs) == names, "each clip once"
        assert sorted(p.name for p in folders[CONTAINER_OUTPUT].iterdir()) == names, \
            "one output per clip, no temporary left"
        # The other node serves the same queue (why Grafana may talk to one node only).
        assert sorted(j["id"] for j in completed(nodes[1][1])) == sorted(j["id"] for j in jobs)
        for proc, _, log_path in nodes:
            assert proc.poll() is None, log_path.read_text()[-3000:]
    finally:
        for proc, _, _ in nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc, _, _ in nodes:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes.append(proc.wait())
    assert codes == [0, 0], [log.read_text()[-3000:] for _, _, log in nodes]


# == the Dockerfile ==============================================================================


def test_dockerfile_has_a_builder_and_a_slim_runtime_on_the_same_pinned_base() -> None:
    global_args, stages = dockerfile()
    assert len(stages) == 2 and stages[0].name == "builder" and stages[1].name == "runtime"
    base = global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-3]\.\d+-slim-(bookworm|trixie)", base), base
    assert all(stage.base == base for stage in stages)
    builder, runtime = stages
    assert any("pip wheel" in run for run in builder.all("RUN"))
    runs = " ".join(runtime.all("RUN"))
    assert re.search(r"apt-get install -y --no-install-recommends ffmpeg", runs)
    assert "rm -rf /var/lib/apt/lists/*" in runs
    for tool in ("gcc", "build-essential", "pip wheel", "git "):
        assert tool not in runs, f"the runtime stage must not install or use {tool}"
    install = [run for run in runtime.all("RUN") if "pip install" in run]
    assert len(install) == 1 and "--no-index" in install[0] and "from=builder" in install[0]
    # With the `postgres` extra (psycopg's binary wheel, libpq inside): any container of the
    # image can be a fleet node. Built as a wheel in the builder, installed offline here.
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("psycopg[binary]") for dep in extras["postgres"])
    assert any('pip wheel --wheel-dir /wheels ".[postgres]"' in run for run in builder.all("RUN"))
    assert '"bulletproof[postgres]"' in install[0] and "import psycopg" in install[0]


def test_dockerfile_runs_the_monitor_safely() -> None:
    _, stages = dockerfile()
    runtime = stages[-1]
    user = runtime.one("USER").split(":")[0]
    assert user not in ("", "0", "root") and int(user) >= 1000, f"USER {user} must be unprivileged"
    assert runtime.one("EXPOSE") == "8080"
    assert runtime.one("STOPSIGNAL") == "SIGTERM"
    assert exec_form(runtime.one("ENTRYPOINT"), "ENTRYPOINT") == ["bulletproof"]
    assert exec_form(runtime.one("CMD"), "CMD") == ["run", "--config", "/config/monitor.yaml"]
    check = healthcheck_command(runtime.one("HEALTHCHECK"))
    assert check[0] == "python" and "http://127.0.0.1:8080/healthz" in " ".join(check)
    copies = [c for c in runtime.all("COPY") if "--from" not in c]
    assert any(c.split()[-2:] == ["examples/monitor.compose.yaml", "/config/monitor.yaml"]
               for c in copies), "the image's default config is examples/monitor.compose.yaml"
    for stage in stages:
        for instruction in ("ENV", "ARG"):
            for args in stage.all(instruction):
                names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0]]
                for name in names:
                    assert not SECRET_NAME.search(name), f"{instruction} {name}: no secret in an image"


def test_every_copy_source_is_in_the_build_context() -> None:
    _, stages = dockerfile()
    for stage in stages:
        for args in stage.all("COPY"):
            words = [w for w in args.split() if not w.startswith("--")]
            if "--from" in args:
                continue
            for source in words[:-1]:
                path = REPO / source
                assert path.exists(), f"COPY {source}: not in the repository"
                assert dockerignore_allows(source.rstrip("/")), f"COPY {source}: .dockerignore drops it"
                if path.is_dir():
                    for file in path.rglob("*.py"):
                        rel = str(file.relative_to(REPO))
                        assert dockerignore_allows(rel), f"{rel} is dropped from the context"
    for private in (".env", ".git", ".venv", "tests", "videos/incoming/clip.mp4", "bulletproof.db",
                    "bulletproof/__pycache__/cli.cpython-311.pyc", "docs/README.md"):
        assert not dockerignore_allows(private), f"{private} must not reach the build context"


# == the image's command, for real ================================================================


def _builder_context(tmp: Path) -> Path:
    """A copy of exactly what the builder stage COPYs: the wheel is built from that alone."""
    _, stages = dockerfile()
    context = tmp / "context"
    for args in stages[0].all("COPY"):
        words = args.split()
        for source in words[:-1]:
            src = REPO / source
            dst = context / source
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    return context


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the monitor exited ({proc.returncode}) while waiting for {what}")
        try:
            value = predicate()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_image_command_works_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("the image has Debian's ffmpeg; this machine has none on PATH")
    # 1. The wheel, from the builder stage's inputs only.
    wheels = tmp_path / "wheels"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                           str(_builder_context(tmp_path))], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = wheels.glob("bulletproof-*.whl")
    # 2. A fresh virtual environment with the wheel (and its dependencies) installed.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, exe = venv / "bin" / "python", venv / "bin" / "bulletproof"
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(exe), "check-config", str(MONITOR_CONFIG)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr

    # 3. The image's config with the container paths mapped to temporary folders.
    folders = {path: tmp_path / path.strip("/") for path in
               (CONTAINER_WATCH, CONTAINER_OUTPUT, CONTAINER_DATA, CONTAINER_CONFIG)}
    for folder in folders.values():
        folder.mkdir()
    port = free_port()
    data = yaml.safe_load(MONITOR_CONFIG.read_text(encoding="utf-8"))
    text = yaml.safe_dump(data, sort_keys=False)
    for container, host in folders.items():
        text = re.sub(rf"(?<![\w/]){re.escape(container)}(?=/|\b|$)", str(host), text)
    rendered = yaml.safe_load(text)
    rendered["api"]["listen"] = f"127.0.0.1:{port}"
    config_file = folders[CONTAINER_CONFIG] / "monitor.yaml"
    config_file.write_text(yaml.safe_dump(rendered, sort_keys=False), encoding="utf-8")
    mapped = parse_config_text(config_file.read_text(), base_dir=config_file.parent)
    for path in [f.path for f in mapped.monitor_folder] + [mapped.output_folder, mapped.database]:
        assert tmp_path in path.parents, f"{path}: a container path was left unmapped"

    # 4. ENTRYPOINT + CMD as the image runs them, with only the config path mapped.
    _, stages = dockerfile()
    runtime = stages[-1]
    argv = exec_form(runtime.one("ENTRYPOINT"), "ENTRYPOINT") + exec_form(runtime.one("CMD"), "CMD")
    argv = [str(exe) if a == "bulletproof" else str(config_file) if a == "/config/monitor.yaml" else a
            for a in argv]
    token = TEST_ENV["BULLETPROOF_API_TOKEN"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "BULLETPROOF_API_TOKEN": token}
    log = (tmp_path / "monitor.log").open("w")
    proc = subprocess.Popen(argv, cwd=folders[CONTAINER_DATA], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(f"{base}/healthz")[0] == 200, 60, "/healthz", proc)
        _wait(lambda: _get(f"{base}/readyz")[0] == 200, 30, "/readyz", proc)
        # The image's HEALTHCHECK command, on this port, succeeds.
        check = healthcheck_command(runtime.one("HEALTHCHECK"))
        check = [str(py) if a == "python" else a.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                 for a in check]
        assert subprocess.run(check, timeout=30).returncode == 0
        status, body = _get(f"{base}/metrics")
        assert status == 200 and b"bulletproof_build_info" in body
        assert _get(f"{base}/api/v1/status")[0] == 401, "reads need the token in the image's config"
        assert _get(f"{base}/api/v1/status", token)[0] == 200

        # 5. The demo feeder (as the `demo` service runs it, with the image's Python) drops a
        # good clip and a corrupt one; the monitor transcodes the first and fails the second.
        heartbeat = tmp_path / "feed.alive"
        feed = subprocess.run(
            [str(py), str(DEMO_FEED)], capture_output=True, text=True, timeout=120,
            env={**env, "WATCH_DIR": str(folders[CONTAINER_WATCH]), "DEMO_COUNT": "2",
                 "DEMO_INTERVAL": "0", "DEMO_SECONDS": "1", "DEMO_SIZE": "160x120",
                 "DEMO_CORRUPT_EVERY": "2", "DEMO_HEARTBEAT": str(heartbeat)})
        assert feed.returncode == 0, feed.stdout + feed.stderr
        dropped = sorted(p.name for p in folders[CONTAINER_WATCH].rglob("*") if p.is_file())
        assert dropped == ["demo-00001.mp4", "demo-00002-corrupt.mp4"], dropped
        demo_check = services()["demo"]["healthcheck"]["test"]
        demo_check = [str(py) if a == "python" else a.replace("/tmp/demo-feed.alive", str(heartbeat))
                      for a in demo_check[1:]]
        assert subprocess.run(demo_check, timeout=30).returncode == 0, "the demo's health check"

        output = folders[CONTAINER_OUTPUT] / "demo-00001.mp4"
        _wait(output.is_file, 120, "the transcoded clip", proc)

        def failed_jobs() -> list[dict[str, Any]]:
            status, body = _get(f"{base}/api/v1/jobs?state=failed", token)
            return json.loads(body)["jobs"] if status == 200 else []

        (job,) = _wait(failed_jobs, 60, "the corrupt clip's failure", proc)
        assert job["reason"] == "input_invalid"
        assert not [p for p in folders[CONTAINER_OUTPUT].rglob("*") if p.name.startswith(".")], \
            "no temporary left in the output folder"
        assert (folders[CONTAINER_DATA] / "bulletproof.db").is_file(), "the state lives in /data"
    finally:
        # 6. SIGTERM, as `docker stop` sends it (STOPSIGNAL), ends the monitor cleanly.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        log.close()
    assert code == 0, (tmp_path / "monitor.log").read_text()[-4000:]
    assert subprocess.run(check, timeout=30, capture_output=True).returncode != 0, \
        "the HEALTHCHECK fails once the monitor is gone"


def test_demo_feeder_rejects_bad_settings(tmp_path: Path) -> None:
    env = {**os.environ, "WATCH_DIR": str(tmp_path), "DEMO_INTERVAL": "soon"}
    done = subprocess.run([sys.executable, str(DEMO_FEED)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode != 0 and "DEMO_INTERVAL" in done.stderr
    env = {**os.environ, "WATCH_DIR": str(tmp_path / "missing")}
    done = subprocess.run([sys.executable, str(DEMO_FEED)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_compose_commands_in_this_file_are_shell_words() -> None:
    # The CMD-SHELL checks are the only shell strings; they must at least parse.
    for name, service in services().items():
        test = service["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            assert shlex.split(test[1]), name


def test_the_image_config_passes_check_config() -> None:
    done = subprocess.run([sys.executable, "-m", "bulletproof", "check-config", str(MONITOR_CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
