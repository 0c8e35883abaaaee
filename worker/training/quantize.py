"""INT8 variants: static, per-channel QDQ graphs made with onnxruntime's own tools, kept only
when they stay within the task's fidelity gate of the fp32 graphs.

At publish (import or fine-tune) every graph role of the version is quantized the same way
(``quantize_static``, ``QuantFormat.QDQ``, ``per_channel=True``, uint8 activations and
int8 weights in 7 bits) after onnxruntime's pre-processing (shape inference and graph
optimisation). The calibration inputs are the version's own validation images for a
fine-tune, or the real photos shipped in ``calibration/`` for an import; the gate runs on
held-out inputs the calibration did not see and compares each role's declared output with
the fp32 graph (``TaskSpec.int8_gate``). A variant that fails the gate, or whose making
fails, ships no file: the manifest records the figures and the reason, and the fp32 version
publishes and serves as before. Nothing here can fail a publish.

Which method: the candidates of worker/training/int8_methods.py are tried in order (MinMax
first, as every variant was made before; then percentile calibration, then MinMax with the
most error-adding nodes kept in fp32) until one passes the gate, which is
the same for all of them. The manifest's ``method`` names the one kept and ``reason`` the
ones refused before it. The extra time is bounded: no further candidate starts once the
variant has taken ``SEARCH_TIME_FACTOR`` times what its first verdict took (the candidate
in progress finishes). A model the first method passes costs what it did before. Trying
several methods on the same held-out inputs is a handful of fixed, ordered choices, not a
search over the inputs: the sensitivity that picks float layers is measured on calibration
inputs only.

The 7-bit weights (``reduce_range``) make the variant answer the same on every x86 host:
with 8-bit weights, onnxruntime's uint8 x int8 kernels on AVX2 CPUs without VNNI add pairs
of products in saturating 16-bit lanes (255 * 127 * 2 overflows, 255 * 64 * 2 does not),
so a variant gated on a VNNI host could serve far outside its gate on such a host, and the
gate's verdict would depend on the publishing CPU.

Inputs are made by the family's own serving recipe (``TaskSpec.image_inputs`` /
``drawn_inputs``, the functions the family's endpoints call) from the version's serving
config, so calibration sees exactly what the served graph sees.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from model_store.manifest import GraphSpec, VariantRecord
from tasks import Int8Gate, get_task
from worker.training.int8_fidelity import fidelity, fidelity_over, judge, limits
from worker.training.int8_inputs import (
    DRAWN_SAMPLES,
    CalibrationUnavailable,
    Feeds,
    image_sets,
    main_feeds,
    role_feeds,
    shipped_photos,
    takes_any_size,
    within,
)
from worker.training.int8_methods import (
    CANDIDATES,
    MINMAX,
    QuantMethod,
    most_sensitive,
    output_layer,
    prepare,
    quantize_graph,
    quantize_prepared,
)
from worker.training.ort_budget import cpu_session

__all__ = ["CANDIDATES", "INT8", "MINMAX", "CalibrationUnavailable", "QuantMethod",
           "build_int8_variant", "fidelity", "fidelity_over", "image_sets", "int8_file",
           "main_feeds", "output_layer", "quantize_graph", "shipped_photos",
           "variants_enabled"]

if TYPE_CHECKING:
    from worker.training.datasets import DatasetSource

log = logging.getLogger(__name__)

INT8 = "int8"
METHOD = MINMAX.label()
# The largest long side a calibration image gets when the graph takes any size.
DYNAMIC_SIDE = 256
SPEED_RUNS = 5
# No further candidate method starts once the variant has taken this many times what its
# first verdict took (setup, first method, its gate).
SEARCH_TIME_FACTOR = 6.0

def int8_file(file: str) -> str:
    """``model.onnx`` -> ``model.int8.onnx``."""
    stem, dot, ext = file.rpartition(".")
    return f"{stem}.{INT8}.{ext}" if dot else f"{file}.{INT8}"


def _session(path: Path) -> ort.InferenceSession:
    return cpu_session(path)


def _run_all(session: ort.InferenceSession, feeds: list[Feeds], outputs: list[str]
             ) -> list[Feeds]:
    return [dict(zip(outputs, session.run(outputs, f), strict=True)) for f in feeds]


def _speed(fp32: ort.InferenceSession, int8: ort.InferenceSession, feeds: Feeds
           ) -> tuple[float, float]:
    """Median ms of the two graphs on one batch-1 input, runs interleaved."""
    fp32.run(None, feeds)
    int8.run(None, feeds)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(SPEED_RUNS):
        for name, session in (("fp32", fp32), ("int8", int8)):
            started = time.perf_counter()
            session.run(None, feeds)
            times[name].append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times["fp32"]), statistics.median(times["int8"])


@dataclass
class Attempt:
    """One candidate method's verdict on the held-out inputs."""

    method: QuantMethod
    figures: dict[str, float]
    missed: list[str]
    seconds: float
    float_layers: dict[str, list[str]] = field(default_factory=dict)  # role -> kept float
    speed: tuple[float, float] | None = None  # fp32 ms, int8 ms of the main graph
    error: str = ""  # the method could not make or run the graph (no figures then)

    @property
    def passed(self) -> bool:
        return not self.missed and not self.error

    def summary(self) -> str:
        why = self.error or "; ".join(self.missed)
        return f"{self.method.name} ({why})" if why else self.method.name


