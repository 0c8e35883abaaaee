"""POST/GET /sweeps against the real API under uvicorn (no worker: the jobs stay queued,
which is what creation, validation and quota checks need): a grid becomes one job per
combination with merged hyper-parameters, a list one per point; a bad point, too many
points, or a quota that cannot take every point create nothing; the comparison names each
point's values, job and the gate metric; the SDK and CLI speak it. The comparison's metric
columns are also checked on jobs moved through their states by the job repository."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from toonforge_client import AsyncClient, Client
from toonforge_client.cli import main as toonforge

from core.settings import Settings
from jobs.db import Database
from jobs.repository import JobRepository, ProgressUpdate
from tests.api.test_inputs import assert_error
from tests.support.archives import good_files, zip_bytes
from tests.support.server import ApiServer

# Runs again on S3 (TOONFORGE_TEST_STORE=s3: tests/support/stores.py).
pytestmark = pytest.mark.store

QUEUED_LIMIT = 8
BASE = {"task": "autoencode", "dataset_id": "sweep-faces", "base": "ae",  # from scratch
        "target_model": "sweep-ae", "hyperparameters": {"epochs": 1, "batch_size": 2},
        "auto_activate": True}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sweeps")
    return root / "store", root / "data"


@pytest.fixture(scope="module")
def server(dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ApiServer]:
    store, data = dirs
    api = ApiServer(store, tmp_path_factory.mktemp("logs") / "api.log", {
        "TOONFORGE_DATA_DIR": str(data), "TOONFORGE_STARTER_MODELS": "false",
        "TOONFORGE_KEY_MAX_QUEUED_JOBS": str(QUEUED_LIMIT),
        "TOONFORGE_SWEEP_MAX_POINTS": "6"})
    with api.client() as http:
        r = http.post("/datasets", params={"task": "autoencode", "id": "sweep-faces"},
                      content=zip_bytes(good_files("autoencode", n=6)),
                      headers={"content-type": "application/zip"})
        assert r.status_code == 201, r.text
    yield api
    api.stop()


@pytest.fixture(scope="module")
def repo(dirs: tuple[Path, Path], server: ApiServer) -> Iterator[JobRepository]:
    db = Database(Settings(data_dir=dirs[1]).jobs_database_url)
    yield JobRepository(db.sessions)
    db.dispose()


def job_total(http: httpx.Client) -> int:
    return int(http.get("/jobs").json()["total"])


def test_grid_list_validation_and_quota(server: ApiServer, repo: JobRepository) -> None:
    with server.client() as http:
        grid = {"lr": [1e-3, 3e-4], "batch_size": [2, 4]}
        r = http.post("/sweeps", json={"base": BASE, "grid": grid})
        assert r.status_code == 201, r.text
        sweep = r.json()
        assert [p["values"] for p in sweep["points"]] == [
            {"lr": 1e-3, "batch_size": 2}, {"lr": 1e-3, "batch_size": 4},
            {"lr": 3e-4, "batch_size": 2}, {"lr": 3e-4, "batch_size": 4}]
        assert sweep["metric"] == "loss" and sweep["direction"] == "min"
        assert sweep["status_counts"] == {"queued": 4} and sweep["auto_activate"] is False
        for point in sweep["points"]:
            job = http.get(f"/jobs/{point['job_id']}").json()
            assert job["status"] == "queued" and job["target_model"] == "sweep-ae"
            # base values kept, swept ones replaced, defaults filled; never auto-activated
            assert job["hyperparameters"]["epochs"] == 1
            assert job["hyperparameters"]["lr"] == point["values"]["lr"]
            assert job["hyperparameters"]["batch_size"] == point["values"]["batch_size"]
            assert job["auto_activate"] is False
        assert http.get(f"/sweeps/{sweep['id']}").json() == sweep
        listed = http.get("/sweeps").json()
        assert listed["total"] == 1 and listed["sweeps"][0]["keys"] == ["lr", "batch_size"]
        assert listed["sweeps"][0]["job_ids"] == [p["job_id"] for p in sweep["points"]]

        before = job_total(http)
        # A bad point: 422 naming the point and the field, nothing created.
        bad = http.post("/sweeps", json={"base": BASE, "points": [{"lr": 1e-3},
                                                                   {"lr": -1}]})
        error = assert_error(bad, 422, "invalid_parameter")
        assert "point 1" in error["message"] and "lr" in error["message"]
        assert error["details"]["errors"][0]["loc"] == ["body", "points", 1, "lr"]
        unknown = http.post("/sweeps", json={"base": BASE, "grid": {"learning_rate": [1]}})
        assert "learning_rate" in assert_error(unknown, 422, "invalid_parameter")["message"]
        # Too many points (the server allows 6), both or neither form, empty values.
        many = http.post("/sweeps", json={"base": BASE, "grid": {"lr": [1e-3, 2e-3, 3e-3],
                                                                 "seed": [0, 1, 2]}})
        assert "9 points" in assert_error(many, 422, "invalid_parameter")["message"]
        assert_error(http.post("/sweeps", json={"base": BASE}), 422, "invalid_parameter")
        assert_error(http.post("/sweeps", json={"base": BASE, "grid": {"lr": [1e-3]},
                                                "points": [{"lr": 1e-3}]}),
                     422, "invalid_parameter")
        assert_error(http.post("/sweeps", json={"base": BASE, "grid": {"lr": []}}),
                     422, "invalid_parameter")
        assert_error(http.post("/sweeps", json={"base": {**BASE, "dataset_id": "nope"},
                                                "points": [{"lr": 1e-3}]}),
                     422, "invalid_parameter")
        # The quota (8 queued, 4 taken) cannot take 5 more: 429, nothing created.
        over = http.post("/sweeps", json={"base": BASE, "points": [{"seed": s}
                                                                   for s in range(5)]})
        error = assert_error(over, 429, "quota_exceeded")
        assert "nothing was created" in error["message"]
        assert over.headers["Retry-After"].isdigit()
        assert job_total(http) == before and http.get("/sweeps").json()["total"] == 1

        # A list that fits, with an idempotency key: replayed, not made twice.
        body = {"base": BASE, "points": [{"seed": 1}, {"seed": 2, "lr": 5e-4}],
                "auto_activate": True}
        made = http.post("/sweeps", json=body, headers={"Idempotency-Key": "sw-1"})
        assert made.status_code == 201, made.text
        again = http.post("/sweeps", json=body, headers={"Idempotency-Key": "sw-1"})
        assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = http.post("/sweeps", json={**body, "auto_activate": False},
                          headers={"Idempotency-Key": "sw-1"})
        assert_error(other, 409, "idempotency_conflict")
        assert job_total(http) == before + 2
        job = http.get(f"/jobs/{made.json()['points'][1]['job_id']}").json()
        assert job["hyperparameters"]["seed"] == 2 and job["hyperparameters"]["lr"] == 5e-4
        assert job["auto_activate"] is True
        assert_error(http.get("/sweeps/nope"), 404, "sweep_not_found")


def test_comparison_reads_the_jobs_metrics(server: ApiServer, repo: JobRepository) -> None:
    """Two points moved through their states as a worker would: final and best metric per
    point, the published version, and the best point."""
    with server.client() as http:
        for job in http.get("/jobs", params={"status": "queued"}).json()["jobs"]:
            http.post(f"/jobs/{job['id']}/cancel")  # room in the queued quota
        r = http.post("/sweeps", json={"base": BASE, "grid": {"lr": [1e-3, 3e-4]}})
        assert r.status_code == 201, r.text
        sweep = r.json()
    curves = [[0.30, 0.20, 0.25], [0.40, 0.35, 0.33]]
    for point, curve in zip(sweep["points"], curves, strict=True):
        job_id = point["job_id"]
        repo.claim(job_id, "w1", lease_s=60, max_attempts=3)
        for epoch, loss in enumerate(curve, start=1):
            repo.record_progress(job_id, "w1", ProgressUpdate(
                epoch=epoch, total_epochs=3, step=epoch * 2, val_metrics={"loss": loss},
                losses={"loss": loss + 0.01}, extra={"kind": "epoch"}))
        repo.transition(job_id, "exporting", worker_id="w1")
        best = min(curve)
        repo.transition(job_id, "succeeded", worker_id="w1",
                        result_version=f"sweep-ae@{point['index'] + 1}",
                        published_epoch=curve.index(best) + 1,
                        published_metrics={"loss": best},
                        activation_reason="auto_activate is off")
    with Client(server.url) as tf:
        view = tf.get_sweep(sweep["id"])
        assert tf.list_sweeps()["total"] >= 2
    rows = view["points"]
    assert [r["final_metric"] for r in rows] == [0.25, 0.33]
    assert [r["best_metric"] for r in rows] == [0.20, 0.33]
    assert [r["best_epoch"] for r in rows] == [2, 3]
    assert [r["result_version"] for r in rows] == ["sweep-ae@1", "sweep-ae@2"]
    assert [r["published_metric"] for r in rows] == [0.20, 0.33]
    assert [[e["value"] for e in r["series"]] for r in rows] == curves
    assert all(r["status"] == "succeeded" and r["epoch"] == 3 for r in rows)
    assert rows[0]["activation_reason"] == "auto_activate is off"
    assert view["best_index"] == 0 and view["status_counts"] == {"succeeded": 2}


def test_sdk_and_cli(server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(server.url) as tf:
        for job in tf.list_jobs(status="queued")["jobs"]:
            tf.cancel_job(job["id"])
        sweep = tf.create_sweep(base=BASE, points=[{"seed": 3}])
        assert sweep["points"][0]["values"] == {"seed": 3}

    async def read_async() -> tuple[str, int]:
        async with AsyncClient(server.url) as atf:
            return (await atf.get_sweep(sweep["id"]))["id"], (await atf.list_sweeps())["total"]

    assert asyncio.run(read_async())[0] == sweep["id"]
    assert toonforge(["--url", server.url, "sweeps", "show", sweep["id"]]) == 0
    shown = capsys.readouterr().out
    assert sweep["points"][0]["job_id"] in shown and "seed=3" in shown
    assert toonforge(["--url", server.url, "sweeps", "list"]) == 0
    assert sweep["id"] in capsys.readouterr().out
    assert toonforge(["--url", server.url, "sweeps", "create", "--task", "autoencode",
                      "--dataset", "sweep-faces", "--base", "ae", "--target", "sweep-ae",
                      "-p", "epochs=1", "--grid", "lr=0.001,0.0005"]) == 0
    created = capsys.readouterr().out.strip().splitlines()[-1]
    with Client(server.url) as tf:
        assert [p["values"] for p in tf.get_sweep(created)["points"]] == [
            {"lr": 0.001}, {"lr": 0.0005}]


@pytest.mark.timeout(120)
def test_a_two_point_sweep_on_a_real_worker(tmp_path: Path) -> None:
    """A real ``python -m worker``: both points train one epoch, export, pass parity and
    publish; the comparison shows their final/best metric and versions."""
    import time

    from tests.integration.conftest import FAST_JOBS
    from tests.support.processes import WorkerPool

    env = {"TOONFORGE_DATA_DIR": str(tmp_path / "data"),
           "TOONFORGE_STORE_DIR": str(tmp_path / "store"), "TOONFORGE_STARTER_MODELS": "false",
           "TOONFORGE_INT8_VARIANTS": "false", **FAST_JOBS}
    workers = WorkerPool(env, tmp_path / "logs")
    workers.start(wait=False)
    api = ApiServer(tmp_path / "store", tmp_path / "api.log", env)
    try:
        with api.client() as http:
            r = http.post("/datasets", params={"task": "autoencode", "id": "sweep-faces"},
                          content=zip_bytes(good_files("autoencode", n=6)),
                          headers={"content-type": "application/zip"})
            assert r.status_code == 201, r.text
            base = {**BASE, "hyperparameters": {"epochs": 1, "batch_size": 2,
                                                "latent_dim": 32}}
            r = http.post("/sweeps", json={"base": base, "grid": {"lr": [1e-3, 3e-3]}})
            assert r.status_code == 201, r.text
            sweep_id = r.json()["id"]
            deadline = time.monotonic() + 100
            while (view := http.get(f"/sweeps/{sweep_id}").json())["status_counts"].get(
                    "succeeded", 0) + view["status_counts"].get("failed", 0) < 2:
                assert time.monotonic() < deadline, f"{view}\n{workers.logs()}"
                time.sleep(0.5)
        rows = view["points"]
        assert all(r["status"] == "succeeded" for r in rows), f"{rows}\n{workers.logs()}"
        assert sorted(r["result_version"] for r in rows) == ["sweep-ae@1", "sweep-ae@2"]
        for row in rows:
            assert row["final_metric"] is not None and row["best_metric"] is not None
            assert row["published_metric"] == row["best_metric"]
            assert len(row["series"]) == 1 and row["activated"] is False
        assert view["best_index"] in (0, 1)
    finally:
        api.stop()
        workers.stop_all()
