"""HTTP routes, a module per resource, mounted under /api/v1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from probation.api import (
    alerts,
    audit,
    auth,
    cases,
    dead_letters,
    devices,
    investigations,
    positions,
    reports,
    subjects,
    tracks,
    users,
    zones,
)
from probation.errors import PROBLEM_MEDIA_TYPE, RequestIdMiddleware, install_error_handlers
from probation.idempotency import IdempotencyMiddleware

#: Every resource's router, in the order of the OpenAPI document.
ROUTERS: tuple[APIRouter, ...] = (
    auth.router, users.router, subjects.router, cases.router, devices.router, zones.router,
    tracks.router, alerts.router, audit.router, dead_letters.router, investigations.router,
    reports.router, positions.router,
)


def install(app: FastAPI) -> None:
    """Mount every resource router, the error handlers and the middlewares on `app`."""
    api = APIRouter(prefix="/api/v1")
    for router in ROUTERS:
        api.include_router(router)
    app.include_router(api)
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response carries its id
    _problem_openapi(app)


def _problem_openapi(app: FastAPI) -> None:
    """Serve error responses as `application/problem+json` in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema["info"]["description"] = (
            schema["info"].get("description", "") + "\n\nErrors are RFC 9457 problem details "
            "(`application/problem+json`); `Accept-Language: kk|ru|en` selects the language of "
            "their `title`, `detail` and field messages. Lists are paginated with `limit` and "
            "an opaque `cursor`. Every mutating request may carry `Idempotency-Key`."
        )
        for path, item in schema.get("paths", {}).items():
            for op in item.values():
                if not isinstance(op, dict):
                    continue
                if path.startswith("/api/"):
                    op.setdefault("responses", {}).setdefault("500", {
                        "description": "Unexpected error (logged with the request id)",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}}},
                    })
                for resp in op.get("responses", {}).values():
                    content = resp.get("content", {})
                    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                    if ref.endswith("/Problem"):
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
