"""Exploration: the chunked linear + cross-entropy against the plain causal-LM loss.

Llama 3 shapes by default (N = 8192 tokens, B8 x S1024; H = 2048; V = 128256), float32
hidden and weight requiring grad, under autocast(bfloat16): forward + backward time
(CUDA events, 5 warm-up steps, median of --repeats) and peak memory above the inputs
(torch.cuda.max_memory_allocated, reset per variant, the fresh .grad tensors included)
for (a) the plain loss eager, (b) the plain loss under torch.compile, (c)
linear_cross_entropy with its default chunk, (d) with --chunks rows per chunk; and the
max |diff| of the loss and of both gradients against (a).

    PYTHONPATH=src python benchmarks/explore/linear_ce.py [--tokens 8192 --repeats 20]
    PYTHONPATH=src python benchmarks/explore/linear_ce.py --device cpu --tokens 64 \\
        --hidden 32 --vocab 1000 --repeats 2 --no-compile      # smoke test, no GPU
"""

from __future__ import annotations

import argparse
import datetime
import functools
import statistics
import time

import torch
import torch.nn.functional as F

from hfkit.nn.linear_cross_entropy import default_chunk_size, linear_cross_entropy


def plain_loss(hidden, weight, labels):
    """hfkit's path today: the (N, V) logits, then float32 cross-entropy."""
    logits = F.linear(hidden, weight)  # (N, V)
    return F.cross_entropy(logits.float(), labels)


def chunked(chunk_size):
    def loss(hidden, weight, labels):
        return linear_cross_entropy(hidden, weight, labels, chunk_size=chunk_size)

    return loss


def variants(args):
    """(name, loss function) pairs, the reference first."""
    out = [("(a) plain eager", plain_loss)]
    if args.compile:
        out.append(("(b) plain torch.compile", torch.compile(plain_loss)))
    default = default_chunk_size(args.vocab)
    out.append((f"(c) chunked, default {default} rows", chunked(None)))
    out += [(f"(d) chunked, {c} rows", chunked(c)) for c in args.chunks]
    return out


def inputs(args):
    g = torch.Generator(args.device).manual_seed(0)
    kw = {"device": args.device, "generator": g}
    hidden = torch.randn(args.tokens, args.hidden, **kw).requires_grad_()  # (N, H)
    weight = torch.randn(args.vocab, args.hidden, **kw) * args.hidden**-0.5  # (V, H)
    labels = torch.randint(0, args.vocab, (args.tokens,), **kw)  # (N,)
    labels[:: args.tokens // 8 or 1] = -100  # a few ignored rows, as padding would give
    return hidden, weight.requires_grad_(), labels


def step(fn, hidden, weight, labels):
    """One forward + backward under autocast(bfloat16), from fresh .grad tensors."""
    hidden.grad = weight.grad = None
    with torch.autocast(hidden.device.type, torch.bfloat16):
        loss = fn(hidden, weight, labels)
    loss.backward()
    return loss.detach()


def time_ms(run, device, repeats, warmup=5):
    """Median milliseconds of `run()`: CUDA events on CUDA, the wall clock elsewhere."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mib(run, device):
    """Peak MiB of one `run()` above what was allocated before it (NaN off CUDA), and
    what it returned."""
    if device != "cuda":
        return float("nan"), run()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20, out


def measure(args):
    """Per variant: name, ms, peak MiB, max |diff| of loss and grads against (a)."""
    hidden, weight, labels = inputs(args)
    rows, reference = [], None
    for name, fn in variants(args):
        run = functools.partial(step, fn, hidden, weight, labels)
        ms = time_ms(run, args.device, args.repeats)
        hidden.grad = weight.grad = None  # so the peak counts this run's own grads
        mib, loss = peak_mib(run, args.device)
        got = [t.cpu() for t in (loss, hidden.grad, weight.grad)]
        hidden.grad = weight.grad = None
        if reference is None:
            reference = got
        diffs = [
            (a.float() - b.float()).abs().max().item() for a, b in zip(got, reference)
        ]
        rows.append((name, ms, mib, *diffs))
    return rows


def table(args, rows) -> str:
    device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    logits_gib = args.tokens * args.vocab * 2 / 2**30
    title = (
        f"{device}, torch {torch.__version__}, {datetime.date.today()}: "
        f"N={args.tokens} H={args.hidden} V={args.vocab}, fp32 weight + hidden, "
        f"autocast bf16 (bf16 logits {logits_gib:.2f} GiB); median of {args.repeats}"
    )
    lines = [
        title,
        "",
        "| variant | fwd+bwd ms | peak MiB | max Δloss | max Δgrad_h | max Δgrad_w |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ms, mib, *diffs in rows:
        cells = [name, f"{ms:.2f}", f"{mib:.0f}", *(f"{d:.2e}" for d in diffs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--chunks", type=int, nargs="*", default=[1024, 2048, 4096])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args(argv)
    print(table(args, measure(args)))


if __name__ == "__main__":
    main()
