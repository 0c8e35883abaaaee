"""One loaded model version: its onnxruntime sessions, typed serving config, manifest and
the extra files its task declares (``TaskSpec.artifacts``).

Loading is all-or-nothing: the manifest's task must be registered and its
``preprocessing`` must validate as that task's serving config (tasks/registry.py), every
file is checked against the manifest's sha256, every graph the task declares gets a
session whose tensor names must match the task spec and the manifest, and every session
runs once on a dummy input of its contract shape (warm-up) before the version is handed out.

Precision: a version whose manifest holds an INT8 variant that passed its gate
(``Manifest.variants["int8"]``) can serve either precision. The precision requests get by
default (``Settings.default_precision``) is loaded with the version; the other one is
loaded on the first request that asks for it (``LoadedVersion.load_precision``) and kept
with the version, so memory grows only for precisions that are actually used. Each
precision is its own ``LoadedVersion`` (own sessions and batchers) sharing the manifest.

At ~400 lines on purpose: the load path (files, config, sessions, warm-up, precisions)
reads top to bottom in one place, and every step of it can fail the load the same way.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from core.errors import DomainError, UnknownTask
from core.settings import Settings
from model_store.errors import ManifestCorrupt, ManifestInvalid, StoreError
from model_store.files import WEIGHTS_FILE
from model_store.manifest import GraphSpec, Manifest, VariantRecord, sha256_file
from model_store.store import ModelStore
from service.errors import ModelNotReady
from service.inference.batching import Batcher, Feeds
from service.metrics import BATCH_SIZE
from tasks import GraphIO, ServingConfig, TaskSpec, get_task

log = logging.getLogger(__name__)

# Symbolic non-batch axes get this size in the warm-up input (a multiple of 4 for DCT-Net).
WARMUP_SIDE = 64
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(double)": np.float64, "tensor(int64)": np.int64}


FP32, INT8 = "fp32", "int8"


class LoadFailed(Exception):
    """The version could not be loaded; the message says why."""


class PrecisionUnavailable(DomainError):
    """``precision=int8`` for a version without an INT8 variant that passed its gate."""

    code = "precision_unavailable"
    http_status = 409


def int8_variant(manifest: Manifest, spec: TaskSpec) -> VariantRecord | None:
    """The version's INT8 variant when it passed its gate and has every graph role."""
    variant = manifest.variants.get(INT8)
    if variant is None or not variant.passed or any(
            role not in variant.graphs for role in spec.roles_held(manifest.graphs)):
        return None
    return variant


def choose_precision(manifest: Manifest, spec: TaskSpec, requested: str | None,
                     default: str) -> str:
    """The precision a request is served at: ``requested`` (``?precision=``), else
    ``default`` (Settings.default_precision). ``auto`` is int8 where the variant passed its
    gate and was faster than fp32 on the publishing host, else fp32; an explicit int8 (or
    the int8 default) without a passing variant is ``PrecisionUnavailable`` (409)."""
    wanted = requested or default
    if wanted == FP32:
        return FP32
    variant = int8_variant(manifest, spec)
    if wanted == "auto":
        faster = variant is not None and (variant.speedup is None or variant.speedup > 1.0)
        return INT8 if faster else FP32
    if variant is None:
        record = manifest.variants.get(INT8)
        why = (record.reason if record is not None and record.reason
               else "it was published without one")
        raise PrecisionUnavailable(
            f"{manifest.ref} has no INT8 variant that passed its fidelity gate ({why}):"
            " ask for precision=fp32, or leave precision out",
            {"model": manifest.model, "version": manifest.version, "precision": INT8})
    return INT8


def _shrinking_run() -> ort.RunOptions:
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def variable_shape(session: ort.InferenceSession) -> bool:
    """Whether a request chooses the graph's input size (a symbolic axis past the batch)."""
    return any(not (isinstance(dim, int) and dim > 0)
               for meta in session.get_inputs() for dim in meta.shape[1:])


