"""INT8 pass rate per family: several differently trained small models per family, each
quantized and gated at publish exactly as the worker does, with the single method that was
used before (MinMax) and with the candidate search (worker/training/int8_methods.py), side
by side in one run.

The models (per family with an INT8 gate; small nets and few epochs so the whole run fits
in ~20-30 minutes on two shared cores):

- ``syn-a`` / ``syn-b`` (/ ``syn-c``): trained by the family's own trainer on its synthetic
  dataset (tasks/synthetic.py) drawn with different seeds and sizes;
- ``photos``: trained on crops of scikit-image's real photos, the datasets the served-quality
  test builds (tests/quality/test_served_quality.py): matte (cat fur pasted on photos),
  classify (which photo), cartoonize (a flat-colour cartoon function), autoencode (crops;
  generate trains on the same crops);
- ``starter-s0`` / ``-s1`` / ``-s2``: the family's starter recipe (``TaskSpec.starter``: the
  architecture, dataset sizes and hyper-parameters the worker trains on a first start, the
  recipe made to pass the activation gate) on its synthetic data drawn with three seeds:
  three fine-tunes per family that do their task, where the small ones above may not;
  ``--epochs-factor 0.25`` trains the same recipe and data for a quarter of the epochs
  (``starter-x0.25-s0`` ...: the matte and classify starters before they were made to
  train four times as long, models that only just beat their trivial predictor);
- ``import``: a checkpoint in the official layout with random tensors, imported through the
  real import path, as the tests make one (tests/support/checkpoints.py); no weights can be
  downloaded here, so this model does no task and is listed apart.

A trained model goes through ``publish_version`` without a variant, then its version folder
is copied once per mode and ``build_int8_variant`` runs on each copy with the dataset the
model was trained on (an import: the shipped photos), as a fine-tune's or an import's
publish does. The gate is each family's ``TaskSpec.int8_gate``, unchanged.

fp32 quality: the family's gate metric on the model's validation split, beside the trivial
predictor's (``Trainer.trivial_metric``: all-background mask, majority class, identity,
mean image...). "does its task" means the model beats the trivial predictor by the family's
own activation margin (``Trainer.gate_margin``), which is what the fine-tune gate itself
asks before a version may go live; generate's trivial predictor is not comparable (KID of
the training images), so generate's models are listed without that judgement.

    nice -n 5 .venv/bin/python bench/int8_passrate.py                 # all families
    nice -n 5 .venv/bin/python bench/int8_passrate.py --families matte classify
    nice -n 5 .venv/bin/python bench/int8_passrate.py --modes minmax search  # apart

Results (one row per model and mode) also go to ``bench/results/int8_passrate.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]
os.environ["TOONFORGE_INT8_VARIANTS"] = "0"  # the bench builds the variants itself

import torch  # noqa: E402

from model_store.manifest import Lineage, Manifest  # noqa: E402
from model_store.store import ModelStore  # noqa: E402
from tasks import get_task, list_tasks  # noqa: E402
from tasks.synthetic import make_dataset  # noqa: E402
from worker.training.publish import publish_version  # noqa: E402
from worker.training.quantize import (  # noqa: E402
    CANDIDATES,
    MINMAX,
    Attempt,
    build_int8_variant,
)
from worker.training.trainers import TrainContext, get_trainer  # noqa: E402

MODES = {"minmax": (MINMAX,), "search": CANDIDATES}


@dataclass
class Case:
    family: str
    name: str
    arch: str
    hp: dict[str, Any]
    data: Callable[[Path], Path] | None  # writes the dataset, returns its folder
    note: str = ""


@dataclass
class Row:
    family: str
    model: str
    note: str
    gate_metric: str
    fp32: float | None
    trivial: float | None
    does_task: bool | None
    train_s: float
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)


# ------------------------------------------------------------------ datasets
def _synthetic(task: str, seed: int, **sizes: int) -> Callable[[Path], Path]:
    return lambda root: make_dataset(task, root, seed=seed, **sizes)


def _photos(task: str) -> Callable[[Path], Path]:
    """The served-quality test's real-photo upload for ``task``, unzipped (generate trains
    on the autoencoder's photo crops: it takes a folder of images too)."""

    def build(root: Path) -> Path:
        from tests.quality import test_served_quality as quality

        maker = {"matte": quality.matte_dataset, "classify": quality.classify_dataset,
                 "cartoonize": quality.cartoonize_dataset,
                 "autoencode": quality.autoencode_dataset,
                 "generate": quality.autoencode_dataset}[task]
        upload: bytes = maker()[0]  # type: ignore[assignment]  # test helpers untyped
        with zipfile.ZipFile(io.BytesIO(upload)) as archive:
            archive.extractall(root)
        return root

    return build


