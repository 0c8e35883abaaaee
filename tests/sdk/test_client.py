"""The SDK against the live API (real uvicorn, real worker, real HTTP): every method, sync and
async, the error mapping, and ``wait_for_job`` on the event stream and on its polling
fallback."""

from __future__ import annotations

import asyncio
import inspect
import io
import socket
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image
from toonforge_client import (
    ApiError,
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    ImageResult,
    InvalidRequestError,
    JobFailedError,
    JobUpdate,
    NotFoundError,
    ToonforgeConnectionError,
    UnsupportedMediaTypeError,
    WaitTimeoutError,
)

from tests.sdk.conftest import EPOCHS, HYPER, NO_WEIGHTS_AE, REAL_AE, Stack
from tests.support.archives import zip_bytes

pytestmark = pytest.mark.timeout(180)


def image(result: ImageResult) -> Image.Image:
    img = Image.open(io.BytesIO(result.content))
    img.load()
    return img


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def tf(sdk_stack: Stack) -> Client:
    with Client(sdk_stack.url, timeout=60) as client:
        yield client


# ---------------------------------------------------------------- the contract


def test_every_operation_has_a_method_in_both_clients(tf: Client) -> None:
    """Every operationId of the live server's OpenAPI document is a method of Client and of
    AsyncClient, with the same parameters."""
    spec = httpx.get(f"{tf.base_url}/openapi.json").json()
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert len(operations) >= 25
    for name in sorted(operations):
        sync, unsync = getattr(Client, name, None), getattr(AsyncClient, name, None)
        assert sync is not None and unsync is not None, f"no method for operation {name}"
        assert inspect.signature(sync).parameters.keys() == \
            inspect.signature(unsync).parameters.keys(), name
        assert inspect.iscoroutinefunction(unsync) or inspect.isasyncgenfunction(unsync), name


# ---------------------------------------------------------------- inference


def test_inference_sync(tf: Client, photo: bytes, tmp_path: Path) -> None:
    cartoon = tf.cartoonize(photo, format="png")
    assert cartoon.model_version == "cartoon@1" and cartoon.media_type == "image/png"
    assert image(cartoon).size == (96, 64)
    assert cartoon.save(tmp_path / "deep" / "c.png").read_bytes() == cartoon.content

    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    cutout = tf.matte(path, output="cutout")  # a path
    assert image(cutout).mode == "RGBA" and cutout.model_version == "matte@1"
    assert tf.matte(photo, version=2).model_version == "matte@2"
    with path.open("rb") as f:  # an open file
        labels = tf.classify(f, top_k=3)
    assert (labels["model"], labels["version"], len(labels["predictions"])) == ("classify", 1, 3)

    grid = tf.generate(n=4, seed=7)
    assert grid.seed == 7 and grid.model_version == "anime-faces@1"
    as_json = tf.generate(n=2, seed=7, rank_by_discriminator=True, oversample=2,
                          format="json")
    assert len(as_json["images"]) == 2 and as_json["seed"] == 7
    latents = tf.generate(latents=[[0.1] * 8, [0.2] * 8], format="json")
    assert len(latents["images"]) == 2

    recon = tf.autoencode(photo, size=32)
    assert image(recon).size == (32, 32) and recon.model_version == "faces-ae@1"
    real = tf.autoencode(photo, model=REAL_AE)
    assert real.model_version == f"{REAL_AE}@1" and image(real).size == (64, 64)
    strip = tf.autoencode_interpolate(photo, path, steps=4)
    assert image(strip).size[0] > image(strip).size[1]
    path_json = tf.autoencode_interpolate(photo, photo, steps=3, format="json")
    assert len(path_json["images"]) == 3
    samples = tf.autoencode_sample(n=4, seed=3)
    assert samples.seed == 3 and samples.latent_distribution == "fitted"


