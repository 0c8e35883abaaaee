"""Training one job on more than one device: torch.distributed process-group plumbing.

A job whose hyper-parameters ask ``devices: N`` (N > 1) is trained by N processes started
with ``torch.multiprocessing`` (spawn), each given a torchrun-style environment
(``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)
and joined into one process group: ``nccl`` when the ranks train on CUDA devices (one
device per rank), ``gloo`` on CPU. The training loop (trainers/base.py) does the rest:
DistributedDataParallel around the trainable nets (gradients averaged in backward), every
global batch of the job's order split across the ranks, rank 0 alone validating, writing
checkpoints and samples and reporting progress.

The job's process (the Celery task) stays the parent: it relays rank 0's progress events to
the job row, turns a cancel request into an event rank 0 sees (and broadcasts to the others
at the next step), and gets rank 0's TrainResult back through a file in the job's work dir.
Export, parity, publish and the gate then run in the parent, as for a one-device job. When
any rank fails, the others are terminated and the job fails with that rank's exception.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue as queue_mod
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.errors import DomainError
from worker.training.trainers.context import (
    ProgressEvent,
    TrainContext,
    TrainResult,
    _never,
    _no_progress,
)

if TYPE_CHECKING:
    from worker.training.trainers.base import Trainer

log = logging.getLogger(__name__)

RESULT_FILE = ".distributed_result.pt"  # rank 0's TrainResult, read back by the parent
# How long a rank waits in a collective for the others (rank 0 validates and checkpoints
# while the others wait at the end of an epoch: this must cover one validation pass).
COLLECTIVE_TIMEOUT = timedelta(hours=2)
_POLL_S = 0.2  # how often the parent relays progress and polls for a cancel request


class DevicesUnavailable(DomainError):
    """The job asks for more devices than this worker has."""

    code = "devices_unavailable"
    http_status = 422


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def current() -> World:
    """This process's place in the job's process group (rank 0 of 1 outside one)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def available_devices(use_cuda: bool, max_train_processes: int | None = None) -> int:
    """How many ranks this worker can run: its CUDA devices, or on CPU its cores (or the
    ``max_train_processes`` setting when set)."""
    if use_cuda:
        return torch.cuda.device_count()
    return max_train_processes or os.cpu_count() or 1


