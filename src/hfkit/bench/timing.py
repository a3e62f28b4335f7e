"""GPU timing shared by the benchmarks and the exploration scripts under benchmarks/explore (device/METHOD.md:
warm-up, CUDA events around each call, the median), their `--only` variant choice and their switches (`switched`)."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Collection, Iterable

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


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """`cuda_median_ms` where CUDA is available, else the median ms of `time.perf_counter` around each call."""
    if torch.cuda.is_available():
        return cuda_median_ms(fn, repeats, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def only_variants(labels: Iterable[str], only: str | None, keep: Collection[str] = ()) -> list[str]:
    """The labels an `--only` argument picks, in order: those containing one of its '|'-separated parts (plain
    text, not a regular expression), and `keep`; all without one. A part found in no label stops the run before
    device time goes to a run without it, listing the labels."""
    labels = list(labels)
    if not only:
        return labels
    parts = only.split("|")
    if missing := [part for part in parts if not any(part in label for label in labels)]:
        raise SystemExit(f"--only: no variant contains {missing}; the variants: {labels}")
    return [label for label in labels if label in keep or any(part in label for part in parts)]


@contextlib.contextmanager
def switched(flags):
    """The (module, flag, value) switches set inside the block, back as they were after it."""
    before = [getattr(module, flag) for module, flag, _ in flags]
    for module, flag, value in flags:
        setattr(module, flag, value)
    try:
        yield
    finally:
        for (module, flag, _), value in zip(flags, before, strict=True):
            setattr(module, flag, value)
