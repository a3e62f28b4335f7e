"""The unpadded (packed) encoder forward equals the padded one at every real token.

CPU: the pack/unpack helpers, cu_seqlens, per-sequence positions, the attention dispatcher's fallback (re-pad
around SDPA), the selection rules, and the whole packed stack of every family forced on (the fallback
path) against the padded stack, float32, <= 1e-5. CUDA (skipped without it): the varlen_attn kernel in
bfloat16 / float16 (and float32, which falls back unless varlen_attn takes it) against the padded path,
for every family × base model on a batch of very different lengths, ModernBERT longer than its window.
Pad positions of the re-padded outputs are zeros."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import hfkit.nn.attention as attn_mod
from hfkit.models.auto import FAMILIES, tasks_of
from hfkit.models.encoder import EncoderModel
from hfkit.nn.attention import PackedBatch, attention

from .parity.tiny import HFKIT_AUTO, VOCAB, tiny_reference

ENCODERS = [name for name, family in FAMILIES.items() if family.base_class is EncoderModel]
UNPADDABLE = [name for name in ENCODERS if FAMILIES[name].attention_bias is None and FAMILIES[name].stack_hooks is None]
FIELDS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")


def backbone_of(model) -> EncoderModel:
    return next(m for m in model.modules() if isinstance(m, EncoderModel))


def batch_of(config, lengths, left: bool = False, seed: int = 0, device="cpu") -> dict[str, torch.Tensor]:
    """Rows of the given lengths, padded to the longest (right, or left), with token types where the family has them."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids = torch.randint(3, VOCAB, (len(lengths), T), generator=gen)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        if left:
            mask[row, T - n:] = 1
        else:
            mask[row, :n] = 1
    batch = {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) > 1:
        batch["token_type_ids"] = (torch.arange(T)[None, :] >= T // 2).long().expand(len(lengths), -1) * mask
    return {k: v.to(device) for k, v in batch.items()}


def load(family: str, task: str, tmp_path, **kwargs):
    reference = tiny_reference(family, task, **kwargs.pop("config", {}))
    reference.save_pretrained(tmp_path)
    return reference, HFKIT_AUTO[task].from_pretrained(tmp_path, **kwargs)


def run(model, batch, unpadded, **kw):
    backbone_of(model).unpadded = unpadded
    try:
        with torch.no_grad():
            return model(**batch, **kw)
    finally:
        backbone_of(model).unpadded = None


def real_diff(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> float:
    """Max |a - b| over real tokens ((B, T, ...) outputs) or over all of a (B, ...) output."""
    a, b = a.float(), b.float()
    if a.dim() >= 2 and a.shape[:2] == keep.shape:
        a, b = a[keep.bool()], b[keep.bool()]
    return (a - b).abs().max().item()


# --- helpers ---------------------------------------------------------------------------------------------------------

def test_pack_descriptor():
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 1, 1]])
    packed = PackedBatch.from_mask(mask)
    assert packed.cu_seqlens.dtype == torch.int32
    assert packed.cu_seqlens.tolist() == [0, 5, 7, 7, 10]
    assert packed.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 17, 18, 19]
    assert packed.max_len == 5 and packed.shape == (4, 5) and packed.window is None
    assert packed.windowed(3).window == 3 and packed.windowed(3).indices is packed.indices


def test_unpad_repad_roundtrip_and_positions():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    packed = PackedBatch.from_mask(mask)
    x = torch.randn(3, 4, 6)
    flat = packed.unpad(x)
    assert flat.shape == (8, 6) and torch.equal(flat, x[mask.bool()])
    back = packed.repad(flat)
    assert torch.equal(back[mask.bool()], x[mask.bool()]) and not back[~mask.bool()].any()  # zeros at pads
    positions = packed.unpad(torch.arange(4)[None, :].expand(3, 4))  # right padding: 0..n-1 per sequence
    assert positions.tolist() == [0, 1, 2, 0, 0, 1, 2, 3]


@pytest.mark.parametrize("window", [None, 2])
def test_dispatcher_falls_back_on_cpu(window):
    """A PackedBatch given to `attention` on CPU: attention within each sequence (and window), as per-sequence SDPA."""
    lengths = [7, 2, 5]
    mask = torch.zeros(3, 7, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    packed = PackedBatch.from_mask(mask).windowed(window)
    N, H, D = sum(lengths), 4, 8
    q, k, v = (torch.randn(N, H, D) for _ in range(3))
    got = attention(q, k, v, packed)
    assert got.shape == (N, H, D)
    start = 0
    for n in lengths:
        s = slice(start, start + n)
        qs, ks, vs = (t[s].transpose(0, 1) for t in (q, k, v))  # (H, n, D)
        pos = torch.arange(n)
        keep = None if window is None else (pos[:, None] - pos[None, :]).abs() <= window
        ref = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=keep).transpose(0, 1)
        assert (got[s] - ref).abs().max() <= 1e-6
        start += n


