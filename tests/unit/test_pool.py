"""The inference pool without HTTP: batching, loading, swapping, processing."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.settings import Settings
from families.autoencode import processing as autoencode_proc
from families.autoencode.spec import AutoencodeServing
from families.cartoonize import processing as cartoon_proc
from families.cartoonize.spec import CartoonizeServing
from families.classify import processing as classify_proc
from families.classify.api import ClassifyParams, classify_image
from families.classify.spec import ClassifyServing
from families.matte import processing as matte_proc
from families.matte.api import MatteParams, matte_image
from families.matte.spec import MatteServing
from model_store.errors import ActivationRefused, NoActiveVersion
from model_store.store import ModelStore
from service.errors import ModelNotReady, TooManyPixels, Undecodable, WrongTask
from service.imaging import decode_image, encode_image
from service.inference.batching import Batcher
from service.inference.pool import InferencePool
from service.inference.sessions import LoadFailed, load_version
from tests.api.tiny_models import PREPROCESSING, build_tiny_store, publish_tiny

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------ batching
def test_batcher_groups_concurrent_requests_and_splits_results():
    calls: list[int] = []

    def run(feeds):
        calls.append(feeds["x"].shape[0])
        time.sleep(0.01)
        return {"y": feeds["x"] * 2}

    batcher = Batcher(run, max_size=8, max_delay_s=0.05, name="t")
    with batcher.preparing():  # more are on the way: the first waits for them
        futures = [batcher.submit({"x": np.full((1, 2), i, np.float32)}) for i in range(8)]
    results = [f.result(timeout=5) for f in futures]
    batcher.close()
    assert [r["y"][0, 0] for r in results] == [2.0 * i for i in range(8)]
    assert sum(calls) == 8 and max(calls) > 1


def test_a_batch_waits_only_while_another_request_is_preparing():
    calls: list[int] = []

    def run(feeds):
        calls.append(feeds["x"].shape[0])
        return {"y": feeds["x"]}

    # A lone request does not sit out the window (30 s here: the result comes long before).
    batcher = Batcher(run, max_size=2, max_delay_s=30.0, name="t")
    assert batcher.submit({"x": np.zeros((1, 1), np.float32)}).result(timeout=10)["y"].shape
    # With a second request preparing, the first waits for it and they share one run.
    with batcher.preparing():
        first = batcher.submit({"x": np.zeros((1, 1), np.float32)})
        second = batcher.submit({"x": np.ones((1, 1), np.float32)})
    assert first.result(timeout=10)["y"][0, 0] == 0 and second.result(timeout=10)["y"][0, 0] == 1
    assert calls == [1, 2]
    batcher.close()


def test_parallel_collectors_run_batches_at_once_and_all_stop_on_close():
    in_run = 0
    most = 0
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=5)

    def run(feeds):
        nonlocal in_run, most
        with lock:
            in_run += 1
            most = max(most, in_run)
        if feeds["x"][0, 0] < 2:
            both.wait()  # the first two runs finish only once both are in progress
        with lock:
            in_run -= 1
        return {"y": feeds["x"] + 1}

    # max_size 1: every request is its own batch, so two collectors mean two runs at once.
    batcher = Batcher(run, max_size=1, max_delay_s=0.0, name="t", runs=2)
    futures = [batcher.submit({"x": np.full((1, 1), i, np.float32)}) for i in range(6)]
    assert [f.result(timeout=10)["y"][0, 0] for f in futures] == [1, 2, 3, 4, 5, 6]
    assert most == 2
    queued = [batcher.submit({"x": np.full((1, 1), 9, np.float32)}) for _ in range(3)]
    batcher.close()  # what was queued is still served, then every collector ends
    assert all(f.result(timeout=5)["y"][0, 0] == 10 for f in queued)
    for thread in batcher._threads:
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_batcher_respects_max_size_with_multi_row_requests():
    sizes: list[int] = []
    gate = threading.Event()

    def run(feeds):
        gate.wait(5)
        sizes.append(feeds["x"].shape[0])
        return {"y": feeds["x"]}

    batcher = Batcher(run, max_size=4, max_delay_s=0.05, name="t")
    futures = [batcher.submit({"x": np.zeros((rows, 1), np.float32)}) for rows in (3, 2, 1, 2)]
    gate.set()
    assert [f.result(timeout=5)["y"].shape[0] for f in futures] == [3, 2, 1, 2]
    assert max(sizes) <= 4
    batcher.close()


def test_batcher_failure_reaches_every_waiter():
    def run(feeds):
        raise RuntimeError("boom")

    batcher = Batcher(run, max_size=4, max_delay_s=0.02, name="t")
    futures = [batcher.submit({"x": np.zeros((1, 1), np.float32)}) for _ in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="boom"):
            future.result(timeout=5)
    batcher.close()


def test_batcher_serves_what_was_queued_before_close():
    batcher = Batcher(lambda feeds: {"y": feeds["x"]}, max_size=2, max_delay_s=0.0, name="t")
    futures = [batcher.submit({"x": np.ones((1, 1), np.float32)}) for _ in range(5)]
    batcher.close()
    assert all(f.result(timeout=5)["y"][0, 0] == 1 for f in futures)


# ------------------------------------------------------------------ processing
def test_cartoon_graph_size_caps_and_rounds():
    assert cartoon_proc.cartoon_graph_size((1000, 500), 720, 4) == (720, 360)
    assert cartoon_proc.cartoon_graph_size((451, 301), 720, 4) == (448, 300)
    assert cartoon_proc.cartoon_graph_size((2, 3), 720, 4) == (4, 4)


def test_matte_input_divides_by_the_max():
    image = Image.new("RGB", (10, 10), (100, 50, 25))
    x = matte_proc.matte_input(image, MatteServing(size=8, divide_by_max=True,
                                                   mean=IMAGENET_MEAN, std=IMAGENET_STD))
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((1.0 - 0.485) / 0.229, rel=1e-5)


def test_classify_input_matches_torchvision_geometry():
    config = ClassifyServing(resize_shorter=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = classify_proc.classify_input(Image.new("RGB", (400, 300)), config)
    assert x.shape == (1, 3, 224, 224)


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0), (-0.5, 2.0)])
def test_value_ranges_come_from_the_config(value_range):
    low, high = value_range
    image = Image.fromarray(np.array([[[0, 255, 51]]], np.uint8).repeat(4, 0).repeat(4, 1))
    x = autoencode_proc.autoencode_input(image, AutoencodeServing(
        size=8, latent_dim=1, input_range=value_range, output_range=value_range))
    assert x[0, :, 0, 0] == pytest.approx([low, high, low + 0.2 * (high - low)], abs=1e-6)
    config = CartoonizeServing(max_side=720, multiple_of=4, color_order="BGR",
                               input_range=value_range, output_range=value_range)
    cartoon = cartoon_proc.cartoon_input(image, config)
    assert cartoon[0, :, 0, 0] == pytest.approx(x[0, ::-1, 0, 0], abs=1e-6)  # BGR
    back = cartoon_proc.cartoon_output(cartoon, (4, 4), config)
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_top_k_and_label_fallback():
    labels = classify_proc.label_names(None, 3)
    assert labels == ["class_0", "class_1", "class_2"]
    best = classify_proc.top_k(np.array([0.0, 2.0, 1.0]), labels, 2)
    assert [label for label, _ in best] == ["class_1", "class_2"]


def test_sixteen_bit_is_scaled():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(1, 256).repeat(4, 0)
    rgb = decode_image(encode_image(Image.fromarray(ramp), "png"), 10**6)
    values = np.asarray(rgb)[0, :, 0]
    assert rgb.mode == "RGB" and values[0] == 0 and values[-1] == 255 and values[128] > 100


def test_decode_refuses_bombs_and_garbage():
    with pytest.raises(Undecodable):
        decode_image(b"nope", 100)
    with pytest.raises(TooManyPixels):
        decode_image(encode_image(Image.new("RGB", (20, 20)), "png"), 100)


def test_fitted_latents_follow_the_distribution():
    rng = np.random.default_rng(0)
    mean, chol = np.array([1.0, -1.0], np.float32), np.diag([0.1, 2.0]).astype(np.float32)
    samples = autoencode_proc.fitted_latents(rng, 20000, mean, chol)
    assert samples.mean(0) == pytest.approx(mean, abs=0.05)
    assert samples.std(0) == pytest.approx([0.1, 2.0], rel=0.05)


# ------------------------------------------------------------------ pool
@pytest.fixture()
def tiny(tmp_path: Path) -> ModelStore:
    return build_tiny_store(tmp_path / "store")


def settings_for(store: ModelStore, **overrides) -> Settings:
    return Settings(store_dir=store.root, **overrides)


def test_load_version_checks_hashes(tiny: ModelStore):
    loaded = load_version(tiny, "matte", 1, settings_for(tiny))
    assert loaded.ref == "matte@1" and loaded.providers == ["CPUExecutionProvider"]
    path = tiny.version_dir("matte", 2) / "model.onnx"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(LoadFailed, match="sha256"):
        load_version(tiny, "matte", 2, settings_for(tiny))


@pytest.mark.parametrize("batching", [False, True])
def test_pipelines_agree_with_and_without_batching(tiny: ModelStore, batching: bool):
    image = encode_image(Image.new("RGB", (40, 30), (10, 200, 30)), "png")

    async def scenario() -> tuple[list[bytes], list[str]]:
        pool = InferencePool(tiny, settings_for(tiny, batching=batching, batch_max_delay_ms=20))
        await pool.sync_all()
        try:
            version = await pool.resolve("matte", None, None)
            assert (version.graph("main").batcher is not None) == batching
            masks = await asyncio.gather(*(matte_image(pool, image, MatteParams())
                                           for _ in range(6)))
            labels = await classify_image(pool, image, ClassifyParams(top_k=2))
            return [m.content for m in masks], [p.label for p in labels.content.predictions]
        finally:
            pool.close()

    masks, labels = asyncio.run(scenario())
    assert len(set(masks)) == 1 and len(labels) == 2


def test_pool_swap_keeps_the_old_version_for_holders(tiny: ModelStore):
    async def scenario() -> None:
        pool = InferencePool(tiny, settings_for(tiny))
        await pool.sync_all()
        held = await pool.resolve("matte", None, None)
        tiny.activate("matte", 2)
        await pool.sync_all()
        assert (await pool.resolve("matte", None, None)).ref == "matte@2"
        assert held.graph("main").run({"image": np.zeros((1, 3, 32, 32), np.float32)})
        pool.close()

    asyncio.run(scenario())
    gc.collect()


def test_pool_reports_failures_and_missing_models(tiny: ModelStore):
    async def scenario() -> None:
        pool = InferencePool(tiny, settings_for(tiny))
        await pool.sync_all()
        empty = InferencePool(ModelStore(tiny.root.parent / "empty"), settings_for(tiny))
        with pytest.raises(NoActiveVersion, match="no model serves .matte. yet"):
            await empty.resolve("matte", None, None)
        empty.close()
        path = tiny.version_dir("matte", 2) / "model.onnx"
        # Broken after its activation (the store refuses to activate a corrupt version).
        tiny.activate("matte", 2)
        path.write_bytes(b"broken")
        await pool.sync_all()
        states = {s.name: s for s in await pool.states()}
        # Still ready, serving the last good version, and saying so.
        assert states["matte"].ready and states["matte"].fallback
        assert states["matte"].loaded_version == 1 and "sha256" in states["matte"].error
        assert (await pool.resolve("matte", None, None)).ref == "matte@1"
        with pytest.raises(ModelNotReady):
            await pool.resolve("matte", None, 2)
        pool.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------ the task spec's contract
def test_batchers_follow_the_graph_shapes_and_the_task_spec(tiny: ModelStore):
    settings = settings_for(tiny)
    batched = {}
    for name, roles in (("cartoon", ["main"]), ("matte", ["main"]), ("classify", ["main"]),
                        ("anime-faces", ["main"]), ("faces-ae", ["main", "decoder"])):
        loaded = load_version(tiny, name, 1, settings)
        batched.update({f"{name}:{r}": loaded.graph(r).batcher is not None for r in roles})
    # cartoon: symbolic H, W; generate and the decoder: a request is a batch of its own.
    assert batched == {"cartoon:main": False, "matte:main": True, "classify:main": True,
                       "anime-faces:main": False, "faces-ae:main": True,
                       "faces-ae:decoder": False}


def test_the_serving_config_is_typed_at_load(tiny: ModelStore):
    loaded = load_version(tiny, "matte", 1, settings_for(tiny))
    assert loaded.config.size == PREPROCESSING["matte"]["size"]
    assert loaded.config.mean == tuple(PREPROCESSING["matte"]["mean"])


@pytest.mark.parametrize("change, message", [
    ({"size": None}, "size: Field required"),
    ({"interpolation": "bilinear"}, "interpolation: Extra inputs are not permitted"),
    ({"size": "big"}, "size: Input should be a valid integer"),
])
def test_a_wrong_serving_config_is_a_load_failure(tiny: ModelStore, change, message):
    preprocessing = {**PREPROCESSING["matte"], **change}
    preprocessing = {k: v for k, v in preprocessing.items() if v is not None}
    version = publish_tiny(tiny, "matte", activate=False, preprocessing=preprocessing)
    with pytest.raises(LoadFailed, match="not a valid matte serving config") as failure:
        load_version(tiny, "matte", version, settings_for(tiny))
    assert message in str(failure.value)


def test_tensor_names_must_be_those_of_the_task_spec(tiny: ModelStore):
    path = tiny.version_dir("matte", 2) / "manifest.json"
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"name": "mask"', '"name": "alpha"'))
    with pytest.raises(LoadFailed, match=r"\['alpha'\]; the matte task needs \['image'\]"):
        load_version(tiny, "matte", 2, settings_for(tiny))


def test_a_version_of_an_unregistered_task_is_a_load_failure(tiny: ModelStore):
    tiny.activate("matte", 2)
    path = tiny.version_dir("matte", 2) / "manifest.json"
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"task": "matte"', '"task": "sketch"'))
    with pytest.raises(LoadFailed, match="unknown task 'sketch'"):
        load_version(tiny, "matte", 2, settings_for(tiny))

    async def scenario() -> None:
        pool = InferencePool(tiny, settings_for(tiny))
        await pool.sync_all()
        states = {s.name: s for s in await pool.states()}
        assert "sketch" in states["matte"].error
        # The task comes from the newest version whose manifest reads (v1), not from v2.
        assert states["matte"].active_version == 2 and states["matte"].task == "matte"
        # A fresh pool serves the newest loadable version of the history instead.
        assert states["matte"].fallback and states["matte"].loaded_version == 1
        pool.close()

    asyncio.run(scenario())


def test_pool_refuses_parity_failures_and_other_tasks(tiny: ModelStore):
    failed = publish_tiny(tiny, "matte", seed=5, activate=False, parity=False)

    async def scenario() -> None:
        pool = InferencePool(tiny, settings_for(tiny))
        await pool.sync_all()
        with pytest.raises(ActivationRefused, match="parity"):
            await pool.resolve("matte", None, failed)
        with pytest.raises(ActivationRefused, match="parity"):
            await pool.activate("matte", failed)
        with pytest.raises(WrongTask, match="'classify' serves 'classify', not 'matte'"):
            await pool.resolve("matte", "classify", None)
        pool.close()

    asyncio.run(scenario())
    assert tiny.active_version("matte") == 1


def test_a_family_can_set_its_own_batching(tiny: ModelStore, monkeypatch: pytest.MonkeyPatch):
    """A spec's ``batching`` overrides the server-wide size and delay for its graphs."""
    import dataclasses

    from tasks import Batching, get_task
    from tasks import registry as task_registry

    own = dataclasses.replace(get_task("matte"), batching=Batching(max_size=3, max_delay_ms=7))
    monkeypatch.setitem(task_registry._REGISTRY, "matte", own)  # same place, restored after
    settings = settings_for(tiny, batching=True, batch_max_size=8)
    versions = [load_version(tiny, "matte", 1, settings),
                load_version(tiny, "classify", 1, settings)]
    try:
        own_batcher, default_batcher = (v.graph("main").batcher for v in versions)
        assert own_batcher is not None and default_batcher is not None
        assert (own_batcher._max_size, own_batcher._max_delay_s) == (3, pytest.approx(0.007))
        assert default_batcher._max_size == 8
    finally:
        for version in versions:
            for graph in version.graphs.values():
                if graph.batcher is not None:
                    graph.batcher.close()
