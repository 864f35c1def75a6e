"""What the command modules share: logging, settings, options, result output."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from probation.settings import Settings

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from devices.redact import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    for noisy in ("transitions", "amqtt", "apscheduler.scheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Every job run ("Running job …", "… executed successfully") is routine: shown at DEBUG.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)


def load_settings() -> Settings:
    """The settings from the environment, with logging set up from them."""
    settings = Settings()
    setup_logging(settings)
    return settings


def quiet() -> None:
    """Warnings and errors only (the benches and the simulator print their own figures)."""
    setup_logging(Settings(log_level="WARNING"))


def require(value: str | None, name: str) -> str:
    if not value:
        typer.echo(f"PROBATION_{name} is not set (only `probation serve` starts embedded servers).", err=True)
        raise typer.Exit(2)
    return value


def emit_result(result: dict[str, Any], json_path: Path | None, *, echo: bool = True) -> None:
    """Print a bench's result object (unless `echo` is off) and write it to `json_path`."""
    import orjson

    from bench.harness import write_json

    if echo:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
    if json_path is not None:
        write_json(json_path, result)
