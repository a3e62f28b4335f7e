"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def exact_cuda_matmuls():
    """float32 CUDA matmuls without TF32, so GPU outputs compare with the CPU reference at 1e-4."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved
