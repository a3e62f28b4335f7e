"""The GPU benchmarks' `--only` choice (hfkit.bench.timing.only_variants): '|'-separated plain parts of labels,
not regular expressions, and a part that names no variant stops the run before it spends device time."""

from __future__ import annotations

import pytest

from hfkit.bench.timing import only_variants

LABELS = ["hfkit, static cache", "hfkit, static cache + compile (reduce-overhead)", "transformers (sdpa)"]


def test_only_variants_takes_plain_parts_in_label_order():
    assert only_variants(LABELS, "") == only_variants(LABELS, None) == LABELS
    assert only_variants(LABELS, "compile (reduce") == [LABELS[1]]  # parentheses are text
    assert only_variants(LABELS, "sdpa|static cache") == LABELS
    assert only_variants(LABELS, "compile", keep={"transformers (sdpa)"}) == LABELS[1:]


def test_a_part_that_names_no_variant_stops_with_the_labels():
    with pytest.raises(SystemExit, match=r"no variant contains \['\^fused'\]; the variants: \['hfkit, static cache'"):
        only_variants(LABELS, "compile|^fused")
