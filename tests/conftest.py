"""Shared fixtures: every device-aware test runs on CPU and, when present, on CUDA."""

import pytest
import torch

from metahpo_lib.env import available_devices


@pytest.fixture(params=[str(d) for d in available_devices()])
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
