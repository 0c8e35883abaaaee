"""``toonforge``: the command-line client of a toonforge server (docs/CLI.md).

Exit codes:  0 ok · 1 the server refused (prints ``code: message``) · 2 usage (bad arguments,
missing input files) · 3 cannot reach the server (refused, unreachable, timed out) · 4 the
job failed or was cancelled · 5 gave up waiting (--wait-timeout) · 130 interrupted (Ctrl-C).

Server admin commands (``import``, ``store``) are plugins: the server distribution declares
them in the entry-point group ``toonforge.admin``; a client-only install has none.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toonforge_client import __version__
from toonforge_client._common import DEFAULT_URL, URL_ENV
from toonforge_client.client import Client
from toonforge_client.errors import (
    ApiError,
    JobFailedError,
    ToonforgeConnectionError,
    WaitTimeoutError,
)
from toonforge_client.progress import Bar, format_seconds
from toonforge_client.types import ImageResult, JobUpdate, JobView

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_JOB = 4
EXIT_WAIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

ADMIN_GROUP = "toonforge.admin"
# Help lines for the admin commands the server ships (any other plugin gets a generic line).
ADMIN_HELP = {
    "import": "convert an official checkpoint into a store version (server install)",
    "store": "list, show, activate or roll back versions in the local store (server install)",
}
ADMIN_HINT = ("server admin commands (import, store) run on the machine that holds the model"
              " store and come with the server package: pip install 'toonforge[worker]'")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TASKS = ("cartoonize", "matte", "classify", "generate", "autoencode")
JOB_STATUSES = ("queued", "running", "exporting", "succeeded", "failed", "cancelled")
# Global options that take a value (to find the command word before argparse runs).
_VALUE_OPTIONS = {"--url", "--timeout"}


class UsageError(Exception):
    """A problem with the command line or local inputs: exit 2."""


# ----------------------------------------------------------------------------- plugins


def admin_commands() -> dict[str, Any]:
    """name -> entry point of the group ``toonforge.admin`` (loaded only when run)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ADMIN_GROUP)}


