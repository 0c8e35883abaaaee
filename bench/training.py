"""Training benchmark: for each task, the trainer's throughput vs a bare PyTorch loop.

Usage:  .venv/bin/python bench/training.py [--repeats 3] [--warmup 3] [--tasks matte,...]

Each task trains on its synthetic dataset (``tasks/synthetic.py``), CPU only,
``torch.set_num_threads(2)`` for everything, default hyper-parameters except the small batch
and image sizes of ``CASES`` (``num_workers`` stays at its default, 0). Three loops run on the
same model (same arch kwargs, same seeded init), the same augmented batches (the trainer's
epoch-0 batch keys: same order, same augmentation draws), the same loss and optimizer:

* **trainer**: ``Trainer.train(ctx)`` for one epoch in a fresh work dir. Its ``on_progress``
  callback timestamps every step; the loop around it (``should_cancel``, the DataLoader's
  load + augment + collate on the main thread, ``to_device``, ``train_step`` with its
  ``.item()`` calls, loss accumulation, the progress event) is all inside the timed steps.
* **bare**: the batches already collated in memory, a plain
  ``zero_grad / forward / loss / backward / step`` loop; no ``.item()``, no progress, no
  checkpoints. Data loading and augmentation are *not* timed here.
* **bare+loader**: the bare loop fed by the same DataLoader as the trainer's (same Dataset,
  same batch keys, same ``num_workers``): the bare loop plus the data pipeline.

Timed, for all three: the wall time (``time.perf_counter``) from the end of step ``warmup``
to the end of the epoch's last step; images/s = the images of those steps / that time. Not
timed: the first ``warmup`` steps (allocator warm-up, DataLoader creation), the trainer's
setup (dataset scan, model build), and its end of epoch (validation, sample images,
best.pt / checkpoint.pt / snapshots). The end of epoch is reported separately: ``end s`` is
its seconds (last step -> "epoch" progress event) and ``trainer+end`` the trainer's
images/s with it added to the timed steps. Each figure is the median over ``--repeats``
runs; the three loops are interleaved per repeat. ``ratio`` = trainer / bare (the target is
>= 0.9); ``vs loader`` = trainer / bare+loader (what the trainer's own loop costs beyond the
data pipeline). ``same`` checks that both bare loops compute the trainer's first-step loss,
i.e. that they really do the same work. Ratios only: nothing here passes or fails.

``--devices 1,2`` (its own section, instead of the table above): the autoencode case trained
by the real trainer for ``--epochs`` epochs on 1 process (``torch.set_num_threads(2)``) and
on 2 gloo ranks (``distributed.launch``, 1 thread each: the same 2 cores), same global
batch. Reported: the whole call's wall time (spawn, imports and process-group start of the
ranks included; setup, validation and checkpoints for both) as images/s over all epochs'
training images, and the step phase alone (first to last step event seen by the caller;
the 2-rank events are relayed every 0.2 s, so that figure is +-0.2 s of its window).
Writes bench/results/training_devices.json.

Run it on an otherwise idle machine: with other processes on the 2 cores, torch's 2-thread
intra-op pool stalls on small ops and the numbers swing by several x (the 1-minute load
average is printed and stored for that reason).
Writes bench/results/training.json.

Why one file of ~420 lines: the three timed loops must build the same model, batches and
optimizer; keeping them beside each other in one script is what makes them comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from families.cartoonize.net import guided_filter  # noqa: E402
from tasks.synthetic import make_dataset  # noqa: E402
from worker.nets.registry import create_model  # noqa: E402
from worker.training import distributed  # noqa: E402
from worker.training.losses import multi_bce, ssim  # noqa: E402
from worker.training.trainers import ProgressEvent, TrainContext, Trainer, get_trainer  # noqa: E402
from worker.training.trainers.checkpointing import seed_everything  # noqa: E402

RESULTS = ROOT / "bench" / "results"
THREADS = 2  # this machine's cores
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Case:
    task: str
    arch: str
    hp: dict[str, Any]  # on top of the task's defaults (epochs is always 1)
    data: dict[str, int] = field(default_factory=dict)  # make_dataset kwargs


# Sized for ~1 minute per task on 2 cores: ~20-24 steps an epoch, inputs 64-128 px, source
# images larger than the model input (so the resize/crop augmentation does real work).
CASES = [
    Case("cartoonize", "dctnet", {"batch_size": 4, "image_size": 128},
         {"n": 96, "n_val": 4, "size": 144}),
    Case("matte", "u2netp", {"batch_size": 4, "resize": 128, "crop": 112},
         {"n": 80, "n_val": 4, "size": 160}),
    Case("classify", "googlenet", {"batch_size": 16, "image_size": 96},
         {"per_class": 160, "classes": 3, "size": 128}),
    Case("generate", "dcgan", {"batch_size": 16}, {"n": 427, "size": 128}),
    Case("autoencode", "ae", {"batch_size": 32}, {"n": 853, "size": 96}),
]


# -- the bare loops ----------------------------------------------------------------------------

Step = Callable[[Any], dict[str, torch.Tensor]]


def bare_loop(case: Case, hp: Any, arch_kwargs: dict[str, Any]) -> Step:
    """A fresh model + optimizer with the trainer's init (same seed, same kwargs) and a step
    function doing the trainer's loss and update with nothing else around it."""
    seed_everything(hp.seed)  # the trainer seeds just before building its model
    model = create_model(case.arch, **arch_kwargs).to(CPU).train()
    if case.task == "cartoonize":
        assert hp.freeze_encoder_up_to == 0 and not hp.mixed_precision
        gen = model.generator
        opt = torch.optim.Adam(gen.parameters(), lr=hp.lr)

        def step(batch: Any) -> dict[str, torch.Tensor]:
            photo, cartoon = batch
            out = guided_filter(photo, gen(photo), model.r, model.eps)
            loss = ((out - cartoon).abs().mean()
                    + hp.ssim_weight * (1.0 - ssim(out, cartoon, data_range=2.0)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss}

    elif case.task == "matte":
        opt = torch.optim.Adam(model.parameters(), lr=hp.lr, betas=hp.betas, eps=hp.eps,
                               weight_decay=hp.weight_decay)

        def step(batch: Any) -> dict[str, torch.Tensor]:
            image, mask = batch
            loss = multi_bce(model(image), mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss}

    elif case.task == "classify":
        # Weighted sampler (the default): the class balance is in the batch keys, not the loss.
        assert hp.freeze_layers == 0 and hp.class_balance == "weighted_sampler"
        assert hp.optimizer == "sgd"
        opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum,
                              weight_decay=hp.weight_decay)

        def step(batch: Any) -> dict[str, torch.Tensor]:
            x, y = batch
            loss = functional.cross_entropy(model(x), y, label_smoothing=hp.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss}

    elif case.task == "generate":
        assert hp.d_every == 1 and hp.g_every == 1
        netg, netd = model.netg, model.netd
        opt_g = torch.optim.Adam(netg.parameters(), hp.lr_g, betas=(hp.beta1, hp.beta2))
        opt_d = torch.optim.Adam(netd.parameters(), hp.lr_d, betas=(hp.beta1, hp.beta2))

        def bce(p: torch.Tensor, target: float) -> torch.Tensor:
            return functional.binary_cross_entropy(p, torch.full_like(p, target))

        def step(real: Any) -> dict[str, torch.Tensor]:
            z = torch.randn(len(real), hp.nz, 1, 1)
            fake = netg(z).detach()
            loss_d = bce(netd(real), 1.0) + bce(netd(fake), 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = bce(netd(netg(z)), 1.0)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            return {"loss_d": loss_d, "loss_g": loss_g}

    elif case.task == "autoencode":
        opt = torch.optim.Adam(model.parameters(), lr=hp.lr)

        def step(x: Any) -> dict[str, torch.Tensor]:
            _, recon = model(x)
            loss = (functional.mse_loss(recon, x)
                    + hp.ssim_weight * (1.0 - ssim(recon, x, data_range=1.0)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss}

    else:
        raise ValueError(case.task)
    return step


# -- timing ------------------------------------------------------------------------------------


@dataclass
class Run:
    stamps: list[float]  # perf_counter at the end of each step
    first: dict[str, float]  # the first step's losses
    end_s: float = 0.0  # trainer only: last step -> "epoch" event (validation, checkpoint...)


def img_per_s(run: Run, sizes: list[int], warmup: int) -> float:
    return sum(sizes[warmup:]) / (run.stamps[-1] - run.stamps[warmup - 1])


def img_per_s_with_end(run: Run, sizes: list[int], warmup: int) -> float:
    return sum(sizes[warmup:]) / (run.stamps[-1] - run.stamps[warmup - 1] + run.end_s)


def time_bare(step: Step, batches: Iterable[Any]) -> Run:
    stamps: list[float] = []
    first: dict[str, float] = {}
    for batch in batches:
        losses = step(batch)
        stamps.append(time.perf_counter())
        if not first:  # outside the timed window (step 0 is always warm-up)
            first = {k: v.detach().item() for k, v in losses.items()}
    return Run(stamps, first)


def time_trainer(cls: type[Trainer], data: Path, hp: Any, arch: str) -> Run:
    stamps: list[float] = []
    first: dict[str, float] = {}
    epoch_at: list[float] = []

    def on_progress(event: ProgressEvent) -> None:
        now = time.perf_counter()
        if event.kind == "step":
            stamps.append(now)
            if not first:
                first.update(event.losses)
        else:
            epoch_at.append(now)

    with tempfile.TemporaryDirectory() as work:  # fresh: no checkpoint.pt to resume from
        ctx = TrainContext(dataset_dir=data, work_dir=Path(work), hyperparameters=hp,
                           arch=arch, device=CPU, on_progress=on_progress)
        result = cls.train(ctx)
    assert result.epochs_completed == 1 and not result.cancelled
    return Run(stamps, first, epoch_at[0] - stamps[-1])


def same_losses(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])) for k in b)


