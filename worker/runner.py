"""``run_job(job_id)``: one fine-tune job from claim to a terminal state.

    claim (queued -> running, or take over an expired lease; attempts + 1)
      -> heartbeat thread for the whole run
      -> pull the job's checkpoint (S3 store) -> resolve base + dataset -> train
         (progress, cancel checks, checkpoints in <store_dir>/jobs/<id>/, pushed to the
         store after each epoch: what a redelivered or resumed job continues from)
      -> exporting -> export + parity + publish -> gate -> activate?
      -> succeeded | failed (with the reason) | cancelled (checkpoint kept)

Whatever happens, the job ends in a terminal state or, if this worker lost it (lease expired,
process killed), in the hands of the next one: never "running" forever. Every state change
is guarded by this worker's id, so a worker that lost its lease cannot overwrite anything.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import DomainError
from jobs.errors import InvalidTransition
from jobs.records import JobRecord
from jobs.repository import Claim, ClaimOutcome
from jobs.states import JobStatus
from jobs.webhooks import notify_terminal
from worker import finetune
from worker.control import JobControl
from worker.nets.checkpoints import CheckpointMismatch
from worker.runtime import WorkerRuntime, get_runtime
from worker.training import tracking
from worker.training.datasets import DatasetError
from worker.training.export import ExportFailed, ParityFailed
from worker.training.trainers import ResumeMismatch
from worker.training.trainers.checkpointing import BEST, CHECKPOINT

log = logging.getLogger(__name__)

# The producer commits the row right after the broker took the message; a fast worker may
# see the message first.
ROW_WAIT_S = 10.0

# Failures of the worker's own steps, and what they mean for the user.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ParityFailed, "ONNX parity check failed (nothing was published)"),
    (ExportFailed, "ONNX export failed (nothing was published)"),
    (ResumeMismatch, "cannot resume from the job's checkpoint"),
    (DatasetError, "the dataset cannot train this task"),
    (CheckpointMismatch, "the base weights do not fit their architecture"),
)


class LeaseLost(Exception):
    """Another worker owns the job now; this one must not touch it any more."""


def run_job(job_id: str, runtime: WorkerRuntime | None = None) -> JobStatus | None:
    """Run the job; returns its terminal status, or None when this worker did not finish it
    (a duplicate delivery, a lost lease, or a graceful shutdown that re-queued it)."""
    rt = runtime or get_runtime()
    claim = _claim(rt, job_id)
    if claim.outcome is not ClaimOutcome.CLAIMED:
        return _not_claimed(rt, job_id, claim)
    job = claim.job
    assert job is not None
    work_dir = rt.artifacts.work_dir(job.id)
    # With an S3 store the checkpoint another host (or the resume route) left is an object:
    # fetch it before deciding whether this attempt resumes (a local store: in place).
    try:
        rt.artifacts.pull(job.id, work_dir)
    except Exception:
        # Starting over could overwrite a later checkpoint: leave the job to its lease, so
        # the reclaimer sends it again (this attempt counts) once the store answers.
        log.exception("job %s: could not fetch its checkpoint from the store; it is retried"
                      " when its lease expires", job.id)
        return None
    _take_over_best(rt, job, work_dir)
    resumed = (work_dir / CHECKPOINT).exists()
    log.info("job %s: attempt %d on %s%s", job.id, job.attempts, rt.worker_id,
             " (resuming from checkpoint)" if resumed else "")
    s = rt.settings
    control = JobControl(rt.repo, job.id, rt.worker_id, heartbeat_s=s.job_heartbeat_s,
                         cancel_poll_s=s.job_cancel_poll_s,
                         progress_interval_s=s.job_progress_interval_s, work_dir=work_dir)
    control.log_event(f"attempt {job.attempts} started on {rt.worker_id}",
                      attempt=job.attempts, resumed_from_checkpoint=resumed)
    final: JobRecord | None
    with control:  # the heartbeat runs from here: resolving imports the families' trainers
        plan = _plan(job)
        hp = plan.hp if isinstance(plan, finetune.JobPlan) else None
        tracker = tracking.job_tracker(s, job, rt.repo, rt.worker_id, hp)  # MLflow / TensorBoard
        with tracker:
            try:
                final = _execute(rt, job, plan, control, work_dir)
            except (LeaseLost, InvalidTransition) as exc:
                log.error("job %s: lost to another worker (%s); leaving it alone", job.id, exc)
                return None
            except Exception as exc:
                log.exception("job %s failed", job.id)
                _push(rt, job.id, work_dir, control)  # what it got to, for /jobs/{id}/resume
                final = _fail(rt, job, exc, control)
                if final is None:
                    return None
            tracker.finish(final)  # None: handed back to the queue, the run stays open
    if final is None:  # shut down gracefully: hand it back after the heartbeat stopped
        _release(rt, job)
        return None
    notify_terminal(final, s, rt.repo)
    return JobStatus(final.status)


def _plan(job: JobRecord) -> finetune.JobPlan | Exception:
    """The task, trainer and hyper-parameters, resolved once for the whole job; a job that
    does not resolve fails in ``_execute``, where every failure is reported."""
    try:
        return finetune.plan_job(job)
    except Exception as exc:
        return exc


def _push(rt: WorkerRuntime, job_id: str, work_dir: Path, control: JobControl) -> None:
    """Hand the job's checkpoint, best weights and samples to the store (S3: upload what
    changed; a local store: nothing to do). Best effort: the files stay in ``work_dir`` and
    the next push retries. A worker that lost the job's lease pushes nothing: the files are
    the new owner's now."""
    if control.lease_lost.is_set():
        return
    try:
        rt.artifacts.push(job_id, work_dir)
    except Exception:
        log.exception("job %s: could not push its checkpoint and samples to the store", job_id)


