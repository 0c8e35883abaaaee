"""The Cartoonize card's style picker and face outlines, in headless Chromium, on a store
holding one compound style (a test-made release folder imported with --style)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM_ARGS
from tests.e2e.test_web import WAIT_MS, astronaut, card_done, image_shown  # noqa: F401
from tests.support.compound_release import write_release
from tests.support.server import ApiServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def styled_server(chromium: str, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
                  ) -> Iterator[ApiServer]:
    from model_store.store import ModelStore
    from worker.importer import import_checkpoint

    root = tmp_path_factory.mktemp("styles")
    release = write_release(root / "release")
    import_checkpoint(ModelStore(root / "store"), task="cartoonize", arch="dctnet-compound",
                      parts={"": release / "cartoon_bg.pb", "head": release / "cartoon_h.pb",
                             "mask": release / "alpha.jpg"},
                      model="cartoon-anime", activate=True,
                      extra={"style": {"name": "anime", "licence": "test-made", "source": "t"}})
    server = ApiServer(root / "store", root / "api.log",
                       {"TOONFORGE_DEFAULT_MODELS": json.dumps({"cartoonize": "cartoon-anime"})})
    yield server
    server.stop()


def test_the_picker_shows_styles_and_faces_are_outlined(
        chromium, playwright_api, styled_server, astronaut: Path):  # noqa: F811 (fixtures)
    browser = playwright_api.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(styled_server.url + "/")
    page.wait_for_selector("#style-picker:not([hidden]) .style-choice[data-style=anime] img")
    names = page.eval_on_selector_all("#style-picker .style-choice",
                                      "bs => bs.map(b => b.textContent)")
    assert names == ["default", "anime"]
    page.click(".style-choice[data-style=anime]")
    assert page.get_attribute(".style-choice[data-style=anime]", "aria-checked") == "true"
    page.set_input_files("#file-input", str(astronaut))
    card_done(page, "card-cartoonize")
    image_shown(page, "#cartoon-img")
    page.wait_for_selector("#face-boxes .face-box")
    assert page.eval_on_selector_all("#face-boxes .face-box", "b => b.length") == 1
    assert "faces: 1 of 1 drawn by the head graph" in page.inner_text("#card-cartoonize .version")
    assert errors == []
    browser.close()
