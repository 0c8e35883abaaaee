"""Dataset intake on real archives: safety rules, caps, layouts, splits, the dataset store."""

from __future__ import annotations

import asyncio
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.settings import Settings
from model_store.archives import ExtractLimits, extract_archive, safe_relative_path
from model_store.datasets import DatasetStore
from model_store.errors import (
    ArchiveTooLarge,
    ArchiveUnsafe,
    DatasetExists,
    DatasetInUse,
    DatasetInvalid,
    DatasetNotFound,
    InvalidName,
    NotAnArchive,
    UploadTooLarge,
)
from model_store.intake import ingest_upload, receive_upload, receive_upload_async
from tasks import get_task, list_tasks
from tasks.layouts import ImageFolderLayout
from tests.support.archives import (
    good_files,
    image_bytes,
    tar_member,
    write_tar,
    write_zip,
    zip_symlink,
    zip_with_lying_size,
)

TASKS = list_tasks()


@pytest.fixture()
def settings() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def ingest(store: Path, task: str, archive: Path, settings: Settings, **kw):
    return ingest_upload(store, task, archive, archive.name, settings, **kw)


def assert_nothing_stored(store: Path) -> None:
    datasets = store / "datasets"
    assert [p.name for p in datasets.iterdir()] == [".staging"]
    assert list((datasets / ".staging").iterdir()) == []


# ---- good datasets, one per task
@pytest.mark.parametrize("task", TASKS)
def test_good_dataset_is_stored_with_report_index_and_meta(task, store, settings, tmp_path):
    archive = write_zip(tmp_path / "ds.zip", good_files(task))
    result = ingest(store, task, archive, settings, name="mine")
    meta, report = result.meta, result.report
    assert report.can_train and not report.problems and not report.skipped
    assert (meta.task, meta.name, meta.filename) == (task, "mine", "ds.zip")
    ds = DatasetStore(store)
    assert ds.get(meta.id) == meta
    assert ds.report(meta.id) == report
    index = ds.index(meta.id)
    assert index.task == task
    samples = [s for items in index.splits.values() for s in items]
    for sample in samples:  # every path in the index exists under data/
        for key, value in sample.items():
            if key not in ("label", "width", "height"):
                assert (ds.data_dir(meta.id) / str(value)).is_file()
    assert sum(report.counts.values()) == len(samples) == report.counts["train"] + report.counts[
        "val"] + report.counts.get("test", 0)
    assert report.image_size is not None and report.image_size.max_width == 24
    assert meta.bytes > 0
    assert list((store / "datasets" / ".staging").iterdir()) == []


def test_cartoonize_with_skimage_photos(store, settings, tmp_path):
    skdata = pytest.importorskip("skimage.data")
    files = {}
    for i, photo in enumerate([skdata.astronaut(), skdata.chelsea(), skdata.coffee()]):
        img = Image.fromarray(photo).resize((96, 64))
        cartoon = img.quantize(8).convert("RGB")  # a crude posterised "cartoon"
        for folder, im in (("photo", img), ("cartoon", cartoon)):
            buf = io.BytesIO()
            im.save(buf, "JPEG" if folder == "photo" else "PNG")
            files[f"train/{folder}/{i}.{'jpg' if folder == 'photo' else 'png'}"] = buf.getvalue()
    result = ingest(store, "cartoonize", write_zip(tmp_path / "a.zip", files), settings)
    assert result.report.counts == {"train": 2, "val": 1}
    assert result.report.image_size.mean_width == 96


def test_classify_split_is_8_1_1_per_class_and_deterministic(store, settings, tmp_path):
    files = good_files("classify", n=10)
    first = ingest(store, "classify", write_zip(tmp_path / "a.zip", files), settings)
    # Same files, other archive kind and order: the index must be byte-identical.
    shuffled = dict(reversed(list(files.items())))
    second = ingest(store, "classify", write_tar(tmp_path / "b.tar", shuffled, "gz"), settings)
    assert first.report.class_counts == {
        "cat": {"train": 8, "val": 1, "test": 1}, "dog": {"train": 8, "val": 1, "test": 1}}
    root = store / "datasets"
    assert (root / first.meta.id / "index.json").read_bytes() == (
        root / second.meta.id / "index.json").read_bytes()
    assert DatasetStore(store).index(first.meta.id).labels == ["cat", "dog"]


