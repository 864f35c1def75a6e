"""Opaque keyset cursors: `{"items": [...], "next_cursor": "…" | null}` pages.

A cursor is the urlsafe-base64 JSON of the sort key of the last row served plus
the name of the list it belongs to, so a cursor of one list is refused by another.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from probation.errors import invalid

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
T = TypeVar("T")

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page."),
]


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(kind: str, key: list[Any]) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None, *parsers: Callable[[Any], Any]) -> list[Any] | None:
    """The key a cursor carries, each part through its parser (None for the first page);
    a 422 naming `cursor` if it is not one this list issued."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if not isinstance(data, list) or len(data) != len(parsers) + 1 or data[0] != kind:
            raise ValueError("foreign cursor")
        return [parse(v) for parse, v in zip(parsers, data[1:], strict=True)]
    except Exception:  # any malformed cursor is the client's error
        raise invalid("cursor", "cursor_invalid", location="query") from None


def page_of(kind: str, rows: list[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """Cut `rows` (fetched with `limit + 1`) to a page and the cursor after it."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(kind, list(key(page[-1])))


def parse_ts(value: Any) -> datetime:
    """An aware datetime from a cursor part."""
    ts = datetime.fromisoformat(str(value))
    if ts.tzinfo is None:
        raise ValueError("naive timestamp in cursor")
    return ts


def parse_uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))


def parse_bigint(value: Any) -> int:
    """A PostgreSQL bigint from a cursor part."""
    n = int(value)
    if isinstance(value, bool) or not -(2**63) <= n < 2**63:
        raise ValueError("not a bigint")
    return n


def parse_text(value: Any) -> str:
    """A string PostgreSQL can compare (no NUL) from a cursor part."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not a text key")
    value.encode("utf-8")
    return value
