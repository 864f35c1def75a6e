"""The FastAPI application: routes from `probation/api/`, health, readiness, metrics."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from db.engine import get_engine
from probation import __version__
from probation.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """What every request may need: settings and the resolved server URLs."""

    settings: Settings
    database_url: str
    mqtt_url: str


def broker_reachable(mqtt_url: str, timeout: float = 1.0) -> bool:
    u = urlparse(mqtt_url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 1883), timeout=timeout):
            return True
    except OSError:
        return False


def create_app(settings: Settings, *, database_url: str, mqtt_url: str) -> FastAPI:
    """Build the app for one database and broker (tests build one per database)."""
    ctx = AppContext(settings=settings, database_url=database_url, mqtt_url=mqtt_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from probation.bootstrap import bootstrap_admin

        bootstrap_admin(database_url, settings)
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
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    from probation.api import install

    install(app)
    from probation.console import install_console

    install_console(app, settings)
    return app
