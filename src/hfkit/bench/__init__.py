"""Benchmarks a user runs on their own machine (`hfkit bench`), each a module with `main(argv)`; the scripts in
the repository's benchmarks/ folder are thin wrappers around them.

embed_cpu: sentence embeddings on CPU, hfkit (exact float32 and the opt-in bfloat16 / int8 paths) side by side
with sentence-transformers and plain transformers where those are installed. GPU_BENCHMARKS run after it when
CUDA is present."""

GPU_BENCHMARKS = ("encode_gpu", "decode_gpu", "train_gpu")
