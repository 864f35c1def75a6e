"""HTTP routes, a module per resource, mounted under /api/v1."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount every resource router and the error handlers on `app`."""
    from fastapi import APIRouter

    api = APIRouter(prefix="/api/v1")
    app.include_router(api)
