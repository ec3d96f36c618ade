"""The pages a person opens: the playground at /ui (and /) and the API docs at /docs, /redoc.

Nothing a page loads comes from outside the machine: judges and clusters often have no
internet access, and FastAPI's default docs pages load their scripts from a public CDN
(blank there). Swagger UI and ReDoc come from the `fastapi-offline` package, which ships
their bundles (we use its files only, with FastAPI's own page templates); the playground
is three hand-written files in `api/static/` (no build step, no framework: what it does
is a form, a fetch and an event stream). The pages need no key; what they call does, and
the playground sends the key its user types (kept in the browser's localStorage).
"""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

PLAYGROUND = Path(__file__).with_name("static")
DOCS_ASSETS = "/assets/docs"
PLAYGROUND_ASSETS = "/assets/ui"
# The playground shows what hostile programs print; it only ever sets text (never HTML),
# and this policy forbids inline script and anything from elsewhere besides.
PLAYGROUND_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# ReDoc's bundle shows Redocly's logo from their CDN (hiding it if that fails): the one
# address outside the machine any page here would ask for. It is served pointing at ours.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def docs_assets() -> Path:
    """Swagger UI's and ReDoc's bundles, as the fastapi-offline package installs them."""
    return Path(str(files("fastapi_offline") / "static"))


@functools.cache
def redoc_bundle() -> bytes:
    bundle = (docs_assets() / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_LOGO, f"{PLAYGROUND_ASSETS.lstrip('/')}/favicon.svg".encode())


def add_pages(app: FastAPI) -> None:
    """Mount the pages on an app created with docs_url=None and redoc_url=None."""

    @app.get(f"{DOCS_ASSETS}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:  # before the mount, which would serve the original
        return Response(redoc_bundle(), media_type="text/javascript")

    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets()), name="docs-assets")
    app.mount(PLAYGROUND_ASSETS, StaticFiles(directory=PLAYGROUND), name="ui-assets")

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=base + (app.openapi_url or "/openapi.json"),
            title=f"{app.title}: API",
            swagger_js_url=f"{base}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{base}{PLAYGROUND_ASSETS}/favicon.svg",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return get_redoc_html(
            openapi_url=base + (app.openapi_url or "/openapi.json"),
            title=f"{app.title}: API",
            redoc_js_url=f"{base}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{PLAYGROUND_ASSETS}/favicon.svg",
            with_google_fonts=False,
        )

    @app.get("/ui", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(
            PLAYGROUND / "playground.html",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": PLAYGROUND_POLICY},
        )

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> RedirectResponse:
        return RedirectResponse(root(request) + "/ui")