def test_auto_split_90_10_with_at_least_one_val(store, settings, tmp_path):
    report = ingest(store, "generate", write_zip(tmp_path / "a.zip", good_files("generate", 4)),
                    settings).report
    assert report.counts == {"train": 3, "val": 1} and report.split_source == "auto"
    report = ingest(store, "generate", write_zip(tmp_path / "b.zip", good_files("generate", 20)),
                    settings).report
    assert report.counts == {"train": 18, "val": 2}


def test_given_val_split_is_kept(store, settings, tmp_path):
    files = good_files("matte", 3)
    files.update({k.replace("images/", "val/images/").replace("masks/", "val/masks/"): v
                  for k, v in good_files("matte", 2).items()})
    report = ingest(store, "matte", write_zip(tmp_path / "a.zip", files), settings).report
    assert report.split_source == "given" and report.counts == {"train": 3, "val": 2}


def test_classify_train_val_folders(store, settings, tmp_path):
    files = good_files("classify", 3, prefix="train/")
    files.update(good_files("classify", 1, prefix="val/"))
    files["val/bird/0.png"] = image_bytes()  # a class train/ does not have
    report = ingest(store, "classify", write_zip(tmp_path / "a.zip", files), settings).report
    assert report.counts == {"train": 6, "val": 2, "test": 0}
    assert [s.reason for s in report.skipped] == ["class 'bird' has no train/bird/ folder"]


# ---- archive safety
@pytest.mark.parametrize("name, rule", [
    ("../evil.png", "'..' component in path"),
    ("images/../../evil.png", "'..' component in path"),
    ("/etc/x", "absolute path"),
    ("C:/windows/x.png", "drive letter in path"),
    ("images\\..\\..\\x.png", "backslash in path"),
])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_path_tricks_are_refused(name, rule, kind, store, settings, tmp_path):
    files = {**good_files("generate"), name: image_bytes()}
    path = tmp_path / "bad"
    write_zip(path, files) if kind == "zip" else write_tar(path, files)
    with pytest.raises(ArchiveUnsafe) as err:
        ingest(store, "generate", path, settings)
    assert (err.value.entry, err.value.rule) == (name, rule)
    assert not (tmp_path / "evil.png").exists() and not (store / "evil.png").exists()
    assert_nothing_stored(store)


@pytest.mark.parametrize("kind, linkname, rule", [
    (tarfile.SYMTYPE, "/etc/passwd", "symbolic link"),
    (tarfile.LNKTYPE, "images/000.png", "hard link"),
    (tarfile.CHRTYPE, "", "device file"),
    (tarfile.FIFOTYPE, "", "fifo"),
])
def test_links_and_devices_in_tar_are_refused(kind, linkname, rule, store, settings, tmp_path):
    member = tar_member("images/zzz.png", kind, linkname)
    path = write_tar(tmp_path / "a.tar", good_files("generate"), members=[(member, None)])
    with pytest.raises(ArchiveUnsafe) as err:
        ingest(store, "generate", path, settings)
    assert (err.value.entry, err.value.rule) == ("images/zzz.png", rule)
    assert_nothing_stored(store)


def test_symlink_in_zip_is_refused(store, settings, tmp_path):
    path = zip_symlink(tmp_path / "a.zip", "images/link.png", "/etc/passwd",
                       good_files("generate"))
    with pytest.raises(ArchiveUnsafe, match="symbolic link"):
        ingest(store, "generate", path, settings)
    assert_nothing_stored(store)


