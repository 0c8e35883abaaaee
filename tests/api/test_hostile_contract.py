"""What a hostile or unlucky client found at the edges of the contract, against the real API
on the real PostgreSQL (skipped without one, a failure under CI=true):

- JSON types are strict: ``{"version": true}`` is not version 1, a limit ``false`` is not 0;
  query strings still parse;
- an Idempotency-Key is private to the API key that sent it;
- revoking a key over HTTP takes effect at once in the answering process;
- a NUL byte in a path id is a 404, not a driver error;
- a truncated manifest.json affects only its own version;
- the 405 ``Allow`` of /jobs/finetune names exactly POST; open scopes are optional auth;
- accepting a job and deleting its dataset at the same moment never both succeed.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.db import Database
from jobs.keys import KeyStore
from model_store.store import ModelStore
from tests.api.test_inputs import assert_error
from tests.api.tiny_models import build_tiny_store, publish_tiny
from tests.integration.conftest import _admin, postgres_admin_url_or_skip
from tests.support.archives import good_files, zip_bytes
from tests.support.server import REPO, ApiServer

JOB = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    from sqlalchemy.engine import make_url

    admin = postgres_admin_url_or_skip()
    name = f"toonforge_hostile_{uuid.uuid4().hex[:10]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny store, with a matte version whose manifest.json was cut short."""
    root = tmp_path_factory.mktemp("hostile-store")
    store = build_tiny_store(root)
    broken = publish_tiny(store, "matte", seed=7, activate=False)
    manifest = store.version_dir("matte", broken) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def server(store_root: Path, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ApiServer]:
    """Every scope closed; a key check is cached for a minute (longer than any test)."""
    api = ApiServer(store_root, tmp_path_factory.mktemp("hostile-logs") / "api.log", {
        "TOONFORGE_DATABASE_URL": postgres_url, "TOONFORGE_OPEN_SCOPES": "",
        "TOONFORGE_API_KEY_CACHE_S": "60", "TOONFORGE_RATE_LIMIT_RPS": "0"})
    yield api
    api.stop()


@pytest.fixture(scope="module")
def keys(server: ApiServer, postgres_url: str) -> Iterator[KeyStore]:
    db = Database(postgres_url)
    yield KeyStore.open(db.sessions, None)
    db.dispose()


@pytest.fixture(scope="module")
def admin(keys: KeyStore) -> dict[str, str]:
    return bearer(keys.create("hostile admin", ["admin"])[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(http: httpx.Client, headers: dict[str, str], dataset_id: str) -> None:
    r = http.post("/datasets", params={"task": "autoencode", "id": dataset_id},
                  content=zip_bytes(good_files("autoencode", n=6)),
                  headers={**headers, "content-type": "application/zip"})
    assert r.status_code == 201, r.text


def job_body(dataset_id: str) -> dict[str, Any]:
    return {"task": "autoencode", "dataset_id": dataset_id, "base": "ae",  # from scratch
            "target_model": "hostile-ae", "hyperparameters": {"epochs": 1}}


def test_json_types_are_strict(server: ApiServer, admin: dict[str, str]) -> None:
    with server.client() as http:
        error = assert_error(http.post("/models/matte/activate", headers=admin,
                                       json={"version": True}), 422, "invalid_parameter")
        assert "version" in error["message"]
        assert http.get("/models/matte", headers=admin).json()["active"] == 1
        error = assert_error(http.post("/keys", headers=admin, json={
            "name": "strict", "scopes": ["infer"], "limits": {"max_running_jobs": False}}),
            422, "invalid_parameter")
        assert "max_running_jobs" in error["message"]
        assert "strict" not in {k["name"] for k in http.get("/keys", headers=admin).json()}
        error = assert_error(http.post("/generate", headers=admin, json={"n": True}),
                             422, "invalid_parameter")
        assert "n" in error["message"]
        upload(http, admin, "strict-types")
        error = assert_error(http.post("/jobs/finetune", headers=admin, json={
            **job_body("strict-types"), "auto_activate": 1}), 422, "invalid_parameter")
        assert "auto_activate" in error["message"]
        error = assert_error(http.post("/jobs/finetune", headers=admin, json={
            **job_body("strict-types"), "hyperparameters": {"epochs": True}}),
            422, "invalid_parameter")
        assert "epochs" in error["message"]
        assert http.get("/jobs", headers=admin).json()["total"] == 0  # nothing was queued
        # Query strings are still numbers and booleans.
        assert http.get("/models/matte/versions/1", headers=admin).status_code == 200
        assert http.post("/generate", params={"n": "2", "seed": "3"},
                         headers=admin).status_code == 200
        assert http.get("/keys", params={"include_revoked": "false"},
                        headers=admin).status_code == 200


def test_idempotency_keys_are_private_to_the_api_key(server: ApiServer, keys: KeyStore
                                                     ) -> None:
    first = bearer(keys.create("idem a", ["train", "admin"])[1])
    second = bearer(keys.create("idem b", ["train"])[1])
    with server.client() as http:
        upload(http, first, "idem-shared")
        a = http.post("/jobs/finetune", json=job_body("idem-shared"),
                      headers={**first, "Idempotency-Key": "same-key"})
        assert a.status_code == 201, a.text
        b = http.post("/jobs/finetune", json=job_body("idem-shared"),
                      headers={**second, "Idempotency-Key": "same-key"})
        assert b.status_code == 201, b.text  # its own job, not a replay of the other's
        assert b.json()["id"] != a.json()["id"]
        assert "Idempotent-Replayed" not in b.headers
        again = http.post("/jobs/finetune", json=job_body("idem-shared"),
                          headers={**first, "Idempotency-Key": "same-key"})
        assert again.status_code == 200 and again.json()["id"] == a.json()["id"]
        for job in (a, b):
            http.post(f"/jobs/{job.json()['id']}/cancel", headers=first)


def test_revoking_over_http_takes_effect_at_once(server: ApiServer, keys: KeyStore,
                                                 admin: dict[str, str]) -> None:
    key, token = keys.create("soon revoked", ["infer"])
    with server.client() as http:
        assert http.get("/models", headers=bearer(token)).status_code == 200  # now cached
        assert http.delete(f"/keys/{key.id}", headers=admin).status_code == 200
        # The cache would have kept the key for 60 s; this process forgot it.
        assert_error(http.get("/models", headers=bearer(token)), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/jobs/abc%00"), ("POST", "/jobs/abc%00/cancel"), ("GET", "/jobs/abc%00/metrics"),
    ("GET", "/sweeps/abc%00"), ("DELETE", "/keys/abc%00"), ("GET", "/datasets/abc%00"),
    ("DELETE", "/datasets/abc%00"), ("GET", "/models/abc%00"), ("GET", f"/jobs/{JOB}%00")])
def test_nul_bytes_in_paths_are_404(server: ApiServer, admin: dict[str, str], method: str,
                                    path: str) -> None:
    with server.client() as http:
        assert_error(http.request(method, path, headers=admin), 404, "not_found")


def test_a_corrupt_manifest_affects_only_its_version(server: ApiServer, store_root: Path,
                                                     admin: dict[str, str]) -> None:
    broken = ModelStore(store_root).versions("matte")[-1]
    with server.client() as http:
        listed = http.get("/models", headers=admin)
        assert listed.status_code == 200, listed.text
        assert {m["name"] for m in listed.json()} >= {"matte", "classify", "anime-faces"}
        detail = http.get("/models/matte", headers=admin).json()
        assert detail["corrupt_versions"] == [broken]
        assert broken not in {v["version"] for v in detail["version_summaries"]}
        assert http.post("/matte", content=png(), headers={
            **admin, "content-type": "image/png"}).status_code == 200
        error = assert_error(http.post("/models/matte/activate", headers=admin,
                                       json={"version": broken}), 409, "version_corrupt")
        assert error["details"]["file"] == "manifest.json"
        assert "manifest.json is not valid JSON" in error["message"]
        for internal in ("pydantic", "input_value", "errors.pydantic.dev", '"graphs"'):
            assert internal not in error["message"]
        error = assert_error(http.get(f"/models/matte/versions/{broken}", headers=admin),
                             409, "version_corrupt")


def png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 50)).save(out, format="PNG")
    return out.getvalue()


