"""The README's generated support matrix matches the registry (run scripts/update_readme.py to refresh)."""

from pathlib import Path

from scripts.update_readme import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_support_matrix_is_current():
    text = README.read_text()
    assert render(text) == text, "README support matrix is stale: run `python scripts/update_readme.py`"
