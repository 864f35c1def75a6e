"""Security headers on every response (a pure ASGI middleware: streams pass untouched).

- `Content-Security-Policy`: same-origin scripts, styles, connections; images also from
  the map tile server the console is configured with (`map_tiles`); no framing.
  `/docs` and `/redoc` (their pages start the viewer with an inline script) may run
  inline scripts and workers from `blob:` (ReDoc's search), nothing else may.
- `Strict-Transport-Security` when the request came over HTTPS.
- `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy:
  no-referrer`.
- `Cache-Control: no-store` on the API (personal data: nothing in shared or browser
  caches).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

DOC_PATHS = ("/docs", "/redoc")
DEFAULT_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"


def tile_origin(template: str | None) -> str | None:
    """The origin of an XYZ tile URL template for `img-src` (`{s}` becomes a wildcard)."""
    if not template:
        return None
    parts = urlsplit(template.replace("{s}", "subdomain-placeholder"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.netloc.replace("subdomain-placeholder", "*")
    return f"{parts.scheme}://{host}"


def content_security_policy(tiles: str | None, *, docs: bool = False) -> str:
    img = "'self' data: blob:"
    origin = tile_origin(tiles)
    if origin:
        img += f" {origin}"
    script = "'self' 'unsafe-inline'" if docs else "'self'"
    worker = ["worker-src 'self' blob:"] if docs else []  # ReDoc's search runs in a blob worker
    return "; ".join([
        "default-src 'self'", f"script-src {script}", *worker, "style-src 'self' 'unsafe-inline'",
        f"img-src {img}", "connect-src 'self'", "font-src 'self' data:",
        "object-src 'none'", "base-uri 'self'", "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class SecurityHeadersMiddleware:
    def __init__(self, app: Any, *, tiles: str | None = DEFAULT_TILES) -> None:
        self.app = app
        self.csp = content_security_policy(tiles).encode()
        self.csp_docs = content_security_policy(tiles, docs=True).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        https = scope.get("scheme") == "https"
        csp = self.csp_docs if path.startswith(DOC_PATHS) else self.csp

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control" or not path.startswith("/api/")]
                headers += [
                    (b"content-security-policy", csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                if path.startswith("/api/"):
                    headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                if https:
                    headers.append((b"strict-transport-security",
                                    b"max-age=31536000; includeSubDomains"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