class Graph:
    """An onnxruntime session with the tensor names of its manifest entry.

    A graph whose input size each request chooses (cartoonize) hands its arena back at the
    end of every run: its chunks fit only shapes as large as the largest seen, so a kept
    arena would hold every burst's high-water mark in each session (fp32 and INT8 each have
    one) until the idle release. Measured on DCT-Net at 720x540: +3-10 % CPU per run, 140
    instead of 350 MB held after it (docs/BENCHMARKS.md "Memory per request"). Fixed-shape
    graphs keep theirs (their sizes recur; the pool shrinks them once idle).
    """

    def __init__(self, session: ort.InferenceSession, inputs: list[str], outputs: list[str],
                 batcher: Batcher | None) -> None:
        self.session = session
        self.inputs = inputs
        self.outputs = outputs
        self.batcher = batcher
        self.run_options = _shrinking_run() if variable_shape(session) else None

    def run(self, feeds: Feeds) -> Feeds:
        values = self.session.run(self.outputs, {name: feeds[name] for name in self.inputs},
                                  self.run_options)
        return dict(zip(self.outputs, values, strict=True))


class LoadedVersion:
    """What a request holds while it is served; dropping the last reference frees it."""

    def __init__(self, manifest: Manifest, spec: TaskSpec, config: ServingConfig,
                 graphs: dict[str, Graph], artifacts: Mapping[str, Any],
                 precision: str = FP32) -> None:
        self.manifest = manifest
        # What ``graphs`` compute in (X-Model-Precision); ``_others`` holds this version at
        # the other precisions once asked for (never itself: no cycle delays the release).
        self.precision = precision
        self._others: dict[str, LoadedVersion] = {}
        self._others_lock = threading.Lock()
        self.spec = spec
        # The manifest's preprocessing, validated as the task's serving config.
        self.config = config
        self.graphs = graphs
        # The extra files of the version (TaskSpec.artifacts), as the family read them.
        self.artifacts = artifacts
        self.loaded_at = time.time()
        batchers = [g.batcher for g in graphs.values() if g.batcher is not None]
        # Closing batchers and logging must not keep this object alive: no self reference.
        weakref.finalize(self, _released, f"{manifest.ref} ({precision})", batchers)

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def providers(self) -> list[str]:
        return list(self.graphs["main"].session.get_providers())

    def graph(self, role: str) -> Graph:
        try:
            return self.graphs[role]
        except KeyError:
            raise LoadFailed(f"{self.ref} has no {role!r} graph") from None

    def loaded_precision(self, precision: str) -> LoadedVersion | None:
        """This version at ``precision`` if already loaded (never blocks)."""
        return self if precision == self.precision else self._others.get(precision)

    def all_precisions(self) -> list[LoadedVersion]:
        """This version and the other precisions loaded beside it (never blocks: a load in
        progress holds ``_others_lock``; copying the dict is one step under the GIL)."""
        return [self, *list(self._others.values())]

    def load_precision(self, precision: str, settings: Settings, store: ModelStore
                       ) -> LoadedVersion:
        """This version at ``precision``, loading and warming its graphs the first time
        (blocking: run it off the event loop). The one the pool holds keeps the others; a
        request holding another precision keeps just that one until it finishes."""
        with self._others_lock:
            other = self.loaded_precision(precision)
            if other is None:
                try:
                    other = _load_graphs(store, self.manifest, self.spec, settings, precision,
                                         self.config, self.artifacts)
                except Exception as exc:  # the version keeps serving its other precision
                    log.error("cannot load %s at %s: %s", self.ref, precision, exc)
                    raise ModelNotReady(f"{self.ref} at {precision} failed to load: {exc}"
                                        ) from exc
                self._others[precision] = other
                log.info("loaded %s at %s on first use", self.ref, precision)
            return other


def _released(ref: str, batchers: list[Batcher]) -> None:
    for batcher in batchers:
        batcher.close()
    log.info("released %s: its last in-flight request has finished", ref)


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.ort_intra_op_threads
    options.inter_op_num_threads = settings.ort_inter_op_threads
    # Spinning threads burn the cores other requests (and decode/encode) need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The CPU arena keeps the high-water mark of a burst until it is shrunk (the pool does
    # that once idle: trim.release_memory); the memory pattern pre-plans one block
    # per input shape, which took u2netp at batch 8 from 2.5 to 4.1 GB for no speed.
    # docs/BENCHMARKS.md "Soak and memory" has the measurements.
    options.enable_cpu_mem_arena = settings.ort_cpu_mem_arena
    options.enable_mem_pattern = settings.ort_mem_pattern
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def usable_providers(settings: Settings) -> list[str]:
    available = set(ort.get_available_providers())
    chosen = [p for p in settings.providers if p in available]
    return chosen or ["CPUExecutionProvider"]