def build_int8_variant(
    directory: Path,
    task: str,
    graphs: Mapping[str, GraphSpec],
    config: Mapping[str, Any],
    *,
    dataset_dir: DatasetSource | None = None,
    gate: Int8Gate | None = None,
    seed: int = 0,
    methods: Sequence[QuantMethod] = CANDIDATES,
    attempts: list[Attempt] | None = None,
) -> VariantRecord | None:
    """Quantize every graph of a version being published in ``directory`` and gate it,
    trying ``methods`` in order until one passes (module docstring).

    Returns the record for the manifest (None: the task declares no INT8 gate). Never
    raises: a failure is a refused record with the error as its reason. A refused variant's
    files are removed, so only kept variants are hashed into the manifest. ``attempts``,
    when given, receives every method's verdict (the benchmark prints them)."""
    spec = get_task(task)
    gate = gate or spec.int8_gate
    if gate is None:
        return None
    started = time.perf_counter()
    record = VariantRecord(precision=INT8, passed=False, limits=limits(gate),
                           method=methods[0].label() if methods else "",
                           onnxruntime_version=ort.__version__)
    tried: list[Attempt] = attempts if attempts is not None else []
    written: list[Path] = []
    try:
        if not methods:
            raise ValueError("no quantization method to try")
        if any(spec.graphs[role].optional for role in graphs if role in spec.graphs):
            # an optional graph has no calibration recipe of its own (its inputs are not
            # the main graph's outputs): such versions serve in fp32
            raise ValueError(f"graphs {sorted(graphs)} include an optional one")
        sets = image_sets(dataset_dir, task)
        if takes_any_size(graphs["main"]):
            sets.calibration = [within(i, DYNAMIC_SIDE) for i in sets.calibration]
            sets.held_out = [within(i, DYNAMIC_SIDE) for i in sets.held_out]
        record.calibration = sets.source if spec.image_prepare is not None else (
            f"{DRAWN_SAMPLES} seeded request inputs (another {DRAWN_SAMPLES} held out)")
        calibrate = {"main": main_feeds(spec, config, sets.calibration, seed)}
        held = {"main": main_feeds(spec, config, sets.held_out, seed + 1)}
        record.calibration_inputs = len(calibrate["main"])
        record.held_out_inputs = len(held["main"])
        roles = spec.roles_held(graphs)
        fp32 = {role: _session(directory / graphs[role].file) for role in roles}
        main_out = list(spec.graphs["main"].outputs)
        for role in roles:
            if role != "main":
                calibrate[role] = role_feeds(
                    spec, role, _run_all(fp32["main"], calibrate["main"], main_out))
        # Each role is judged on the same inputs in both precisions (the decoder on the
        # fp32 encoder's latents), so a role's own error is what is measured.
        ref_main = _run_all(fp32["main"], held["main"], main_out)
        judged = {role: held["main"] if role == "main" else role_feeds(spec, role, ref_main)
                  for role in gate.compare}
        refs = {role: [fp32[role].run([output], f)[0] for f in judged[role]]
                for role, output in gate.compare.items()}
        targets = {role: directory / int8_file(graphs[role].file) for role in roles}
        written += targets.values()
        with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
            work = Path(tmp)
            prepared: dict[str, Path] = {}
            for role in roles:
                (work / role).mkdir()
                prepared[role] = prepare(directory / graphs[role].file, work / role)
            first_verdict = 0.0
            for index, method in enumerate(methods):
                spent = time.perf_counter() - started
                if index and spent > SEARCH_TIME_FACTOR * first_verdict:
                    log.info("INT8: no time left for %s (%.1fs spent)",
                             [m.name for m in methods[index:]], spent)
                    break
                attempt = Attempt(method, {}, [], 0.0)
                try:  # a method that cannot take this graph leaves the next one to try
                    _quantize(attempt, roles, prepared, targets, calibrate, work)
                    int8 = {role: _session(targets[role]) for role in roles}
                    compared = {role: (refs[role], [int8[role].run([output], f)[0]
                                                    for f in judged[role]])
                                for role, output in gate.compare.items()}
                    attempt.figures, attempt.missed = judge(gate, compared, config)
                    if index == 0 or attempt.passed:
                        attempt.speed = _speed(fp32["main"], int8["main"], held["main"][0])
                except Exception as exc:
                    log.warning("INT8 method %s failed: %s", method.name, exc, exc_info=True)
                    attempt.error = f"failed: {type(exc).__name__}: {exc}"
                attempt.seconds = time.perf_counter() - started - spent
                tried.append(attempt)
                if index == 0:
                    first_verdict = time.perf_counter() - started
                if attempt.passed:
                    break
        kept = tried[-1] if tried[-1].passed else None
        judged_ones = [a for a in tried if not a.error]
        if not judged_ones:
            raise RuntimeError("; ".join(a.summary() for a in tried))
        shown = kept or judged_ones[0]
        record.fidelity = shown.figures
        if shown.speed is not None:
            record.fp32_ms, record.int8_ms = shown.speed
            record.speedup = record.fp32_ms / record.int8_ms if record.int8_ms else None
        record.passed = kept is not None
        if kept is not None:
            record.graphs = {role: targets[role].name for role in roles}
            record.method = kept.method.label()
            before = "; ".join(a.summary() for a in tried[:-1])
            record.reason = (
                f"within the {task} INT8 gate on {record.held_out_inputs} held-out inputs"
                f" with {kept.method.name}" + (f"; refused before it: {before}" if before
                                               else ""))
        else:
            record.method = (f"{tried[0].method.label()}; also tried: "
                             + ", ".join(a.method.name for a in tried[1:])
                             if len(tried) > 1 else tried[0].method.label())
            record.reason = "outside the INT8 gate: " + "; ".join(
                [f"{shown.method.name}: {'; '.join(shown.missed)}"]
                + [a.summary() for a in tried if a is not shown])
            untried = [m.name for m in methods[len(tried):]]
            if untried:
                record.reason += f"; not tried (time bound): {', '.join(untried)}"
    except Exception as exc:  # never fail a publish over its variant
        log.warning("INT8 variant of a %s version failed: %s", task, exc, exc_info=True)
        record.passed = False
        record.reason = f"quantization failed: {type(exc).__name__}: {exc}"
    if not record.passed:
        for path in written:
            path.unlink(missing_ok=True)
        record.graphs = {}
    record.seconds = time.perf_counter() - started
    log.info("INT8 variant %s in %.1fs: %s (speed-up %s)",
             "kept" if record.passed else "refused", record.seconds, record.reason,
             f"{record.speedup:.2f}x" if record.speedup else "n/a")
    return record


