"""Operations: the database schema, users, dead letters, the version."""

from __future__ import annotations

from typing import Annotated

import typer

from probation import __version__
from probation.cli.common import load_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations (embedded database if no URL is set)."""
    from db.migrate import upgrade
    from probation.runtime.embedded import start_embedded

    settings = load_settings()
    rt = start_embedded(settings, need_broker=False)
    try:
        upgrade(rt.database_url, revision)
        from probation.audit.service import ensure_keyed
        from probation.runtime.embedded import redact

        ensure_keyed(rt.database_url, settings)  # an unkeyed chain is re-chained (recorded)
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


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit chain under the key and against the anchors; prints JSON, exits 1
    when it does not hold."""
    import dataclasses
    import json

    from sqlmodel import Session

    from db.engine import get_engine
    from probation.audit import service
    from probation.runtime.embedded import start_embedded

    settings = load_settings()
    rt = start_embedded(settings, need_broker=False)
    try:
        with Session(get_engine(rt.database_url)) as session:
            v = service.verify(session, key=settings.resolved_audit_key(),
                               anchors=service.read_anchors(settings.anchor_path()))
    finally:
        rt.stop()
    typer.echo(json.dumps(dataclasses.asdict(v)))
    if not v.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor() -> None:
    """Write the chain head to the anchor file (and the log, and the webhook if set) now."""
    import json

    from probation.audit import service
    from probation.runtime.embedded import start_embedded

    settings = load_settings()
    rt = start_embedded(settings, need_broker=False)
    try:
        typer.echo(json.dumps(service.anchor(rt.database_url, settings)))
    finally:
        rt.stop()


@audit_app.command("rotate-key")
def audit_rotate_key(
    new_key_file: Annotated[str, typer.Option(help="Where to write the new key (0600); set "
                                              "PROBATION_AUDIT_KEY or move it to "
                                              "<data_dir>/secrets/audit_key afterwards.")],
) -> None:
    """Re-chain the log under a new key (checked under the current key first; the outcome
    and the re-chain are recorded in the log and the anchor file)."""
    import base64
    import dataclasses
    import json
    import os
    import secrets

    from probation.audit import service
    from probation.runtime.embedded import start_embedded

    settings = load_settings()
    new_key = secrets.token_bytes(32)
    fd = os.open(new_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(new_key).decode() + "\n")
    rt = start_embedded(settings, need_broker=False)
    try:
        before = service.rotate_key(rt.database_url, settings, new_key=new_key)
        service.anchor(rt.database_url, settings.model_copy(
            update={"audit_key": base64.urlsafe_b64encode(new_key).decode()}), rechain=True)
    finally:
        rt.stop()
    typer.echo(json.dumps({"previous_chain": dataclasses.asdict(before),
                           "new_key_id": service.key_id(new_key), "new_key_file": new_key_file}))
