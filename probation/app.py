"""The FastAPI application: routes from `probation/api/`, health, readiness, metrics."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlparse

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from db.engine import get_engine
from probation import __version__
from probation.api import install
from probation.audit import service as audit
from probation.context import AppContext
from probation.errors import Unauthorized, problem_responses
from probation.headers import SecurityHeadersMiddleware
from probation.settings import Settings
from probation.users.bootstrap import bootstrap_admin

log = logging.getLogger(__name__)


def broker_reachable(mqtt_url: str, timeout: float = 1.0) -> bool:
    """Whether the broker accepts an MQTT CONNECT (with the URL's credentials) within
    `timeout`; the probe then disconnects cleanly. A bare TCP open-and-close would make
    brokers log an error on every readiness check."""
    from devices.ingest import broker_address, mqtt_client

    client = mqtt_client(mqtt_url, f"probation-ready-{uuid.uuid4().hex[:12]}")
    client.connect_timeout = timeout
    accepted: list[bool] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: accepted.append(not reason.is_failure)
    deadline = time.monotonic() + timeout
    try:
        client.connect(*broker_address(mqtt_url), keepalive=10)
    except (OSError, ValueError):
        return False
    try:
        while not accepted and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    finally:
        client.disconnect()  # sends DISCONNECT and closes the socket
    return bool(accepted) and accepted[0]


def _password_file_sync(settings: Settings, database_url: str, mqtt_url: str) -> Any:
    """An external broker's password file kept in sync (compose), if one is configured."""
    if settings.mqtt_password_file is None:
        return None
    from devices.broker import PasswordFileSync

    u = urlparse(mqtt_url)
    if not u.username or not u.password:
        raise ValueError("PROBATION_MQTT_PASSWORD_FILE needs the backend's credentials in "
                         "PROBATION_MQTT_URL")
    return PasswordFileSync(path=settings.mqtt_password_file, database_url=database_url,
                            backend_user=u.username, backend_password=u.password)


def create_app(settings: Settings, *, database_url: str, mqtt_url: str,
               broker_accounts: Any = None) -> FastAPI:
    """Build the app for one database and broker (tests build one per database).
    `broker_accounts`: the embedded broker (`serve`); else PROBATION_MQTT_PASSWORD_FILE's."""
    accounts = broker_accounts or _password_file_sync(settings, database_url, mqtt_url)
    ctx = AppContext(settings=settings, database_url=database_url, mqtt_url=mqtt_url,
                     broker_accounts=accounts)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bootstrap_admin(database_url, settings)
        audit.ensure_keyed(database_url, settings)
        if accounts is not None:
            accounts.sync()
        yield
        publisher = getattr(app.state, "command_publisher", None)  # started by the API on demand
        if publisher is not None:
            publisher.stop()

    app = FastAPI(
        title="Probation electronic monitoring API",
        version=__version__,
        description="Supervision API, version 1: caseloads, devices, zones, tracks, alerts, audit.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: probation.console, from local assets
        redoc_url=None,
    )
    app.state.ctx = ctx

    @app.get("/health", tags=["operations"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    _readiness = {"application/json": {"schema": {
        "type": "object", "required": ["status", "database", "broker"],
        "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]},
                       "database": {"type": "boolean"}, "broker": {"type": "boolean"}}}}}

    @app.get("/ready", tags=["operations"], summary="Readiness: database and broker reachable",
             response_class=JSONResponse,
             responses={200: {"content": _readiness}, 503: {"description": "Not ready",
                                                            "content": _readiness}})
    def ready() -> JSONResponse:
        db_ok = True
        try:
            with get_engine(database_url).connect() as c:
                c.execute(text("SELECT 1"))
        except Exception:
            db_ok = False
        mqtt_ok = broker_reachable(mqtt_url)
        ok = db_ok and mqtt_ok
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "database": db_ok, "broker": mqtt_ok},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response,
             description="Needs `Authorization: Bearer` with `PROBATION_METRICS_TOKEN` or an "
             "admin's access token.",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                        **problem_responses(401)})
    def metrics(request: Request) -> Response:
        _metrics_allowed(request, settings, database_url)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def on_refused(request: Request, status: int) -> None:
        audit.record_refusal(database_url, request=request, status=status)

    app.state.on_refused = on_refused
    install(app)
    from probation.console import install_console

    install_console(app, settings)
    app.add_middleware(SecurityHeadersMiddleware, tiles=settings.map_tiles)
    return app


def _metrics_allowed(request: Request, settings: Settings, database_url: str) -> None:
    """`/metrics` answers the configured metrics token or an admin's access token."""
    from sqlmodel import Session

    from probation.deps import _user_for_token
    from probation.users.models import Role

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    if settings.metrics_token and hmac.compare_digest(token.encode(),
                                                      settings.metrics_token.encode()):
        return
    with Session(get_engine(database_url)) as session:
        user = _user_for_token(request, session, token)
        if user.role != Role.ADMIN:
            raise Unauthorized("invalid_token")
