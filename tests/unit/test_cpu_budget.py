"""The API's and the worker's CPU budgets as the settings give them (the worker process
itself is read from /proc in tests/integration/test_worker_cpu_budget.py)."""

from __future__ import annotations

import pytest

from core.settings import Settings, usable_cores
from service.inference.sessions import session_options


def test_session_options_carry_the_thread_budget_and_no_spinning() -> None:
    options = session_options(Settings(_env_file=None, ort_intra_op_threads=3,
                                       ort_inter_op_threads=2))
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 2
    # Idle onnxruntime threads sleep instead of spinning on cores training shares.
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_training_takes_the_cores_the_api_leaves() -> None:
    settings = Settings(_env_file=None, ort_intra_op_threads=1)
    assert settings.train_thread_count() == max(1, usable_cores() - 1)
    assert Settings(_env_file=None, ort_intra_op_threads=10_000).train_thread_count() == 1
    assert Settings(_env_file=None, train_threads=5).train_thread_count() == 5


def test_the_worker_defaults_to_nice_and_passive() -> None:
    settings = Settings(_env_file=None)
    assert settings.train_nice == 10 and settings.train_passive_wait
    assert settings.train_threads is None and settings.train_interop_threads == 1


@pytest.mark.parametrize("bad", [{"train_nice": 20}, {"train_nice": -1}, {"train_threads": 0}])
def test_out_of_range_budgets_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Settings(_env_file=None, **bad)
