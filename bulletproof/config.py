"""monitor.yaml: the pydantic models, loading with key-path errors, and atomic writing."""

from __future__ import annotations

import difflib
import functools
import os
import re
import socket
import string
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    create_model,
    field_serializer,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bulletproof.config_sections import plugin_sections
from bulletproof.database_url import check_postgres_url, is_postgres_url, redact_url
from bulletproof.errors import ConfigError, ConfigIssue
from bulletproof.patterns import compile_rule_regex, glob_to_regex
from bulletproof.profiles import BUILTIN_PROFILES, Profile
from bulletproof.safe_yaml import load_yaml

TEMPLATE_FIELDS = frozenset({"stem", "name", "ext", "profile", "rule", "source_ext"})
# Linux limits: a name longer than NAME_MAX bytes, or a path of PATH_MAX bytes (its NUL included),
# is refused by the OS only when first used; the config refuses it up front instead.
NAME_MAX = 255
PATH_MAX = 4096
# A library id (the `libraries` key): short, lower case, no `:` or `/`, so the fleet form of a
# path (`id:relative/path`, bulletproof.libraries) never reads as a local path.
LIBRARY_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL byte"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _bad_text_at(value: Any, where: str = "") -> tuple[str, str] | None:
    """(sub-path, problem) of the first string or mapping key the OS or the config file could not
    hold (a NUL byte, a lone surrogate from a JSON escape), or None."""
    if isinstance(value, str):
        problem = _text_problem(value)
        return (where, problem) if problem is not None else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _bad_text_at(key, f"{where}.{key!r}") if isinstance(key, str) else None
            found = found if found is not None else _bad_text_at(item, f"{where}.{key}")
            if found is not None:
                return found
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _bad_text_at(item, f"{where}.{index}")
            if found is not None:
                return found
    return None


class ConfigModel(BaseModel):
    """Base of every config model (and of a plugin's section model): no unknown keys, plain text."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_text_only(cls, value: Any) -> Any:
        # The OS (and ffmpeg's argument list) cannot carry a NUL, the file cannot hold a lone
        # surrogate (and an error message quoting one could not be sent): refuse them as bad input.
        found = _bad_text_at(value)
        if found is not None:
            where, problem = found
            at = f" (at {where.lstrip('.')})" if where else ""
            raise ValueError(f"{problem}{at}")
        return value


def check_os_path(value: Path) -> None:
    """Refuse a path the OS would refuse: an unencodable name, an over-long name or path."""
    try:
        raw = os.fsencode(value)
    except UnicodeEncodeError:
        raise ValueError("not a valid file name in this system's encoding") from None
    if b"\x00" in raw:
        raise ValueError("contains a NUL byte")
    if len(raw) >= PATH_MAX:
        raise ValueError(f"longer than {PATH_MAX - 1} bytes (the system's path limit)")
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            raise ValueError(f"a folder or file name is longer than {NAME_MAX} bytes "
                             f"({part[:40].decode(errors='replace')}...)")


def resolve_config_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in a config file are relative to the file's folder, not the cwd."""
    base = (info.context or {}).get("base_dir")
    check_os_path(value)
    value = Path(os.path.expanduser(str(value)))
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    value = Path(os.path.normpath(value))
    check_os_path(value)
    return value


class WatchFolder(ConfigModel):
    """One watched folder."""

    path: Path
    recursive: bool = True
    polling: bool = False
    poll_interval: float = Field(default=10.0, gt=0, le=3600)

    _resolve_path = field_validator("path")(resolve_config_path)


class RetryPolicy(ConfigModel):
    """Automatic retries of transient failures, with exponential backoff."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff_seconds: float = Field(default=30.0, ge=0, le=86400)
    backoff_factor: float = Field(default=2.0, ge=1, le=10)
    max_backoff_seconds: float = Field(default=3600.0, ge=0, le=7 * 86400)
    retry_on: list[Literal["stalled", "timeout", "output_error", "interrupted", "ffmpeg_error",
                           "internal"]] = (
        Field(default_factory=lambda: ["stalled", "timeout", "output_error", "interrupted"])
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt + 1`."""
        raw = self.backoff_seconds * self.backoff_factor ** max(0, attempt - 1)
        return float(min(raw, self.max_backoff_seconds))


