"""The inference commands: one file or whole folders through cartoonize, matte, portrait,
classify,
autoencode; generate, interpolate and sample write one picture (or a folder)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from toonforge_client.cli.base import (
    EXIT_OK,
    MODEL_HELP,
    Arg,
    Command,
    Ctx,
    UsageError,
    arg,
    dump,
    err,
    out,
    parse_model,
    table,
)
from toonforge_client.cli.batch import collect_images, plan_outputs, run_batch, write_image
from toonforge_client.types import ImageResult


def cmd_image(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    images = collect_images(args.inputs)
    kind = args.command
    if kind == "cartoonize":
        suffix = "." + ("jpg" if args.format == "jpeg" else (args.format or "png"))

        def call(src: Path) -> ImageResult:
            return ctx.client.cartoonize(src, model=model, version=version,
                                         precision=args.precision,
                                         max_side=args.max_side, format=args.format,
                                         style=args.style, faces=args.faces)
    elif kind == "matte":
        suffix = "." + ("jpg" if args.format == "jpeg" else (args.format or "png"))

        def call(src: Path) -> ImageResult:
            return ctx.client.matte(src, model=model, version=version,
                                    precision=args.precision, output=args.mode,
                                    background=args.background, format=args.format)
    elif kind == "portrait":
        suffix = ".png"

        def call(src: Path) -> ImageResult:
            return ctx.client.portrait(src, model=model, version=version,
                                       precision=args.precision, output=args.mode,
                                       crop=args.crop, sigma=args.sigma, alpha=args.alpha)
    else:
        suffix = ".png"

        def call(src: Path) -> ImageResult:
            return ctx.client.autoencode(src, model=model, version=version,
                                         precision=args.precision, size=args.size)

    pairs = plan_outputs(args, images, suffix, kind)
    return run_batch(ctx, kind, list(pairs), lambda src, dest: write_image(call(src), dest))


def cmd_styles(ctx: Ctx) -> int:
    styles = ctx.client.list_styles()["styles"]
    if ctx.json:
        dump(styles)
        return EXIT_OK
    table([[s["name"], f"{s['model']}@{s['version']}", "yes" if s["compound"] else "",
            s["licence"], s["source"]] for s in styles],
          ["STYLE", "MODEL", "HEADS", "LICENCE", "SOURCE"])
    return EXIT_OK


def cmd_infer(ctx: Ctx) -> int:
    """Any task with an image pipeline (``POST /infer/TASK``: e.g. a plugin family)."""
    args = ctx.args
    model, version = parse_model(args.model)
    images = collect_images(args.inputs)

    def call(src: Path) -> ImageResult:
        return ctx.client.infer(args.task, src, model=model, version=version,
                                precision=args.precision)

    pairs = plan_outputs(args, images, ".png", args.task)
    return run_batch(ctx, args.task, list(pairs),
                     lambda src, dest: write_image(call(src), dest))


def cmd_classify(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    images = collect_images(args.inputs)
    results: dict[Path, Any] = {}

    def work(src: Path, _: Path | None) -> str:
        answer = ctx.client.classify(src, model=model, version=version,
                                     precision=args.precision, top_k=args.top_k)
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
        answer = ctx.client.generate(model=model, version=version,
                                     precision=args.precision, n=args.n, seed=args.seed,
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
    result = ctx.client.generate(model=model, version=version,
                                 precision=args.precision, n=args.n, seed=args.seed,
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
                                               version=version,
                                               precision=args.precision, steps=args.steps)
    dest = result.save(args.out or "interpolation.png")
    err(f"wrote {dest} ({result.model_version})")
    return EXIT_OK


def cmd_sample(ctx: Ctx) -> int:
    args = ctx.args
    model, version = parse_model(args.model)
    result = ctx.client.autoencode_sample(model=model, version=version,
                                          precision=args.precision, n=args.n,
                                          seed=args.seed)
    dest = result.save(args.out or "samples.png")
    err(f"wrote {dest} ({result.model_version}, seed {result.seed},"
        f" {result.latent_distribution} latents)")
    return EXIT_OK


# ----------------------------------------------------------------------------- table

PRECISION = arg("--precision", choices=["fp32", "int8"],
                help="graph precision (?precision=; default: the server's, int8 where the"
                     " version's INT8 variant passed its gate)")


def batch_args(what: str) -> tuple[Arg, ...]:
    """What every folder-through-an-endpoint command takes."""
    return (
        arg("inputs", nargs="+", metavar="INPUT",
            help="image files or folders (searched recursively)"),
        arg("-o", "--out", help=f"output file (one input) or folder; default NAME.{what}.EXT"
            f" beside the file, or FOLDER_{what}/"),
        arg("--model", help="NAME or NAME@VERSION (default: the task's model, its active"
            " version)"),
        arg("-j", "--concurrency", type=int, default=4, help="requests in flight (default 4)"),
        PRECISION,
    )


COMMANDS: tuple[Command, ...] = (
    Command("cartoonize", "turn photos into cartoons", cmd_image, (
        *batch_args("cartoonize"),
        arg("--max-side", type=int, help="long side the model sees"),
        arg("--format", choices=["png", "jpeg", "webp"]),
        arg("--style", help="a style of `toonforge styles` (instead of --model)"),
        arg("--faces", choices=["auto", "off"],
            help="off: the background generator alone, even with a head graph"),
    )),
    Command("styles", "the styles cartoonize serves, with their models and sources",
            cmd_styles, ()),
    Command("matte", "alpha masks, cut-outs or composites", cmd_image, (
        *batch_args("matte"),
        arg("--mode", choices=["mask", "cutout", "composite"],
            help="what to write (the API's output=; default mask)"),
        arg("--background", help="composite colour, #rrggbb"),
        arg("--format", choices=["png", "webp", "jpeg"]),
    )),
    Command("portrait", "line drawings of faces (U-2-Net portrait)", cmd_image, (
        *batch_args("portrait"),
        arg("--mode", choices=["drawing", "composite", "full"],
            help="what to write (the API's output=; default drawing)"),
        arg("--crop", choices=["face", "none"], help="face (default) or the whole image"),
        arg("--sigma", type=float, help="blur of the photo in the composite (default 2)"),
        arg("--alpha", type=float, help="weight of the photo in the composite (default 0.5)"),
    )),
    Command("infer", "any task served by POST /infer/TASK (image in, PNG out)", cmd_infer, (
        arg("task", help="a registered task with an image pipeline (e.g. a plugin family)"),
        *batch_args("TASK"),
    )),
    Command("classify", "top-k labels of images (printed; --json for JSON lines)",
            cmd_classify, (
                arg("inputs", nargs="+", metavar="INPUT", help="image files or folders"),
                arg("--model", help=MODEL_HELP),
                arg("--top-k", type=int),
                arg("-j", "--concurrency", type=int, default=4),
                PRECISION,
            )),
    Command("generate", "generate images (a PNG grid, or --separate files)", cmd_generate, (
        arg("-o", "--out", help="grid file (default generated.png) or, with --separate, a"
            " folder (default generated/)"),
        arg("-n", type=int, help="how many (default 16)"),
        arg("--seed", type=int),
        arg("--rank", action="store_true", help="keep the best by the discriminator"),
        arg("--oversample", type=int),
        arg("--separate", action="store_true", help="one PNG per image"),
        arg("--model", help=MODEL_HELP),
        PRECISION,
    )),
    Command("autoencode", "reconstruct images through the autoencoder", cmd_image, (
        *batch_args("autoencode"),
        arg("--size", type=int, help="upscale the reconstruction to SIZE x SIZE"),
    )),
    Command("interpolate", "autoencoder: decode the path between two images", cmd_interpolate, (
        arg("image_a"),
        arg("image_b"),
        arg("-o", "--out", help="default interpolation.png"),
        arg("--steps", type=int),
        arg("--model", help=MODEL_HELP),
        PRECISION,
    )),
    Command("sample", "autoencoder: decode random latents into a grid", cmd_sample, (
        arg("-o", "--out", help="default samples.png"),
        arg("-n", type=int),
        arg("--seed", type=int),
        arg("--model", help=MODEL_HELP),
        PRECISION,
    )),
)
