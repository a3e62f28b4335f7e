"""Diagnose: hfkit Gemma 2 on CUDA vs CPU vs transformers, per row, real tokens vs pad positions."""
import sys
import tempfile

import torch

sys.path.insert(0, ".")
from tests.parity.tiny import HFKIT_AUTO, padded_batch, tiny_reference  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
reference = tiny_reference("gemma2", "base").eval()
batch = padded_batch(reference.config)
with tempfile.TemporaryDirectory() as tmp:
    reference.save_pretrained(tmp)
    cpu = HFKIT_AUTO["base"].from_pretrained(tmp)
    gpu = HFKIT_AUTO["base"].from_pretrained(tmp, device="cuda")
with torch.no_grad():
    ref = reference(**batch, output_hidden_states=True).hidden_states
    ours_cpu = cpu(**batch, output_hidden_states=True).hidden_states
    ours_gpu = gpu(**{k: v.cuda() for k, v in batch.items()}, output_hidden_states=True).hidden_states
keep = batch["attention_mask"].bool()
for layer, (r, c, g) in enumerate(zip(ref, ours_cpu, ours_gpu)):
    g = g.cpu()
    print(f"layer {layer}: cpu-vs-ref real {(c - r)[keep].abs().max():.2e} pad {(c - r)[~keep].abs().max():.2e} | "
          f"gpu-vs-cpu real {(g - c)[keep].abs().max():.2e} pad {(g - c)[~keep].abs().max():.2e}")
print("windows", cpu.windows, "softcap", reference.config.attn_logit_softcapping)
