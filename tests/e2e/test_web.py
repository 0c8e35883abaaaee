"""The web page end to end: headless Chromium (Debian's ``chromium``, driven by Playwright)
against the real API under uvicorn, on a store of real (random-weight) models, with a real
``python -m worker`` for the jobs panel.

Chromium comes from the OS (``apt-get install chromium``), never from ``playwright install``.
Without it (or without the ``playwright`` package) these tests skip, except in CI (CI=true),
where they fail. The page as the last test left it is kept at ``artifacts/web.png``.
"""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import CHROMIUM_ARGS
from tests.integration.conftest import FAST_JOBS
from tests.support.processes import WorkerPool
from tests.support.server import REPO, ApiServer

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = REPO / "artifacts"
SCREENSHOT = ARTIFACTS / "web.png"
DATASET = "faces"
# Inference on 2 CPU cores, a worker importing torch: generous, but bounded.
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def stack(populated_store: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[ApiServer, WorkerPool]]:
    """The API and one worker on a private copy of the populated store (tests activate)."""
    from model_store.datasets import DatasetStore
    from worker.starter import publish_synthetic_dataset

    root = tmp_path_factory.mktemp("web")
    store = root / "store"
    shutil.copytree(populated_store, store)
    publish_synthetic_dataset(DatasetStore(store), "autoencode", DATASET, n=16)
    env = {
        "TOONFORGE_STORE_DIR": str(store),
        "TOONFORGE_DATA_DIR": str(root / "data"),
        "TOONFORGE_JOB_QUEUE": f"toonforge-web-{uuid.uuid4().hex[:12]}",
        "TOONFORGE_JOB_EVENTS_POLL_S": "0.2",
        **FAST_JOBS,
    }
    workers = WorkerPool(env, root / "logs")
    # The worker imports torch while the browser test runs; the jobs test waits for it.
    workers.start(wait=False)
    server = ApiServer(store, root / "api.log", env)
    try:
        yield server, workers
    finally:
        server.stop()
        workers.stop_all()


@pytest.fixture(scope="module")
def page(chromium: str, playwright_api, stack):
    server, _ = stack
    browser = playwright_api.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.js_errors = []  # uncaught exceptions in the page: none is acceptable
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.goto(server.url + "/")
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")  # the sticky header at the top
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    browser.close()


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return path


def image_shown(page, selector: str) -> None:
    """Wait until the <img> has a decoded picture."""
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete"
        " && i.naturalWidth > 0 && i.getAttribute('src'); }", arg=selector)


def card_done(page, card: str) -> None:
    page.wait_for_selector(f"#{card}[data-state=done]")


def version_text(page, card: str) -> str:
    return page.inner_text(f"#{card} .version")


# ---------------------------------------------------------------- the page and its API