def _quantize(attempt: Attempt, roles: Sequence[str], prepared: Mapping[str, Path],
              targets: Mapping[str, Path], calibrate: Mapping[str, list[Feeds]], work: Path
              ) -> None:
    """Quantize every role by ``attempt.method`` into ``targets``. A method that keeps
    sensitive layers float ranks them on the role's MinMax graph, made once in ``work``."""
    method = attempt.method
    for role in roles:
        keep: list[str] = []
        if method.float_share:
            probe = work / role / "minmax.onnx"
            if not probe.is_file():
                quantize_prepared(prepared[role], probe, calibrate[role], MINMAX)
            keep = most_sensitive(prepared[role], probe, calibrate[role], method.float_share)
            attempt.float_layers[role] = keep
        quantize_prepared(prepared[role], targets[role], calibrate[role], method, keep)
        if method == MINMAX:
            shutil.copyfile(targets[role], work / role / "minmax.onnx")


def variants_enabled() -> bool:
    """``TOONFORGE_INT8_VARIANTS`` (Settings.int8_variants): build variants at publish."""
    from core.settings import Settings

    try:
        return Settings().int8_variants
    except Exception:  # a broken environment must not stop a publish either
        return os.environ.get("TOONFORGE_INT8_VARIANTS", "1").lower() not in ("0", "false")
