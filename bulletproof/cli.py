"""The `bulletproof` command line. The only place errors become exit codes."""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

from bulletproof import __version__, store_migrate
from bulletproof.config import default_config_text, load_config
from bulletproof.config_checks import check_against_ffmpeg, config_warnings
from bulletproof.demo import run_demo
from bulletproof.errors import (
    BulletproofError,
    ConfigError,
    FfmpegNotFound,
    StoreCorrupt,
    StoreError,
    StoreLocked,
)
from bulletproof.ffprobe import find_ffmpeg
from bulletproof.logs import configure_logging
from bulletproof.plugins import COMMAND_GROUP
from bulletproof.profiles import BUILTIN_PROFILES
from bulletproof.runner import serve

EXIT_CONFIG = 2
EXIT_RUNTIME = 1
EXIT_FFMPEG = 3
EXIT_STORE_LOCKED = 4  # another monitor holds the state database
EXIT_STORE_CORRUPT = 5  # the state database is damaged

_EXIT_CODES: tuple[tuple[type[BulletproofError], int], ...] = (
    (FfmpegNotFound, EXIT_FFMPEG),
    (StoreLocked, EXIT_STORE_LOCKED),
    (StoreCorrupt, EXIT_STORE_CORRUPT),
)


def _fail(exc: BulletproofError) -> None:
    """Print an error the user can act on and exit with its code."""
    if isinstance(exc, ConfigError):
        click.echo(f"error: invalid config{f' {exc.source}' if exc.source else ''}:", err=True)
        for issue in exc.issues:
            click.echo(f"  {issue}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"error: {exc}", err=True)
    sys.exit(next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), EXIT_RUNTIME))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulletproof")
def cli() -> None:
    """Bulletproof: a folder-watching video transcoder for Prometheus, Grafana and Alertmanager."""


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="monitor.yaml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented monitor.yaml with working defaults."""
    if path.exists() and not force:
        click.echo(f"error: {path} exists (use --force to overwrite)", err=True)
        sys.exit(EXIT_RUNTIME)
    path.write_text(default_config_text(), encoding="utf-8")
    click.echo(f"wrote {path}; edit it, then run: bulletproof run --config {path}")


@cli.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="monitor.yaml")
def check_config(path: Path) -> None:
    """Validate a config file: print every problem with its key path, or "ok".

    Also checks the profiles' encoder names against the ffmpeg in use; "warning:" lines (a
    missing watch folder...) do not fail the check.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        _fail(exc)
    try:
        binaries = find_ffmpeg(config.ffmpeg)
    except FfmpegNotFound as exc:
        binaries = None
        click.echo(f"warning: ffmpeg: {exc}; encoders and filters not checked", err=True)
    for warning in config_warnings(config, binaries):
        click.echo(f"warning: {warning}", err=True)
    issues = [] if binaries is None else check_against_ffmpeg(config, binaries)
    if issues:
        _fail(ConfigError(issues, source=path))
    click.echo("ok")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="monitor.yaml", show_default=True, help="The monitor.yaml to use.")
def profiles(config_path: Path) -> None:
    """List the built-in and configured profiles."""
    table = dict(BUILTIN_PROFILES)
    if config_path.exists():
        try:
            table = load_config(config_path).all_profiles()
        except ConfigError as exc:
            _fail(exc)
    for name, profile in table.items():
        origin = "built-in" if BUILTIN_PROFILES.get(name) == profile else "config"
        video = profile.video_codec or "no video"
        click.echo(f"{name:<16} {origin:<9} {profile.container:<5} {video:<10} "
                   f"{profile.audio_codec or 'no audio':<9} {profile.description}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="monitor.yaml", show_default=True, help="The monitor.yaml to use.")
@click.option("--log-format", type=click.Choice(["logfmt", "json"]), default=None,
              help="Override log.format from the config.")
def run(config_path: Path, log_format: str | None) -> None:
    """Watch the folders and transcode what lands there, until SIGINT/SIGTERM."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(exc)
    configure_logging(log_format or config.log.format, config.log.level)
    try:
        asyncio.run(serve(config, config_path=config_path))
    except BulletproofError as exc:
        _fail(exc)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path), default="demo")
@click.option("--clips", default=6, show_default=True, help="How many good clips to generate.")
@click.option("--seconds", default=4.0, show_default=True, help="Length of each clip.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True,
              help="Where the API and /metrics listen during the demo.")
@click.option("--keep-running", is_flag=True, help="Keep watching after the demo clips are done.")
def demo(folder: Path, clips: int, seconds: float, listen: str, keep_running: bool) -> None:
    """Run the whole thing on generated clips in FOLDER, with live progress."""
    try:
        ok = run_demo(folder, clips=clips, seconds=seconds, listen=listen, keep_running=keep_running)
    except (BulletproofError, StoreError) as exc:
        _fail(exc)
    sys.exit(0 if ok else EXIT_RUNTIME)


@cli.group()
def store() -> None:
    """The job store: its schema, and moving a history between stores."""


@store.command("migrate")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="monitor.yaml", show_default=True, help="The monitor.yaml naming the store.")
@click.option("--from-sqlite", "from_sqlite", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Copy this SQLite store's history into the configured "
                                 "PostgreSQL store.")
@click.option("--force", is_flag=True, help="Replace a history the PostgreSQL store holds already.")
def migrate_command(config_path: Path, from_sqlite: Path | None, force: bool) -> None:
    """Create or upgrade the configured store's schema; optionally copy a SQLite history in."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _fail(exc)
    try:
        if from_sqlite is not None:
            store_migrate.require_postgres(config.database)
        opened = store_migrate.migrate_store(config.database)
        try:
            click.echo(f"{opened.path}: schema version {opened.get_meta('schema_version')}")
            if from_sqlite is not None:
                copied = store_migrate.copy_sqlite_history(from_sqlite, opened,  # type: ignore[arg-type]
                                                       force=force)
                click.echo(f"copied from {from_sqlite}: {copied.jobs} jobs, {copied.done_files} "
                           f"done file versions, {copied.audit} audit entries, "
                           f"{copied.meta} settings")
        finally:
            opened.close()
    except BulletproofError as exc:
        _fail(exc)


def _add_plugin_commands() -> None:
    # Each entry point names a function that adds its commands to the group (the API client's
    # commands come from the exporter this way, so the core never imports an HTTP library).
    for entry in entry_points(group=COMMAND_GROUP):
        try:
            entry.load()(cli)
        except Exception as exc:  # a broken plugin must not take the core commands down
            click.echo(f"warning: commands from {entry.name!r} unavailable: {exc}", err=True)


def main() -> None:
    """Console entry point."""
    _add_plugin_commands()
    cli(prog_name="bulletproof")


