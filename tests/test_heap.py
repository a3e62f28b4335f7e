"""hfkit.heap.keep_freed_memory: large freed buffers reused instead of page-faulted in anew (glibc)."""

from __future__ import annotations

import resource

import pytest
import torch

from hfkit import heap

glibc_only = pytest.mark.skipif(heap.glibc() is None, reason="needs glibc's mallopt")


def page_faults(rounds: int = 10) -> int:
    """Minor page faults of `rounds` allocate-and-free cycles of 32 MiB and 16 MiB tensors."""
    x = torch.randn(2048, 2048)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        y = torch.empty(4096, 2048).fill_(1.0)  # 32 MiB
        z = x @ x  # 16 MiB
        del y, z
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start


@glibc_only
def test_freed_buffers_are_reused_inside_the_block():
    page_faults(2)
    plain = page_faults()
    with heap.keep_freed_memory():
        page_faults(1)  # the heap grows once
        kept = page_faults()
    assert kept * 5 < plain, (kept, plain)  # every cycle faults its 48 MiB in anew outside (~12k faults of 4 KiB)


class FakeLibc:
    def __init__(self, refuse_above: int | None = None):
        self.calls: list[tuple] = []
        self.refuse_above = refuse_above

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value.value))
        return int(self.refuse_above is None or value.value <= self.refuse_above)


def test_thresholds_raised_once_for_nested_blocks_then_restored(monkeypatch):
    libc = FakeLibc(refuse_above=32 << 20)  # a glibc that caps the mmap threshold at 32 MiB
    monkeypatch.setattr(heap, "glibc", lambda: libc)
    with heap.keep_freed_memory():
        with heap.keep_freed_memory():
            pass
        assert len(libc.calls) == 3  # the outer block still runs: nothing restored yet
    mallopts = [(parameter, value) for _, parameter, value in libc.calls]
    tried = [(heap.M_TRIM_THRESHOLD, 1 << 30), (heap.M_TRIM_THRESHOLD, 32 << 20), (heap.M_MMAP_THRESHOLD, 32 << 20)]
    restored = [(heap.M_TRIM_THRESHOLD, heap.GLIBC_START), (heap.M_MMAP_THRESHOLD, heap.GLIBC_START)]
    assert mallopts == tried + restored


def test_switched_off_or_without_glibc_nothing_is_called(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "glibc", lambda: libc)
    monkeypatch.setattr(heap, "KEEP_FREED_MEMORY", False)
    with heap.keep_freed_memory():
        pass
    assert libc.calls == []
    monkeypatch.setattr(heap, "KEEP_FREED_MEMORY", True)
    monkeypatch.setattr(heap, "glibc", lambda: None)
    with heap.keep_freed_memory():
        pass


def test_restored_after_an_error(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "glibc", lambda: libc)
    with pytest.raises(RuntimeError), heap.keep_freed_memory():
        raise RuntimeError("boom")
    assert libc.calls[-1] == ("mallopt", heap.M_MMAP_THRESHOLD, heap.GLIBC_START)
    assert heap._depth == 0
