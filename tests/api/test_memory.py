"""Memory per request is bounded by the process budget, and comes back after a burst.

The cartoonize graph here is wide on purpose (1x1 convolutions to 32 channels at full
resolution: 128 bytes of activations per input pixel and channel, little arithmetic), so
onnxruntime's arena grows with the input size the way DCT-Net's does, in a fraction of its
time. Its version has an INT8 variant (the same graph under the variant's file name: the
precision code path is what matters), so ``precision=fp32`` is loaded on first use beside
the default precision, as in production.

RSS is sampled from /proc/<pid>/status of the API process every few milliseconds while the
requests run; the budget is a setting (TOONFORGE_MEMORY_BUDGET_MB), the bound asserted is
that budget over the process's RSS before the requests.
"""

from __future__ import annotations

import io
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from model_store.files import MAIN_GRAPH
from model_store.manifest import Lineage, Manifest, ParityReport, VariantRecord
from model_store.store import ModelStore
from tests.api.tiny_models import OPSET, PREPROCESSING, _spec
from tests.support.server import ApiServer

MB = 1024 * 1024
WIDTH = 32
# Per precision: (process budget, one request's share). INT8 reserves DCT-Net's INT8
# coefficient (three times fp32's), so its default size needs a larger share.
BUDGETS_MB = {"fp32": (700, 500), "int8": (1600, 1400)}
# A decoded source of up to this many pixels is the worst input the server accepts here
# (TOONFORGE_MAX_PIXELS): 2000 x 2000.
MAX_PIXELS = 4_000_000
SOURCE_SIDE = 2000
# After a burst and the idle release, RSS is back within this of its value before it.
MARGIN_MB = 120


def _wide_cartoon(path: Path) -> None:
    rng = np.random.default_rng(0)
    up = (rng.standard_normal((WIDTH, 3, 1, 1)) * 0.1).astype(np.float32)
    down = (rng.standard_normal((3, WIDTH, 1, 1)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "up"], ["wide"]),
             helper.make_node("Relu", ["wide"], ["act"]),
             helper.make_node("Conv", ["act", "down"], ["narrow"]),
             helper.make_node("Tanh", ["narrow"], ["cartoon"])]
    graph = helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                      ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("cartoon", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [numpy_helper.from_array(up, "up"), numpy_helper.from_array(down, "down")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wide-store")
    store = ModelStore(root)
    with store.staging("cartoon") as staged:
        _wide_cartoon(staged / MAIN_GRAPH)
        shutil.copy(staged / MAIN_GRAPH, staged / "model.int8.onnx")
        manifest = Manifest(
            model="cartoon", version=0, task="cartoonize", arch="wide-test",
            graphs={"main": _spec(staged / MAIN_GRAPH)},
            preprocessing=PREPROCESSING["cartoonize"],
            parity=ParityReport(passed=True, tolerance=1e-5, detail=""),
            lineage=Lineage(source="scratch"),
            variants={"int8": VariantRecord(precision="int8", passed=True,
                                            graphs={"main": "model.int8.onnx"})},
        )
        final = store.publish("cartoon", staged, manifest)
    store.activate("cartoon", final.version)
    return root


@pytest.fixture(params=["fp32"])
def precision(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def server(wide_store: Path, tmp_path: Path, precision: str) -> Iterator[ApiServer]:
    budget, share = BUDGETS_MB[precision]
    api = ApiServer(wide_store, tmp_path / "server.log", {
        "TOONFORGE_MEMORY_BUDGET_MB": str(budget),
        "TOONFORGE_MEMORY_REQUEST_MB": str(share),
        "TOONFORGE_MAX_PIXELS": str(MAX_PIXELS),
        "TOONFORGE_MEMORY_WAIT_S": "60",
        "TOONFORGE_MEMORY_RELEASE_IDLE_S": "1",
        "TOONFORGE_RELOAD_POLL_S": "0.5",
    })
    yield api
    api.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class RssSampler:
    """The highest RSS of ``pid`` seen while the block runs (sampled every 5 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def worst_png(side: int = SOURCE_SIDE) -> bytes:
    """A single-colour PNG of the largest size allowed: a few KB that decode to 12 MB."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def _cartoonize(api: ApiServer, body: bytes, precision: str) -> Callable[[], httpx.Response]:
    def send() -> httpx.Response:
        return httpx.post(f"{api.url}/cartoonize",
                          params={"max_side": 2048, "precision": precision},
                          content=body, headers={"content-type": "image/png"}, timeout=300)
    return send


def _settled(pid: int, target_mb: float, timeout_s: float = 20.0) -> float:
    """RSS once it has come down to ``target_mb`` (or the lowest seen within the timeout)."""
    deadline, lowest = time.monotonic() + timeout_s, float("inf")
    while time.monotonic() < deadline:
        lowest = min(lowest, rss_mb(pid))
        if lowest <= target_mb:
            break
        time.sleep(0.2)
    return lowest


@pytest.mark.parametrize("precision", ["fp32", "int8"], indirect=True)
def test_worst_cartoonize_stays_within_budget_and_memory_comes_back(
        server: ApiServer, precision: str) -> None:
    body = worst_png()
    send = _cartoonize(server, body, precision)
    # Loads the precision on first use and warms the path, on a small image.
    assert _cartoonize(server, worst_png(64), precision)().status_code == 200
    time.sleep(1.5)
    baseline = _settled(server.process.pid, 0.0, timeout_s=3.0)
    with RssSampler(server.process.pid) as sampler:
        answer = send()
    assert answer.status_code == 200, answer.text
    assert Image.open(io.BytesIO(answer.content)).size == (SOURCE_SIDE, SOURCE_SIDE)
    grew, budget = sampler.peak - baseline, BUDGETS_MB[precision][0]
    assert grew <= budget, f"RSS grew by {grew:.0f} MB for one request (budget {budget})"
    after = _settled(server.process.pid, baseline + MARGIN_MB)
    assert after <= baseline + MARGIN_MB, (
        f"RSS stayed at {after:.0f} MB after the request ({baseline:.0f} MB before)")


def test_eight_worst_requests_at_once_stay_within_the_budget(server: ApiServer) -> None:
    budget = BUDGETS_MB["fp32"][0]
    body = worst_png()
    send = _cartoonize(server, body, "fp32")
    assert _cartoonize(server, worst_png(64), "fp32")().status_code == 200
    time.sleep(1.5)
    baseline = _settled(server.process.pid, 0.0, timeout_s=3.0)
    with RssSampler(server.process.pid) as sampler, ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(lambda _: send(), range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503}, [a.text for a in answers if a.status_code not in
                                          (200, 503)]
    assert 200 in statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "overloaded"
            assert answer.headers["Retry-After"].isdigit()
    grew = sampler.peak - baseline
    assert grew <= budget, f"RSS grew by {grew:.0f} MB for 8 requests (budget {budget})"
    metrics = httpx.get(f"{server.url}/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("toonforge_memory_")}
    assert values["toonforge_memory_budget_bytes"] == budget * MB
    assert values["toonforge_memory_reserved_bytes"] == 0  # every reservation was returned
    after = _settled(server.process.pid, baseline + MARGIN_MB)
    assert after <= baseline + MARGIN_MB, (
        f"RSS stayed at {after:.0f} MB after the burst ({baseline:.0f} MB before)")
