"""Thin wrapper: the benchmark lives in `hfkit.bench.decode_gpu` (so `hfkit bench` runs it too).

    PYTHONPATH=src python benchmarks/decode_gpu.py --help
"""

from hfkit.bench.decode_gpu import main

if __name__ == "__main__":
    main()