def test_page_is_served_outside_the_schema(stack) -> None:
    server, _ = stack
    with server.client() as http:
        index = http.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert '<script src="/static/app.js">' in index.text
        for name, media in [("app.js", "javascript"), ("style.css", "text/css")]:
            got = http.get(f"/static/{name}")
            assert got.status_code == 200 and media in got.headers["content-type"]
        missing = http.get("/static/nope.js")
        assert missing.status_code == 404
        paths = http.get("/openapi.json").json()["paths"]
        assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_inference_generate_and_models(page, stack, astronaut: Path) -> None:
    server, _ = stack

    # A broken "image" dropped on the zone: every card shows the server's error envelope.
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array([1, 2, 3, 4])], "broken.png", {type: "image/png"}));
        document.querySelector("#dropzone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    for card in ("card-cartoonize", "card-matte", "card-classify"):
        page.wait_for_selector(f"#{card}[data-state=error] .error:not([hidden])")
        assert "undecodable" in page.inner_text(f"#{card} .error")

    # The real photo, through the file chooser.
    page.set_input_files("#file-input", str(astronaut))
    card_done(page, "card-cartoonize")
    image_shown(page, "#cartoon-img")
    image_shown(page, "#orig-cartoon")
    assert "X-Model-Version: cartoon@1" in version_text(page, "card-cartoonize")

    card_done(page, "card-matte")
    for img in ("#orig-matte", "#mask-img", "#cutout-img"):
        image_shown(page, img)
    assert "X-Model-Version: matte@1" in version_text(page, "card-matte")
    assert page.is_hidden("#card-matte .error")

    card_done(page, "card-classify")
    bars = page.locator("#bars .bar")
    assert bars.count() == 5
    assert "X-Model-Version: classify@1" in version_text(page, "card-classify")
    widths = page.eval_on_selector_all(
        "#bars .bar-fill", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths[0] > 0 and widths == sorted(widths, reverse=True)

    # Generate: a bad seed is refused with the server's message; a good one draws a grid.
    page.fill("#seed", "-1")
    page.click("#gen-go")
    page.wait_for_selector("#card-generate[data-state=error]")
    assert "invalid_parameter" in page.inner_text("#card-generate .error")
    page.fill("#seed", "7")
    page.select_option("#gen-n", "16")
    page.click("#gen-go")
    card_done(page, "card-generate")
    image_shown(page, "#grid-img")
    assert page.is_hidden("#card-generate .error")
    gen_version = version_text(page, "card-generate")
    assert "X-Model-Version: anime-faces@1" in gen_version and "X-Seed: 7" in gen_version

    # Models: promote matte v2, see the page's inference use it, then roll back to v1.
    page.click(".model-item[data-model=matte]")
    page.wait_for_selector("#model-detail[data-model=matte][data-active='1']")
    assert page.locator("#versions-table tbody tr").count() == 2
    page.click("#versions-table tr[data-version='2'] button")
    page.wait_for_selector("#model-detail[data-model=matte][data-active='2']")
    assert "matte: v2 activated (was v1)" in page.inner_text("#models-notice")
    assert "v2 active" in page.inner_text(".model-item[data-model=matte]")

    page.click("#rerun")
    page.wait_for_function(
        "() => document.querySelector('#card-matte').dataset.state === 'done' &&"
        " document.querySelector('#card-matte .version').textContent.includes('matte@2')")
    card_done(page, "card-cartoonize")
    card_done(page, "card-classify")

    assert page.inner_text("#rollback") == "Roll back to v1"
    page.click("#rollback")
    page.wait_for_selector("#model-detail[data-model=matte][data-active='1']")
    assert "matte: v1 restored (was v2)" in page.inner_text("#models-notice")
    with server.client() as http:
        assert http.get("/models/matte").json()["active"] == 1

    # Activation refused for an unknown version: the envelope, on the page.
    page.evaluate("() => activate('matte', 99)")
    page.wait_for_selector("#models-error:not([hidden])")
    assert "version_not_found" in page.inner_text("#models-error")
    assert page.js_errors == []


def test_jobs_panel_follows_a_job(page, stack) -> None:
    server, workers = stack
    workers.workers[0].wait_ready(timeout=90)
    with server.client() as http:
        created = http.post("/jobs/finetune", json={
            "task": "autoencode", "dataset_id": DATASET, "base": "faces-ae",
            "target_model": "faces-ae-web",
            "hyperparameters": {"epochs": 2, "batch_size": 4, "early_stop_patience": None},
        })
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    # The list polls every few seconds; a click follows the job's event stream.
    row = f"#jobs-table tr[data-job-id='{job_id}']"
    page.wait_for_selector(row)
    page.click(row)
    page.wait_for_selector(f"#job-detail[data-job-id='{job_id}']")
    page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart').dataset.points || 0) >= 2")
    page.wait_for_selector("#samples figure.sample img")
    image_shown(page, "#samples figure.sample img")
    try:
        page.wait_for_selector("#job-status.status-succeeded")
    except Exception:
        with httpx.Client(base_url=server.url) as http:
            job = http.get(f"/jobs/{job_id}").json()
        raise AssertionError(f"job not succeeded: {job}\n{workers.logs()}") from None
    assert "faces-ae-web@1" in page.inner_text("#job-facts")
    assert page.locator("#samples figure.sample").count() == 2  # one per epoch
    assert page.locator("#chart-legend .legend-item").count() >= 1
    assert page.js_errors == []