def test_selection_rules(tmp_path):
    _, model = load("bert", "base", tmp_path)
    x = torch.zeros(2, 3, 32)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert not model.use_unpadded(x, mask)  # CPU: never automatic
    assert model.use_unpadded(x, mask, unpadded=True) and not model.use_unpadded(x, mask, unpadded=False)
    model.unpadded = True
    assert model.use_unpadded(x, mask) and not model.use_unpadded(x, mask, unpadded=False)  # the argument wins


def test_deberta_keeps_the_padded_path(tmp_path):
    reference, model = load("deberta-v2", "base", tmp_path)
    batch = batch_of(reference.config, [9, 3])
    assert not model.can_unpad and not model.use_unpadded(torch.zeros(2, 9, 32), batch["attention_mask"])
    with pytest.raises(ValueError, match="padded only"):
        run(model, batch, True)


# --- the packed stack (CPU: the dispatcher's fallback) vs the padded stack, float32 -----------------------------------

CELLS = [(family, task) for family in UNPADDABLE for task in tasks_of(FAMILIES[family])]


@pytest.mark.parametrize("family,task", CELLS, ids=[f"{f}-{t}" for f, t in CELLS])
def test_unpadded_equals_padded_cpu(family, task, tmp_path):
    reference, model = load(family, task, tmp_path)
    batch = batch_of(reference.config, [19, 3, 11, 1])  # ModernBERT's tiny window: 2 on each side
    padded = run(model, batch, False, output_hidden_states=True)
    packed = run(model, batch, True, output_hidden_states=True)
    keep = batch["attention_mask"]
    for name in FIELDS:
        if getattr(padded, name, None) is not None:
            assert real_diff(getattr(packed, name), getattr(padded, name), keep) <= 1e-5, name
    assert len(packed.hidden_states) == len(padded.hidden_states)
    for a, b in zip(packed.hidden_states, padded.hidden_states):
        assert a.shape == b.shape and real_diff(a, b, keep) <= 1e-5
        assert not a[~keep.bool()].any()  # pad positions of every re-padded state: zeros
    assert torch.equal(packed.hidden_states[-1], packed.last_hidden_state) if task == "base" else True


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_modernbert_positions_and_windows(left, tmp_path):
    """Rotary positions are gathered from the padded positions (left padding too), explicit position_ids as well."""
    reference, model = load("modernbert", "base", tmp_path, config={"local_attention": 6})
    batch = batch_of(reference.config, [23, 5, 14], left=left)
    for extra in ({}, {"position_ids": torch.arange(23)[None, :].expand(3, -1) + 3}):
        padded = run(model, {**batch, **extra}, False).last_hidden_state
        packed = run(model, {**batch, **extra}, True).last_hidden_state
        assert real_diff(packed, padded, batch["attention_mask"]) <= 1e-5
    # and the padded path still matches transformers here (the reference of both)
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
    assert real_diff(packed, expected, batch["attention_mask"]) <= 1e-5


def test_no_padding_forced_unpadded(tmp_path):
    reference, model = load("bert", "base", tmp_path)
    batch = batch_of(reference.config, [6, 6])
    padded = run(model, batch, False).last_hidden_state
    assert (run(model, batch, True).last_hidden_state - padded).abs().max() <= 1e-5
    no_mask = {k: v for k, v in batch.items() if k != "attention_mask"}
    assert (run(model, no_mask, True).last_hidden_state - padded).abs().max() <= 1e-5


# --- CUDA: the varlen_attn kernel ------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
LENGTHS = [300, 7, 150, 64, 1, 233]  # very different lengths; ModernBERT's window below is 32 on each side
# float32: max abs; half precision: relative to the largest |hidden state| (a bf16 ulp is 2^-8 of it)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


REAL_VARLEN = attn_mod.varlen_attn


