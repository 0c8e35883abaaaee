"""Many files through one endpoint: finding the images, planning where each answer goes,
and sending them on a few threads behind one progress bar."""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path

from toonforge_client.cli.base import EXIT_API, EXIT_OK, Ctx, UsageError, describe_api_error, err
from toonforge_client.errors import ApiError
from toonforge_client.types import ImageResult

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def collect_images(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    """(source, relative output path) for every image named or inside a named folder."""
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in
                                        p.relative_to(path).parts))
            if not inside:
                raise UsageError(f"no images in {raw} ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += [(p, p.relative_to(path)) for p in inside]
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise UsageError(f"{raw}: no such file or folder")
    return found


def plan_outputs(args: argparse.Namespace, images: list[tuple[Path, Path]], suffix: str,
                 kind: str) -> list[tuple[Path, Path]]:
    """(source, destination) pairs. One file in: -o is the file (default NAME.KIND.EXT beside
    it); otherwise -o is a folder (default the first input folder + _KIND) keeping the
    sub-folders, each name with the output's extension."""
    single = len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    if single:
        src = images[0][0]
        dest = Path(args.out) if args.out else src.with_name(f"{src.stem}.{kind}{suffix}")
        if dest.is_dir() or (args.out and args.out.endswith(("/", os.sep))):
            dest = dest / f"{src.stem}{suffix}"
        return [(src, dest)]
    if args.out:
        root = Path(args.out)
    else:
        first = next((Path(p) for p in args.inputs if Path(p).is_dir()), Path("."))
        root = first.resolve().parent / f"{first.resolve().name}_{kind}"
    stems: dict[Path, int] = {}
    for _, rel in images:
        stems[rel.with_suffix("")] = stems.get(rel.with_suffix(""), 0) + 1
    pairs = []
    for src, rel in images:
        # a.png and a.jpg in one folder would both become a.png: keep their full names
        name = rel.with_suffix(suffix) if stems[rel.with_suffix("")] == 1 else \
            rel.with_name(rel.name + suffix)
        pairs.append((src, root / name))
    return pairs


def run_batch(ctx: Ctx, kind: str, items: list[tuple[Path, Path | None]],
              work: Callable[[Path, Path | None], str | None]) -> int:
    """Run ``work(src, dest)`` over ``items`` on ``--concurrency`` threads with a bar.
    A refusal of one file is reported and the rest go on (exit 1); a lost server stops all
    (exit 3)."""
    failures: list[tuple[Path, ApiError]] = []
    versions: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    bar = ctx.bar(len(items), kind)

    def one(src: Path, dest: Path | None) -> None:
        if stop.is_set():
            return
        try:
            version = work(src, dest)
        except ApiError as exc:
            with lock:
                failures.append((src, exc))
                bar.write(f"toonforge: {src}: {describe_api_error(exc)}")
        else:
            with lock:
                if version:
                    versions.add(version)
        with lock:
            bar.update(advance=1)

    workers = max(1, min(ctx.args.concurrency, len(items)))
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[None]] = [pool.submit(one, s, d) for s, d in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                stop.set()
                for f in futures:
                    f.cancel()
                raise future.exception()  # type: ignore[misc]
    ok = len(items) - len(failures)
    served = f" ({', '.join(sorted(versions))})" if versions else ""
    if kind != "classify" or failures:
        err(f"{kind}: {ok} of {len(items)} done{served}"
            + (f", {len(failures)} failed" if failures else ""))
    return EXIT_API if failures else EXIT_OK


def write_image(result: ImageResult, dest: Path | None) -> str | None:
    assert dest is not None
    result.save(dest)
    return result.model_version