def input_side(batch: Any) -> int:
    return int((batch[0] if isinstance(batch, list | tuple) else batch).shape[-1])


def bench_case(case: Case, root: Path, repeats: int, warmup: int) -> dict[str, Any]:
    cls = get_trainer(case.task)
    data = make_dataset(case.task, root / case.task, seed=0, **case.data)
    hp = cls.hyperparams(epochs=1, **case.hp)
    # The trainer's own objects, built once: its epoch-0 batch keys and its train Dataset.
    probe = cls(TrainContext(dataset_dir=data, work_dir=root / "probe", hyperparameters=hp,
                             arch=case.arch, device=CPU))
    probe.setup()
    keys = probe._epoch_batches(0)
    sizes = [len(b) for b in keys]
    arch_kwargs, train_set = probe.arch_kwargs(), probe.train_set
    if len(keys) <= warmup + 1:
        raise ValueError(f"{case.task}: {len(keys)} steps, need more than warmup={warmup}")

    def loader() -> DataLoader:  # exactly the trainer's epoch loader
        return DataLoader(train_set, batch_sampler=keys, num_workers=hp.num_workers,
                          generator=torch.Generator().manual_seed(hp.seed))

    in_memory = list(loader())
    del probe
    runs: dict[str, list[Run]] = {"trainer": [], "bare": [], "bare_loader": []}
    for _ in range(repeats):
        runs["trainer"].append(time_trainer(cls, data, hp, case.arch))
        runs["bare"].append(time_bare(bare_loop(case, hp, arch_kwargs), in_memory))
        runs["bare_loader"].append(time_bare(bare_loop(case, hp, arch_kwargs), loader()))

    def med(name: str, fn: Callable[[Run, list[int], int], float] = img_per_s) -> float:
        return statistics.median(fn(r, sizes, warmup) for r in runs[name])

    trainer, bare, bare_loader = med("trainer"), med("bare"), med("bare_loader")
    first = runs["trainer"][0].first
    return {
        "task": case.task, "arch": case.arch, "batch": hp.batch_size,
        "image_size": input_side(in_memory[0]), "train_images": sum(sizes),
        "steps": len(sizes), "timed_steps": len(sizes) - warmup,
        "hyperparameters": case.hp, "dataset": case.data,
        "trainer_img_s": trainer, "bare_img_s": bare, "bare_loader_img_s": bare_loader,
        "ratio": trainer / bare, "ratio_vs_loader": trainer / bare_loader,
        "trainer_with_end_img_s": med("trainer", img_per_s_with_end),
        "epoch_end_s": statistics.median(r.end_s for r in runs["trainer"]),
        "same_first_loss": all(same_losses(first, r.first)
                               for r in runs["bare"] + runs["bare_loader"]),
        "first_loss": {"trainer": first, "bare": runs["bare"][0].first},
        "repeats_img_s": {k: [img_per_s(r, sizes, warmup) for r in v] for k, v in runs.items()},
    }