def fp32_supported() -> bool:
    """Whether varlen_attn takes float32 (informational: the packed path keeps float32 on SDPA either way)."""
    if REAL_VARLEN is None:
        return False
    q = torch.randn(8, 2, 16, device="cuda")
    cu = torch.tensor([0, 8], dtype=torch.int32, device="cuda")
    try:
        REAL_VARLEN(q, q, q, cu, cu, 8, 8)
        return True
    except Exception:  # noqa: BLE001 - any refusal means float32 stays on the padded path
        return False


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts varlen_attn calls (the dispatcher reads the module global at call time)."""
    calls = []
    real = attn_mod.varlen_attn
    if real is not None:
        monkeypatch.setattr(attn_mod, "varlen_attn", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.fixture(autouse=True)
def exact_matmuls(exact_cuda_matmuls):
    """Every test here compares float32 CUDA outputs with a CPU reference."""


DTYPES = [torch.bfloat16, torch.float16, torch.float32]
GPU_CELLS = [(f, d) for f in UNPADDABLE for d in DTYPES]


@cuda
@pytest.mark.parametrize("family,dtype", GPU_CELLS, ids=[f"{f}-{str(d)[6:]}" for f, d in GPU_CELLS])
def test_unpadded_equals_padded_cuda(family, dtype, kernel_calls, tmp_path):
    config = {"local_attention": 64, "max_position_embeddings": 512} if family == "modernbert" else {"max_position_embeddings": 512}
    reference, model = load(family, "base", tmp_path, device="cuda", dtype=dtype, config=config)
    batch = batch_of(reference.config, LENGTHS, device="cuda")
    keep = batch["attention_mask"]
    padded = run(model, batch, False, output_hidden_states=True)
    assert not kernel_calls
    packed = run(model, batch, True, output_hidden_states=True)
    uses_kernel = dtype != torch.float32  # flash kernels: float32 re-pads around SDPA
    assert bool(kernel_calls) == uses_kernel, (len(kernel_calls), uses_kernel)
    diffs = [real_diff(a, b, keep) for a, b in zip(packed.hidden_states, padded.hidden_states)]
    last = real_diff(packed.last_hidden_state, padded.last_hidden_state, keep)
    scale = max(1.0, max(s.float()[keep.bool()].abs().max().item() for s in padded.hidden_states))
    exact = ""
    if dtype != torch.float32:  # both paths against the same model in float32: is the packed one as accurate?
        model32 = HFKIT_AUTO["base"].from_pretrained(tmp_path, device="cuda", dtype=torch.float32)
        truth = run(model32, batch, False).last_hidden_state
        exact = (f" vs-fp32: padded={real_diff(padded.last_hidden_state, truth, keep):.3e}"
                 f" unpadded={real_diff(packed.last_hidden_state, truth, keep):.3e}")
    print(f"\nUNPAD-DIFF {family} {str(dtype)[6:]} kernel={uses_kernel} last={last:.3e} "
          f"states_max={max(diffs):.3e} |ref|max={scale:.2f}{exact}")
    assert max(diffs + [last]) <= TOLERANCE[dtype] * (1.0 if dtype == torch.float32 else scale)
    for state in packed.hidden_states:
        assert not state[~keep.bool()].any()
    # automatic selection: the kernel in half precision with padding, the padded path in float32
    kernel_calls.clear()
    with torch.no_grad():
        auto = model(**batch).last_hidden_state
    windowed = any(block.spec.window is not None for block in backbone_of(model).blocks)
    assert bool(kernel_calls) == (dtype != torch.float32 and (attn_mod.VARLEN_WINDOW or not windowed))
    assert real_diff(auto, packed.last_hidden_state if kernel_calls else padded.last_hidden_state, keep) == 0.0


@cuda
def test_deberta_auto_stays_padded_cuda(kernel_calls, tmp_path):
    reference, model = load("deberta-v2", "base", tmp_path, device="cuda", dtype=torch.bfloat16)
    batch = batch_of(reference.config, [40, 3, 17], device="cuda")
    with torch.no_grad():
        model(**batch)
    assert not kernel_calls


@cuda
def test_varlen_signature_on_this_torch():
    """Recorded for the report: whether this torch's varlen_attn exists, takes window_size, takes float32."""
    print(f"\nVARLEN torch={torch.__version__} varlen={attn_mod.varlen_attn is not None} "
          f"window_size={attn_mod.VARLEN_WINDOW} fp32={fp32_supported()}")
    if attn_mod.varlen_attn is not None:
        import inspect

        print(f"VARLEN signature {inspect.signature(attn_mod.varlen_attn)}")
