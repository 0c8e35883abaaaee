"""The CUDA paths, with the one thing that cannot exist here (a GPU) mocked: which
onnxruntime providers the API asks for, and which device the trainers pick."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from core.settings import Settings
from service.inference.sessions import usable_providers
from worker.training.trainers.context import default_device

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_provider_first_when_onnxruntime_gpu_offers_it(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    assert usable_providers(Settings()) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_build_falls_back_to_cpu(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert usable_providers(Settings()) == ["CPUExecutionProvider"]
    only_cuda = Settings(providers=["CUDAExecutionProvider"])
    assert usable_providers(only_cuda) == ["CPUExecutionProvider"]  # never an empty list


@pytest.mark.parametrize(("cuda", "expected"), [(True, "cuda"), (False, "cpu")])
def test_trainers_pick_cuda_when_present(monkeypatch, cuda: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert default_device().type == expected
