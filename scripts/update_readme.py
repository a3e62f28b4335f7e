"""Rewrite the README's generated section (the support matrix) from the registry."""

from pathlib import Path

from hfkit.models.auto import support_matrix

START, END = "<!-- support-matrix:start -->", "<!-- support-matrix:end -->"


def render(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{support_matrix()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render(path.read_text()))