def cases(epochs_factor: float = 1.0) -> list[Case]:
    m = {"batch_size": 8, "lr": 2e-3, "resize": 48, "crop": 40}
    c = {"batch_size": 16, "lr": 1e-3, "optimizer": "adam", "image_size": 48}
    t = {"batch_size": 8, "lr": 1e-3, "image_size": 48, "color_jitter": 0.0,
         "lr_step_epochs": 100, "save_every": 100, "early_stop_patience": None}
    a = {"batch_size": 16, "lr": 3e-3, "early_stop_patience": None}
    g = {"batch_size": 16, "num_samples": 16}
    p = {"batch_size": 4, "lr": 2e-3, "size": 48}
    official = "random weights, official layout"
    return [
        Case("matte", "syn-a", "u2netp", {**m, "epochs": 5},
             _synthetic("matte", 0, n=24, size=64, n_val=8)),
        Case("matte", "photos", "u2netp", {**m, "epochs": 5, "resize": 64, "crop": 56},
             _photos("matte")),
        Case("matte", "import", "u2netp", {}, None, official),
        Case("classify", "syn-a", "googlenet", {**c, "epochs": 5},
             _synthetic("classify", 0, per_class=20, classes=3, size=64)),
        Case("classify", "syn-b", "googlenet", {**c, "epochs": 5, "image_size": 56},
             _synthetic("classify", 1, per_class=16, classes=5, size=80)),
        Case("classify", "photos", "googlenet", {**c, "epochs": 5}, _photos("classify")),
        Case("classify", "import", "googlenet", {}, None, official),
        Case("cartoonize", "syn-a", "dctnet", {**t, "epochs": 5},
             _synthetic("cartoonize", 0, n=16, size=64, n_val=6)),
        Case("cartoonize", "photos", "dctnet", {**t, "epochs": 5}, _photos("cartoonize")),
        Case("cartoonize", "import", "dctnet", {}, None, official),
        Case("autoencode", "syn-a", "ae", {**a, "epochs": 12, "latent_dim": 32},
             _synthetic("autoencode", 0, n=32)),
        Case("autoencode", "photos", "ae", {**a, "epochs": 4, "latent_dim": 64},
             _photos("autoencode")),
        Case("autoencode", "import", "ae", {}, None, "random weights, toonforge layout"),
        Case("generate", "syn-a", "dcgan", {**g, "epochs": 2, "ngf": 16, "ndf": 16},
             _synthetic("generate", 0, n=32)),
        Case("generate", "syn-b", "dcgan", {**g, "epochs": 2, "ngf": 24, "ndf": 16},
             _synthetic("generate", 1, n=48)),
        Case("generate", "import", "dcgan", {}, None, official),
        Case("portrait", "syn-a", "u2netp", {**p, "epochs": 3},
             _synthetic("portrait", 0, n=12, size=64, n_val=4)),
        Case("portrait", "syn-b", "u2netp", {**p, "epochs": 3, "size": 56},
             _synthetic("portrait", 1, n=16, size=96, n_val=4)),
        *starter_cases(epochs_factor=epochs_factor),
    ]


def starter_cases(seeds: tuple[int, ...] = (0, 1, 2), epochs_factor: float = 1.0
                  ) -> list[Case]:
    """Each family's starter recipe on its synthetic data drawn with ``seeds``; with
    ``epochs_factor`` other than 1 (``--epochs-factor``), the same data and recipe trained for
    that many times the epochs (``starter-x0.25-s0``, ...)."""
    out = []
    tag = "starter" if epochs_factor == 1 else f"starter-x{epochs_factor:g}"
    for family in list_tasks():
        spec = get_task(family)
        recipe = spec.starter
        if recipe is None or spec.int8_gate is None:
            continue
        for seed in seeds:
            hp = dict(recipe.hyperparameters)
            if epochs_factor != 1:
                hp["epochs"] = max(1, round(int(hp.get("epochs", 10)) * epochs_factor))
            out.append(Case(family, f"{tag}-s{seed}", recipe.arch, hp,
                            _synthetic(family, seed, **dict(recipe.dataset)),
                            "starter recipe" if epochs_factor == 1
                            else f"starter recipe, {epochs_factor:g}x the epochs"))
    return out


