"""Thin wrapper: the benchmark lives in `hfkit.bench.train_gpu` (so `hfkit bench` runs it too).

    PYTHONPATH=src python benchmarks/train_gpu.py --help
"""

from hfkit.bench.train_gpu import main

if __name__ == "__main__":
    main()
