"""Which of the CPU speed paths this processor runs natively.

bfloat16 and int8 matrix products only beat float32 on x86 CPUs with instructions for them: AVX512-BF16 or AMX for
bfloat16, VNNI (AVX512-VNNI, AVX-VNNI) or AMX for int8. Without them torch runs emulated kernels: on an AVX2-only
AMD EPYC (Zen 3) a bfloat16 GEMM ran at 0.09× and an int8 `torch._int_mm` at 0.01× float32's rate, and MiniLM
embeddings at 0.09× (bfloat16) and 0.03× (bfloat16 + int8) of float32 (benchmarks/RESULTS.md). So the opt-in paths
warn there, naming the fix, rather than silently running slower than the exact default. Other architectures (ARM,
…) are not judged: nothing is said there.
"""

from __future__ import annotations

import platform
import warnings
from functools import lru_cache
from pathlib import Path

import torch

X86 = ("x86_64", "amd64", "x86", "i386", "i686")
# per kind: the /proc/cpuinfo flags and the torch.cpu probes (private, torch ≥ 2.2) that mean native instructions
NATIVE = {
    "bfloat16": (("avx512_bf16", "amx_bf16"), ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
                 "AVX512-BF16 or AMX"),
    "int8": (("avx512_vnni", "avx_vnni", "amx_int8"), ("_is_vnni_supported", "_is_amx_tile_supported"), "VNNI or AMX"),
}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where it cannot be read."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(line.split(":", 1)[1].split())


def missing_instructions(kind: str) -> str | None:
    """For kind "bfloat16" or "int8": the instructions this x86 CPU lacks to run those matrix products natively,
    or None (it has them, this is not an x86 CPU, or neither the flags nor torch's probes can tell)."""
    if kind not in NATIVE:
        raise ValueError(f"kind must be one of {sorted(NATIVE)}, not {kind!r}")
    if platform.machine().lower() not in X86:
        return None
    flags, probe_names, needed = NATIVE[kind]
    probes = [getattr(torch.cpu, name, None) for name in probe_names]
    if not cpu_flags() and not any(probes):
        return None
    native = any(flag in cpu_flags() for flag in flags) or any(probe() for probe in probes if probe is not None)
    return None if native else needed


@lru_cache(maxsize=1)
def has_amx() -> bool:
    """Whether this CPU has AMX tiles (torch's probe, which also asks the OS; else the cpuinfo flag). torch's CPU
    flash attention runs its bfloat16 products on them (see nn/attention.py)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else "amx_tile" in cpu_flags()


_WARNED: set[str] = set()


def warn_if_emulated(kind: str, fix: str) -> None:
    """One warning per process and kind when this CPU runs `kind` matrix products emulated; `fix` says what to do."""
    missing = missing_instructions(kind)
    if missing is None or kind in _WARNED:
        return
    _WARNED.add(kind)
    warnings.warn(f"This CPU has no {missing} instructions, so {kind} matrix products run emulated here, several "
                  f"times slower than float32. {fix}", RuntimeWarning, stacklevel=3)