def test_405_allow_is_exact_and_open_scopes_are_optional_auth(server: ApiServer,
                                                              admin: dict[str, str]) -> None:
    with server.client() as http:
        r = http.put("/jobs/finetune", headers=admin)
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["Allow"] == "POST"
        r = http.delete("/jobs", headers=admin)
        assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
        live = http.get("/openapi.json").json()  # this server: nothing open
    assert {} not in live["paths"]["/classify"]["post"]["security"]
    shipped = json.loads((REPO / "openapi" / "openapi.json").read_text())  # default: infer
    assert shipped["paths"]["/classify"]["post"]["security"] == [{}, {"bearer": ["infer"]}]
    assert shipped["paths"]["/models"]["get"]["security"][0] == {}
    assert {} not in shipped["paths"]["/jobs"]["get"]["security"]
    assert {} not in shipped["paths"]["/models/{name}/activate"]["post"]["security"]


ROUNDS = 8


def race(server: ApiServer, admin: dict[str, str], dataset: str
         ) -> tuple[httpx.Response, httpx.Response]:
    """POST /jobs/finetune and DELETE /datasets/{dataset} released at the same moment, each
    on its own connection: (the job's answer, the delete's)."""
    answers: dict[str, httpx.Response] = {}
    go = threading.Barrier(2)

    def send(name: str, method: str, path: str, body: dict[str, Any] | None) -> None:
        with server.client() as own:
            go.wait()
            answers[name] = own.request(method, path, json=body, headers=admin)

    threads = [threading.Thread(target=send, args=("job", "POST", "/jobs/finetune",
                                                   job_body(dataset))),
               threading.Thread(target=send, args=("delete", "DELETE",
                                                   f"/datasets/{dataset}", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers["job"], answers["delete"]


def test_job_acceptance_and_dataset_deletion_never_both_succeed(server: ApiServer,
                                                                admin: dict[str, str]) -> None:
    outcomes = []
    with server.client() as http:
        for n in range(ROUNDS):
            dataset = f"race-{n}"
            upload(http, admin, dataset)
            job, gone = race(server, admin, dataset)
            outcome = (job.status_code, gone.status_code)
            outcomes.append(outcome)
            assert outcome in {(201, 409), (422, 204)}, (job.text, gone.text)
            if job.status_code == 201:
                assert gone.json()["error"]["code"] == "dataset_conflict"
                assert http.get(f"/datasets/{dataset}", headers=admin).status_code == 200
                http.post(f"/jobs/{job.json()['id']}/cancel", headers=admin)
            else:
                assert "dataset_id" in job.json()["error"]["message"]
    print("race outcomes (job, delete):", outcomes)