def _verify_files(vdir: Path, manifest: Manifest, graph_files: list[str]) -> None:
    for file in graph_files:
        if file not in manifest.files:
            raise LoadFailed(f"{manifest.ref}: {file} is not listed in the manifest's files")
    for file, entry in manifest.files.items():
        if file == WEIGHTS_FILE:
            continue  # PyTorch state for fine-tuning; the API never reads it
        path = vdir / file
        if not path.is_file():
            raise LoadFailed(f"{manifest.ref}: {file} is missing")
        if sha256_file(path) != entry.sha256:
            raise LoadFailed(f"{manifest.ref}: {file} does not match its sha256 in the manifest")


def _warm_up(graph: Graph) -> None:
    feeds = {}
    for meta in graph.session.get_inputs():
        shape = [
            dim if isinstance(dim, int) and dim > 0 else (1 if axis == 0 else WARMUP_SIDE)
            for axis, dim in enumerate(meta.shape)
        ]
        feeds[meta.name] = np.zeros(shape, dtype=_DTYPES.get(meta.type, np.float32))
    graph.run(feeds)


def _artifacts(vdir: Path, spec: TaskSpec, ref: str) -> dict[str, Any]:
    """The extra files the task declares that this version carries, read by the family."""
    found: dict[str, Any] = {}
    for name, artifact in spec.artifacts.items():
        path = vdir / artifact.file
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except Exception as exc:
            raise LoadFailed(f"{ref}: {artifact.file} is unreadable: {exc}") from exc
        try:
            found[name] = artifact.read(arrays)
        except KeyError as exc:
            raise LoadFailed(f"{ref}: {artifact.file} is unreadable: it lacks {exc}") from exc
        except ValueError as exc:  # the family's read says what does not fit
            raise LoadFailed(f"{ref}: {artifact.file} {exc}") from exc
    return found


def serving_config(spec: TaskSpec, manifest: Manifest) -> ServingConfig:
    """The manifest's ``preprocessing`` as the task's typed serving config (no defaults are
    guessed here: a missing or unexpected key is a load failure naming it)."""
    try:
        return spec.serving.model_validate(manifest.preprocessing)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'preprocessing'}: {e['msg']}"
            for e in exc.errors()
        )
        raise LoadFailed(f"{manifest.ref}: its preprocessing is not a valid {spec.name}"
                         f" serving config ({spec.serving.__name__}): {problems}") from None


def batchable(graph: GraphSpec, io: GraphIO) -> bool:
    """Requests may share a run when every input has fixed non-batch axes and a request is
    not a batch of its own."""
    return not io.per_request_batch and all(
        all(isinstance(dim, int) and dim > 0 for dim in tensor.shape[1:])
        for tensor in graph.inputs
    )


def _names_match(manifest: Manifest, role: str, io: GraphIO) -> None:
    graph = manifest.graphs[role]
    declared = ([t.name for t in graph.inputs], [t.name for t in graph.outputs])
    if declared != (list(io.inputs), list(io.outputs)):
        raise LoadFailed(f"{manifest.ref}: its {role} graph has tensors {declared[0]} ->"
                         f" {declared[1]}; the {manifest.task} task needs {list(io.inputs)}"
                         f" -> {list(io.outputs)}")


def _session(vdir: Path, manifest: Manifest, role: str, io: GraphIO,
             settings: Settings, file: str | None = None) -> Graph:
    onnx_file = file or manifest.graphs[role].file
    try:
        session = ort.InferenceSession(str(vdir / onnx_file), session_options(settings),
                                       providers=usable_providers(settings))
    except Exception as exc:
        raise LoadFailed(f"{manifest.ref}: onnxruntime cannot load {onnx_file}: {exc}") from exc
    inputs, outputs = list(io.inputs), list(io.outputs)
    actual_in = {i.name for i in session.get_inputs()}
    actual_out = {o.name for o in session.get_outputs()}
    if set(inputs) != actual_in or not set(outputs) <= actual_out:
        raise LoadFailed(f"{manifest.ref}: {onnx_file} has inputs {sorted(actual_in)} and"
                         f" outputs {sorted(actual_out)}; the {manifest.task} task needs"
                         f" {inputs} -> {outputs}")
    graph = Graph(session, inputs, outputs, None)
    try:
        _warm_up(graph)
    except Exception as exc:
        raise LoadFailed(f"{manifest.ref}: warm-up of {onnx_file} failed: {exc}") from exc
    return graph


