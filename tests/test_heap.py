"""hfkit.heap.keep_freed_memory: large freed buffers kept in the heap for reuse instead of unmapped (glibc)."""

from __future__ import annotations

import ctypes

import pytest
import torch

from hfkit import heap

BUFFER = 32 << 20  # bytes: a float32 (4096, 2048) tensor, above glibc's 128 KiB mmap threshold


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (malloc.h, glibc ≥ 2.33): every field a size_t."""

    FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]


def mallinfo2() -> MallInfo2:
    function = heap.glibc().mallinfo2
    function.restype = MallInfo2
    return function()


has_mallinfo2 = heap.glibc() is not None and hasattr(heap.glibc(), "mallinfo2")
glibc_only = pytest.mark.skipif(not has_mallinfo2, reason="needs glibc ≥ 2.33 (mallopt, mallinfo2)")


def held_while_alive(size: int = BUFFER) -> tuple[int, int]:
    """(mmapped bytes, heap bytes in use) that one tensor of `size` bytes adds while it lives; it is freed after."""
    before = mallinfo2()
    buffer = torch.empty(size // 4).fill_(1.0)
    during = mallinfo2()
    del buffer
    return during.hblkhd - before.hblkhd, during.uordblks - before.uordblks


# Page faults would show the gain directly (every cycle faults its 32 MiB in anew outside the block, ~8k faults
# of 4 KiB), but some sandboxes (CI's) report no minor faults at all: the allocator's own counters are read instead.
@glibc_only
def test_freed_buffers_stay_in_the_heap_inside_the_block():
    with heap.keep_freed_memory():
        held_while_alive()  # the heap grows once
        free_after_first = mallinfo2().fordblks
        mapped, in_heap = held_while_alive()
        assert free_after_first >= BUFFER  # freed, not trimmed or unmapped: the next allocation takes it
        assert (mapped, in_heap >= BUFFER) == (0, True)
    heap.glibc().malloc_trim(0)  # the kept memory goes back to the OS (glibc would trim it on later frees)
    # thresholds back at glibc's 128 KiB start: served by mmap again. Larger than all the heap's free memory, so
    # that no free chunk can serve it (one in the middle of the heap, below a live allocation, is not trimmed, and
    # earlier tests in the process may have left one of BUFFER's size)
    size = mallinfo2().fordblks + BUFFER
    mapped, in_heap = held_while_alive(size)
    assert (mapped >= size, in_heap < BUFFER) == (True, True), (mapped, in_heap, size)


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
