"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served by the API
itself, so the documentation renders on a machine without internet access.

The assets come from the ``fastapi-offline`` wheel, which ships the swagger-ui-dist bundle
and ReDoc's standalone build as plain files; we only read its ``static`` folder. The pages
load no web fonts (ReDoc's Google Fonts link is off) and Swagger UI validates nothing
remotely (``validatorUrl`` is null). A Content-Security-Policy on both pages keeps the
browser from fetching anything from another origin at all: ReDoc's sidebar credit would
otherwise load its logo from the vendor's CDN.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/docs/assets"
SWAGGER_PARAMETERS = {"validatorUrl": None, "deepLinking": True, "showExtensions": True,
                      "showCommonExtensions": True}

# The pages' own inline bootstrap scripts and styles are allowed; ReDoc runs its search in a
# blob: worker.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; worker-src 'self' blob:;"
       " style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:;"
       " connect-src 'self'")

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    """The path prefix a proxy mounted the API under (``--root-path``), else ''."""
    return str(request.scope.get("root_path", ""))


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}", title="toonforge API - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters=SWAGGER_PARAMETERS)
    page.headers["Content-Security-Policy"] = CSP
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}", title="toonforge API - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False)
    page.headers["Content-Security-Policy"] = CSP
    return page


def install_api_docs(app: FastAPI) -> None:
    """For an app made with ``docs_url=None, redoc_url=None`` (FastAPI's own pages load
    their assets from a CDN)."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