def test_inference_async(sdk_stack: Stack, photo: bytes) -> None:
    async def run() -> None:
        async with AsyncClient(sdk_stack.url) as tf:
            cartoon, cutout, labels, grid, grid_json, recon, strip, strip_json, samples = \
                await asyncio.gather(
                    tf.cartoonize(photo, format="webp"),
                    tf.matte(photo, output="composite", background="#00ff00", format="jpeg"),
                    tf.classify(photo),
                    tf.generate(n=2, seed=1),
                    tf.generate(n=2, seed=1, format="json"),
                    tf.autoencode(photo),
                    tf.autoencode_interpolate(photo, photo, steps=2),
                    tf.autoencode_interpolate(photo, photo, steps=2, format="json"),
                    tf.autoencode_sample(n=2, seed=5))
            assert cartoon.media_type == "image/webp" and image(cartoon).size == (96, 64)
            assert cutout.media_type == "image/jpeg" and image(cutout).mode == "RGB"
            assert len(labels["predictions"]) == 5  # every label of the 5-class tiny model
            assert grid.seed == 1 and len(grid_json["images"]) == 2
            assert recon.model_version == "faces-ae@1"
            assert strip.media_type == "image/png" and len(strip_json["images"]) == 2
            assert samples.seed == 5

    asyncio.run(run())


# ---------------------------------------------------------------- models, health


def test_models_and_health_sync(tf: Client) -> None:
    models = {m["name"]: m for m in tf.list_models()}
    assert models["matte"]["versions"] == [1, 2] and models["matte"]["active"] == 1
    detail = tf.get_model("matte")
    assert [v["version"] for v in detail["version_summaries"]] == [1, 2]
    manifest = tf.get_model_version("matte", 2)
    assert (manifest["model"], manifest["version"]) == ("matte", 2)

    assert tf.activate_model_version("matte", 2) == {"name": "matte", "active": 2,
                                                       "previous": 1}
    try:
        assert tf.get_model("matte")["active"] == 2
        assert tf.rollback_model("matte") == {"name": "matte", "active": 1, "previous": 2}
    finally:
        assert tf.activate_model_version("matte", 1)["active"] == 1
    with pytest.raises(ConflictError):  # real-ae never had another active version
        tf.rollback_model(REAL_AE)

    assert tf.healthz() == {"status": "ok"}
    ready = tf.readyz()
    assert ready["ready"] and {m["name"] for m in ready["models"]} >= {"matte", REAL_AE}
    assert "# TYPE" in tf.metrics()


def test_models_and_health_async(sdk_stack: Stack) -> None:
    async def run() -> None:
        async with AsyncClient(sdk_stack.url) as tf:
            assert {m["name"] for m in await tf.list_models()} >= {"cartoon", REAL_AE}
            assert (await tf.get_model(REAL_AE))["task"] == "autoencode"
            assert (await tf.get_model_version("cartoon", 1))["task"] == "cartoonize"
            answer = await tf.activate_model_version("matte", 1)  # already active: a no-op
            assert answer["active"] == 1
            with pytest.raises(ApiError) as exc:
                await tf.rollback_model("no-such-model")
            assert exc.value.code == "model_not_found"
            assert (await tf.healthz())["status"] == "ok"
            assert (await tf.readyz())["ready"]
            assert "# HELP" in await tf.metrics()

    asyncio.run(run())


# ---------------------------------------------------------------- errors


def test_server_errors_carry_code_and_message(tf: Client, photo: bytes) -> None:
    with pytest.raises(NotFoundError) as exc:
        tf.get_model("no-such-model")
    assert (exc.value.status_code, exc.value.code) == (404, "model_not_found")
    assert "no-such-model" in exc.value.message and str(exc.value).startswith("model_not_found:")

    with pytest.raises(NotFoundError) as exc:
        tf.cartoonize(photo, model="no-such-model")
    assert exc.value.code == "model_not_found"
    with pytest.raises(NotFoundError) as exc:
        tf.activate_model_version("matte", 99)
    assert exc.value.code == "version_not_found"

    with pytest.raises(InvalidRequestError) as exc:
        tf.classify(photo, top_k=0)
    assert (exc.value.status_code, exc.value.code) == (422, "invalid_parameter")
    assert "top_k" in exc.value.message

    with pytest.raises(BadRequestError) as exc:
        tf.cartoonize(b"\x89PNG\r\n\x1a\n but not really")
    assert exc.value.code == "undecodable"

    with pytest.raises(InvalidRequestError) as exc:
        tf.create_finetune_job(task="autoencode", dataset_id="no-such-dataset", base=REAL_AE,
                               target_model="x")
    assert exc.value.code == "invalid_parameter"
    assert exc.value.details and exc.value.details["errors"][0]["loc"] == ["body",
                                                                          "dataset_id"]
    with pytest.raises(NotFoundError) as exc:
        tf.get_job("no-such-job")
    assert exc.value.code == "job_not_found"
    with pytest.raises(NotFoundError) as exc:
        list(tf.stream_job_events("no-such-job"))
    assert exc.value.code == "job_not_found"
    with pytest.raises(NotFoundError) as exc:
        tf.get_dataset("no-such-dataset")
    assert exc.value.code == "dataset_not_found"
    with pytest.raises(UnsupportedMediaTypeError) as exc:
        tf.create_dataset(b"this is not an archive", task="autoencode")
    assert exc.value.status_code == 415


