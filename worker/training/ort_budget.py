"""onnxruntime sessions that the worker runs itself (export parity, INT8 calibration and
its gate, the gates that score a served graph) within the worker's CPU budget.

onnxruntime's defaults take a thread per core and let idle threads spin; beside the API on
a shared host that is the contention the budget exists to avoid (docs/DEPLOY.md "CPU
budgets on a shared host"). These sessions use as many intra-op threads as torch was given
(``worker.runtime.apply_torch_threads``), one inter-op thread, and wait passively.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import torch


def budget_options(*, optimize: bool = True) -> ort.SessionOptions:
    """Session options within the worker's CPU budget (``optimize=False``: no graph
    optimisation, for calibration runs that must see the graph's own nodes)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def cpu_session(path: Path | str, *, optimize: bool = True) -> ort.InferenceSession:
    """A CPU session of the graph at ``path`` within the worker's CPU budget."""
    return ort.InferenceSession(str(path), budget_options(optimize=optimize),
                                providers=["CPUExecutionProvider"])