def _pushing(rt: WorkerRuntime, job_id: str, work_dir: Path, control: JobControl
             ) -> Callable[[Any], None]:
    """``control.on_progress``, pushing the job's files after each epoch first: the epoch's
    checkpoint is written before its event, and a client that sees the epoch (or its
    ``sample`` event) finds the files in the store."""
    def on_progress(event: Any) -> None:
        if event.kind == "epoch":
            _push(rt, job_id, work_dir, control)
        control.on_progress(event)

    return on_progress


def _take_over_best(rt: WorkerRuntime, job: JobRecord, work_dir: Path) -> None:
    """A job that continues another (``resumed_from``) starts from the old job's
    checkpoint.pt, copied into its work dir at submit; the checkpoint names the best epoch
    so far, whose weights are the old job's best.pt: copy that too, or the best epoch could
    not be handed back."""
    if not job.resumed_from or not (work_dir / CHECKPOINT).exists() or (work_dir / BEST).exists():
        return
    old_dir = rt.artifacts.work_dir(job.resumed_from)
    try:
        rt.artifacts.pull(job.resumed_from, old_dir)  # S3: the old job's files, fetched here
    except Exception:
        log.exception("job %s: could not fetch job %s's files", job.id, job.resumed_from)
        return
    old_best = old_dir / BEST
    if not old_best.is_file():
        return
    try:
        tmp = work_dir / f".{BEST}.tmp"
        shutil.copyfile(old_best, tmp)
        tmp.replace(work_dir / BEST)
    except OSError:  # the run still resumes; it hands back its own best (or last) weights
        log.exception("job %s: could not copy %s from job %s", job.id, BEST, job.resumed_from)


def _claim(rt: WorkerRuntime, job_id: str) -> Claim:
    s = rt.settings
    deadline = time.monotonic() + ROW_WAIT_S
    while True:
        claim = rt.repo.claim(job_id, rt.worker_id, lease_s=s.job_lease_s,
                              max_attempts=s.job_max_attempts)
        if claim.outcome is not ClaimOutcome.MISSING or time.monotonic() > deadline:
            return claim
        time.sleep(0.2)


def _not_claimed(rt: WorkerRuntime, job_id: str, claim: Claim) -> JobStatus | None:
    job = claim.job
    if claim.outcome is ClaimOutcome.MISSING:
        log.error("job %s: no such job; dropping the message", job_id)
        return None
    assert job is not None
    if claim.outcome is ClaimOutcome.HELD:
        log.info("job %s: held by %s; ignoring a duplicate delivery", job_id, job.worker_id)
        return None
    status = JobStatus(job.status)
    # Only the outcomes this claim itself caused are announced here; a job cancelled while
    # queued was announced by the API process that cancelled it.
    if claim.outcome in (ClaimOutcome.CANCELLED, ClaimOutcome.EXHAUSTED):
        notify_terminal(job, rt.settings, rt.repo)
    log.info("job %s: %s (%s); nothing to run", job_id, claim.outcome.value, status.value)
    return status