def test_async_errors_and_unreachable_server(sdk_stack: Stack, photo: bytes) -> None:
    async def run() -> None:
        async with AsyncClient(sdk_stack.url) as tf:
            with pytest.raises(NotFoundError) as exc:
                await tf.get_model_version("matte", 42)
            assert exc.value.code == "version_not_found"
            with pytest.raises(InvalidRequestError) as exc:
                await tf.generate(n=0)
            assert exc.value.code == "invalid_parameter"
        async with AsyncClient(f"http://127.0.0.1:{closed_port()}") as down:
            with pytest.raises(ToonforgeConnectionError) as exc:
                await down.healthz()
            assert "cannot connect" in str(exc.value)

    asyncio.run(run())
    with Client(f"http://127.0.0.1:{closed_port()}") as down, \
            pytest.raises(ToonforgeConnectionError):
        down.cartoonize(photo)


# ---------------------------------------------------------------- datasets


def test_datasets_sync(tf: Client, sdk_stack: Stack, tmp_path: Path) -> None:
    archive = tmp_path / "faces.zip"
    archive.write_bytes(sdk_stack.dataset_zip)
    progress: list[tuple[int, int]] = []
    created = tf.create_dataset(archive, task="autoencode", name="sdk sync", id="sdk-sync",
                                on_progress=lambda sent, total: progress.append((sent, total)))
    assert created["meta"]["id"] == "sdk-sync" and created["report"]["can_train"]
    assert created["meta"]["filename"] == "faces.zip"
    assert progress[-1] == (len(sdk_stack.dataset_zip), len(sdk_stack.dataset_zip))

    folder = tmp_path / "folder"  # a folder is zipped on the fly
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    from_folder = tf.create_dataset(folder, task="autoencode", id="sdk-folder")
    assert from_folder["meta"]["counts"] == created["meta"]["counts"]

    assert {"sdk-sync", "sdk-folder"} <= {d["id"] for d in tf.list_datasets(task="autoencode")}
    assert not any(d["id"] == "sdk-sync" for d in tf.list_datasets(task="matte"))
    assert tf.get_dataset("sdk-sync")["report"]["counts"] == created["report"]["counts"]
    with pytest.raises(ConflictError) as exc:
        tf.create_dataset(archive, task="autoencode", id="sdk-sync")
    assert exc.value.code == "dataset_conflict"
    for dataset in ("sdk-sync", "sdk-folder"):
        assert tf.delete_dataset(dataset) is None
    with pytest.raises(NotFoundError):
        tf.delete_dataset("sdk-sync")


def test_datasets_async(sdk_stack: Stack) -> None:
    async def run() -> None:
        async with AsyncClient(sdk_stack.url) as tf:
            sent: list[int] = []
            created = await tf.create_dataset(io.BytesIO(sdk_stack.dataset_zip),
                                              task="autoencode", id="sdk-async",
                                              on_progress=lambda n, total: sent.append(n))
            assert created["meta"]["task"] == "autoencode" and sent[-1] == len(
                sdk_stack.dataset_zip)
            assert "sdk-async" in {d["id"] for d in await tf.list_datasets()}
            assert (await tf.get_dataset("sdk-async"))["meta"]["id"] == "sdk-async"
            await tf.delete_dataset("sdk-async")
            with pytest.raises(InvalidRequestError) as exc:
                await tf.create_dataset(zip_bytes({"readme.txt": b"no images"}),
                                        task="autoencode")
            assert exc.value.code == "dataset_invalid"

    asyncio.run(run())


# ---------------------------------------------------------------- jobs