# ------------------------------------------------------------------ one model
def train_and_publish(case: Case, store: ModelStore, work: Path
                      ) -> tuple[Manifest, Path | None, Row]:
    spec = get_task(case.family)
    rule = spec.gate
    metric = rule.metric if rule is not None else ""
    started = time.perf_counter()
    if case.data is None:
        manifest = _import(case, store, work)
        row = Row(case.family, case.name, case.note, metric, None, None, None,
                  time.perf_counter() - started)
        return manifest, None, row
    data = case.data(work / "data")
    trainer = get_trainer(case.family)
    hp = trainer.hyperparams.model_validate(case.hp)
    result = trainer.train(TrainContext(dataset_dir=data, work_dir=work / "train",
                                        hyperparameters=hp, arch=case.arch,
                                        device=torch.device("cpu")))
    train_s = time.perf_counter() - started
    fp32 = result.metrics.get(metric)
    trivial = trainer.trivial_metric(data, hp, labels=result.labels)
    does = None
    if fp32 is not None and trivial is not None and rule is not None \
            and case.family != "generate":
        margin = trainer.gate_margin
        does = fp32 <= trivial - margin if rule.direction == "min" else fp32 >= trivial + margin
        does = bool(does) and fp32 != trivial
    manifest = publish_version(
        store, model_name=f"{case.family}-{case.name}", arch_name=case.arch,
        task=case.family, module=result.module, arch_kwargs=result.arch_kwargs,
        labels=result.labels, artifacts=result.artifacts, metrics=result.metrics,
        lineage=Lineage(source="finetune"), hyperparameters=hp, int8=False)
    row = Row(case.family, case.name, case.note, metric, fp32, trivial, does, train_s)
    return manifest, data, row


def _import(case: Case, store: ModelStore, work: Path) -> Manifest:
    from tests.support.checkpoints import make_official_checkpoint
    from tests.support.store import make_autoencoder_weights
    from worker.importer import import_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    if case.arch == "ae":
        parts = {"": make_autoencoder_weights(work / "ae.pt", seed=0)}
    else:
        parts = make_official_checkpoint(case.arch, work / case.arch, seed=0)
    return import_checkpoint(store, task=case.family, arch=case.arch, parts=parts,
                             model=f"{case.family}-import")


def variant(store: ModelStore, manifest: Manifest, data: Path | None, mode: str,
            scratch: Path) -> dict[str, Any]:
    """``build_int8_variant`` on a copy of the version folder, with ``mode``'s methods."""
    copy = scratch / f"{manifest.model}-{mode}"
    shutil.copytree(store.version_dir(manifest.model, manifest.version), copy)
    attempts: list[Attempt] = []
    record = build_int8_variant(copy, manifest.task, manifest.graphs, manifest.preprocessing,
                                dataset_dir=data, methods=MODES[mode], attempts=attempts)
    shutil.rmtree(copy)
    assert record is not None
    kept = attempts[-1] if record.passed else None
    return {
        "passed": record.passed, "method": kept.method.name if kept else "",
        "fidelity": record.fidelity, "speedup": record.speedup, "seconds": record.seconds,
        "reason": record.reason,
        "attempts": [{"method": a.method.name, "figures": a.figures, "missed": a.missed,
                      "error": a.error, "seconds": a.seconds,
                      # the time to its verdict from the variant's start (setup included)
                      "seconds_total": sum(b.seconds for b in attempts[:i + 1])
                      + (record.seconds - sum(b.seconds for b in attempts)),
                      "speedup": a.speed[0] / a.speed[1] if a.speed and a.speed[1] else None,
                      "float_layers": a.float_layers} for i, a in enumerate(attempts)],
    }


def first_attempt(search: dict[str, Any]) -> dict[str, Any]:
    """The old single method's verdict, from the search's first attempt (the same MinMax
    graph the old code made, judged by the same gate on the same inputs)."""
    first = search["attempts"][0]
    return {"passed": not first["missed"] and not first["error"], "method": first["method"],
            "fidelity": first["figures"], "speedup": first["speedup"],
            "seconds": first["seconds_total"], "reason": "; ".join(first["missed"]),
            "attempts": [first]}


# ------------------------------------------------------------------ the table
def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def _figures(fidelity: dict[str, float]) -> str:
    parts = []
    for key, value in fidelity.items():
        metric = key.split(".", 1)[1]
        shown = f"{value * 255:.2f}/255" if metric in ("mask_mae", "pixel_mae") else \
            f"{value:.4g}"
        parts.append(f"{key} {shown}")
    return ", ".join(parts)


