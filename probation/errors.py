"""Domain errors and their one mapping to RFC 9457 problem details.

Services raise `DomainError` subclasses with a catalogue code and parameters;
`install_error_handlers` turns those, FastAPI's own errors (401/403/404/405/
422) and anything unexpected (500, logged with the request id, answered
without internals) into `application/problem+json` in the caller's language.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from probation.i18n import field_text, negotiate, problem_text

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
TYPE_PREFIX = "urn:probation:problem:"


@dataclass
class FieldError:
    """One invalid field of a request: `field` is a dotted path inside `location`."""

    field: str
    code: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    location: str = "body"
    fallback: str = ""


class DomainError(Exception):
    """An expected failure of a service; `code` names a message in `probation.i18n`."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(
        self, code: str | None = None, /, *, headers: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        self.code = code or self.default_code
        self.params = params
        self.headers = headers or {}
        super().__init__(self.code)


class Unauthorized(DomainError):
    status = 401
    default_code = "not_authenticated"

    def __init__(self, code: str | None = None, /, **params: Any) -> None:
        super().__init__(code, headers={"WWW-Authenticate": "Bearer"}, **params)


class Forbidden(DomainError):
    status = 403
    default_code = "forbidden"


class NotFound(DomainError):
    status = 404
    default_code = "not_found"


class Conflict(DomainError):
    status = 409
    default_code = "conflict"


class TooManyRequests(DomainError):
    status = 429
    default_code = "rate_limited"


class Invalid(DomainError):
    """A 422 naming each bad field."""

    status = 422
    default_code = "validation_failed"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__()
        self.errors = list(errors)


def invalid(field_name: str, code: str, *, location: str = "body", **params: Any) -> Invalid:
    """A 422 for one field."""
    return Invalid([FieldError(field_name, code, params, location)])


def field_error(field_name: str | None, code: str, **params: Any) -> PydanticCustomError:
    """An error to raise from a pydantic validator; `field_name` is appended to its location
    (so a model validator can name the field it blames)."""
    ctx = dict(params)
    if field_name:
        ctx["field"] = field_name
    return PydanticCustomError(code, code.replace("_", " "), ctx)


class ProblemFieldError(BaseModel):
    """One bad field of a 422."""

    field: str = Field(description="Dotted path of the field inside `location`.")
    location: str = Field(description="body, query, path or header.")
    code: str = Field(description="Machine-readable reason.")
    message: str = Field(description="Human-readable reason in the negotiated language.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="URI naming the kind of problem.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path.")
    code: str = Field(description="Machine-readable problem code.")
    request_id: str | None = None
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="Validation errors: one per bad field."
    )


_DESCRIPTIONS: dict[int, str] = {
    400: "Bad request",
    401: "Not authenticated: missing, invalid or expired token",
    403: "The caller's role may not do this",
    404: "Not found, or not visible to the caller",
    409: "Conflict with the resource's current state",
    422: "Validation failed: `errors` names each bad field",
    423: "Locked",
    429: "Too many requests: try again after `Retry-After` seconds",
    503: "A backend service is unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for problem details (moved to problem+json by the app)."""
    return {s: {"model": Problem, "description": _DESCRIPTIONS.get(s, "Error")} for s in statuses}


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if not rid:
        rid = uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def problem_response(
    request: Request, status: int, code: str, *, params: dict[str, Any] | None = None,
    errors: Iterable[FieldError] = (), headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response in the language `Accept-Language` asks for."""
    lang = negotiate(request.headers.get("accept-language"))
    rid = request_id_of(request)
    p = {"status": status, "request_id": rid, **(params or {})}
    msg = problem_text(code, lang, p)
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code.replace("_", "-"),
        "title": msg.title,
        "status": status,
        "detail": msg.detail,
        "instance": request.url.path,
        "code": code,
        "request_id": rid,
    }
    errs = list(errors)
    if errs:
        body["errors"] = [
            {
                "field": e.field,
                "location": e.location,
                "code": e.code,
                "message": field_text(e.code, lang, e.params, e.fallback),
            }
            for e in errs
        ]
    for k, v in (params or {}).items():
        if k not in body and isinstance(v, str | int | float | bool):
            body[k] = v
    hdrs = {"Content-Language": lang, "X-Request-ID": rid, **(headers or {})}
    return JSONResponse(body, status_code=status, headers=hdrs, media_type=PROBLEM_MEDIA_TYPE)


_LOCATIONS = {"body", "query", "path", "header", "cookie"}
#: Tags of discriminated unions: pydantic puts them in error locations, clients never see them.
UNION_TAGS: set[str] = set()


def _field_errors(raw: Sequence[Any]) -> list[FieldError]:
    out: list[FieldError] = []
    for e in raw:
        loc = [str(x) for x in e.get("loc", ())]
        location = loc[0] if loc and loc[0] in _LOCATIONS else "body"
        path = loc[1:] if loc and loc[0] in _LOCATIONS else loc
        path = [p for p in path if p not in UNION_TAGS]
        ctx = dict(e.get("ctx") or {})
        kind = str(e.get("type", "value_error"))
        if "field" in ctx:
            path = [*path, str(ctx.pop("field"))]
        if kind == "json_invalid":
            path = []
        if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
            kind = "empty"
        if "error" in ctx:
            ctx["reason"] = str(ctx.pop("error"))
        out.append(
            FieldError(
                field=".".join(path) or location, code=kind, params=ctx, location=location,
                fallback=str(e.get("msg", "")),
            )
        )
    return out


_HTTP_CODES = {
    400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 422: "validation_failed",
}


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to problem details."""

    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        errors = exc.errors if isinstance(exc, Invalid) else ()
        hook = getattr(request.app.state, "on_refused", None)
        if exc.status in (403, 404) and hook is not None and request.url.path.startswith("/api/"):
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(hook, request, exc.status)
        return problem_response(
            request, exc.status, exc.code, params=exc.params, errors=errors, headers=exc.headers
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(request, 422, "validation_failed", errors=_field_errors(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        return problem_response(request, exc.status_code, code, headers=headers)

    async def on_integrity(request: Request, exc: Exception) -> JSONResponse:
        log.warning("integrity error not mapped by a service [request_id=%s]: %s",
                    request_id_of(request), exc)
        return problem_response(request, 409, "conflict")

    async def on_data(request: Request, exc: Exception) -> JSONResponse:
        log.warning("data error not caught by validation [request_id=%s]: %s",
                    request_id_of(request), exc)
        return problem_response(
            request, 422, "validation_failed", errors=[FieldError("body", "value_error", {"reason": "out of range"})]
        )

    async def on_operational(request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable [request_id=%s]: %s", request_id_of(request), exc)
        return problem_response(request, 503, "service_unavailable", headers={"Retry-After": "5"})

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id_of(request)
        log.error("unhandled error [request_id=%s] %s %s (user %s)", rid, request.method,
                  request.url.path, getattr(request.state, "user_id", None), exc_info=exc)
        return problem_response(request, 500, "internal_error")

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(IntegrityError, on_integrity)
    app.add_exception_handler(DataError, on_data)
    app.add_exception_handler(OperationalError, on_operational)
    app.add_exception_handler(Exception, on_unexpected)


class RequestIdMiddleware:
    """Give every request an id (`X-Request-ID`, taken from the client if sane) for logs and
    problem details."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                given = v.decode("latin-1")
                break
        rid = given if _RID_RE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_id)