class Timeouts(ConfigModel):
    """Limits on one transcode attempt; 0 disables a limit."""

    job_seconds: float = Field(default=0.0, ge=0)
    stall_seconds: float = Field(default=120.0, ge=0)


class FfmpegSettings(ConfigModel):
    """Which ffmpeg runs, and how politely."""

    path: str | None = None
    ffprobe_path: str | None = None
    nice: int = Field(default=19, ge=0, le=19)
    threads: int = Field(default=0, ge=0, le=256)
    stderr_tail_lines: int = Field(default=40, ge=1, le=1000)


class VerifySettings(ConfigModel):
    """How a finished output is checked before it is published (a profile may override)."""

    level: Literal["off", "basic", "decode"] = "basic"
    duration_tolerance_seconds: float = Field(default=0.5, ge=0, le=3600)
    duration_tolerance_ratio: float = Field(default=0.01, ge=0, le=1)

    def tolerance(self, expected: float) -> float:
        """The largest duration difference accepted for an output of `expected` seconds."""
        return max(self.duration_tolerance_seconds, self.duration_tolerance_ratio * expected)


NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def host_node_name() -> str:
    """This host's name as a node name (characters a node name cannot hold become '-')."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63].lstrip("-._")
    return name or "node"


class FleetSettings(ConfigModel):
    """How the monitors sharing one store keep track of each other and of their claims."""

    # A node writes its heartbeat, renews its leases and sweeps lapsed ones this often.
    heartbeat_seconds: float = Field(default=10.0, ge=1, le=300)
    # How long a claim holds without renewal: a dead node's job returns to the queue after it.
    lease_seconds: float = Field(default=60.0, ge=5, le=3600)

    @field_validator("lease_seconds")
    @classmethod
    def _lease_outlasts_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        beat = info.data.get("heartbeat_seconds")
        if beat is not None and value < 3 * beat:
            raise ValueError(f"must be at least 3 × heartbeat_seconds ({3 * beat:g}): the "
                             "heartbeat renews the leases, and one late beat must not lose them")
        return value


class LogSettings(ConfigModel):
    """Log format and level."""

    format: Literal["logfmt", "json"] = "logfmt"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Rule(ConfigModel):
    """Ordered match rule: the first rule whose every given condition holds names the profile."""

    name: str | None = None
    profile: str
    glob: list[str] | None = None
    regex: str | None = None
    extensions: list[str] | None = None
    min_size: ByteSize | None = None
    max_size: ByteSize | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)

    @field_validator("glob", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("glob")
    @classmethod
    def _globs_compile(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            glob_to_regex(pattern)
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_rule_regex(value)
        return value

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [e.lower().lstrip(".") for e in value]


class Config(ConfigModel):
    """The whole of monitor.yaml."""

    monitor_folder: list[WatchFolder]
    output_folder: Path
    output_template: str = "{stem}.{ext}"
    output_conflict: Literal["rename", "skip", "overwrite", "fail"] = "rename"
    verify: VerifySettings = Field(default_factory=VerifySettings)
    max_workers: int = Field(default=2, ge=1, le=64)
    stability_seconds: float = Field(default=5.0, ge=0, le=3600)
    rescan_interval: float = Field(default=60.0, ge=1, le=86400)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    ffmpeg: FfmpegSettings = Field(default_factory=FfmpegSettings)
    on_success: Literal["keep", "move", "delete"] = "keep"
    done_folder: Path | None = None
    # A SQLite file, or a `postgresql://` URL: the store several monitors can share.
    database: Path | str = Path("bulletproof.db")
    # This monitor's name among those sharing the store (status, claims, metrics' `node` label).
    node_name: str = Field(default_factory=host_node_name)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    # Library id -> this node's mount point of a shared root (bulletproof.libraries): jobs in
    # the store name `id:relative/path`, so nodes mounting the share elsewhere share them.
    libraries: dict[str, Path] = Field(default_factory=dict)
    log: LogSettings = Field(default_factory=LogSettings)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("monitor_folder", mode="before")
    @classmethod
    def _folders(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, (str, Path)) else v for v in value]
        return value

    @field_validator("output_folder")
    @classmethod
    def _resolve_paths(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_config_path(value, info)

    @field_validator("database", mode="before")
    @classmethod
    def _database(cls, value: Any, info: ValidationInfo) -> Path | str:
        if is_postgres_url(value):
            return check_postgres_url(value)
        if not isinstance(value, (str, Path)):
            raise ValueError("must be a file path or a postgresql:// URL")
        return resolve_config_path(Path(value), info)

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if not re.fullmatch(NODE_NAME_PATTERN, value):
            raise ValueError("must be 1 to 63 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit")
        return value

    @field_serializer("database", when_used="json")
    def _database_shown(self, value: Path | str) -> str:
        # What the API shows and logs: never a password.
        return redact_url(value) if isinstance(value, str) else str(value)

    @field_validator("libraries", mode="after")
    @classmethod
    def _library_roots(cls, value: dict[str, Path]) -> dict[str, Path]:
        errors: list[InitErrorDetails] = []
        roots: dict[str, Path] = {}

        def refuse(name: str, message: str) -> None:
            errors.append(InitErrorDetails(
                type=PydanticCustomError("library", "{message}", {"message": message}),
                loc=(name,), input=str(value[name])))

        for name, root in value.items():
            if LIBRARY_ID.fullmatch(name) is None:
                refuse(name, "not a library id: lower-case letters, digits, '-' and '_', "
                             "starting with a letter or a digit")
            elif not root.is_absolute():
                refuse(name, f"must be an absolute path (this node's mount point of the "
                             f"library), not {str(root)!r}")
            else:
                try:
                    check_os_path(root)
                except ValueError as exc:
                    refuse(name, str(exc))
                else:
                    roots[name] = Path(os.path.normpath(root))
        for name, root in roots.items():
            for other, other_root in roots.items():
                if other == name:
                    continue
                if root == other_root and name > other:
                    refuse(name, f"the same folder as library {other!r} ({other_root}): "
                                 "each library needs a root of its own")
                elif root != other_root and root.is_relative_to(other_root):
                    refuse(name, f"{root} lies inside library {other!r} ({other_root}): "
                                 "library roots must not be nested")
        if errors:
            raise ValidationError.from_exception_data("libraries", errors)
        return roots

    @field_validator("done_folder")
    @classmethod
    def _resolve_done(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_config_path(value, info)

    @field_validator("output_template")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"invalid template: {exc}") from None
        unknown = names - TEMPLATE_FIELDS
        if unknown:
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(f"unknown field(s) {sorted(unknown)}; known fields: {known}")
        if "/" in value or "\\" in value or value.startswith("."):
            raise ValueError("must be a plain file name (no folders, not hidden)")
        return value

    # The checks that relate fields are field validators reading the fields validated before
    # them (`info.data`), so they run, and report, even when an unrelated field is invalid.

    @field_validator("monitor_folder")
    @classmethod
    def _at_least_one_folder(cls, value: list[WatchFolder]) -> list[WatchFolder]:
        if not value:
            raise ValueError("at least one watch folder is required")
        return value

    @field_validator("done_folder")
    @classmethod
    def _done_folder_when_moving(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None and info.data.get("on_success") == "move":
            raise ValueError("required when on_success is 'move'")
        return value

    @field_validator("output_folder", "done_folder")
    @classmethod
    def _not_over_a_watch_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Files would land where new files are expected: a re-transcode loop. A folder inside a
        # watch folder is fine: the watcher never looks into it.
        for folder in info.data.get("monitor_folder") or []:
            if value is not None and folder.path.is_relative_to(value):
                raise ValueError(f"must not be a watch folder or contain one ({folder.path}); "
                                 "a sub-folder of it is fine")
        return value

    @field_validator("rules", mode="wrap")
    @classmethod
    def _known_profiles(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                        info: ValidationInfo) -> list[Rule]:
        # Wrapped so a rule naming an unknown profile is reported beside any other rule error.
        try:
            rules, failure = handler(value), None
        except ValidationError as exc:
            rules, failure = None, exc
        unknown = _unknown_profile_errors(value, info.data.get("profiles"))
        if failure is None and not unknown:
            return rules
        if not unknown:
            raise failure  # type: ignore[misc]  # failure is set when rules is not
        earlier = [] if failure is None else [_reraised(e) for e in failure.errors()]
        raise ValidationError.from_exception_data("rules", [*earlier, *unknown])

    def all_profiles(self) -> dict[str, Profile]:
        """Built-in profiles overlaid with the config's own."""
        return {**BUILTIN_PROFILES, **self.profiles}