def check_devices(devices: int, use_cuda: bool, max_train_processes: int | None = None) -> None:
    """Fail before any process starts when the job asks for more devices than there are."""
    have = available_devices(use_cuda, max_train_processes)
    if devices > have:
        kind = "CUDA devices" if use_cuda else "CPU training processes"
        raise DevicesUnavailable(
            f"the job asks for devices={devices}, but this worker has {have} {kind}",
            {"devices": devices, "available": have},
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


# -- collectives used by the training loop ---------------------------------------------------


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (cancel requests, early stopping)."""
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def mean_losses(losses: dict[str, float], device: torch.device) -> dict[str, float]:
    """A step's losses averaged over the ranks: each rank's are those of its share of the
    global batch, so the mean is the global batch's (for equal shares and mean losses)."""
    if not losses:
        return losses
    keys = sorted(losses)
    t = torch.tensor([float(losses[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


class DDP(DistributedDataParallel):
    """DistributedDataParallel that reads like the net it wraps: unknown attributes
    (``latent_dim``, ``encode``...) come from the wrapped module, so a trainer's
    ``train_step`` runs unchanged whether ``self.model`` is the net or this wrapper."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DDP (parameters broadcast from rank 0 now; gradients averaged in every
    backward; buffers, BatchNorm running statistics among them, broadcast from rank 0 at
    every forward). A module without trainable parameters is returned as it is."""
    if not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def _swap(trainer: Trainer, path: str, value: nn.Module) -> None:
    if path == "":
        trainer.model = value
    else:
        setattr(trainer.model, path, value)


def _get(trainer: Trainer, path: str) -> nn.Module:
    return trainer.model if path == "" else getattr(trainer.model, path)


class Parallel:
    """The trainer's DDP wrappers, made once, swapped in for the training steps only:
    validation, samples, checkpoints and export see the plain nets (same parameters), so
    state dicts keep their keys and rank 0 can evaluate alone without a collective."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.paths = trainer.ddp_modules
        self.plain = {p: _get(trainer, p) for p in self.paths}
        self.wrapped = {p: wrap(m, trainer.device) for p, m in self.plain.items()}

    def __enter__(self) -> Parallel:
        for p in self.paths:  # the parent net first: its sub-nets are swapped inside it
            _swap(self.trainer, p, self.wrapped[p])
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.paths):
            _swap(self.trainer, p, self.plain[p])


# -- launching -----------------------------------------------------------------------------------


def _rank_main(rank: int, world: int, port: int, trainer_cls: type[Trainer],
               ctx: TrainContext, use_cuda: bool, threads: int,
               events: Any, cancel: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(threads)
    if use_cuda:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    try:
        dist.init_process_group(backend_for(device), init_method="env://", rank=rank,
                                world_size=world, timeout=COLLECTIVE_TIMEOUT)
        try:
            if rank == 0:
                ctx = dataclasses.replace(ctx, device=device, on_progress=events.put,
                                          should_cancel=cancel.is_set)
            else:
                ctx = dataclasses.replace(ctx, device=device)
            result = trainer_cls(ctx).run()
            if rank == 0:
                torch.save(result, Path(ctx.work_dir) / RESULT_FILE)
        finally:
            dist.destroy_process_group()
    except BaseException as exc:
        try:
            events.put(("error", rank, exc, traceback.format_exc()))
        except Exception:  # an exception that does not pickle: its text at least
            events.put(("error", rank, RuntimeError(f"{type(exc).__name__}: {exc}"),
                        traceback.format_exc()))
        raise


def launch(trainer_cls: type[Trainer], ctx: TrainContext, devices: int) -> TrainResult:
    """Train ``ctx``'s job on ``devices`` ranks and return rank 0's TrainResult.

    ``ctx.on_progress`` and ``ctx.should_cancel`` run here, in the calling process: the
    ranks cannot share its database connections."""
    use_cuda = ctx.device.type == "cuda"
    spawn = mp.get_context("spawn")
    events, cancel = spawn.Queue(), spawn.Event()
    threads = max(1, torch.get_num_threads() // devices)
    work = Path(ctx.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / RESULT_FILE).unlink(missing_ok=True)
    # The callbacks stay here; module-level defaults travel (they pickle).
    plain = dataclasses.replace(ctx, on_progress=_no_progress, should_cancel=_never)
    port = free_port()
    log.info("training on %d %s ranks (MASTER_PORT=%d)", devices,
             "nccl" if use_cuda else "gloo", port)
    procs = mp.start_processes(  # type: ignore[attr-defined,no-untyped-call]  # untyped
        _rank_main, args=(devices, port, trainer_cls, plain, use_cuda, threads, events, cancel),
        nprocs=devices, join=False, start_method="spawn")
    errors: list[tuple[int, BaseException, str]] = []

    def relay(on_progress: Callable[[ProgressEvent], None]) -> None:
        while True:
            try:
                item = events.get_nowait()
            except queue_mod.Empty:
                return
            if isinstance(item, tuple) and item and item[0] == "error":
                errors.append(item[1:])
            else:
                on_progress(item)

    failure: BaseException | None = None
    next_poll = 0.0
    try:
        while True:
            try:
                done = procs.join(timeout=_POLL_S)
            except Exception as exc:  # a rank failed: join has terminated the others
                failure = exc
                break
            relay(ctx.on_progress)
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + _POLL_S
                if not cancel.is_set() and ctx.should_cancel():
                    cancel.set()
            if done:
                break
        time.sleep(0.05)  # a last event may still be in the queue's feeder pipe
        relay(ctx.on_progress)
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
    if failure is not None or errors:
        if errors:
            rank, raised, tb = min(errors, key=lambda e: e[0])
            log.error("training rank %d of %d failed:\n%s", rank, devices, tb)
            raised.add_note(f"raised in training process rank {rank} of {devices}")
            raise raised
        raise RuntimeError(f"a training process of {devices} died: {failure}") from failure
    path = work / RESULT_FILE
    # Our own file, just written by rank 0 (a pickled TrainResult, not only tensors).
    result: TrainResult = torch.load(path, map_location="cpu", weights_only=False)
    path.unlink(missing_ok=True)
    return result