def _execute(rt: WorkerRuntime, job: JobRecord, plan: finetune.JobPlan | Exception,
             control: JobControl, work_dir: Path) -> JobRecord | None:
    if isinstance(plan, Exception):
        raise plan
    repo, wid = rt.repo, rt.worker_id
    # The process's stores (worker/runtime.py); auto_activate is announced to the API
    # replicas when Redis is set (model_store/notify.py).
    store, datasets = rt.stores.models, rt.stores.datasets
    finetune.check_target(store, job)
    base = finetune.resolve_base(store, job, plan)
    # The dataset's index.json, read once: training, INT8 calibration and the gate share it.
    plan = finetune.read_dataset(datasets, job, plan)
    result = finetune.train(datasets, job, plan, base, work_dir=work_dir,
                            on_progress=_pushing(rt, job.id, work_dir, control),
                            should_cancel=control.should_cancel)
    # Before any state change: a cancelled or handed-back job can be resumed from what it
    # pushed, on any host.
    _push(rt, job.id, work_dir, control)
    if control.lease_lost.is_set():
        raise LeaseLost(f"job {job.id}: heartbeat refused")
    if control.user_cancelled:
        return repo.transition(job.id, JobStatus.CANCELLED, worker_id=wid,
                               epoch=result.epochs_completed)
    if result.cancelled:  # stopped for a warm shutdown, checkpoint written
        return None
    last = result.history[-1]["val"] if result.history else result.metrics
    repo.transition(job.id, JobStatus.EXPORTING, worker_id=wid, epoch=result.epochs_completed,
                    val_metrics=last)
    manifest = finetune.publish(store, datasets, job, plan, base, result)
    control.log_event(f"published {manifest.ref}", version=manifest.ref,
                      parity=manifest.parity.max_abs_error)
    activated = False
    reason = (f"auto_activate is false: {manifest.ref} was not put to the gate; activate it"
              " by hand")
    if job.auto_activate:
        try:
            decision = finetune.gate(store, datasets, job, plan, manifest, result.module)
        except Exception as exc:  # the version is published; only the promotion is off
            log.exception("job %s: gate evaluation failed", job.id)
            decision = finetune.GateDecision(False, f"gate evaluation failed: {exc}")
        if decision.activate:
            store.activate(job.target_model, manifest.version)
            activated = True
        reason = decision.reason
        control.log_event(f"gate: {decision.reason}", activated=activated,
                          metric=decision.metric, new=decision.new, active=decision.active)
    return repo.transition(job.id, JobStatus.SUCCEEDED, worker_id=wid,
                           result_version=manifest.ref, activated=activated, eta_seconds=0.0,
                           published_epoch=result.published_epoch,
                           published_metrics=result.metrics, activation_reason=reason)


def failure_reason(exc: BaseException) -> str:
    """A one-line reason a user can act on. A ``DomainError`` (store, jobs, tasks, the
    job's own checks) is its stable code and message: ``"dataset_not_found: ..."``."""
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.message}"
    text = str(exc) or type(exc).__name__
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return f"{reason}: {text}"
    if isinstance(exc, LookupError):  # an unknown architecture or trainer names the known
        return text
    return f"{type(exc).__name__}: {text}"


def _fail(rt: WorkerRuntime, job: JobRecord, exc: BaseException, control: JobControl
          ) -> JobRecord | None:
    code = exc.code if isinstance(exc, DomainError) else None
    control.log_event("job failed", error=failure_reason(exc), code=code,
                      traceback=traceback.format_exc(limit=20)[-4000:])
    try:
        return rt.repo.transition(job.id, JobStatus.FAILED, worker_id=rt.worker_id,
                                  error=failure_reason(exc))
    except InvalidTransition:
        log.error("job %s: could not mark failed: no longer ours", job.id)
        return None


def _release(rt: WorkerRuntime, job: JobRecord) -> None:
    try:
        if rt.repo.release(job.id, rt.worker_id, rt.queue.enqueue_finetune):
            log.warning("job %s: worker shutting down; re-queued from its checkpoint", job.id)
    except Exception:
        log.exception("job %s: could not re-queue on shutdown; its lease will expire and "
                      "the reclaimer re-sends it", job.id)