def test_duplicate_entries_are_refused(tmp_path):
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tf:
        for data in (b"a", b"bb"):
            info = tarfile.TarInfo("images/x.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveUnsafe, match="duplicate entry"):
        extract_archive(path, tmp_path / "out", ExtractLimits(100, 10**6, 100))


def test_junk_is_ignored_and_names_normalised():
    assert safe_relative_path("__MACOSX/images/._a.png") is None
    assert safe_relative_path("images/.DS_Store") is None
    assert safe_relative_path("./images//a.png").as_posix() == "images/a.png"


def test_macos_junk_never_reaches_the_dataset(store, settings, tmp_path):
    files = {**good_files("generate"), "__MACOSX/images/._000.png": b"x",
             "images/.DS_Store": b"x", "Thumbs.db": b"x"}
    result = ingest(store, "generate", write_zip(tmp_path / "a.zip", files), settings)
    assert result.report.files_seen == 6 and not result.report.skipped


# ---- caps
def test_zip_bomb_entry_is_stopped_by_the_ratio_cap(store, settings, tmp_path):
    files = {**good_files("generate"), "images/bomb.bmp": b"\0" * (8 * 1024 * 1024)}
    path = write_zip(tmp_path / "bomb.zip", files)
    assert path.stat().st_size < 100_000
    with pytest.raises(ArchiveTooLarge, match="inflates"):
        ingest(store, "generate", path, settings)
    assert_nothing_stored(store)


def test_extracted_bytes_are_capped(store, tmp_path):
    rng = np.random.default_rng(0)
    files = {f"images/{i}.bin": rng.bytes(300_000) for i in range(5)}  # incompressible
    limits = ExtractLimits(max_entries=100, max_bytes=1_000_000, max_ratio=200)
    # zip: the declared sizes already exceed the cap, so it is refused before writing.
    with pytest.raises(ArchiveTooLarge, match="declares more than 1000000 bytes"):
        extract_archive(write_zip(tmp_path / "a.zip", files), tmp_path / "out-zip", limits)
    # tar: refused while writing, on the bytes actually written.
    with pytest.raises(ArchiveTooLarge, match="extracts to more than 1000000 bytes"):
        extract_archive(write_tar(tmp_path / "a.tgz", files, "gz"), tmp_path / "out-tar", limits)
    written = sum(p.stat().st_size for p in (tmp_path / "out-tar").rglob("*") if p.is_file())
    assert written <= 1_000_000


def test_lying_zip_header_is_refused(store, settings, tmp_path):
    # Claims 1000 bytes (under every cap); really inflates to 16 MiB of zeros. The reader
    # refuses the first step that passes the claim, and nothing past the claim is written.
    path = zip_with_lying_size(tmp_path / "liar.zip", "images/x.png", 16 * 1024 * 1024, 1000)
    with pytest.raises(NotAnArchive, match="inflates past its declared 1000 bytes"):
        ingest(store, "generate", path, settings)
    assert_nothing_stored(store)


def test_compressed_tar_bomb_is_stopped(store, settings, tmp_path):
    files = {**good_files("generate"), "images/bomb.bmp": b"\0" * (8 * 1024 * 1024)}
    path = write_tar(tmp_path / "bomb.tar.gz", files, "gz")
    with pytest.raises(ArchiveTooLarge, match="inflates"):
        ingest(store, "generate", path, settings)
    assert_nothing_stored(store)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_entries(kind, store, tmp_path):
    files = {f"images/{i}.png": b"x" for i in range(10)}
    path = tmp_path / "many"
    write_zip(path, files) if kind == "zip" else write_tar(path, files)
    settings = Settings(_env_file=None, dataset_max_entries=5)
    with pytest.raises(ArchiveTooLarge, match="more than 5 entries"):
        ingest(store, "generate", path, settings)
    assert_nothing_stored(store)


def test_upload_over_the_byte_cap(tmp_path):
    dest = tmp_path / "up"
    assert receive_upload([b"a" * 10] * 3, dest, max_bytes=30) == 30
    with pytest.raises(UploadTooLarge):
        receive_upload(iter([b"a" * 10] * 4), dest, max_bytes=30)
    assert not dest.exists()
    with pytest.raises(UploadTooLarge):
        receive_upload(io.BytesIO(b"a" * 31), dest, max_bytes=30)
    assert not dest.exists()

    async def body():
        for _ in range(4):
            yield b"a" * 10

    with pytest.raises(UploadTooLarge):
        asyncio.run(receive_upload_async(body(), dest, max_bytes=30))
    assert not dest.exists()


@pytest.mark.parametrize("data", [b"", b"hello world" * 100, image_bytes()])
def test_not_an_archive(data, store, settings, tmp_path):
    path = tmp_path / "fake.zip"
    path.write_bytes(data)
    with pytest.raises(NotAnArchive):
        ingest(store, "generate", path, settings)
    assert_nothing_stored(store)


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_tar_variants_detected_by_content(compression, store, settings, tmp_path):
    path = write_tar(tmp_path / "upload.bin", good_files("autoencode"), compression)
    assert ingest(store, "autoencode", path, settings).report.can_train


# ---- layouts and reports
def test_unmatched_cartoon_pairs_are_listed(store, settings, tmp_path):
    files = good_files("cartoonize", 3)
    files["train/photo/lonely.jpg"] = image_bytes(fmt="JPEG")
    files["train/cartoon/orphan.png"] = image_bytes()
    report = ingest(store, "cartoonize", write_zip(tmp_path / "a.zip", files), settings).report
    assert sum(report.counts.values()) == 3
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons == {
        "train/photo/lonely.jpg": "no matching cartoon for photo train/photo/lonely.jpg",
        "train/cartoon/orphan.png": "no matching photo for cartoon train/cartoon/orphan.png",
    }


def test_matte_masks_must_match_size_and_be_greyscale(store, settings, tmp_path):
    files = good_files("matte", 3)
    files["images/big.png"] = image_bytes(30, 30)
    files["masks/big.png"] = image_bytes(10, 10, mode="L")
    files["images/colour.png"] = image_bytes()
    files["masks/colour.png"] = image_bytes(seed=9)  # RGB noise: not a mask
    report = ingest(store, "matte", write_zip(tmp_path / "a.zip", files), settings).report
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons["masks/big.png"] == "mask is 10x10 but its image images/big.png is 30x30"
    assert reasons["masks/colour.png"].startswith("mask has colour")
    assert sum(report.counts.values()) == 3


def test_one_class_only_is_refused_with_the_report(store, settings, tmp_path):
    files = {k: v for k, v in good_files("classify").items() if k.startswith("cat/")}
    with pytest.raises(DatasetInvalid) as err:
        ingest(store, "classify", write_zip(tmp_path / "a.zip", files), settings)
    report = err.value.report
    assert not report.can_train and "at least 2 are needed" in report.problems[0]
    assert_nothing_stored(store)


def test_non_images_are_skipped_and_refused_when_nothing_is_left(store, settings, tmp_path):
    files = {**good_files("generate"), "images/notes.txt": b"hello", "README.md": b"# hi",
             "images/fake.png": b"not really a png"}
    result = ingest(store, "generate", write_zip(tmp_path / "a.zip", files), settings)
    report = result.report
    # Not image files, or outside the layout: never extracted, counted and named.
    assert report.files_ignored == 2 and sorted(report.ignored) == ["README.md",
                                                                    "images/notes.txt"]
    # Extracted, but unreadable: reported with the reason, and not kept.
    reasons = {s.path: s.reason for s in report.skipped}
    assert list(reasons) == ["images/fake.png"]
    assert reasons["images/fake.png"].startswith("not a readable image")
    assert report.files_seen == 7 and report.files_accepted == 6 and report.files_skipped == 1
    data = DatasetStore(store).data_dir(result.meta.id)
    assert sorted(p.name for p in data.rglob("*") if p.is_file()) == [
        f"{i:03d}.png" for i in range(6)]

    min_images = ImageFolderLayout().min_images
    only_junk = {f"images/{i}.png": b"not really a png" for i in range(min_images + 2)}
    with pytest.raises(DatasetInvalid) as err:
        ingest(store, "generate", write_zip(tmp_path / "b.zip", only_junk), settings)
    assert len(err.value.report.skipped) == min_images + 2
    assert DatasetStore(store).list_datasets() != []  # the first one is still there
    assert list((store / "datasets" / ".staging").iterdir()) == []


def test_pixel_cap_skips_huge_images(store, tmp_path):
    files = {**good_files("generate"), "images/huge.png": image_bytes(100, 100)}
    settings = Settings(_env_file=None, max_pixels=5000)
    report = ingest(store, "generate", write_zip(tmp_path / "a.zip", files), settings).report
    assert {s.path: s.reason for s in report.skipped} == {
        "images/huge.png": "too many pixels: 100x100 > 5000"}


def test_single_top_folder_is_stripped(store, settings, tmp_path):
    files = good_files("cartoonize", prefix="my-dataset/")
    result = ingest(store, "cartoonize", write_zip(tmp_path / "a.zip", files), settings)
    assert result.report.stripped_folder == "my-dataset"
    data = DatasetStore(store).data_dir(result.meta.id)
    assert (data / "train" / "photo").is_dir()
    # A lone train/ folder is the layout itself, not a wrapper.
    result = ingest(store, "cartoonize", write_zip(tmp_path / "b.zip", good_files("cartoonize")),
                    settings)
    assert result.report.stripped_folder is None


def test_wrong_layout_names_what_was_expected(store, settings, tmp_path):
    with pytest.raises(DatasetInvalid) as err:
        ingest(store, "matte", write_zip(tmp_path / "a.zip", good_files("generate")), settings)
    assert "expected images/ and masks/" in err.value.report.problems[0]
    assert_nothing_stored(store)


# ---- the dataset store
def test_list_get_delete(store, settings, tmp_path):
    ds = DatasetStore(store)
    a = ingest(store, "generate", write_zip(tmp_path / "a.zip", good_files("generate")),
               settings, dataset_id="faces-1").meta
    b = ingest(store, "classify", write_zip(tmp_path / "b.zip", good_files("classify")),
               settings).meta
    assert [m.id for m in ds.list_datasets()] == [a.id, b.id]
    assert [m.id for m in ds.list_datasets("classify")] == [b.id]
    with pytest.raises(DatasetExists):
        ingest(store, "generate", write_zip(tmp_path / "c.zip", good_files("generate")),
               settings, dataset_id="faces-1")
    with pytest.raises(DatasetInUse):
        ds.delete(a.id, in_use=lambda dataset_id: dataset_id == a.id)
    ds.delete(a.id)
    with pytest.raises(DatasetNotFound):
        ds.get(a.id)
    with pytest.raises(DatasetNotFound):
        ds.delete(a.id)
    with pytest.raises(InvalidName):
        ds.get("../models")
    assert [m.id for m in ds.list_datasets()] == [b.id]
    assert_nothing_stored_but(store, [b.id])


def assert_nothing_stored_but(store: Path, ids: list[str]) -> None:
    datasets = store / "datasets"
    assert sorted(p.name for p in datasets.iterdir()) == sorted([".staging", *ids])
    assert list((datasets / ".staging").iterdir()) == []


def test_sweep_staging_removes_old_leftovers(store):
    ds = DatasetStore(store)
    (ds.staging_dir / "crashed").mkdir()
    (ds.staging_dir / "upload-x").write_bytes(b"x")
    assert ds.sweep_staging(older_than_s=3600) == 0
    assert ds.sweep_staging(older_than_s=-1) == 2
    assert list(ds.staging_dir.iterdir()) == []


def test_upload_file_is_removed(store):
    ds = DatasetStore(store)
    with ds.upload_file() as tmp:
        receive_upload([b"abc"], tmp, 10)
        assert tmp.read_bytes() == b"abc"
    assert not tmp.exists()


def test_zip_stored_entries_work(store, settings, tmp_path):
    path = write_zip(tmp_path / "a.zip", good_files("generate"), zipfile.ZIP_STORED)
    assert ingest(store, "generate", path, settings).report.can_train


def test_classify_too_small_for_a_validation_split_is_refused(tmp_path: Path) -> None:
    """Two images per class give an 8:1:1 split with no validation sample: refuse up front."""
    from model_store.dataset_scan import scan_dataset

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(2):
            (tmp_path / label / f"{i}.png").write_bytes(image_bytes(seed=i))
    report, _ = scan_dataset(tmp_path, get_task("classify"), 10_000_000)
    assert not report.can_train
    assert any("validation" in p for p in report.problems)