def _command_word(argv: Sequence[str]) -> int | None:
    """Index of the first word that is not a global option (or its value)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return i + 1 if i + 1 < len(argv) else None
        if arg.startswith("-"):
            i += 2 if arg in _VALUE_OPTIONS else 1
            continue
        return i
    return None


# ----------------------------------------------------------------------------- output


@dataclass
class Ctx:
    args: argparse.Namespace
    client: Client

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def bar(self, total: float | None, label: str, unit: str = "") -> Bar:
        return Bar(total, label=label, unit=unit, enabled=self.args.progress)


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def dump(value: Any) -> None:
    out(json.dumps(value, indent=2, default=str))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def describe_api_error(exc: ApiError) -> str:
    text = f"{exc.code}: {exc.message}"
    report = (exc.details or {}).get("report")
    if isinstance(report, dict) and report.get("problems"):
        text += "".join(f"\n  - {p}" for p in report["problems"])
    return text


def parse_model(value: str | None) -> tuple[str | None, int | None]:
    """``name`` or ``name@n``."""
    if not value:
        return None, None
    name, at, version = value.partition("@")
    if at and not version.isdigit():
        raise UsageError(f"--model {value!r}: use NAME or NAME@VERSION")
    return name or None, int(version) if at else None


# ----------------------------------------------------------------------------- batch


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


def _write(result: ImageResult, dest: Path | None) -> str | None:
    assert dest is not None
    result.save(dest)
    return result.model_version


def cmd_image(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    images = collect_images(args.inputs)
    kind = args.command
    if kind == "cartoonize":
        suffix = "." + ("jpg" if args.format == "jpeg" else (args.format or "png"))

        def call(src: Path) -> ImageResult:
            return ctx.client.cartoonize(src, model=model, version=version,
                                         max_side=args.max_side, format=args.format)
    elif kind == "matte":
        suffix = "." + ("jpg" if args.format == "jpeg" else (args.format or "png"))

        def call(src: Path) -> ImageResult:
            return ctx.client.matte(src, model=model, version=version, output=args.mode,
                                    background=args.background, format=args.format)
    else:
        suffix = ".png"

        def call(src: Path) -> ImageResult:
            return ctx.client.autoencode(src, model=model, version=version, size=args.size)

    pairs = plan_outputs(args, images, suffix, kind)
    return run_batch(ctx, kind, list(pairs), lambda src, dest: _write(call(src), dest))


def cmd_classify(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    images = collect_images(args.inputs)
    results: dict[Path, Any] = {}

    def work(src: Path, _: Path | None) -> str:
        answer = ctx.client.classify(src, model=model, version=version, top_k=args.top_k)
        results[src] = answer
        return f"{answer['model']}@{answer['version']}"

    code = run_batch(ctx, "classify", [(src, None) for src, _ in images], work)
    for src, _ in images:  # in input order, whatever order the answers came in
        if src not in results:
            continue
        answer = results[src]
        if ctx.json:
            out(json.dumps({"file": str(src), **answer}))
        else:
            labels = ", ".join(f"{p['label']} {p['score']:.3f}" for p in answer["predictions"])
            out(f"{src}\t{labels}")
    return code


def cmd_generate(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    if args.separate:
        answer = ctx.client.generate(model=model, version=version, n=args.n, seed=args.seed,
                                     rank_by_discriminator=args.rank or None,
                                     oversample=args.oversample, format="json")
        folder = Path(args.out or "generated")
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(answer["images"]):
            (folder / f"{i:03d}.png").write_bytes(base64.b64decode(image["png_base64"]))
        err(f"wrote {len(answer['images'])} images to {folder}"
            f" ({answer['model']}@{answer['version']}, seed {answer['seed']})")
        if ctx.json:
            dump({k: v for k, v in answer.items() if k != "images"})
        return EXIT_OK
    result = ctx.client.generate(model=model, version=version, n=args.n, seed=args.seed,
                                 rank_by_discriminator=args.rank or None,
                                 oversample=args.oversample)
    dest = result.save(args.out or "generated.png")
    err(f"wrote {dest} ({result.model_version}, seed {result.seed})")
    return EXIT_OK


def cmd_interpolate(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    for path in (args.image_a, args.image_b):
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    result = ctx.client.autoencode_interpolate(args.image_a, args.image_b, model=model,
                                               version=version, steps=args.steps)
    dest = result.save(args.out or "interpolation.png")
    err(f"wrote {dest} ({result.model_version})")
    return EXIT_OK


def cmd_sample(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    result = ctx.client.autoencode_sample(model=model, version=version, n=args.n,
                                          seed=args.seed)
    dest = result.save(args.out or "samples.png")
    err(f"wrote {dest} ({result.model_version}, seed {result.seed},"
        f" {result.latent_distribution} latents)")
    return EXIT_OK


# ----------------------------------------------------------------------------- models


def cmd_models(ctx: Ctx) -> int:
    args = ctx.args
    if args.action == "list":
        models = ctx.client.list_models()
        if ctx.json:
            dump(models)
        else:
            table([[m["name"], m["task"], str(m["active"] or "-"),
                    ",".join(map(str, m["versions"])), "yes" if m["is_default"] else ""]
                   for m in models], ["NAME", "TASK", "ACTIVE", "VERSIONS", "DEFAULT"])
        return EXIT_OK
    if args.action == "show":
        if args.version is None:
            detail = ctx.client.get_model(args.name)
            if ctx.json:
                dump(detail)
                return EXIT_OK
            out(f"{detail['name']} ({detail['task']}): active {detail['active'] or '-'},"
                f" loaded {detail['loaded_version'] or '-'}")
            table([[str(v["version"]), v["arch"], v["source"], v["parent"] or "",
                    "yes" if v["parity_passed"] else "NO", v["created_at"][:19],
                    v["description"]] for v in detail["version_summaries"]],
                  ["VERSION", "ARCH", "SOURCE", "PARENT", "PARITY", "CREATED", "DESCRIPTION"])
        else:
            dump(ctx.client.get_model_version(args.name, args.version))
        return EXIT_OK
    if args.action == "rollback":
        answer = ctx.client.rollback_model(args.name)
    else:
        answer = ctx.client.activate_model_version(args.name, args.version)
    if ctx.json:
        dump(answer)
    else:
        out(f"{answer['name']}: active {answer['previous'] or '-'} -> {answer['active']}")
    return EXIT_OK


# ----------------------------------------------------------------------------- datasets


def cmd_datasets(ctx: Ctx) -> int:
    args = ctx.args
    if args.action == "upload":
        source = Path(args.path)
        if not source.exists():
            raise UsageError(f"{args.path}: no such file or folder")
        bar = ctx.bar(None, "upload", unit="B")
        with bar:
            result = ctx.client.create_dataset(
                source, task=args.task, name=args.name, id=args.id,
                on_progress=lambda sent, total: bar.update(sent, total=total))
        if ctx.json:
            dump(result)
            return EXIT_OK
        meta, report = result["meta"], result["report"]
        counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
        err(f"dataset {meta['id']} ({meta['task']}): {counts}")
        for warning in report.get("warnings") or []:
            err(f"  warning: {warning}")
        out(meta["id"])
        return EXIT_OK
    if args.action == "list":
        datasets = ctx.client.list_datasets(task=args.task)
        if ctx.json:
            dump(datasets)
        else:
            table([[d["id"], d["task"], d["name"],
                    " ".join(f"{k}={v}" for k, v in d["counts"].items()),
                    str(d["created_at"])[:19]] for d in datasets],
                  ["ID", "TASK", "NAME", "SAMPLES", "CREATED"])
        return EXIT_OK
    if args.action == "show":
        dump(ctx.client.get_dataset(args.id))
        return EXIT_OK
    ctx.client.delete_dataset(args.id)
    err(f"deleted dataset {args.id}")
    return EXIT_OK


# ----------------------------------------------------------------------------- jobs


def parse_params(pairs: Sequence[str], base: str | None) -> dict[str, Any]:
    """``--hyperparameters`` (JSON text or @file) then each ``-p key=value`` (JSON values,
    else strings)."""
    params: dict[str, Any] = {}
    if base:
        text = Path(base[1:]).read_text() if base.startswith("@") else base
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--hyperparameters: not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--hyperparameters: give a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"-p {pair!r}: use KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def job_line(job: JobView) -> str:
    text = f"job {job['id']} {job['status']}"
    if job.get("result_version"):
        text += f": {job['result_version']}" + (" (activated)" if job.get("activated") else "")
    if job.get("error"):
        text += f": {job['error']}"
    return text


def follow(ctx: Ctx, job_id: str) -> int:
    """The live bar until the job ends; exit 0 succeeded, 4 failed/cancelled."""
    bar = ctx.bar(None, "epoch")
    seen = {"status": ""}

    def on_progress(update: JobUpdate) -> None:
        job = update.job
        if job["status"] != seen["status"]:
            seen["status"] = job["status"]
            bar.write(f"job {job_id}: {job['status']}")
        loss = update.loss
        note = job["status"] + (f" loss {loss:.4g}" if loss is not None else "")
        bar.update(job["epoch"], total=job["total_epochs"], note=note,
                   eta=job["eta_seconds"])

    try:
        with bar:
            job = ctx.client.wait_for_job(job_id, on_progress=on_progress,
                                          timeout=ctx.args.wait_timeout,
                                          raise_on_failure=False)
    except WaitTimeoutError as exc:
        err(f"toonforge: error: {exc}; it goes on (toonforge jobs show {job_id})")
        return EXIT_WAIT_TIMEOUT
    except KeyboardInterrupt:
        err(f"toonforge: stopped waiting; job {job_id} goes on"
            f" (toonforge jobs cancel {job_id} stops it)")
        return EXIT_INTERRUPTED
    if ctx.json:
        dump(job)
    else:
        out(job_line(job))
    if job["status"] != "succeeded":
        err(f"toonforge: error: {JobFailedError(dict(job))}")
        return EXIT_JOB
    return EXIT_OK


def cmd_finetune(ctx: Ctx) -> int:
    args = ctx.args
    params = parse_params(args.param, args.hyperparameters)
    job = ctx.client.create_finetune_job(
        task=args.task, dataset_id=args.dataset, base=args.base,
        target_model=args.target or args.base.partition("@")[0], hyperparameters=params,
        auto_activate=args.auto_activate, webhook_url=args.webhook,
        idempotency_key=args.idempotency_key)
    err(f"job {job['id']} {job['status']} ({job['task']} on {job['dataset_id']},"
        f" {job['base']} -> {job['target_model']}, {job['total_epochs']} epochs)")
    if args.wait:
        return follow(ctx, job["id"])
    if ctx.json:
        dump(job)
    else:
        out(job["id"])
    return EXIT_OK


def cmd_jobs(ctx: Ctx) -> int:
    args = ctx.args
    if args.action == "list":
        page = ctx.client.list_jobs(status=args.status, task=args.task, limit=args.limit)
        if ctx.json:
            dump(page)
            return EXIT_OK
        table([[j["id"], j["status"], j["task"], f"{j['epoch']}/{j['total_epochs'] or '?'}",
                f"{j['base']} -> {j['target_model']}", j["result_version"] or "",
                str(j["created_at"])[:19]] for j in page["jobs"]],
              ["ID", "STATUS", "TASK", "EPOCH", "BASE -> TARGET", "RESULT", "CREATED"])
        if page["total"] > len(page["jobs"]):
            err(f"({len(page['jobs'])} of {page['total']}; --limit shows more)")
        return EXIT_OK
    if args.action == "show":
        job = ctx.client.get_job(args.id)
        if ctx.json:
            dump(job)
            return EXIT_OK
        out(job_line(job))
        losses = ", ".join(f"{k} {v:.4g}" for k, v in (job["losses"] or {}).items()
                           if v is not None)
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in (job["val_metrics"] or {}).items()
                            if v is not None)
        out(f"  {job['task']} on {job['dataset_id']}: {job['base']} -> {job['target_model']}")
        out(f"  epoch {job['epoch']}/{job['total_epochs'] or '?'}, step"
            f" {job['step']}/{job['total_steps'] or '?'}, eta"
            f" {format_seconds(job['eta_seconds'])}, attempts {job['attempts']}")
        if losses or metrics:
            out(f"  losses: {losses or '-'}; validation: {metrics or '-'}")
        out(f"  created {job['created_at']}, finished {job['finished_at'] or '-'}")
        return EXIT_OK
    if args.action == "cancel":
        job = ctx.client.cancel_job(args.id)
        if ctx.json:
            dump(job)
        elif job["status"] == "cancelled":
            out(f"job {job['id']} cancelled")
        else:
            out(f"job {job['id']} {job['status']}: cancel requested (it stops at its next"
                " step)")
        return EXIT_OK
    return follow(ctx, args.id)


# ----------------------------------------------------------------------------- parser


def _common(sub: bool) -> argparse.ArgumentParser:
    """Options every command takes; on subcommands they only override what was given."""
    p = argparse.ArgumentParser(add_help=False)
    d = argparse.SUPPRESS if sub else None
    p.add_argument("--url", default=d, help=f"server URL (default: ${URL_ENV}, else"
                   f" {DEFAULT_URL})")
    p.add_argument("--timeout", type=float, default=d if sub else 120.0,
                   help="seconds to wait for each answer (default 120)")
    p.add_argument("--json", action="store_true", default=d if sub else False,
                   help="print JSON instead of text")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true",
                      default=d, help="show progress bars even when stderr is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_false", default=d,
                      help="never show progress bars")
    return p


def build_parser(admin: Sequence[str] = ()) -> argparse.ArgumentParser:
    epilog = ("exit codes: 0 ok, 1 the server refused (code: message), 2 usage, 3 cannot reach"
              " the server, 4 job failed or cancelled, 5 --wait-timeout passed, 130"
              " interrupted.")
    if not admin:
        epilog += f"  {ADMIN_HINT}."
    parser = argparse.ArgumentParser(
        prog="toonforge", parents=[_common(False)], epilog=epilog,
        description="Client of a toonforge server: inference on files and folders, datasets,"
                    " fine-tune jobs, models.")
    parser.add_argument("--version", action="version",
                        version=f"toonforge-client {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common(True)]

    def command(name: str, help: str, func: Callable[[Ctx], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=common)
        p.set_defaults(func=func)
        return p

    def batch(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders"
                       " (searched recursively)")
        p.add_argument("-o", "--out", help=f"output file (one input) or folder; default"
                       f" NAME.{what}.EXT beside the file, or FOLDER_{what}/")
        p.add_argument("--model", help="NAME or NAME@VERSION (default: the task's model,"
                       " its active version)")
        p.add_argument("-j", "--concurrency", type=int, default=4,
                       help="requests in flight (default 4)")

    p = command("cartoonize", "turn photos into cartoons", cmd_image)
    batch(p, "cartoonize")
    p.add_argument("--max-side", type=int, help="long side the model sees")
    p.add_argument("--format", choices=["png", "jpeg", "webp"])

    p = command("matte", "alpha masks, cut-outs or composites", cmd_image)
    batch(p, "matte")
    p.add_argument("--mode", choices=["mask", "cutout", "composite"],
                   help="what to write (the API's output=; default mask)")
    p.add_argument("--background", help="composite colour, #rrggbb")
    p.add_argument("--format", choices=["png", "webp", "jpeg"])

    p = command("classify", "top-k labels of images (printed; --json for JSON lines)",
                cmd_classify)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--model", help="NAME or NAME@VERSION")
    p.add_argument("--top-k", type=int)
    p.add_argument("-j", "--concurrency", type=int, default=4)

    p = command("generate", "generate images (a PNG grid, or --separate files)", cmd_generate)
    p.add_argument("-o", "--out", help="grid file (default generated.png) or, with"
                   " --separate, a folder (default generated/)")
    p.add_argument("-n", type=int, help="how many (default 16)")
    p.add_argument("--seed", type=int)
    p.add_argument("--rank", action="store_true", help="keep the best by the discriminator")
    p.add_argument("--oversample", type=int)
    p.add_argument("--separate", action="store_true", help="one PNG per image")
    p.add_argument("--model", help="NAME or NAME@VERSION")

    p = command("autoencode", "reconstruct images through the autoencoder", cmd_image)
    batch(p, "autoencode")
    p.add_argument("--size", type=int, help="upscale the reconstruction to SIZE x SIZE")

    p = command("interpolate", "autoencoder: decode the path between two images",
                cmd_interpolate)
    p.add_argument("image_a")
    p.add_argument("image_b")
    p.add_argument("-o", "--out", help="default interpolation.png")
    p.add_argument("--steps", type=int)
    p.add_argument("--model", help="NAME or NAME@VERSION")

    p = command("sample", "autoencoder: decode random latents into a grid", cmd_sample)
    p.add_argument("-o", "--out", help="default samples.png")
    p.add_argument("-n", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--model", help="NAME or NAME@VERSION")

    p = command("datasets", "upload, list, show, delete datasets", cmd_datasets)
    ds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = ds.add_parser("upload", parents=common, help="upload a zip/tar or a folder",
                       description="Upload a dataset archive (zip, tar, tar.gz) or a folder"
                       " (zipped on the fly); prints the new dataset's id.")
    up.add_argument("path")
    up.add_argument("--task", required=True, choices=TASKS)
    up.add_argument("--name")
    up.add_argument("--id", help="choose the id (lowercase, digits, . _ -)")
    ls = ds.add_parser("list", parents=common, help="every dataset, newest first")
    ls.add_argument("--task", choices=TASKS)
    for action, text in (("show", "one dataset and its intake report"),
                         ("delete", "delete a dataset")):
        ds.add_parser(action, parents=common, help=text).add_argument("id")

    p = command("finetune", "queue a fine-tune job (--wait follows it)", cmd_finetune)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--dataset", required=True, help="dataset id")
    p.add_argument("--base", required=True, help="MODEL, MODEL@N, or an architecture name")
    p.add_argument("--target", help="model line to publish to (default: the base's name)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyper-parameter (VALUE read as JSON, else text); repeatable")
    p.add_argument("--hyperparameters", metavar="JSON|@FILE",
                   help="hyper-parameters as a JSON object (-p wins per key)")
    p.add_argument("--auto-activate", action="store_true",
                   help="activate the result when it is at least as good")
    p.add_argument("--webhook", help="URL to POST the job to when it ends")
    p.add_argument("--idempotency-key")
    p.add_argument("--wait", action="store_true", help="follow the job with a live bar")
    p.add_argument("--wait-timeout", type=float, help="give up waiting after S seconds"
                   " (exit 5; the job goes on)")

    p = command("jobs", "list, show, cancel or wait for jobs", cmd_jobs)
    js = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = js.add_parser("list", parents=common, help="jobs, newest first")
    ls.add_argument("--status", choices=JOB_STATUSES)
    ls.add_argument("--task", choices=TASKS)
    ls.add_argument("--limit", type=int, default=20)
    for action, text in (("show", "one job"), ("cancel", "cancel a job"),
                         ("wait", "follow a job to its end with a live bar")):
        a = js.add_parser(action, parents=common, help=text)
        a.add_argument("id")
        if action == "wait":
            a.add_argument("--wait-timeout", type=float)

    p = command("models", "list, show, activate, roll back models (over HTTP)", cmd_models)
    ms = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ms.add_parser("list", parents=common, help="every model")
    show = ms.add_parser("show", parents=common, help="a model, or one version's manifest")
    show.add_argument("name")
    show.add_argument("version", nargs="?", type=int)
    act = ms.add_parser("activate", parents=common, help="promote or roll back to VERSION")
    act.add_argument("name")
    act.add_argument("version", type=int)
    back = ms.add_parser("rollback", parents=common,
                         help="re-activate the version that was active before")
    back.add_argument("name")

    for name in admin:
        sub.add_parser(name, help=ADMIN_HELP.get(name, f"server admin command ({name})"),
                       add_help=False)
    return parser


# ----------------------------------------------------------------------------- main


def _fail(code: int, message: str) -> int:
    err(f"toonforge: error: {message}")
    return code


def run_admin(name: str, entry: Any, argv: list[str]) -> int:
    try:
        func = entry.load()
    except Exception as exc:  # a broken server install: say which plugin
        return _fail(EXIT_USAGE, f"the admin command {name!r} ({entry.value}) cannot load:"
                     f" {exc!r}")
    return int(func(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    admin = admin_commands()
    i = _command_word(argv)
    if i is not None and argv[i] in admin:
        return run_admin(argv[i], admin[argv[i]], argv[i + 1:])
    if i is not None and argv[i] in ADMIN_HELP:
        return _fail(EXIT_USAGE, f"'{argv[i]}' is not installed here: {ADMIN_HINT}")
    args = build_parser(sorted(admin)).parse_args(argv)
    try:
        with Client(args.url, timeout=args.timeout) as client:
            return args.func(Ctx(args, client))
    except UsageError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except ApiError as exc:
        return _fail(EXIT_API, describe_api_error(exc))
    except ToonforgeConnectionError as exc:
        return _fail(EXIT_CONNECTION, f"{exc} (set --url or {URL_ENV})")
    except OSError as exc:  # a local file we could not read or write
        return _fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        err("toonforge: interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