@functools.cache
def config_model() -> type[Config]:
    """`Config` with a field for each section an installed plugin owns, validated by its model.

    The sections come after the core's keys; each defaults to its model's defaults, so a config
    read back shows them filled in as it does the core's.
    """
    sections = plugin_sections()
    if not sections:
        return Config
    fields: dict[str, Any] = {name: (model, Field(default_factory=model))
                              for name, model in sections.items() if name not in Config.model_fields}
    return create_model("Config", __base__=Config, __doc__=Config.__doc__, **fields)


def _unknown_profile_errors(rules: Any, profiles: dict[str, Profile] | None) -> list[InitErrorDetails]:
    """Rules (raw, as given) whose `profile` is neither built in nor in the config's profiles."""
    if profiles is None or not isinstance(rules, list):
        return []  # the profiles themselves are invalid: their errors say so
    known = {**BUILTIN_PROFILES, **profiles}
    errors: list[InitErrorDetails] = []
    for i, rule in enumerate(rules):
        name = rule.get("profile") if isinstance(rule, dict) else None
        if isinstance(name, str) and name not in known:
            errors.append(InitErrorDetails(
                type=PydanticCustomError("unknown_profile", "unknown profile {profile}; known: {known}",
                                         {"profile": repr(name), "known": ", ".join(sorted(known))}),
                loc=(i, "profile"), input=name))
    return errors


