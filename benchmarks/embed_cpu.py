"""Thin wrapper: the benchmark lives in `hfkit.bench.embed_cpu` (so `hfkit bench` runs it too).

    PYTHONPATH=src python benchmarks/embed_cpu.py [--repeats 3] [--texts 512] [--batch-size 32] [--levers] [--json]
"""

from hfkit.bench.embed_cpu import main

if __name__ == "__main__":
    main()
