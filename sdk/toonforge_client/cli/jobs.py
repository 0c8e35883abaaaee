"""``toonforge finetune`` (queue a job, ``--wait`` follows it) and ``toonforge jobs``: list,
show, cancel, resume, wait."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from toonforge_client.cli.base import (
    EXIT_INTERRUPTED,
    EXIT_JOB,
    EXIT_OK,
    EXIT_WAIT_TIMEOUT,
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
from toonforge_client.errors import JobFailedError, WaitTimeoutError
from toonforge_client.progress import format_seconds
from toonforge_client.types import JobStatus, JobUpdate, JobView, is_terminal

JOB_STATUSES = get_args(JobStatus)


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
    """``job ID STATUS``, with the published version and whether it went live, and why not
    (the gate's reason from the job) with the command that activates it anyway."""
    text = f"job {job['id']} {job['status']}"
    version = job.get("result_version")
    if version and job.get("activated"):
        text += f": {version} (activated)"
    elif version:
        name, _, number = version.rpartition("@")
        reason = job.get("activation_reason") or "the job did not activate it"
        text += (f": {version} (not activated: {reason}; toonforge models activate {name}"
                 f" {number} activates it)")
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
    return _created(ctx, job, args.wait)


def list_jobs(ctx: Ctx) -> int:
    args = ctx.args
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


def show_job(ctx: Ctx) -> int:
    job = ctx.client.get_job(ctx.args.id)
    if ctx.json:
        dump(job)
        return EXIT_OK
    out(job_line(job))
    losses = ", ".join(f"{k} {v:.4g}" for k, v in (job["losses"] or {}).items()
                       if v is not None)
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in (job["val_metrics"] or {}).items()
                        if v is not None)
    out(f"  {job['task']} on {job['dataset_id']}: {job['base']} -> {job['target_model']}")
    # A finished job has no time left, whatever the last progress row said.
    eta = ("" if is_terminal(job["status"])
           else f", eta {format_seconds(job['eta_seconds'])}")
    out(f"  epoch {job['epoch']}/{job['total_epochs'] or '?'}, step"
        f" {job['step']}/{job['total_steps'] or '?'}{eta}, attempts {job['attempts']}")
    if losses or metrics:
        out(f"  losses: {losses or '-'}; validation: {metrics or '-'}")
    if job.get("published_epoch") is not None:
        published = ", ".join(f"{k} {v:.4g}" for k, v in
                              (job.get("published_metrics") or {}).items() if v is not None)
        out(f"  published epoch {job['published_epoch']}: {published or '-'}")
    if job.get("activation_reason"):
        out(f"  activation: {job['activation_reason']}")
    if job.get("resumed_from"):
        out(f"  resumed from {job['resumed_from']}")
    tracking = job.get("tracking")
    if tracking:
        out(f"  MLflow run: {tracking.get('mlflow_run_url') or tracking['mlflow_run_id']}")
    out(f"  created {job['created_at']}, finished {job['finished_at'] or '-'}")
    return EXIT_OK


def cancel_job(ctx: Ctx) -> int:
    job = ctx.client.cancel_job(ctx.args.id)
    if ctx.json:
        dump(job)
    elif job["status"] == "cancelled":
        out(f"job {job['id']} cancelled")
    else:
        out(f"job {job['id']} {job['status']}: cancel requested (it stops at its next step)")
    return EXIT_OK


def resume_job(ctx: Ctx) -> int:
    job = ctx.client.resume_job(ctx.args.id)
    err(f"job {job['id']} {job['status']}: resumes {job['resumed_from']} from its last"
        " checkpoint")
    return _created(ctx, job, ctx.args.wait)


def _created(ctx: Ctx, job: JobView, wait: bool) -> int:
    """A new job: follow it to the end (--wait), or print it (JSON) or its id."""
    if wait:
        return follow(ctx, job["id"])
    if ctx.json:
        dump(job)
    else:
        out(job["id"])
    return EXIT_OK


def wait_job(ctx: Ctx) -> int:
    return follow(ctx, ctx.args.id)


FINETUNE = Command("finetune", "queue a fine-tune job (--wait follows it)", cmd_finetune, (
    arg("--task", required=True, metavar="TASK", help=TASK_HELP),
    arg("--dataset", required=True, help="dataset id"),
    arg("--base", required=True, help="MODEL, MODEL@N, or an architecture name"),
    arg("--target", help="model line to publish to (default: the base's name)"),
    arg("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a hyper-parameter (VALUE read as JSON, else text); repeatable"),
    arg("--hyperparameters", metavar="JSON|@FILE",
        help="hyper-parameters as a JSON object (-p wins per key)"),
    arg("--auto-activate", action="store_true",
        help="activate the result when it is at least as good"),
    arg("--webhook", help="URL to POST the job to when it ends"),
    arg("--idempotency-key"),
    arg("--wait", action="store_true", help="follow the job with a live bar"),
    arg("--wait-timeout", type=float, help="give up waiting after S seconds (exit 5; the job"
        " goes on)"),
))

JOBS = Command("jobs", "list, show, cancel, resume or wait for jobs", actions=(
    Command("list", "jobs, newest first", list_jobs, (
        arg("--status", choices=JOB_STATUSES),
        arg("--task", metavar="TASK", help=TASK_HELP),
        arg("--limit", type=int, default=20),
    )),
    Command("show", "one job", show_job, (arg("id"),)),
    Command("cancel", "cancel a job", cancel_job, (arg("id"),)),
    Command("resume", "continue a failed or cancelled job from its last checkpoint (a new"
            " job)", resume_job, (
        arg("id"),
        arg("--wait", action="store_true", help="follow the new job with a live bar"),
        arg("--wait-timeout", type=float, help="give up waiting after S seconds (exit 5)"),
    )),
    Command("wait", "follow a job to its end with a live bar", wait_job, (
        arg("id"),
        arg("--wait-timeout", type=float),
    )),
))