def table(rows: list[Row], modes: list[str]) -> str:
    head = ["family", "model", "fp32 gate metric (trivial)", "does its task"]
    for mode in modes:
        head += [f"{mode}: INT8", f"{mode}: figures vs fp32", f"{mode}: speed-up",
                 f"{mode}: s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        quality = "-" if r.fp32 is None else f"{r.gate_metric} {_num(r.fp32)} ({_num(r.trivial)})"
        does = {True: "yes", False: "no", None: "n/a"}[r.does_task]
        cells = [r.family, r.model + (f" ({r.note})" if r.note else ""), quality, does]
        for mode in modes:
            v = r.modes.get(mode)
            if v is None:
                cells += ["-"] * 4
                continue
            verdict = ("kept" + (f" ({v['method']})" if mode != "minmax" else "")
                       if v["passed"] else "**refused**")
            cells += [verdict, _figures(v["fidelity"]) or v["reason"][:80],
                      f"{v['speedup']:.2f}x" if v["speedup"] else "-", f"{v['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row], modes: list[str]) -> str:
    lines = ["| family | " + " | ".join(f"{m}: passed (all)" for m in modes) + " | "
             + " | ".join(f"{m}: passed (does its task)" for m in modes) + " |",
             "|" + "---|" * (1 + 2 * len(modes))]
    families = list(dict.fromkeys(r.family for r in rows))
    for family in [*families, "all"]:
        mine = [r for r in rows if family in ("all", r.family)]
        good = [r for r in mine if r.does_task]
        cells = [family]
        for group in (mine, good):
            for mode in modes:
                done = [r for r in group if mode in r.modes]
                passed = sum(r.modes[mode]["passed"] for r in done)
                cells.append(f"{passed}/{len(done)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", help="default: every family listed")
    parser.add_argument("--models", nargs="*", help="only these model names (syn-a, ...)")
    parser.add_argument("--modes", nargs="*", default=["search"], choices=list(MODES),
                        help="search (default) also reports the old method: its first"
                        " attempt is MinMax exactly as before; 'minmax' runs it apart")
    parser.add_argument("--threads", type=int, default=2, help="torch training threads")
    parser.add_argument("--epochs-factor", type=float, default=1.0,
                        help="the starter cases train this many times their recipe's epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/int8_passrate.json")
    parser.add_argument("--table", type=Path, help="print the tables of a saved run and stop")
    args = parser.parse_args()
    shown = ["minmax", "search"] if "search" in args.modes else args.modes
    if args.table is not None:  # e.g. a run cut short: it saves after every model
        saved = json.loads(args.table.read_text())
        loaded = [Row(**r) for r in saved["rows"]]
        print(table(loaded, shown), summary(loaded, shown), sep="\n\n")
        print(f"\n{len(loaded)} models in {saved['seconds'] / 60:.1f} min; load {saved['load']}")
        return
    torch.set_num_threads(args.threads)
    chosen = [c for c in cases(args.epochs_factor)
              if (not args.families or c.family in args.families)
              and (not args.models or c.name in args.models)]
    # One model of every family first, so a run cut short still covers them all; the
    # imports (random weights: no task to do) last.
    rank = {name: i for i, name in enumerate(["syn-a", "photos", "syn-b", "starter-s0", "import",
                                                  "starter-s1", "starter-s2"])}
    chosen.sort(key=lambda c: rank.get(c.name.replace(f"-x{args.epochs_factor:g}", ""),
                                       len(rank)))
    rows: list[Row] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="int8-passrate-") as tmp:
        root = Path(tmp)
        store = ModelStore(root / "store")
        for case in chosen:
            work = root / f"{case.family}-{case.name}"
            print(f"== {case.family} {case.name}: training", flush=True)
            try:
                manifest, data, row = train_and_publish(case, store, work)
            except Exception as exc:  # report and go on: one broken case is not the table
                print(f"   failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            for mode in args.modes:
                row.modes[mode] = variant(store, manifest, data, mode, root)
                if mode == "search" and "minmax" not in args.modes:
                    row.modes["minmax"] = first_attempt(row.modes["search"])
                v = row.modes[mode]
                print(f"   {mode}: {'kept' if v['passed'] else 'refused'}"
                      f" {v['method']} {v['reason'][:300]} ({v['seconds']:.1f}s)", flush=True)
            rows.append(row)
            shutil.rmtree(work, ignore_errors=True)
            _save(args.out, rows, time.perf_counter() - started, load_before)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print()
    print(table(rows, shown))
    print()
    print(summary(rows, shown))
    print(f"\n{len(rows)} models in {elapsed / 60:.1f} min; load average before"
          f" {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, after"
          f" {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f};"
          f" {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    _save(args.out, rows, elapsed, load_before, load_after)


def _save(out: Path, rows: list[Row], seconds: float, *load: tuple[float, float, float]
          ) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": [asdict(r) for r in rows], "seconds": seconds,
                               "load": load}, indent=1))


if __name__ == "__main__":
    main()
