"""Thin wrapper: the benchmark lives in `hfkit.bench.encode_gpu` (so `hfkit bench` runs it too).

    PYTHONPATH=src python benchmarks/encode_gpu.py --help
"""

from hfkit.bench.encode_gpu import main

if __name__ == "__main__":
    main()