def test_job_follow_sync(tf: Client, sdk_stack: Stack, dataset_id: str) -> None:
    sdk_stack.ready_worker()
    job = tf.create_finetune_job(task="autoencode", dataset_id=dataset_id, base=REAL_AE,
                                 target_model="sdk-sync-ae", hyperparameters=HYPER,
                                 idempotency_key="sdk-sync-job")
    assert job["status"] == "queued" and job["total_epochs"] == EPOCHS
    replay = tf.create_finetune_job(task="autoencode", dataset_id=dataset_id, base=REAL_AE,
                                    target_model="sdk-sync-ae", hyperparameters=HYPER,
                                    idempotency_key="sdk-sync-job")
    assert replay["id"] == job["id"]

    updates: list[JobUpdate] = []
    done = tf.wait_for_job(job["id"], on_progress=updates.append, timeout=120)
    assert done["status"] == "succeeded", (done["error"], sdk_stack.logs())
    assert done["result_version"] == "sdk-sync-ae@1" and done["epoch"] == EPOCHS

    assert updates and all(u.source == "stream" and u.event is not None for u in updates)
    statuses = [u.event["data"]["status"] for u in updates if u.event["kind"] == "status"]
    assert statuses[-3:] == ["running", "exporting", "succeeded"]
    epochs = [u.epoch for u in updates if u.event["kind"] == "progress"]
    assert epochs == sorted(epochs) and epochs[-1] == EPOCHS
    assert any(u.loss is not None for u in updates) and updates[-1].finished

    # the other job methods on a finished job
    replayed = list(tf.stream_job_events(job["id"]))  # the whole log, then the end
    assert [e["id"] for e in replayed] == sorted(e["id"] for e in replayed)
    assert replayed[-1]["data"]["status"] == "succeeded"
    tail = list(tf.stream_job_events(job["id"], after=replayed[-3]["id"]))
    assert [e["id"] for e in tail] == [e["id"] for e in replayed[-2:]]
    assert tf.get_job(job["id"])["status"] == "succeeded"
    assert job["id"] in {j["id"] for j in tf.list_jobs(status="succeeded",
                                                       task="autoencode")["jobs"]}
    page = tf.list_jobs(limit=1)
    assert len(page["jobs"]) == 1 and page["limit"] == 1 and page["total"] >= 1
    points = tf.get_job_metrics(job["id"])["points"]
    assert [p["epoch"] for p in points] == list(range(1, EPOCHS + 1))
    samples = tf.list_job_samples(job["id"])
    assert samples, "the autoencoder trainer draws samples after each epoch"
    picture = tf.get_job_sample(job["id"], samples[-1]["name"])
    assert picture.media_type == "image/png" and image(picture).size[0] > 0
    with pytest.raises(ConflictError) as exc:
        tf.cancel_job(job["id"])
    assert exc.value.code == "job_conflict"
    # not auto-activated: served when asked for by version
    assert tf.autoencode(sdk_stack.faces[0], model="sdk-sync-ae", version=1).model_version \
        == "sdk-sync-ae@1"


def test_job_follow_async_falls_back_to_polling(sdk_stack: Stack, dataset_id: str) -> None:
    """A stream that breaks (here: a read timeout shorter than the server's 0.2 s poll, as a
    proxy cutting idle streams would) makes wait_for_job poll GET /jobs/{id} instead."""
    sdk_stack.ready_worker()

    async def run() -> None:
        async with AsyncClient(sdk_stack.url) as tf:
            job = await tf.create_finetune_job(
                task="autoencode", dataset_id=dataset_id, base=REAL_AE,
                target_model="sdk-async-ae", hyperparameters=HYPER, auto_activate=True)
            updates: list[JobUpdate] = []

            async def on_progress(update: JobUpdate) -> None:  # a coroutine callback
                updates.append(update)

            done = await tf.wait_for_job(job["id"], on_progress=on_progress,
                                         stream_read_timeout=0.05, poll_interval=0.2,
                                         timeout=120)
            assert done["status"] == "succeeded", (done["error"], sdk_stack.logs())
            assert done["result_version"] == "sdk-async-ae@1" and done["activation_reason"]
            # Whether the gate lets a 2-epoch version go live is the worker's call (it must
            # beat the trivial predictor); the answer and the store agree either way.
            active = (await tf.get_model("sdk-async-ae"))["active"]
            assert active == (1 if done["activated"] else None), done["activation_reason"]
            assert any(u.source == "poll" for u in updates), [u.source for u in updates]
            assert updates[-1].status == "succeeded" and updates[-1].event is None

            events = [e async for e in tf.stream_job_events(job["id"])]
            assert events[-1]["kind"] == "status" and events[-1]["data"]["status"] == \
                "succeeded"
            assert len((await tf.get_job_metrics(job["id"]))["points"]) == EPOCHS
            samples = await tf.list_job_samples(job["id"])
            assert (await tf.get_job_sample(job["id"], samples[0]["name"])).content
            assert job["id"] in {j["id"] for j in (await tf.list_jobs())["jobs"]}

    asyncio.run(run())