def _local_files(store: ModelStore, manifest: Manifest) -> Path:
    """A local directory with the version's files: the version itself in a directory store,
    this process's cache of the blobs with an S3 store (``local_version_dir``). A file that
    cannot be fetched or does not match its hash is a load failure (/readyz reports it)."""
    # Everything but the PyTorch state, which only the worker reads (hundreds of MB for
    # the large families): a replica on an S3 store fetches only what it serves.
    needed = [file for file in manifest.files if file != WEIGHTS_FILE]
    try:
        return store.local_version_dir(manifest.model, manifest.version, needed)
    except StoreError as exc:
        raise LoadFailed(f"{manifest.ref}: {exc}") from None


def load_version(store: ModelStore, name: str, version: int, settings: Settings) -> LoadedVersion:
    """Load, verify and warm up ``name@version`` (blocking; run it off the event loop)."""
    started = time.perf_counter()
    try:
        manifest = store.manifest(name, version)
    except (ManifestInvalid, ManifestCorrupt) as exc:  # also a task no registered spec has
        raise LoadFailed(str(exc)) from None
    try:
        spec = get_task(manifest.task)
    except UnknownTask as exc:
        raise LoadFailed(f"{manifest.ref}: {exc.message}") from None
    config = serving_config(spec, manifest)
    roles = spec.roles_held(manifest.graphs)
    missing = [role for role in roles if role not in manifest.graphs]
    if missing:
        raise LoadFailed(f"{manifest.ref}: the manifest lacks graphs {missing}")
    for role in roles:
        _names_match(manifest, role, spec.graphs[role])
    vdir = _local_files(store, manifest)
    variant = int8_variant(manifest, spec)
    files = [manifest.graphs[role].file for role in roles]
    _verify_files(vdir, manifest, files + (list(variant.graphs.values()) if variant else []))
    artifacts = _artifacts(vdir, spec, manifest.ref)
    try:  # the precision requests get by default loads now; an explicit one on first use
        precision = choose_precision(manifest, spec, None, settings.default_precision)
    except PrecisionUnavailable:
        precision = FP32  # default int8 without a variant: requests get the 409, not /readyz
    loaded = _load_graphs(store, manifest, spec, settings, precision, config, artifacts)
    log.info("loaded %s (%s, %s) in %.2fs on %s", manifest.ref, manifest.arch, precision,
             time.perf_counter() - started, loaded.providers)
    return loaded


def _load_graphs(store: ModelStore, manifest: Manifest, spec: TaskSpec, settings: Settings,
                 precision: str, config: ServingConfig, artifacts: Mapping[str, Any]
                 ) -> LoadedVersion:
    """Sessions (warmed) and batchers of every graph of ``manifest`` at ``precision``."""
    vdir = _local_files(store, manifest)
    variant = int8_variant(manifest, spec) if precision == INT8 else None
    if precision == INT8 and variant is None:
        raise LoadFailed(f"{manifest.ref} has no INT8 variant that passed its gate")
    graphs = {role: _session(vdir, manifest, role, spec.graphs[role], settings,
                             variant.graphs[role] if variant else None)
              for role in spec.roles_held(manifest.graphs)}
    if settings.batching:  # threads start only once nothing else can fail
        label = manifest.ref if precision == FP32 else f"{manifest.ref}:{precision}"
        for role, graph in graphs.items():
            if batchable(manifest.graphs[role], spec.graphs[role]):
                graph.batcher = Batcher(graph.run,
                                        spec.batching.size(settings.batch_max_size),
                                        spec.batching.delay_s(settings.batch_max_delay_ms),
                                        f"{label}:{role}",
                                        BATCH_SIZE.labels(label, role).observe,
                                        settings.batch_parallel_runs)
    return LoadedVersion(manifest, spec, config, graphs, artifacts, precision)
