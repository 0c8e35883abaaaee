"""Dataset uploads over real HTTP: intake reports, refusals with reasons, nothing half-stored."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.archives import good_files, image_bytes, write_tar, write_zip, zip_bytes
from tests.support.server import ApiServer

MAX_UPLOAD = 3_000_000
# Runs again on S3 (TOONFORGE_TEST_STORE=s3): the same uploads, into the bucket.
pytestmark = pytest.mark.store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("dataset-store")
    srv = ApiServer(root, root.parent / "datasets-api.log", {
        "TOONFORGE_DATASET_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "TOONFORGE_DATASET_MAX_EXTRACTED_BYTES": str(8_000_000),
    })
    yield srv
    srv.stop()


@pytest.fixture()
def http(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def upload(http: httpx.Client, task: str, body: bytes, **params: str) -> httpx.Response:
    return http.post("/datasets", params={"task": task, **params}, content=body,
                     headers={"content-type": "application/zip"})


def stored_ids(http: httpx.Client) -> set[str]:
    return {d["id"] for d in http.get("/datasets").json()}


def assert_nothing_left(server: ApiServer, before: set[str], http: httpx.Client) -> None:
    assert stored_ids(http) == before
    # The server's own staging directory (the store's on a directory, its cache's on S3).
    staging = server.store_dir / "datasets" / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())


@pytest.mark.parametrize("task", ["cartoonize", "matte", "classify", "generate", "autoencode"])
def test_upload_list_get_delete(http: httpx.Client, task: str) -> None:
    r = upload(http, task, zip_bytes(good_files(task, n=6)), name=f"my {task}")
    assert r.status_code == 201, r.text
    body = r.json()
    meta, report = body["meta"], body["report"]
    assert meta["task"] == task and meta["name"] == f"my {task}"
    assert report["can_train"] and report["skipped"] == []
    assert sum(report["counts"].values()) == (12 if task == "classify" else 6)
    if task == "classify":
        assert set(report["class_counts"]) == {"cat", "dog"}

    assert meta["id"] in stored_ids(http)
    assert http.get(f"/datasets/{meta['id']}").json()["report"] == report
    assert http.delete(f"/datasets/{meta['id']}").status_code == 204
    gone = http.get(f"/datasets/{meta['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "dataset_not_found"


def test_multipart_tar_gz(http: httpx.Client, tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "d.tar.gz", good_files("autoencode", prefix="faces/"), "gz")
    r = http.post("/datasets", params={"task": "autoencode", "id": "faces-1"},
                  files={"file": ("faces.tar.gz", archive.read_bytes(), "application/gzip")})
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["id"] == "faces-1"
    assert r.json()["report"]["stripped_folder"] == "faces"
    again = http.post("/datasets", params={"task": "autoencode", "id": "faces-1"},
                      files={"file": ("faces.tar.gz", archive.read_bytes(), "application/gzip")})
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("name", "files", "code", "status"),
    [
        ("zip-slip", {**good_files("generate"), "../evil.png": image_bytes()},
         "archive_unsafe", 422),
        ("absolute path", {**good_files("generate"), "/etc/evil.png": image_bytes()},
         "archive_unsafe", 422),
        ("zip bomb", {**good_files("generate"), "images/zeros.png": b"\0" * 9_000_000},
         "archive_too_large", 422),
        ("non-images", {f"images/{i}.png": b"not a png" for i in range(6)},
         "dataset_invalid", 422),
    ],
)
def test_unsafe_or_useless_archives_are_refused(
    server: ApiServer, http: httpx.Client, name: str, files: dict, code: str, status: int
) -> None:
    before = stored_ids(http)
    r = upload(http, "generate", zip_bytes(files))
    assert r.status_code == status, (name, r.text)
    assert r.json()["error"]["code"] == code
    assert_nothing_left(server, before, http)


def test_mismatched_pairs_get_the_report(server: ApiServer, http: httpx.Client) -> None:
    files = {"train/photo/a.jpg": image_bytes(fmt="JPEG"), "train/cartoon/b.png": image_bytes(),
             "train/photo/c.jpg": image_bytes(fmt="JPEG"), "train/cartoon/c.png": image_bytes()}
    before = stored_ids(http)
    r = upload(http, "cartoonize", zip_bytes(files))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "dataset_invalid"
    report = error["details"]["report"]
    assert not report["can_train"]
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert any("a.jpg" in path for path in skipped), skipped
    assert_nothing_left(server, before, http)


def test_one_class_is_refused(http: httpx.Client) -> None:
    files = {f"cat/{i}.png": image_bytes(seed=i) for i in range(6)}
    r = upload(http, "classify", zip_bytes(files))
    assert r.status_code == 422
    assert any("class" in p for p in r.json()["error"]["details"]["report"]["problems"])


def test_not_an_archive_too_large_and_bad_params(http: httpx.Client, tmp_path: Path) -> None:
    r = upload(http, "generate", image_bytes())
    assert (r.status_code, r.json()["error"]["code"]) == (415, "unsupported_media_type")
    big = write_zip(tmp_path / "big.zip", {"images/x.bin": os.urandom(MAX_UPLOAD + 10)},
                    zipfile.ZIP_STORED)
    r = upload(http, "generate", big.read_bytes())
    assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
    r = http.post("/datasets", content=zip_bytes(good_files("generate")))
    assert r.status_code == 422 and "task" in r.json()["error"]["message"]
    r = upload(http, "paint", zip_bytes(good_files("generate")))
    assert r.status_code == 422
    r = upload(http, "generate", zip_bytes(good_files("generate")), id="Bad/Id")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_parameter")
    assert "dataset id" in r.json()["error"]["message"]
