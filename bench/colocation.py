"""Serving beside training: the worker's CPU budget before and after, side by side in one run.

Usage:  nice -n 5 .venv/bin/python bench/colocation.py [--seconds 20] [--epochs 3] [--hogs 3]

Two configurations of the training process, interleaved in the same run:

* **before**: what the worker did before it had a CPU budget: torch's default threads (every
  core), OpenMP's default wait (its threads spin for a while after each parallel region),
  the niceness it was started with (the API's).
* **after**: the worker's defaults (core/settings.py, docs/DEPLOY.md "CPU budgets"): the
  budget is claimed by ``worker.runtime.claim_cpu_budget`` and ``apply_torch_threads``, the
  functions ``python -m worker`` runs: ``train_threads`` unset (the cores less the API's
  ``ort_intra_op_threads``, at least one), ``OMP_WAIT_POLICY=PASSIVE``, niceness
  ``train_nice`` (10) above the API's. The bench itself runs under ``nice -n 5`` (this
  machine's rule), so the API is at 5 and "after" trains at min(19, 5 + 10): the same gap
  as an API at 0 and a worker at 10.

The training process is the real matte trainer (u2netp, synthetic mattes, ``--resize`` px,
batch 4) in a child process started for each measurement, with nothing else changed.

(a) **/matte beside a fine-tune**: the real API (``python -m uvicorn service.app:app``, its
defaults: 2 onnxruntime threads per run, no spinning, batching on) serving a u2netp (random
weights, fp32) to 8 clients sending a 512x512 JPEG back to back for ``--seconds``; once
alone, then with a training child running on the same cores (started before the window,
measured after its first step). Per configuration: p50, p99 and requests/s alone and beside
training, and the ratios (target: p99 beside training <= 2x alone), and how fast training
went meanwhile (steps/s).

(b) **a fine-tune beside a CPU hog**: the training child for ``--epochs`` epochs alone, then
again beside ``--hogs`` busy-loop processes. Here both configurations train at the bench's
niceness, and so do the hogs: "after" is its threads and passive wait only. Its niceness
would lower training's share below a fair one on purpose (it yields to everything at the
default priority, the API and those hogs included), so it has no place in a fair-share
test; a fair share is between equals. Epoch time = the
median of the times between consecutive epoch-end events (so the first epoch, with the
set-up, is left out; validation, samples and checkpoints are in). The fair share: with C
usable cores, T training threads and H hogs of equal niceness, every one of the T + H
runnable threads gets C / (T + H) of a core when T + H > C, so the team gets T·C / (T + H)
cores where alone it had min(T, C): the fair slowdown is (T + H)·min(T, C) / (T·C), for
T <= C simply (T + H) / C. Printed: the slowdown measured, the fair one, and their ratio
(target <= 1.5x).

Other processes on the machine (its load average is printed before and after) count as
hogs nobody accounts for: numbers from a loaded machine swing, and only an idle one gives
the figures to quote. Ratios only: nothing here passes or fails.
Writes bench/results/colocation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings, usable_cores  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CONFIGS = ("before", "after")
TRAIN_NICE_GAP = Settings.model_fields["train_nice"].default  # the worker's above the API's


# ------------------------------------------------------------------ the training child
def train_child(args: argparse.Namespace) -> int:
    """Runs in its own process: claim the configuration's budget, then train and print one
    JSON line per progress event (and one when training starts)."""
    if args.train_child == "after":
        from worker.runtime import apply_torch_threads, claim_cpu_budget

        gap = 0 if args.same_nice else TRAIN_NICE_GAP
        settings = Settings(_env_file=None, store_url=None,
                            train_nice=min(19, os.nice(0) + gap))
        claim_cpu_budget(settings)  # before torch loads, as the worker does
        apply_torch_threads(settings)
    import torch

    from families.matte.spec import MatteHyperparameters
    from worker.training.trainers import ProgressEvent, TrainContext, get_trainer

    torch.manual_seed(0)

    def emit(**fields: Any) -> None:
        print(json.dumps({"t": time.monotonic(), **fields}), flush=True)

    emit(kind="start", threads=torch.get_num_threads(), nice=os.nice(0),
         wait=os.environ.get("OMP_WAIT_POLICY", ""))

    def progress(event: ProgressEvent) -> None:
        emit(kind=event.kind, epoch=event.epoch, step=event.step)

    hp = MatteHyperparameters(epochs=args.epochs, resize=args.resize, crop=args.resize * 7 // 8,
                              batch_size=4)
    get_trainer("matte").train(TrainContext(
        dataset_dir=Path(args.data), work_dir=Path(args.work), hyperparameters=hp,
        arch="u2netp", device=torch.device("cpu"), on_progress=progress))
    return 0


@dataclass
class Training:
    """A training child and the events it printed (child's monotonic clock = ours)."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, config: str, data: Path, work: Path, epochs: int, resize: int,
              same_nice: bool = False) -> Training:
        # What the old worker saw: no OpenMP or toonforge thread settings in its environment.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OMP_", "GOMP_", "TOONFORGE_"))}
        env["PYTHONPATH"] = str(ROOT)
        shutil.rmtree(work, ignore_errors=True)  # a checkpoint left there would be resumed
        proc = subprocess.Popen(
            [sys.executable, __file__, "--train-child", config, "--data", str(data),
             "--work", str(work), "--epochs", str(epochs), "--resize", str(resize),
             *(["--same-nice"] if same_nice else [])],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        training = cls(proc)
        threading.Thread(target=training._read, daemon=True).start()
        return training

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, kind: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e["kind"] == kind]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise RuntimeError(f"the training child exited ({self.proc.returncode})")
            time.sleep(0.1)
        raise RuntimeError(f"no {kind!r} event from the training child in {timeout}s")

    @property
    def start_info(self) -> dict[str, Any]:
        return next(e for e in self.events if e["kind"] == "start")

    def steps_between(self, start: float, end: float) -> int:
        return sum(1 for e in self.events if e["kind"] == "step" and start <= e["t"] <= end)

    def epoch_seconds(self) -> list[float]:
        ends = [e["t"] for e in self.events if e["kind"] == "epoch"]
        return [b - a for a, b in zip(ends, ends[1:], strict=False)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_hogs(count: int, nice: int) -> list[subprocess.Popen[bytes]]:
    code = f"import os; os.setpriority(os.PRIO_PROCESS, 0, {nice})\nwhile True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


# ------------------------------------------------------------------ set-up
def build(root: Path) -> tuple[Path, Path]:
    """The store the API serves (one u2netp, fp32) and the synthetic matte dataset."""
    import torch

    from bench.serving import local_store
    from model_store.errors import DatasetNotFound
    from model_store.factory import open_dataset_store
    from model_store.manifest import Lineage
    from worker.nets.registry import create_model
    from worker.starter import publish_synthetic_dataset
    from worker.training.publish import publish_version

    store = local_store(root)
    if "matte" not in store.model_names():
        torch.manual_seed(0)
        publish_version(store, model_name="matte", arch_name="u2netp",
                        module=create_model("u2netp").eval(), labels=None,
                        lineage=Lineage(source="scratch"), int8=False, activate=True)
    datasets = open_dataset_store(Settings(_env_file=None, store_dir=root, store_url=None))
    try:
        data = datasets.data_dir("colocation-mattes")
    except DatasetNotFound:
        data = publish_synthetic_dataset(datasets, "matte", "colocation-mattes", n=32)
    return root, data


def stats(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "rps": len(ordered) / seconds,
            "p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000}


# ------------------------------------------------------------------ (a) and (b)
def serving_beside_training(store: Path, data: Path, seconds: float, resize: int,
                            rounds: int) -> list[dict[str, Any]]:
    from bench.peers import load, photo_jpeg
    from tests.support.server import ApiServer

    photo = photo_jpeg()

    def send(http: Any) -> Any:
        return http.post(f"{server.url}/matte", content=photo,
                         headers={"content-type": "image/jpeg"})

    server = ApiServer(store, RESULTS / "colocation-api.log", {"TOONFORGE_STORE_URL": ""},
                       wait_path="/readyz")
    rows = []
    try:
        load(send, 8, 3.0)  # warm-up
        for round_ in range(rounds):
            for config in CONFIGS:
                alone = stats(load(send, 8, seconds), seconds)
                training = Training.start(config, data, RESULTS / f"colocation-work-{config}",
                                          1000, resize)
                try:
                    training.wait_for("step")
                    started = time.monotonic()
                    beside = stats(load(send, 8, seconds), seconds)
                    steps = training.steps_between(started, time.monotonic())
                    info = training.start_info
                finally:
                    training.stop()
                row = {"round": round_ + 1, "config": config, "threads": info["threads"],
                       "nice": info["nice"], "wait": info["wait"] or "default",
                       "alone": alone, "beside": beside, "train_steps_s": steps / seconds,
                       "p99_ratio": beside["p99_ms"] / alone["p99_ms"],
                       "rps_ratio": beside["rps"] / alone["rps"]}
                rows.append(row)
                print(f"  (a) {config} round {round_ + 1}: p99 {alone['p99_ms']:.0f} ->"
                      f" {beside['p99_ms']:.0f} ms, {alone['rps']:.2f} -> {beside['rps']:.2f}"
                      f" req/s, training {steps / seconds:.2f} steps/s", flush=True)
    finally:
        server.stop()
    return rows


def training_beside_hogs(data: Path, epochs: int, hogs: int, resize: int
                         ) -> list[dict[str, Any]]:
    cores = usable_cores()
    rows = []
    for config in CONFIGS:
        runs = {}
        for mode in ("alone", "hogs"):
            hog_procs: list[subprocess.Popen[bytes]] = []
            if mode == "hogs":
                hog_procs = start_hogs(hogs, os.nice(0))
            training = Training.start(config, data, RESULTS / f"colocation-hog-{config}-{mode}",
                                      epochs, resize, same_nice=True)
            try:
                training.proc.wait(timeout=3600)
            finally:
                training.stop()
                stop_all(hog_procs)
            if training.proc.returncode != 0:
                raise RuntimeError(f"training ({config}, {mode}) exited"
                                   f" {training.proc.returncode}")
            runs[mode] = (statistics.median(training.epoch_seconds()), training.start_info)
            print(f"  (b) {config} {mode}: {runs[mode][0]:.1f} s/epoch"
                  f" ({training.epoch_seconds()})", flush=True)
        threads = runs["alone"][1]["threads"]
        fair = (threads + hogs) * min(threads, cores) / (threads * cores)
        slowdown = runs["hogs"][0] / runs["alone"][0]
        rows.append({"config": config, "threads": threads, "nice": runs["alone"][1]["nice"],
                     "wait": runs["alone"][1]["wait"] or "default", "hogs": hogs,
                     "cores": cores, "alone_s": runs["alone"][0], "hogs_s": runs["hogs"][0],
                     "slowdown": slowdown, "fair": max(1.0, fair),
                     "vs_fair": slowdown / max(1.0, fair)})
    return rows


def print_tables(serving: list[dict[str, Any]], training: list[dict[str, Any]]) -> None:
    print("\n(a) /matte at 8 clients, alone vs beside a fine-tune on the same cores")
    print("config  round  train threads/nice/wait   p50 ms alone/beside   p99 ms alone/beside"
          "   p99 ratio   req/s alone/beside   rps ratio   train steps/s")
    for r in serving:
        a, b = r["alone"], r["beside"]
        print(f"{r['config']:<7} {r['round']:<6} {r['threads']}/{r['nice']}/{r['wait']:<18}"
              f" {a['p50_ms']:>7.0f} / {b['p50_ms']:<8.0f}   {a['p99_ms']:>7.0f} / "
              f"{b['p99_ms']:<8.0f}   {r['p99_ratio']:>6.2f}x    {a['rps']:>6.2f} / "
              f"{b['rps']:<8.2f}   {r['rps_ratio']:>6.2f}x    {r['train_steps_s']:.2f}")
    print("\n(b) a fine-tune beside CPU hogs (training and hogs at the bench's niceness)")
    print("config  threads/nice/wait   hogs  cores  s/epoch alone  s/epoch hogs  slowdown"
          "  fair  vs fair")
    for r in training:
        print(f"{r['config']:<7} {r['threads']}/{r['nice']}/{r['wait']:<14} {r['hogs']:>4}"
              f"  {r['cores']:>5}  {r['alone_s']:>13.1f}  {r['hogs_s']:>12.1f}"
              f"  {r['slowdown']:>7.2f}x {r['fair']:>5.2f}x {r['vs_fair']:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each load window")
    parser.add_argument("--rounds", type=int, default=1, help="(a) rounds, interleaved")
    parser.add_argument("--epochs", type=int, default=3, help="(b) epochs per training run")
    parser.add_argument("--hogs", type=int, default=3, help="(b) busy-loop processes")
    parser.add_argument("--resize", type=int, default=96, help="training image side")
    parser.add_argument("--only", choices=["serving", "training"], default=None)
    parser.add_argument("--train-child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--same-nice", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        return train_child(args)

    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {usable_cores()} usable cores,"
          f" bench at nice {os.nice(0)}; load average {load_before[0]:.2f} {load_before[1]:.2f}"
          f" {load_before[2]:.2f}", flush=True)
    store, data = build(RESULTS / "colocation-store")
    serving = ([] if args.only == "training" else
               serving_beside_training(store, data, args.seconds, args.resize, args.rounds))
    training = ([] if args.only == "serving" else
                training_beside_hogs(data, args.epochs, args.hogs, args.resize))
    print_tables(serving, training)
    load_after = os.getloadavg()
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    (RESULTS / "colocation.json").write_text(json.dumps(
        {"load_before": load_before, "load_after": load_after, "cores": usable_cores(),
         "args": {k: v for k, v in vars(args).items() if not k.startswith(("train", "data",
                                                                            "work"))},
         "serving": serving, "training": training}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
