"""``toonforge datasets``: upload (an archive or a folder), list, show, delete."""

from __future__ import annotations

from pathlib import Path

from toonforge_client.cli.base import (
    EXIT_OK,
    TASK_HELP,
    Command,
    Ctx,
    UsageError,
    arg,
    dump,
    err,
    out,
    table,
)


def upload_dataset(ctx: Ctx) -> int:
    args = ctx.args
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


def list_datasets(ctx: Ctx) -> int:
    datasets = ctx.client.list_datasets(task=ctx.args.task)
    if ctx.json:
        dump(datasets)
    else:
        table([[d["id"], d["task"], d["name"],
                " ".join(f"{k}={v}" for k, v in d["counts"].items()),
                str(d["created_at"])[:19]] for d in datasets],
              ["ID", "TASK", "NAME", "SAMPLES", "CREATED"])
    return EXIT_OK


def show_dataset(ctx: Ctx) -> int:
    dump(ctx.client.get_dataset(ctx.args.id))
    return EXIT_OK


def delete_dataset(ctx: Ctx) -> int:
    ctx.client.delete_dataset(ctx.args.id)
    err(f"deleted dataset {ctx.args.id}")
    return EXIT_OK


COMMAND = Command("datasets", "upload, list, show, delete datasets", actions=(
    Command("upload", "upload a zip/tar or a folder", upload_dataset, (
        arg("path"),
        arg("--task", required=True, metavar="TASK", help=TASK_HELP),
        arg("--name"),
        arg("--id", help="choose the id (lowercase, digits, . _ -)"),
    ), description="Upload a dataset archive (zip, tar, tar.gz) or a folder (zipped on the"
       " fly); prints the new dataset's id."),
    Command("list", "every dataset, newest first", list_datasets, (
        arg("--task", metavar="TASK", help=TASK_HELP),
    )),
    Command("show", "one dataset and its intake report", show_dataset, (arg("id"),)),
    Command("delete", "delete a dataset", delete_dataset, (arg("id"),)),
))
