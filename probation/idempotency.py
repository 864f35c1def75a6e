"""`Idempotency-Key` on mutating requests (ASGI middleware over `idempotency_keys`).

For an authenticated POST/PUT/PATCH/DELETE under /api/v1 with the header, the
key is claimed per user before the route runs (`status = 0`: in progress). A
2xx response is stored and replayed to any retry with the same key and
`Idempotent-Replayed: true`; any other outcome releases the key so the
client can fix the request and retry. The same key on another method or path
is a 422; a retry while the first is still running is a 409. Keys live 24 hours.
A response marked `Cache-Control: no-store` (one that carries a secret shown once, like a
device's broker password) is never stored: its key is released instead.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from anyio import to_thread
from sqlalchemy import text
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.engine import get_engine
from probation.deps import jwt_secret
from probation.errors import DomainError, problem_response
from probation.users.auth import user_id_from_token

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
EXEMPT = frozenset({"/api/v1/auth/token"})


def _claim(url: str, user_id: uuid.UUID, key: str, method: str, path: str) -> tuple[str, Any]:
    with get_engine(url).begin() as c:
        c.execute(
            text(
                "DELETE FROM idempotency_keys WHERE user_id = :u AND key = :k AND "
                "(created_at < now() - interval '24 hours' OR "
                " (status = 0 AND created_at < now() - interval '5 minutes'))"
            ),
            {"u": user_id, "k": key},
        )
        claimed = c.execute(
            text(
                "INSERT INTO idempotency_keys (key, user_id, method, path, status, body) "
                "VALUES (:k, :u, :m, :p, 0, '') ON CONFLICT DO NOTHING RETURNING 1"
            ),
            {"k": key, "u": user_id, "m": method, "p": path},
        ).first()
        if claimed:
            return "claimed", None
        row = c.execute(
            text("SELECT method, path, status, body FROM idempotency_keys "
                 "WHERE user_id = :u AND key = :k"),
            {"u": user_id, "k": key},
        ).first()
    if row is None:
        return "claimed_race", None
    if row.method != method or row.path != path:
        return "reused", None
    if row.status == 0:
        return "in_progress", None
    return "replay", (row.status, bytes(row.body))


def _finish(url: str, user_id: uuid.UUID, key: str, status: int | None, body: bytes) -> None:
    with get_engine(url).begin() as c:
        if status is not None:
            c.execute(
                text("UPDATE idempotency_keys SET status = :s, body = :b "
                     "WHERE user_id = :u AND key = :k"),
                {"s": status, "b": body, "u": user_id, "k": key},
            )
        else:
            c.execute(
                text("DELETE FROM idempotency_keys WHERE user_id = :u AND key = :k AND status = 0"),
                {"u": user_id, "k": key},
            )


class IdempotencyMiddleware:
    """Replays the stored response of a repeated `Idempotency-Key`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _caller(self, request: Request) -> uuid.UUID | None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return user_id_from_token(token.strip(), jwt_secret(request))
        except DomainError:
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        key = Headers(scope=scope).get("idempotency-key")
        if not key or not KEY_RE.match(key) or not path.startswith("/api/v1/") or path in EXEMPT:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        user_id = self._caller(request)
        if user_id is None:
            await self.app(scope, receive, send)
            return
        url = request.app.state.ctx.database_url
        method = scope["method"]
        outcome, stored = await to_thread.run_sync(_claim, url, user_id, key, method, path)
        if outcome == "replay":
            status, body = stored
            headers = [(b"idempotent-replayed", b"true")]
            if body:
                headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if outcome in ("reused", "in_progress", "claimed_race"):
            code = "idempotency_key_reused" if outcome == "reused" else "idempotency_in_progress"
            response = problem_response(request, 422 if outcome == "reused" else 409, code)
            await response(scope, receive, send)
            return

        sent_status: int | None = None
        no_store = False
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal sent_status, no_store
            if message["type"] == "http.response.start":
                sent_status = int(message["status"])
                no_store = b"no-store" in Headers(raw=message["headers"]).get(
                    "cache-control", "").encode()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await to_thread.run_sync(_finish, url, user_id, key, None, b"")
            raise
        ok = sent_status is not None and 200 <= sent_status < 300 and not no_store
        await to_thread.run_sync(
            _finish, url, user_id, key, sent_status if ok else None,
            b"".join(chunks) if ok else b"",
        )
