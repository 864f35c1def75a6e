"""Operations: the database schema, users, dead letters, the version."""

from __future__ import annotations

from typing import Annotated

import typer

from probation import __version__
from probation.cli.common import load_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations (embedded database if no URL is set)."""
    from db.migrate import upgrade
    from probation.runtime.embedded import start_embedded

    settings = load_settings()
    rt = start_embedded(settings, need_broker=False)
    try:
        upgrade(rt.database_url, revision)
        from probation.runtime.embedded import redact

        typer.echo(f"database at revision {revision}: {redact(rt.database_url)}")
    finally:
        rt.stop()


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Option(help="Login name.")],
    role: Annotated[str, typer.Option(help="officer, supervisor, admin or investigator.")],
    password: Annotated[str | None, typer.Option(help="Password (prompted if not given).")] = None,
    supervisor: Annotated[str | None, typer.Option(help="Username of the officer's supervisor.")] = None,
    full_name: Annotated[str, typer.Option(help="Full name.")] = "",
) -> None:
    """Create a user (embedded database if no URL is set)."""
    from db.migrate import upgrade
    from probation.runtime.embedded import start_embedded
    from probation.users.service import UserError, create_user_cli

    settings = load_settings()
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    rt = start_embedded(settings, need_broker=False)
    try:
        upgrade(rt.database_url)
        try:
            uid = create_user_cli(
                rt.database_url, username=username, role=role, password=password,
                supervisor=supervisor, full_name=full_name,
            )
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"created user {username} ({role}) {uid}")
    finally:
        rt.stop()


def dead_letters(
    reason: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only since this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """What ingestion refused: topic, reason code, detail, payload (embedded database if no URL)."""
    from datetime import datetime

    import orjson

    from db.engine import connect
    from devices.service import list_dead_letters
    from probation.runtime.embedded import start_embedded

    settings = load_settings()
    try:
        since_dt = datetime.fromisoformat(since) if since else None
    except ValueError:
        since_dt = None
    if since and (since_dt is None or since_dt.tzinfo is None):
        typer.echo("--since needs an RFC 3339 time with Z or an offset", err=True)
        raise typer.Exit(2)
    rt = start_embedded(settings, need_broker=False)
    try:
        with connect(rt.database_url) as conn:
            rows = list_dead_letters(conn, reason=reason, since=since_dt, limit=limit,
                                     payload_cap=200)
    finally:
        rt.stop()
    for r in rows:
        payload = bytes(r["payload"])
        if as_json:
            typer.echo(orjson.dumps({**r, "payload": payload.decode("utf-8", "replace")}).decode())
            continue
        index = "" if r["item_index"] is None else f" item {r['item_index']}"
        typer.echo(f"{r['id']:>8} {r['received_at']:%Y-%m-%d %H:%M:%S%z} {r['reason']:<18} "
                   f"{r['topic']}{index}: {r['detail']}")
        typer.echo(f"         {payload[:120]!r}{' …' if r['payload_size'] > 120 else ''} "
                   f"({r['payload_size']} bytes)")
    if not rows and not as_json:
        typer.echo("no dead letters", err=True)


def version() -> None:
    """Print the version."""
    typer.echo(__version__)
