"""``/docs`` and ``/redoc`` render in a browser that may reach nothing but the API: every
request to another host is aborted and recorded, and none may be attempted (the Swagger UI
and ReDoc assets are served by the API itself, no web fonts are loaded, and the pages'
Content-Security-Policy stops ReDoc's credit logo before it leaves the browser)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import CHROMIUM_ARGS
from tests.support.server import ApiServer

pytestmark = pytest.mark.timeout(180)
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("docs")
    store = root / "store"
    store.mkdir()
    api = ApiServer(store, root / "api.log", {"TOONFORGE_STARTER_MODELS": "false"})
    yield api
    api.stop()


@pytest.fixture(scope="module")
def offline(chromium: str, playwright_api):
    """A page whose requests to anything but 127.0.0.1 are aborted (and listed)."""
    browser = playwright_api.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    context = browser.new_context()
    blocked: list[str] = []

    def only_loopback(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.blocked = blocked
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text)
            if msg.type == "error" else None)
    yield page
    browser.close()


def _operations(server: ApiServer) -> dict[str, str]:
    with server.client() as http:
        paths = http.get("/openapi.json").json()["paths"]
    return {op["operationId"]: path for path, ops in paths.items() for op in ops.values()}


def _fresh(page) -> None:
    for seen in (page.blocked, page.js_errors, page.console_errors):
        seen.clear()


def test_swagger_ui_renders_offline_from_the_web_page_link(server: ApiServer, offline) -> None:
    _fresh(offline)
    offline.goto(server.url + "/")
    offline.click("nav a:has-text('API docs')")
    offline.wait_for_url(server.url + "/docs")
    offline.wait_for_selector("#swagger-ui .opblock")
    operations = _operations(server)
    assert offline.locator("#swagger-ui .opblock").count() == len(operations)
    assert offline.locator("#swagger-ui .opblock-summary-path[data-path='/cartoonize']"
                           ).count() == 1
    assert offline.blocked == [] and offline.js_errors == [] and offline.console_errors == []


def test_redoc_renders_offline(server: ApiServer, offline) -> None:
    _fresh(offline)
    offline.goto(server.url + "/redoc")
    offline.wait_for_selector("[data-section-id='operation/create_finetune_job']")
    for op_id in _operations(server):
        assert offline.locator(f"[data-section-id='operation/{op_id}']").count() >= 1, op_id
    assert "fonts.googleapis" not in offline.content()
    assert offline.blocked == [] and offline.js_errors == []
    # The only refusal is the browser's own, of ReDoc's credit logo (the pages' CSP).
    assert all("Content Security Policy" in e and "cdn.redoc.ly" in e
               for e in offline.console_errors), offline.console_errors


def test_assets_come_from_the_api(server: ApiServer) -> None:
    with server.client() as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page).text
            assert "cdn." not in html and "googleapis" not in html, page
        for name, media in [("swagger-ui-bundle.js", "javascript"),
                            ("swagger-ui.css", "text/css"),
                            ("redoc.standalone.js", "javascript")]:
            got = http.get(f"/docs/assets/{name}")
            assert got.status_code == 200 and media in got.headers["content-type"], name

