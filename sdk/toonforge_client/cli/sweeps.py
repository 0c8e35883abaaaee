"""``toonforge sweeps``: create a hyper-parameter sweep (one job per point), show the
comparison of its points, list sweeps."""

from __future__ import annotations

import json
from typing import Any

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
from toonforge_client.cli.jobs import parse_params
from toonforge_client.types import SweepView


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_grid(pairs: list[str]) -> dict[str, list[Any]]:
    """``--grid key=v1,v2`` (repeatable; values read as JSON, else text)."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key or not raw:
            raise UsageError(f"--grid {pair!r}: use KEY=V1,V2,...")
        grid[key] = [_value(v) for v in raw.split(",")]
    return grid


def cmd_create(ctx: Ctx) -> int:
    args = ctx.args
    if bool(args.grid) == bool(args.points):
        raise UsageError("give --grid KEY=V1,V2 (repeatable) or --points JSON|@FILE, not both")
    points = None
    if args.points:
        text = open(args.points[1:]).read() if args.points.startswith("@") else args.points
        try:
            points = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--points: not JSON: {exc}") from None
        if not isinstance(points, list):
            raise UsageError("--points: give a JSON list of objects")
    base = {"task": args.task, "dataset_id": args.dataset, "base": args.base,
            "target_model": args.target or args.base.partition("@")[0],
            "hyperparameters": parse_params(args.param, args.hyperparameters)}
    sweep = ctx.client.create_sweep(base=base, grid=parse_grid(args.grid) if args.grid
                                    else None, points=points,
                                    auto_activate=args.auto_activate,
                                    idempotency_key=args.idempotency_key)
    err(f"sweep {sweep['id']}: {len(sweep['points'])} jobs queued")
    if ctx.json:
        dump(sweep)
    else:
        out(sweep["id"])
    return EXIT_OK


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def show_table(sweep: SweepView) -> None:
    metric = sweep["metric"] or "metric"
    out(f"sweep {sweep['id']}: {sweep['task']} on {sweep['base']['dataset_id']} ->"
        f" {sweep['base']['target_model']} ({metric}, {sweep['direction'] or '-'} is better)")
    rows = [[("*" if p["index"] == sweep["best_index"] else "") + str(p["index"]),
             ", ".join(f"{k}={v}" for k, v in p["values"].items()), p["job_id"], p["status"],
             f"{p['epoch']}/{p['total_epochs'] or '?'}", _num(p["final_metric"]),
             _num(p["best_metric"]), p["result_version"] or ""] for p in sweep["points"]]
    table(rows, ["#", "VALUES", "JOB", "STATUS", "EPOCH", f"FINAL {metric}",
                 f"BEST {metric}", "VERSION"])


def cmd_show(ctx: Ctx) -> int:
    sweep = ctx.client.get_sweep(ctx.args.id)
    if ctx.json:
        dump(sweep)
    else:
        show_table(sweep)
    return EXIT_OK


def cmd_list(ctx: Ctx) -> int:
    page = ctx.client.list_sweeps(limit=ctx.args.limit)
    if ctx.json:
        dump(page)
        return EXIT_OK
    table([[s["id"], s["task"], s["dataset_id"], s["target_model"], ",".join(s["keys"]),
            str(len(s["job_ids"])), str(s["created_at"])[:19]] for s in page["sweeps"]],
          ["ID", "TASK", "DATASET", "TARGET", "KEYS", "POINTS", "CREATED"])
    return EXIT_OK


COMMAND = Command("sweeps", "create, show or list hyper-parameter sweeps", actions=(
    Command("create", "one job per point of a grid or list", cmd_create, (
        arg("--task", required=True, metavar="TASK", help=TASK_HELP),
        arg("--dataset", required=True, help="dataset id"),
        arg("--base", required=True, help="MODEL, MODEL@N, or an architecture name"),
        arg("--target", help="model line to publish to (default: the base's name)"),
        arg("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
            help="a base hyper-parameter (VALUE read as JSON, else text); repeatable"),
        arg("--hyperparameters", metavar="JSON|@FILE", help="base hyper-parameters as JSON"),
        arg("--grid", action="append", default=[], metavar="KEY=V1,V2",
            help="values to try for one hyper-parameter; repeatable (every combination)"),
        arg("--points", metavar="JSON|@FILE", help="an explicit JSON list of points"),
        arg("--auto-activate", action="store_true",
            help="let each point's job activate its version (off: they would race)"),
        arg("--idempotency-key"),
    )),
    Command("show", "the points of a sweep side by side", cmd_show, (arg("id"),)),
    Command("list", "sweeps, newest first", cmd_list, (arg("--limit", type=int, default=20),)),
))
