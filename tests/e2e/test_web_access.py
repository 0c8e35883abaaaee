"""The web page on a server where only inference is open (the default): nothing red before
the user does anything, an auth error once they act; and its Roll back button, on from what
the server says a rollback would do (tiny contract-honouring models, no worker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.tiny_models import build_tiny_store
from tests.e2e.conftest import CHROMIUM_ARGS
from tests.support.server import ApiServer

pytestmark = pytest.mark.timeout(180)
WAIT_MS = 60_000


def _server(root, open_scopes: str) -> ApiServer:
    build_tiny_store(root / "store")
    return ApiServer(root / "store", root / "api.log",
                     {"TOONFORGE_OPEN_SCOPES": open_scopes, "TOONFORGE_STARTER_MODELS": "false"})


@pytest.fixture(scope="module")
def browser(chromium: str, playwright_api):
    browser = playwright_api.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    yield page
    context.close()


@pytest.fixture(scope="module")
def infer_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = _server(tmp_path_factory.mktemp("infer-only"), "infer")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def all_open(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = _server(tmp_path_factory.mktemp("all-open"), "infer,train,admin")
    yield server
    server.stop()


def test_no_auth_error_before_the_user_acts(infer_only: ApiServer, page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/jobs?limit=20")) as jobs, \
            page.expect_response(lambda r: r.url.endswith("/sweeps?limit=50")) as sweeps:
        page.goto(infer_only.url + "/")
    assert jobs.value.status == 401 and sweeps.value.status == 401  # the server's answer
    page.wait_for_selector("#jobs-empty:has-text('API key'):not([hidden])")
    page.wait_for_selector("#sweeps-empty:has-text('API key'):not([hidden])")
    page.wait_for_selector(".model-item[data-model=matte]")  # what is open still works
    for box in ("#auth-notice", "#jobs-error", "#sweeps-error"):
        assert page.is_hidden(box), box
    # The user acts (refreshes the jobs): now the refusal is theirs to see.
    page.click("#jobs-refresh")
    page.wait_for_selector("#jobs-error:not([hidden])")
    assert "unauthorized" in page.inner_text("#jobs-error")
    assert "This needs an API key" in page.inner_text("#auth-notice")
    assert page.js_errors == []


def test_rollback_is_off_when_there_is_nothing_to_roll_back_to(all_open: ApiServer,
                                                              page) -> None:
    page.goto(all_open.url + "/")
    page.click(".model-item[data-model=matte]")
    page.wait_for_selector("#model-detail[data-model=matte][data-active='1']")
    assert page.is_disabled("#rollback")  # v1 is the only version ever active
    page.click("#versions-table tr[data-version='2'] button")
    page.wait_for_selector("#model-detail[data-model=matte][data-active='2']")
    page.wait_for_selector("#rollback:not([disabled])")
    assert page.inner_text("#rollback") == "Roll back to v1"
    page.click("#rollback")
    page.wait_for_selector("#model-detail[data-model=matte][data-active='1']")
    page.wait_for_selector("#rollback[disabled]")  # back at the start of the history
    assert page.inner_text("#rollback") == "Roll back"
    assert page.is_hidden("#models-error") and page.js_errors == []
