#!/bin/bash
# ninth session, device run: CUDA tests of the kernels, then the decode- and window-attention measurements
export PYTHONPATH=src
nvidia-smi --query-gpu=name --format=csv,noheader
step() { local name=$1 limit=$2; shift 2; echo "=== $name"; timeout $limit "$@" 2>&1 | tee $OUT/$name.log | grep -v "^\s*$" | tail -30; }
step tests 100 python -m pytest tests/test_matvec.py tests/test_window_attention.py -k "not interpreter" -q -p no:cacheprovider -x
step attention 45 python benchmarks/explore/decode_attention.py
step window 150 python benchmarks/explore/window_attention.py --repeats 5
step step_bf16 140 python benchmarks/explore/decode_step.py --before --attention-kernel --only "separate|SDPA"
