"""GPU timing shared by the exploration scripts under benchmarks/explore (device/METHOD.md: warm-up, CUDA events
around each call, the median)."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def cuda_median_ms(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median ms of `fn` over `repeats` timed calls, after `warmup` untimed ones; CUDA events around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