def _reraised(error: Any) -> InitErrorDetails:
    """An error from a nested validation, unchanged, to raise again beside others."""
    return InitErrorDetails(type=PydanticCustomError(error["type"], "{message}", {"message": error["msg"]}),
                            loc=tuple(error["loc"]), input=error.get("input"))


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose keys are valid at key path `loc` (None when it is not a model)."""
    current: Any = config_model()
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
        if typing.get_origin(current) in (typing.Union, types.UnionType):
            current = next((a for a in typing.get_args(current) if a is not type(None)), None)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {', '.join(known)}"


def _issues_from(exc: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key_message(tuple(err["loc"]))
        if not loc and ": " in msg and " " not in msg.split(": ", 1)[0]:
            loc, msg = msg.split(": ", 1)  # model-level checks prefix their key path
        issues.append(ConfigIssue(loc, msg))
    return issues


def parse_config(data: Any, *, base_dir: Path, source: str | Path | None = None) -> Config:
    """Validate a config mapping; raises ConfigError listing every issue with its key path."""
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", "the config must be a mapping of keys")], source=source)
    try:
        return config_model().model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_issues_from(exc), source=source) from None


def parse_config_text(text: str, *, base_dir: Path, source: str | Path | None = None) -> Config:
    """Parse YAML text then validate it."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(where, f"invalid YAML: {problem}")], source=source) from None
    return parse_config(data if data is not None else {}, base_dir=base_dir, source=source)


def load_config(path: Path | str) -> Config:
    """Read and validate a config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read: {exc.strerror}")], source=path) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", "not UTF-8 text")], source=path) from None
    return parse_config_text(text, base_dir=path.resolve().parent, source=path)


def config_to_yaml(data: dict[str, Any]) -> str:
    """Render a config mapping as YAML, keys in the order given."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_config_atomically(path: Path, text: str) -> Path | None:
    """Replace a config file atomically, keeping the previous one as `<name>.bak`; returns it."""
    path = Path(path)
    backup: Path | None = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            backup = path.with_name(path.name + ".bak")
            with open(path, "rb") as src, open(backup, "wb") as dst:
                dst.write(src.read())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


DEFAULT_CONFIG_PATH = Path(__file__).with_name("defaults") / "monitor.yaml"


def default_config_text() -> str:
    """The commented default monitor.yaml that `bulletproof init` writes."""
    return DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
