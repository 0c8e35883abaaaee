"""The training loop shared by the task trainers.

A task trainer subclasses :class:`Trainer` and fills in the hooks (``setup``, ``train_step``,
``measure``, ``eval_dataset``, ``write_samples``); the loop here owns everything that must
behave the same for every task: seeding, per-epoch batch order, cancellation at step
boundaries, progress events, atomic checkpoints with RNG state, exact resume (also from the
middle of an epoch), best-weights tracking and early stopping.

One metric per task decides both which epoch's weights a job keeps and whether the version
may go live: the task spec's gate (metric and direction). A trainer may choose its kept
epoch another way (``selection_rule``, the gate by default). A task without a gate keeps the
last epoch.

BatchNorm: before every validation pass the running statistics of the trainable BatchNorm
layers are re-estimated over the training set (batchnorm.py), so the eval-mode module that
is validated, kept in best.pt, evaluated by the gate and exported is one and the same, with
statistics that belong to its weights.

Why one module of ~500 lines: ``Trainer`` is one class whose hooks, evaluation classmethods
and loop share its state (splits, hyper-parameters, the model, the loop counters that go
into checkpoint.pt), and a family's trainer overrides both hooks and evaluation. Splitting
the class into mixins across files would scatter that state without making any part
smaller to read.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence, Sized
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from jobs import artifacts
from tasks import CommonHyperparameters, GateRule, TaskSpec
from worker.training import distributed
from worker.training.datasets import DatasetError, DatasetSource, Samples, Splits, load_splits
from worker.training.trainers.batchnorm import first_input, recalibrate_batchnorm
from worker.training.trainers.checkpointing import (
    BEST,
    CHECKPOINT,
    atomic_save,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from worker.training.trainers.context import (
    ProgressEvent,
    TrainContext,
    TrainResult,
    default_device,
)

SAMPLES_DIR = artifacts.SAMPLES_DIR  # the API lists and serves them from there
# BatchNorm re-estimation sees at most this many training images (evenly spaced over the
# split's order, so every class of a class-sorted split is in): a few thousand images
# estimate the statistics well and keep the extra pass short on large datasets.
BN_MAX_IMAGES = 2048


def _quiet_generator() -> torch.Generator:
    """For loaders that do not shuffle: keeps iterator creation off the global RNG."""
    return torch.Generator().manual_seed(0)


def _eval_loader(dataset: Dataset[Any], hp: CommonHyperparameters) -> DataLoader[Any]:
    return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers,
                      generator=_quiet_generator())


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


class Trainer(ABC):
    # Set by @register_trainer(task) (trainers/registry.py): the task's spec, its name and
    # (unless the trainer names its own) the spec's hyper-parameter model.
    spec: ClassVar[TaskSpec]
    task: ClassVar[str]
    hyperparams: ClassVar[type[CommonHyperparameters]]
    # How much better than the trivial predictor's (``trivial_metric``) the gate metric must
    # be before a version may go live by itself (classify: 0.05 above chance).
    gate_margin: ClassVar[float] = 0.0
    # What ``trivial_metrics`` scores, in words (the gate's reason names it).
    trivial_predictor: ClassVar[str] = "the trivial predictor"
    # What DistributedDataParallel wraps when the job trains on more than one device:
    # attribute paths under ``self.model`` ("" is the model itself). A trainer whose
    # train_step calls sub-nets directly (generate: netg, netd) names them.
    ddp_modules: ClassVar[tuple[str, ...]] = ("",)

    def __init__(self, ctx: TrainContext) -> None:
        hp = ctx.hyperparameters
        if isinstance(hp, dict):
            hp = self.hyperparams(**hp)
        if not isinstance(hp, self.hyperparams):
            raise TypeError(f"{self.task} needs {self.hyperparams.__name__}, got {type(hp)}")
        self.ctx, self.hp, self.device = ctx, hp, ctx.device
        self.world = distributed.current()  # rank 0 of 1 unless launched by distributed.py
        self.use_amp = bool(hp.mixed_precision) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.splits: Splits = load_splits(
            ctx.dataset_dir if ctx.splits is None else ctx.splits, self.task)
        if not self.splits.train or not self.splits.val:
            raise DatasetError(f"the dataset has {len(self.splits.train)} train and"
                               f" {len(self.splits.val)} val samples; both are needed")
        self.model: nn.Module
        self.train_set: Dataset[Any]
        self.val_loader: DataLoader[Any]
        self._bn_loader: DataLoader[Any] | None = None  # training set, evaluation transform
        # Loop state (all of it goes into checkpoint.pt).
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.global_step = 0
        self.accum: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.bad_epochs = 0
        self.finished = False

    # -- hooks ---------------------------------------------------------------------------------

    @abstractmethod
    def setup(self) -> None:
        """Build self.model (on self.device), optimizers, schedulers, train_set, val_loader."""

    @abstractmethod
    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on a batch already on the device; returns its losses."""

    @classmethod
    @abstractmethod
    def eval_dataset(cls, samples: Samples, hp: CommonHyperparameters,
                     labels: list[str] | None) -> Dataset[Any]:
        """Dataset of un-augmented evaluation items for ``samples`` of a split; ``labels``
        are the class names of the evaluated model's outputs (None for unlabelled tasks)."""

    @classmethod
    @abstractmethod
    def measure(cls, module: nn.Module, loader: DataLoader[Any], device: torch.device,
                hp: CommonHyperparameters, labels: list[str] | None) -> dict[str, float]:
        """Metrics of ``module`` (eval mode, no grad) over ``loader``'s batches."""

    @classmethod
    def trivial_metrics(cls, splits: Splits, loader: DataLoader[Any],
                        hp: CommonHyperparameters, labels: list[str] | None
                        ) -> dict[str, float] | None:
        """Metrics (the gate metric among them) of the trivial predictor on ``loader``'s
        evaluation batches of a split of ``splits``: what a version must beat before it may
        go live. None: the trainer knows no trivial predictor (the gate says so)."""
        return None

    @classmethod
    def served_metrics(cls, version_file: Callable[[str], Path], preprocessing: dict[str, Any],
                       module: nn.Module, data: DatasetSource, hp: CommonHyperparameters,
                       labels: list[str] | None) -> dict[str, float]:
        """The gate's metrics of a published version: ``version_file(name)`` is a local path
        of one of its files (fetched on demand), ``module`` its PyTorch net. The default
        evaluates the module, which the export's parity check proved equal to the graph; a
        trainer whose metric depends on what the API does to the graph's output scores the
        graph itself (generate)."""
        return cls.evaluate(module, data, hp, labels=labels)

    @classmethod
    def gate_check(cls, metrics: dict[str, float]) -> tuple[bool, str]:
        """A condition besides the gate metric that a version must meet to go live, and its
        numbers in words (generate: the samples are not collapsed). Default: none."""
        return True, ""

    def bn_forward(self, module: nn.Module, batch: Any) -> Any:
        """One forward pass for BatchNorm re-estimation over an evaluation batch of the
        training set (on the device): the model on the batch's input."""
        return first_input(module, batch)

    def write_samples(self, epoch: int, folder: Path) -> list[Path]:
        return []

    def sample_weights(self) -> Sequence[float] | None:
        """Per-item draw weights for a weighted sampler, or None for a plain shuffle."""
        return None

    def arch_kwargs(self) -> dict[str, Any]:
        return {}

    def labels(self) -> list[str] | None:
        return None

    def train_mode(self) -> None:
        self.model.train()

    def on_epoch_end(self) -> None:
        for sched in self.schedulers.values():
            sched.step()

    def after_checkpoint(self, epoch: int) -> None:
        """Called after the end-of-epoch checkpoint (extra snapshots)."""
        return None

    def finish(self, result: TrainResult) -> None:
        """Last touches on the result (autoencode fits the latent distribution here)."""
        return None

    # -- shared helpers for the hooks ----------------------------------------------------------

    def autocast(self) -> AbstractContextManager[None]:
        return torch.autocast(self.device.type, enabled=self.use_amp)

    def optimize(self, loss: torch.Tensor, name: str = "main") -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch: unannotated
        self.scaler.step(opt)
        self.scaler.update()

    def eval_loader(self, samples: Samples) -> DataLoader[Any]:
        return _eval_loader(self.eval_dataset(samples, self.hp, self.labels()), self.hp)

    def _bn_batches(self) -> Iterable[Any]:
        if self._bn_loader is None:
            dataset = self.eval_dataset(self.splits.train, self.hp, self.labels())
            n = len(cast(Sized, dataset))
            if n > BN_MAX_IMAGES:
                stride = math.ceil(n / BN_MAX_IMAGES)
                dataset = Subset(dataset, range(0, n, stride))
            self._bn_loader = _eval_loader(dataset, self.hp)
        loader = self._bn_loader
        for i, batch in enumerate(loader):
            batch = to_device(batch, self.device)
            first = batch[0] if isinstance(batch, list | tuple) else batch
            if i and torch.is_tensor(first) and len(first) == 1:
                continue  # a trailing batch of one: its variance says nothing
            yield batch

    def recalibrate(self) -> None:
        """Re-estimate the trainable BatchNorm statistics over the training set (evaluation
        transform, no augmentation); leaves the model in eval mode."""
        recalibrate_batchnorm(self.model, self._bn_batches(), self.bn_forward)

    def validate(self) -> dict[str, float]:
        self.recalibrate()
        with torch.no_grad():
            return self.measure(self.model, self.val_loader, self.device, self.hp, self.labels())

    # -- evaluation outside training -----------------------------------------------------------

    @classmethod
    def gate_rule(cls) -> GateRule | None:
        """The task's gate: the metric that decides activation."""
        return cls.spec.gate

    @classmethod
    def selection_rule(cls) -> GateRule | None:
        """The metric that picks the epoch a job keeps (None: the last epoch). The gate by
        default, so the kept epoch is the one the activation gate would prefer; a family
        that overrides it should keep the two from drifting apart."""
        return cls.gate_rule()

    @classmethod
    def eval_hyperparameters(cls, hp: CommonHyperparameters,
                             preprocessing: dict[str, Any]) -> CommonHyperparameters:
        """``hp`` with the evaluation sizes of a version whose manifest's preprocessing is
        ``preprocessing``, so that it is evaluated on the tensors it is served. The default
        changes nothing (the task's sizes are fixed by its net or already recorded)."""
        return hp

    @classmethod
    def _loader_for(cls, data: DatasetSource, hp: CommonHyperparameters,
                    labels: list[str] | None, split: Literal["val", "test"]
                    ) -> tuple[Splits, DataLoader[Any], list[str] | None]:
        splits = load_splits(data, cls.task)
        samples = splits.split(split)
        if not samples:
            raise ValueError(f"dataset {data} has no {split} split")
        labels = labels or splits.classes
        return splits, _eval_loader(cls.eval_dataset(samples, hp, labels), hp), labels

    @classmethod
    def trivial_metric(
        cls,
        data: DatasetSource,
        hyperparameters: CommonHyperparameters | None = None,
        *,
        labels: list[str] | None = None,
        split: Literal["val", "test"] = "val",
    ) -> float | None:
        """The gate metric of the trivial predictor on a dataset's split (at the evaluation
        sizes of ``hyperparameters``); None for a task without a gate, or a trainer that
        knows no trivial predictor."""
        rule = cls.gate_rule()
        if rule is None:
            return None
        hp = hyperparameters or cls.hyperparams.model_validate({})
        splits, loader, labels = cls._loader_for(data, hp, labels, split)
        metrics = cls.trivial_metrics(splits, loader, hp, labels)
        return None if metrics is None else float(metrics[rule.metric])

    @classmethod
    def evaluate(
        cls,
        module: nn.Module,
        data: DatasetSource | DataLoader[Any],
        hyperparameters: CommonHyperparameters | None = None,
        *,
        device: torch.device | None = None,
        labels: list[str] | None = None,
        split: Literal["val", "test"] = "val",
    ) -> dict[str, float]:
        """Metrics of ``module`` on a dataset's val (or test) split, or on a loader that
        yields batches like the trainer's evaluation loader. ``data`` is a stored dataset
        (its index.json's split is used, exactly) or a raw folder (scanned as intake
        would). Leaves ``module`` in eval mode on ``device``."""
        # The task's model with all its defaults (CommonHyperparameters itself has required
        # fields, so it is validated from an empty mapping rather than called bare).
        hp = hyperparameters or cls.hyperparams.model_validate({})
        device = device or default_device()
        if isinstance(data, DataLoader):
            loader = data
        else:
            _, loader, labels = cls._loader_for(data, hp, labels, split)
        module.to(device).eval()
        with torch.no_grad():
            return cls.measure(module, loader, device, hp, labels)

    @classmethod
    def train(cls, ctx: TrainContext) -> TrainResult:
        return cls(ctx).run()

    # -- the loop ------------------------------------------------------------------------------

    def _epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This epoch's batches of (index, augmentation seed), a pure function of (seed,
        epoch), so a resumed run replays the same order and the same augmentations."""
        g = torch.Generator().manual_seed(self.hp.seed * 1_000_003 + epoch)
        n = len(cast(Sized, self.train_set))  # the task datasets all define __len__
        weights = self.sample_weights()
        if weights is not None:
            order = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n,
                                      replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g)
        seeds = torch.randint(0, 2**62, (n,), generator=g)
        keys = list(zip(order.tolist(), seeds.tolist(), strict=True))
        bs = self.hp.batch_size
        batches = [keys[i:i + bs] for i in range(0, n, bs)]
        # A last batch of one breaks BatchNorm in train mode; drop it (it is reshuffled next
        # epoch, so no image is lost for good). On N ranks a last batch smaller than N
        # would leave a rank without images: dropped too.
        if len(batches) > 1 and len(batches[-1]) < max(2, self.world.size):
            batches.pop()
        return batches

    def _rank_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's share of every global batch of the epoch: items rank, rank + N, ...
        (DistributedSampler's interleaving, applied to the loop's own seeded order, so N
        ranks together see exactly the global batches one process would, with the same
        augmentation seeds, and a resumed run starts at the same step)."""
        batches = self._epoch_batches(epoch)
        if not self.world.distributed:
            return batches
        return [b[self.world.rank::self.world.size] for b in batches]

    @property
    def steps_per_epoch(self) -> int:
        return len(self._epoch_batches(0))

    def run(self) -> TrainResult:
        ctx, hp = self.ctx, self.hp
        work = Path(ctx.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        seed_everything(hp.seed)
        self.setup()
        if (work / CHECKPOINT).exists():
            load_checkpoint(self, work / CHECKPOINT)
        total = self.steps_per_epoch * hp.epochs
        cancelled = False
        world = self.world
        # Made once (DDP broadcasts rank 0's parameters when it wraps), entered per epoch.
        parallel = distributed.Parallel(self) if world.distributed else None
        while self.epoch < hp.epochs and not self.finished:
            batches = self._rank_batches(self.epoch)
            self.train_mode()
            # An own generator: otherwise creating the iterator draws its worker base seed
            # from the global RNG, which a resumed run would then draw twice.
            loader = DataLoader(self.train_set, batch_sampler=batches[self.step_in_epoch:],
                                num_workers=hp.num_workers,
                                generator=torch.Generator().manual_seed(hp.seed + self.epoch))
            it = iter(loader)
            if parallel is not None:
                parallel.__enter__()
            for _ in range(self.step_in_epoch, len(batches)):
                stop = ctx.should_cancel()
                if world.distributed:  # every rank stops at the same step
                    stop = distributed.broadcast_flag(stop, self.device)
                if stop:
                    cancelled = True
                    break
                losses = self.train_step(to_device(next(it), self.device))
                if world.distributed:  # the global batch's losses, as one process reports
                    losses = distributed.mean_losses(losses, self.device)
                for k, v in losses.items():
                    self.accum[k] = self.accum.get(k, 0.0) + float(v)
                self.accum["_steps"] = self.accum.get("_steps", 0.0) + 1
                self.step_in_epoch += 1
                self.global_step += 1
                ctx.on_progress(ProgressEvent("step", self.epoch + 1, hp.epochs,
                                              self.global_step, total, losses))
            del it, loader
            if parallel is not None:
                parallel.__exit__()
            if cancelled:
                # Mid-epoch checkpoint: a redelivered job continues from this very step.
                if world.leader:
                    save_checkpoint(self, work / CHECKPOINT)
                break
            self._end_epoch(work, total)
        return self._result(work, cancelled)

    def _end_epoch(self, work: Path, total: int) -> None:
        # Read before the schedulers step: the rates this epoch trained at.
        lrs = {n: float(opt.param_groups[0]["lr"]) for n, opt in self.optimizers.items()}
        self.on_epoch_end()
        if not self.world.leader:
            # Rank 0 alone validates, writes samples and checkpoints, tracks the best epoch;
            # the others keep their counters in step and learn whether to stop early.
            self.epoch += 1
            self.step_in_epoch, self.accum = 0, {}
            self.finished = distributed.broadcast_flag(False, self.device)
            return
        metrics = self.validate()
        samples_dir = work / SAMPLES_DIR
        samples_dir.mkdir(exist_ok=True)
        samples = self.write_samples(self.epoch + 1, samples_dir)
        steps = max(self.accum.pop("_steps", 1.0), 1.0)
        train_losses = {k: v / steps for k, v in self.accum.items()}
        self.epoch += 1
        self.history.append({"epoch": self.epoch, "train": train_losses, "val": metrics,
                             "lr": lrs, "samples": [str(p) for p in samples]})
        self._track_best(work, metrics)
        self.step_in_epoch, self.accum = 0, {}
        save_checkpoint(self, work / CHECKPOINT)
        self.after_checkpoint(self.epoch)
        self.ctx.on_progress(ProgressEvent("epoch", self.epoch, self.hp.epochs, self.global_step,
                                           total, train_losses, metrics, samples, lrs))
        if self.world.distributed:
            self.finished = distributed.broadcast_flag(self.finished, self.device)

    def _track_best(self, work: Path, metrics: dict[str, float]) -> None:
        rule = self.selection_rule()
        if rule is None:
            return  # no validation number says one epoch is better: the last one is kept
        value = metrics[rule.metric]
        better = self.best is None or rule.better(value, self.best)
        if better and math.isfinite(value):
            self.best, self.best_epoch, self.best_metrics = value, self.epoch, dict(metrics)
            self.bad_epochs = 0
            atomic_save({"model": self.model.state_dict(), "epoch": self.epoch,
                         "metrics": metrics}, work / BEST)
        else:
            self.bad_epochs += 1
            patience = getattr(self.hp, "early_stop_patience", None)
            if patience is not None and self.bad_epochs >= patience:
                self.finished = True

    def _result(self, work: Path, cancelled: bool) -> TrainResult:
        metrics = self.history[-1]["val"] if self.history else {}
        published: int | None = self.epoch if self.history else None
        if not cancelled and self.best_epoch is not None and (work / BEST).exists():
            # Hand back the best validated weights, not merely the last ones. best.pt was
            # saved right after that epoch's validation: its BatchNorm statistics are the
            # re-estimated ones the metrics were measured with (what is exported).
            best = torch.load(work / BEST, map_location=self.device, weights_only=True)
            self.model.load_state_dict(best["model"])
            metrics, published = self.best_metrics, self.best_epoch
        elif self.best_epoch is not None and not cancelled:
            # No best.pt (a resumed job's copy lacked it): the last weights are handed back,
            # and they are named for what they are.
            self.best_epoch = None
        result = TrainResult(
            module=self.model.cpu().eval(),
            arch=self.ctx.arch,
            arch_kwargs=self.arch_kwargs(),
            labels=self.labels(),
            metrics=dict(metrics),
            history=list(self.history),
            cancelled=cancelled,
            epochs_completed=self.epoch,
            best_epoch=self.best_epoch,
            published_epoch=published,
            dataset=self.splits.summary(),
        )
        if not cancelled and self.world.leader:  # only rank 0's result is handed on
            self.finish(result)
        return result