COLUMNS = [("task", "task", "{}"), ("arch", "arch", "{}"), ("batch", "batch", "{}"),
           ("size", "image_size", "{}"), ("steps", "timed_steps", "{}"),
           ("trainer img/s", "trainer_img_s", "{:.1f}"), ("bare img/s", "bare_img_s", "{:.1f}"),
           ("ratio", "ratio", "{:.2f}x"),
           ("bare+loader img/s", "bare_loader_img_s", "{:.1f}"),
           ("vs loader", "ratio_vs_loader", "{:.2f}x"),
           ("trainer+end img/s", "trainer_with_end_img_s", "{:.1f}"),
           ("end s", "epoch_end_s", "{:.2f}"), ("same", "same_first_loss", "{}")]


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[fmt.format(r[key]) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(COLUMNS)]
    lines = ["  ".join(h.rjust(w) for (h, _, _), w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def bench_devices(root: Path, devices: list[int], epochs: int, repeats: int) -> dict[str, Any]:
    """Images/s of the autoencode trainer on 1 process vs N gloo ranks (module docstring)."""
    case = next(c for c in CASES if c.task == "autoencode")
    cls = get_trainer(case.task)
    data = make_dataset(case.task, root / case.task, seed=0, **case.data)
    rows = []
    for n in devices:
        hp = cls.hyperparams(epochs=epochs, devices=n, **case.hp)
        walls, phases, images = [], [], 0
        for _ in range(repeats):
            stamps: list[tuple[float, int]] = []

            def on_progress(event: ProgressEvent, stamps: list[tuple[float, int]] = stamps
                            ) -> None:
                if event.kind == "step":
                    stamps.append((time.perf_counter(), event.step))

            with tempfile.TemporaryDirectory() as work:
                ctx = TrainContext(dataset_dir=data, work_dir=Path(work), hyperparameters=hp,
                                   arch=case.arch, device=CPU, on_progress=on_progress)
                start = time.perf_counter()
                result = cls.train(ctx) if n == 1 else distributed.launch(cls, ctx, n)
                walls.append(time.perf_counter() - start)
            assert result.epochs_completed == epochs
            if not images:  # the training images of all epochs (the loop's own batches)
                probe = cls(ctx)
                probe.setup()
                images = epochs * sum(len(b) for b in probe._epoch_batches(0))
            (t0, s0), (t1, s1) = stamps[0], stamps[-1]
            phases.append((s1 - s0) * hp.batch_size / (t1 - t0))
        rows.append({"devices": n, "backend": "in-process" if n == 1 else "gloo",
                     "threads_per_process": THREADS if n == 1 else max(1, THREADS // n),
                     "images": images, "wall_s": statistics.median(walls),
                     "img_s_whole_call": images / statistics.median(walls),
                     "img_s_steps": statistics.median(phases)})
    return {"task": case.task, "arch": case.arch, "batch": case.hp["batch_size"],
            "dataset": case.data, "epochs": epochs, "repeats": repeats, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (>= 1)")
    parser.add_argument("--tasks", default=",".join(c.task for c in CASES))
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    parser.add_argument("--devices", default="",
                        help="comma list (e.g. 1,2): the multi-device section instead")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the --devices runs")
    args = parser.parse_args()
    if args.devices:
        torch.set_num_threads(THREADS)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            out = bench_devices(Path(tmp), [int(d) for d in args.devices.split(",")],
                                args.epochs, args.repeats)
        out["load_average_1min_before"] = load
        print(f"autoencode, {out['epochs']} epochs, batch {out['batch']} (global), CPU,"
              f" median of {args.repeats}; 1-min load average {load:.1f} before")
        print("devices  backend     threads/proc  wall s  img/s (whole call)  img/s (steps)")
        for r in out["rows"]:
            print(f"{r['devices']:>7}  {r['backend']:<10}  {r['threads_per_process']:>12}"
                  f"  {r['wall_s']:>6.1f}  {r['img_s_whole_call']:>18.1f}"
                  f"  {r['img_s_steps']:>13.1f}")
        path = RESULTS / "training_devices.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        return 0
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1")
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    wanted = args.tasks.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if case.task not in wanted:
                continue
            start = time.perf_counter()
            rows.append(bench_case(case, Path(tmp), args.repeats, args.warmup))
            print(f"[{case.task}: {time.perf_counter() - start:.0f} s]", file=sys.stderr,
                  flush=True)
    load_after = os.getloadavg()
    print(f"training throughput, CPU, {THREADS} threads, median of {args.repeats} repeats,"
          f" first {args.warmup} steps of each epoch untimed; 1-min load average"
          f" {load_before[0]:.1f} before, {load_after[0]:.1f} after (others' load skews it)")
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": f"{platform.machine()}, {THREADS} threads", "torch": torch.__version__,
        "repeats": args.repeats, "warmup_steps": args.warmup,
        "load_average_1min": {"before": load_before[0], "after": load_after[0]}, "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
