"""Intake caps measured on disk: a bomb is refused before it writes, junk is never kept,
and reports stay small however many files an archive holds.

The staging directory is watched by a thread while intake runs (its disk usage in blocks,
as ``du`` counts it), so "refused before writing" is a measurement, not a promise.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.settings import Settings
from model_store.archives import DISK_BLOCK, MAX_TAR_META_BYTES
from model_store.datasets import DatasetStore
from model_store.errors import ArchiveTooLarge, ArchiveUnsafe
from model_store.intake import ingest_upload
from tests.support.archives import good_files, write_tar, write_zip

MiB = 1024 * 1024
BOMB_BYTES = 300 * MiB


def _du(root: Path) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def watched(store: Path, work: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``work`` while sampling the dataset staging directory; (result or the exception
    raised, the most disk it used at any sample or at the end)."""
    staging = store / "datasets" / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _du(staging))
            done.wait(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        result: Any = work()
    except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
        result = exc
    finally:
        done.set()
        thread.join()
    return result, max(peak[0], _du(staging))


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


def ingest(store: Path, task: str, archive: Path, s: Settings) -> Any:
    return ingest_upload(store, task, archive, archive.name, s)


def zip_bomb(path: Path, inflated: int = BOMB_BYTES) -> Path:
    """Six real images plus one entry of ``inflated`` zero bytes (streamed, never in RAM)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in good_files("generate").items():
            zf.writestr(name, data)
        with zf.open("images/zeros.bmp", "w") as out:
            chunk = bytes(MiB)
            for _ in range(inflated // MiB):
                out.write(chunk)
    return path


def tgz_bomb(path: Path, inflated: int = BOMB_BYTES) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in good_files("generate").items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("images/zeros.bmp")
        info.size = inflated

        class Zeros(io.RawIOBase):
            left = inflated

            def readable(self) -> bool:
                return True

            def readinto(self, buf: Any) -> int:
                n = min(len(buf), self.left)
                buf[:n] = bytes(n)
                self.left -= n
                return n

        tf.addfile(info, io.BufferedReader(Zeros(), MiB))
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A store that already holds one good dataset, which no refusal may touch."""
    root = tmp_path / "store"
    ingest(root, "generate", write_zip(tmp_path / "good.zip", good_files("generate")),
           settings())
    return root


def assert_only_the_first_dataset(store: Path) -> None:
    ds = DatasetStore(store)
    (only,) = ds.list_datasets()
    assert len([p for p in ds.data_dir(only.id).rglob("*") if p.is_file()]) == 6
    assert list((store / "datasets" / ".staging").iterdir()) == []


@pytest.mark.parametrize("make", [zip_bomb, tgz_bomb], ids=["zip", "tar.gz"])
def test_a_bomb_is_refused_before_it_writes(make: Callable[[Path], Path], store: Path,
                                            tmp_path: Path) -> None:
    """300 MiB of zeros in a ~300 KB archive: refused from the declarations (the zip's
    central directory; the tar member's header against 200x the archive's size), with at
    most the six small images written first (the tar streams them before the bomb)."""
    bomb = make(tmp_path / "bomb")
    assert bomb.stat().st_size < 2 * MiB
    s = settings()
    result, peak = watched(store, lambda: ingest(store, "generate", bomb, s))
    assert isinstance(result, ArchiveTooLarge) and "inflates" in str(result)
    assert peak < 256 * 1024, peak  # six tiny PNGs and their folder, nothing of the bomb
    assert peak < s.dataset_max_staging_bytes
    assert_only_the_first_dataset(store)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_many_small_bombs_add_up(kind: str, store: Path, tmp_path: Path) -> None:
    """400 entries of 512 KiB zeros, each under the per-entry ratio's grace size: 200 MiB
    from well under 1 MiB. The zip is refused from its directory, before writing; the
    compressed tar, whose later members are unknown until read, by the running ratio of
    the stream, a few MiB in."""
    files = {**good_files("generate"), **{f"images/z{i}.bmp": bytes(512 * 1024)
                                          for i in range(400)}}
    path = tmp_path / "bombs"
    write_zip(path, files) if kind == "zip" else write_tar(path, files, "gz")
    assert path.stat().st_size < MiB
    result, peak = watched(store, lambda: ingest(store, "generate", path, settings()))
    assert isinstance(result, ArchiveTooLarge) and "inflates" in str(result)
    assert peak < (256 * 1024 if kind == "zip" else 8 * MiB), peak
    assert_only_the_first_dataset(store)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_the_staging_cap_counts_disk_blocks(kind: str, store: Path, tmp_path: Path) -> None:
    """Incompressible files (no ratio to catch) past a 1 MiB staging cap."""
    rng = np.random.default_rng(0)
    files = {**good_files("generate"),
             **{f"images/big{i}.png": rng.bytes(300_000) for i in range(6)}}
    path = tmp_path / "big"
    write_zip(path, files) if kind == "zip" else write_tar(path, files)
    s = settings(dataset_max_staging_bytes=MiB)
    result, peak = watched(store, lambda: ingest(store, "generate", path, s))
    assert isinstance(result, ArchiveTooLarge) and "bytes of disk" in str(result)
    assert peak <= MiB  # zip: refused from the directory; tar: before the member passing it
    if kind == "zip":
        assert peak <= 2 * DISK_BLOCK  # the empty staging folders only
    assert_only_the_first_dataset(store)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_the_file_cap_counts_files_the_layout_uses(kind: str, store: Path,
                                                   tmp_path: Path) -> None:
    files = {**good_files("generate"), **{f"images/x{i}.png": b"x" for i in range(40)},
             **{f"junk/{i}.txt": b"x" for i in range(100)}}  # ignored: not counted
    path = tmp_path / "many"
    write_zip(path, files) if kind == "zip" else write_tar(path, files)
    s = settings(dataset_max_files=20)
    result, peak = watched(store, lambda: ingest(store, "generate", path, s))
    assert isinstance(result, ArchiveTooLarge) and "more than 20 files" in str(result)
    # At most the 20 files the cap admits plus the staging folders (a few blocks, depending
    # on the file system), far below the 46 layout files the archive holds.
    assert peak <= 26 * DISK_BLOCK, peak
    assert_only_the_first_dataset(store)


def test_junk_is_not_extracted_and_the_report_stays_small(store: Path, tmp_path: Path) -> None:
    """The shape of the 49,000-file zip (scaled down): junk outside the layout and
    non-images inside it are never written; unreadable "images" are written, skipped and
    deleted; the report's lists are capped while its counts cover everything."""
    junk = {f"junk/{i:05d}": b"x" for i in range(3000)}
    junk.update({f"images/{i:05d}.txt": b"x" for i in range(1000)})
    broken = {f"images/broken{i:04d}.png": b"x" for i in range(300)}
    path = write_zip(tmp_path / "junk.zip", {**good_files("generate"), **junk, **broken})
    s = settings(dataset_report_max_items=25)
    result, peak = watched(store, lambda: ingest(store, "generate", path, s))
    report, meta = result.report, result.meta
    assert report.can_train and report.counts == {"train": 5, "val": 1}
    assert report.files_ignored == 4000 and len(report.ignored) == 25
    assert report.files_seen == 306 and report.files_skipped == 300
    assert len(report.skipped) == 25 and report.truncated
    assert len(report.model_dump_json()) < 20_000
    # Written: the 306 candidates (one block each plus folders), never the 4,000 ignored.
    assert peak <= 320 * DISK_BLOCK, peak
    data = DatasetStore(store).data_dir(meta.id)
    kept = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    assert kept == [f"images/{i:03d}.png" for i in range(6)]
    assert meta.bytes == sum((data / k).stat().st_size for k in kept)
    stored = DatasetStore(store).report(meta.id)
    assert stored == report


def test_a_wrapper_folder_still_works_with_the_keep_rule(store: Path, tmp_path: Path) -> None:
    files = good_files("cartoonize", prefix="my-set/")
    files["my-set/README.md"] = b"# about"
    path = write_zip(tmp_path / "wrapped.zip", files)
    result = ingest(store, "cartoonize", path, settings())
    assert result.report.stripped_folder == "my-set" and result.report.can_train
    assert result.report.ignored == ["my-set/README.md"]


@pytest.mark.parametrize("compression", ["", "gz"])
def test_a_many_entry_tar_is_refused_before_it_writes(compression: str, store: Path,
                                                      tmp_path: Path) -> None:
    """31,000 one-byte images, one over the default file cap (30,000). A tar announces no
    count up front; the first pass reads every header and refuses it, so nothing is
    written (it used to write 30,000 files, ~117 MiB of disk blocks, before refusing)."""
    s = settings()
    files = {f"images/{i:05d}.png": b"x" for i in range(s.dataset_max_files + 1000)}
    path = write_tar(tmp_path / "many", files, compression)
    result, peak = watched(store, lambda: ingest(store, "generate", path, s))
    assert isinstance(result, ArchiveTooLarge), result
    assert f"more than {s.dataset_max_files} files" in str(result)
    assert peak <= 2 * DISK_BLOCK, peak  # the empty staging folders only
    assert_only_the_first_dataset(store)


def test_a_tar_path_conflict_is_refused_before_it_writes(store: Path, tmp_path: Path) -> None:
    """A file where a later entry needs a folder: known from the names, refused by the
    first pass."""
    files = {**good_files("generate"), "images/a.png": b"x", "images/a.png/b.png": b"y"}
    path = write_tar(tmp_path / "conflict", files)
    result, peak = watched(store, lambda: ingest(store, "generate", path, settings()))
    assert isinstance(result, ArchiveUnsafe) and "conflicts" in str(result), result
    assert peak <= 2 * DISK_BLOCK, peak
    assert_only_the_first_dataset(store)


def test_tar_metadata_headers_are_read_only_up_to_their_cap(store: Path,
                                                            tmp_path: Path) -> None:
    """tarfile reads a pax header's payload into memory whole: one declaring more than
    MAX_TAR_META_BYTES is refused before it is read, and no name may pass PATH_MAX."""
    big = tarfile.TarInfo("images/zz.png")
    big.pax_headers = {"comment": "x" * (MAX_TAR_META_BYTES + 1)}
    path = write_tar(tmp_path / "pax.tar", good_files("generate"), members=[(big, b"")])
    with pytest.raises(ArchiveTooLarge, match="metadata header"):
        ingest(store, "generate", path, settings())
    deep = tarfile.TarInfo("images/" + "a/" * 2100 + "x.png")
    path = write_tar(tmp_path / "long.tar", good_files("generate"), members=[(deep, b"")])
    with pytest.raises(ArchiveUnsafe, match="longer than 4096 bytes"):
        ingest(store, "generate", path, settings())
    assert_only_the_first_dataset(store)