def test_wait_timeout_and_cancel(tf: Client, sdk_stack: Stack, dataset_id: str) -> None:
    sdk_stack.ready_worker()
    job = tf.create_finetune_job(task="autoencode", dataset_id=dataset_id, base=REAL_AE,
                                 target_model="sdk-cancelled",
                                 hyperparameters={**HYPER, "epochs": 200})
    with pytest.raises(WaitTimeoutError) as exc:
        tf.wait_for_job(job["id"], timeout=0.5)
    assert exc.value.job["id"] == job["id"]
    assert tf.cancel_job(job["id"])["cancel_requested"]
    with pytest.raises(JobFailedError) as failed:
        tf.wait_for_job(job["id"], timeout=60)
    assert failed.value.status == "cancelled" and failed.value.job["status"] == "cancelled"
    assert tf.wait_for_job(job["id"], raise_on_failure=False)["status"] == "cancelled"


def test_async_cancel_and_failed_job(sdk_stack: Stack, dataset_id: str) -> None:
    sdk_stack.ready_worker()

    async def run() -> None:
        async with AsyncClient(sdk_stack.url) as tf:
            # an architecture of another task: refused at submit, naming the field
            with pytest.raises(InvalidRequestError) as refused:
                await tf.create_finetune_job(task="autoencode", dataset_id=dataset_id,
                                             base="u2netp", target_model="sdk-bad",
                                             hyperparameters=HYPER)
            assert "base" in refused.value.message and "u2netp" in refused.value.message
            # a base without weights.pt: accepted, then failed by the worker
            job = await tf.create_finetune_job(task="autoencode", dataset_id=dataset_id,
                                               base=NO_WEIGHTS_AE, target_model="sdk-bad",
                                               hyperparameters=HYPER)
            queued = await tf.create_finetune_job(task="autoencode", dataset_id=dataset_id,
                                                  base=REAL_AE, target_model="sdk-never",
                                                  hyperparameters={**HYPER, "epochs": 200})
            cancelled = await tf.cancel_job(queued["id"])
            assert cancelled["cancel_requested"]
            with pytest.raises(JobFailedError) as exc:
                await tf.wait_for_job(job["id"], timeout=60)
            assert exc.value.status == "failed" and "weights.pt" in (exc.value.job["error"]
                                                                      or ""), exc.value.job
            with pytest.raises(ApiError):
                await tf.cancel_job(job["id"])  # finished: 409
            final = await tf.wait_for_job(queued["id"], timeout=60, raise_on_failure=False)
            assert final["status"] == "cancelled"

    asyncio.run(run())


def test_portrait_sync_and_async(tf: Client, sdk_stack: Stack, photo: bytes) -> None:
    drawing = tf.portrait(photo, crop="none")
    assert drawing.model_version == "portrait@1" and drawing.media_type == "image/png"
    assert image(drawing).size == Image.open(io.BytesIO(photo)).size
    assert drawing.headers["x-portrait-crop"] == "image"
    found = tf.portrait(photo, output="composite", sigma=3, alpha=0.4)
    assert found.headers["x-face-found"] == "false"  # a drawn photo: no face, whole image
    assert image(found).mode == "RGB"

    async def run() -> ImageResult:
        async with AsyncClient(sdk_stack.url) as client:
            return await client.portrait(photo, output="full")

    full = asyncio.run(run())
    assert image(full).size == Image.open(io.BytesIO(photo)).size
