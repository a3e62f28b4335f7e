"""Exploration without a GPU: hfkit's Triton kernels compiled for an H100 (sm_90a), their registers and spills.

Triton compiles for a target it is given, and the ptxas that ships with Triton reports each kernel's registers and
spilled bytes, so a kernel's register pressure (and whether the GPU's code generator accepts it at all, which
Triton's interpreter does not check) can be read on a machine with no GPU. Pointers and the integer arguments that
are multiples of 16 at the real launches (strides, cache lengths) get Triton's divisibility-by-16 specialisation,
as a launch on aligned tensors does; without it (`--unaligned`) the counts come out higher than a launch sees.
tests/test_matvec.py runs it: every variant must compile, and no bf16 one may spill.

    PYTHONPATH=src python benchmarks/explore/registers_sm90.py [--unaligned]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import subprocess
import tempfile

import torch

torch.backends.cuda.is_built = lambda: True  # hfkit's kernels are defined where torch has CUDA; none is needed here

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hfkit.nn import decode_attention, matvec, window_attention

PTXAS = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas"))[0]
FLOATS = {"scale_log2", "eps"}  # the float scalars among the kernels' arguments


def report(kernel, types: dict, constexprs: dict, num_warps: int, unaligned: set, aligned: bool,
           options: dict) -> str:
    """ptxas's register and spill lines for `kernel` at these argument types ("*bf16", …; other arguments int32),
    and the count of half-precision fused multiply-adds in its PTX (rounding once where torch rounds twice)."""
    names = kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else types.get(n, "fp32" if n in FLOATS else "i32") for n in names}
    divisible = [n for n in names if aligned and n not in constexprs and n not in FLOATS and n not in unaligned]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, **options})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        done = subprocess.run([PTXAS, "-v", "--gpu-name", "sm_90a", ptx, "-o", os.path.join(tmp, "kernel.o")],
                              capture_output=True, text=True, check=True)
    lines = [line.split("info    : ")[-1].strip() for line in done.stderr.splitlines()]
    fused = sum(compiled.asm["ptx"].count(op) for op in ("fma.rn.bf16", "fma.rn.f16"))
    return "; ".join([*(line for line in lines if "registers" in line or "spill" in line), f"{fused} bf16/f16 fma"])


def decode_cases():
    """decode_attention at Llama-3.2-1B's group (4 query heads a key/value head), a 384-key cache with a mask; heads
    of 64 and 128, and of 256 (Gemma's) in bf16; Llama's STEP kernel also as a dependent launch (PDL), and so with
    the merge unrolled over 8 and 16 splits (MERGE_UNROLLED) and the first block loaded early (EARLY_LOADS)."""
    llama = [(True, True, 0, False), (True, True, 8, False), (True, True, 16, False), (True, True, 0, True)]
    for dtype in ("bf16", "fp32"):
        for D in (64, 128, 256) if dtype == "bf16" else (64, 128):
            cases = [(False, False, 0, False), (True, False, 0, False), *(llama if (dtype, D) == ("bf16", 64) else [])]
            for step, pdl, unroll, early in cases:
                pointers = {n: f"*{dtype}" for n in ("q_ptr", "k_ptr", "v_ptr", "kn_ptr", "vn_ptr", "cos_ptr",
                                                     "sin_ptr", "out_ptr")}
                pointers.update(mask_ptr="*i1", acc_ptr="*fp32", top_ptr="*fp32", total_ptr="*fp32",
                                slot_ptr="*i64", count_ptr="*i32")
                block_s = decode_attention._block_s(torch.bfloat16 if dtype == "bf16" else torch.float32, D)
                constexprs = {"G": 4, "D": D, "HAS_MASK": True, "STEP": step, "UPCAST": dtype == "fp32", "PDL": pdl,
                              "BLOCK_G": 16, "BLOCK_HALF": D // 2, "BLOCK_S": block_s, "UNROLL": unroll,
                              "EARLY": early}
                label = (f"decode_attention {dtype} D={D}{' STEP' if step else ''}{' PDL' if pdl else ''}"
                         f"{f' UNROLL={unroll}' if unroll else ''}{' EARLY' if early else ''}")
                options = decode_attention.STEP_LAUNCH if step else {}
                yield label, decode_attention._decode_attention_kernel, pointers, constexprs, 4, {"NKV"}, options


def window_cases():
    """window_attention at ModernBERT-base's heads (64), window 64 each side, the shipped launch shape."""
    for rope in (False, True):
        pointers = {n: "*bf16" for n in ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "cos_ptr", "sin_ptr")}
        pointers.update(row_ptr="*i32")
        constexprs = {"WINDOW": 64, "D": 64, "ROPE": rope, "HEADS_FIRST": window_attention.HEADS_FIRST,
                      "UPCAST": False, "BLOCK_M": window_attention.BLOCK_M, "BLOCK_N": window_attention.BLOCK_N}
        yield f"window_attention bf16{' ROPE' if rope else ''}", window_attention._window_attention_kernel, \
            pointers, constexprs, 4, {"N"}, {"num_stages": window_attention.STAGES or 3}


def matvec_cases():
    """matvec at Llama-3.2-1B's products (bf16): q | k | v and gate | up (SiLU) with the norm prologue or without,
    o with the residual addition or without; each also as a dependent launch (PDL), as compiled steps on sm_90+
    launch them (there with the norms and residuals inside)."""
    pointers = {n: "*bf16" for n in ("x_ptr", "y_ptr", "w0", "w1", "w2", "s0", "s1", "s2", "b0", "b1", "b2", "g_ptr",
                                     "r_ptr")}
    for label, n, glu, segments, fused in (("q|k|v", 3072, False, 3, "NORM"), ("gate|up SiLU", 8192, True, 2, "NORM"),
                                           ("o", 2048, False, 1, "RESIDUAL")):
        config = matvec.config_for(n, 2048, glu=glu)
        for on, pdl in itertools.product((False, True), (False, True)):
            constexprs = {"K": 2048, "SEGMENTS": segments, "HAS_SCALE": False, "HAS_BIAS": False, "ACT": int(glu),
                          "NORM": on and fused == "NORM", "RESIDUAL": on and fused == "RESIDUAL", "PDL": pdl,
                          "BLOCK_N": config["BLOCK_N"], "BLOCK_K": config["BLOCK_K"]}
            yield f"matvec {label}{' ' + fused if on else ''}{' PDL' if pdl else ''}", matvec._matvec_kernel, \
                pointers, constexprs, \
                config["num_warps"], {"ROWS"}, {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--unaligned", action="store_true", help="no divisibility-by-16 specialisation")
    args = parser.parse_args()
    for cases in (decode_cases, window_cases, matvec_cases):
        for label, kernel, pointers, constexprs, warps, unaligned, options in cases():
            registers = report(kernel, pointers, constexprs, warps, unaligned, not args.unaligned, options)
            print(f"{label} ({warps} warps): {registers}")


if __name__ == "__main__":
    main()
