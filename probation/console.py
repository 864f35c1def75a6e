"""The officers' web console and the API docs, served by the API's own process.

The console (`console/` at the top of the repository) is plain HTML, CSS and ES modules
with no build step; its third-party assets (Leaflet and its plugins, Swagger UI, ReDoc)
come from the npm registry, pinned by `console/package-lock.json`, and are served from
`console/node_modules`. `ensure_assets` installs them with `npm ci` when they are missing
and Node is present; without them the console is not mounted (the API is).

The console uses the public API only: it is static files plus the tile setting.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from probation.settings import Settings

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
NODE_MODULES = CONSOLE_DIR / "node_modules"

#: URL path under /assets/ → folder inside node_modules: only what the pages load is served.
VENDOR = {
    "leaflet": "leaflet/dist",
    "markercluster": "leaflet.markercluster/dist",
    "geoman": "@geoman-io/leaflet-geoman-free/dist",
    "swagger-ui": "swagger-ui-dist",
    "redoc": "redoc/bundles",
    "qrcode": "qrcode/build",  # the second factor's setup QR code
}
#: One file per package that proves it is installed.
_MARKERS = ("leaflet/dist/leaflet.js", "leaflet.markercluster/dist/leaflet.markercluster.js",
            "@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.js",
            "swagger-ui-dist/swagger-ui-bundle.js", "redoc/bundles/redoc.standalone.js",
            "qrcode/build/qrcode.js")


def assets_present(node_modules: Path = NODE_MODULES) -> bool:
    return all((node_modules / m).is_file() for m in _MARKERS)


def ensure_assets(console_dir: Path = CONSOLE_DIR) -> str | None:
    """Install the console's npm packages if they are missing; a one-line note when the
    console cannot be served (None when it can)."""
    if assets_present(console_dir / "node_modules"):
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return ("Console: Node.js/npm not found, serving the API only "
                "(install Node.js and npm, then restart)")
    log.info("installing the console's assets with npm ci in %s", console_dir)
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                              cwd=console_dir, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Console: npm ci failed ({e}), serving the API only"
    if done.returncode != 0 or not assets_present(console_dir / "node_modules"):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"Console: npm ci failed ({last}), serving the API only"
    return None


def install_console(app: FastAPI, settings: Settings) -> None:
    """Mount the docs (local assets when present) and the console on `app`."""
    present = assets_present()
    _install_docs(app, local=present)
    if not present:
        return
    for name, folder in VENDOR.items():
        app.mount(f"/assets/{name}", StaticFiles(directory=NODE_MODULES / folder),
                  name=f"vendor-{name}")
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR / "src"), name="console")
    config = {"tiles": settings.map_tiles, "attribution": settings.map_attribution}

    @app.get("/console-config.json", include_in_schema=False)
    def console_config() -> JSONResponse:
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(CONSOLE_DIR / "src" / "index.html",
                            headers={"Cache-Control": "no-cache"})


def _install_docs(app: FastAPI, *, local: bool) -> None:
    """`/docs` and `/redoc` from local assets, so they work on a closed network."""
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    swagger_js, swagger_css = (
        ("/assets/swagger-ui/swagger-ui-bundle.js", "/assets/swagger-ui/swagger-ui.css") if local
        else ("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js",
              "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"))
    redoc_js = ("/assets/redoc/redoc.standalone.js" if local
                else "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js")
    favicon = "/assets/swagger-ui/favicon-32x32.png" if local else "https://fastapi.tiangolo.com/img/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect", swagger_js_url=swagger_js,
            swagger_css_url=swagger_css, swagger_favicon_url=favicon,
            swagger_ui_parameters={"validatorUrl": None})  # no badge from an outside validator
        return _same_origin(page, local)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc_page() -> HTMLResponse:
        page = get_redoc_html(openapi_url=openapi_url, title=f"{title} - ReDoc",
                              redoc_js_url=redoc_js, redoc_favicon_url=favicon,
                              with_google_fonts=not local)
        return _same_origin(page, local)


#: With local assets the doc pages load nothing from elsewhere (ReDoc's sidebar would
#: fetch its vendor's logo from a CDN otherwise).
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:")


def _same_origin(page: HTMLResponse, local: bool) -> HTMLResponse:
    if local:
        page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
