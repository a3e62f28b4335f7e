"""verify-matrix: export + verify-export for every registered family × head, on tiny random models."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .verify import SHORT_HEADS, Report, family_tasks, task_name, verify_export


def tiny_model(family, task: str, seed: int = 0):
    """A seeded random hfkit model of `family` with the `task` head, from the family's tiny_config."""
    from .models.auto import model_class

    labels = {"sequence-classification": ["neg", "pos", "neutral"],
              "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}
    overrides = {"id2label": dict(enumerate(labels[task]))} if task in labels else {}
    config = family.read_config({"model_type": family.model_type, **family.tiny_config}, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(family, task)(config)
        model.init_new_weights([""])
        model.tie_weights()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # every tensor distinct (no zero biases, no unit norms): a swapped key cannot hide
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=gen) * 0.02)
    return model.eval()


@dataclass
class Matrix:
    families: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], Report | str]  # a Report, or the error that stopped the cell

    @property
    def ok(self) -> bool:
        return all(isinstance(c, Report) and c.ok for c in self.cells.values())

    def status(self, family: str, task: str) -> str:
        cell = self.cells.get((family, task))
        return "—" if cell is None else "PASS" if isinstance(cell, Report) and cell.ok else "FAIL"

    def render(self) -> str:
        width = max(len(f) for f in ["family", *self.families])
        heads = {t: next((s for s, full in SHORT_HEADS.items() if full == t), t) for t in self.tasks}
        lines = [" ".join([f"{'family':{width}}", *(f"{heads[t]:>8}" for t in self.tasks)])]
        lines += [" ".join([f"{f:{width}}", *(f"{self.status(f, t):>8}" for t in self.tasks)]) for f in self.families]
        for (family, task), cell in self.cells.items():
            if not (isinstance(cell, Report) and cell.ok):
                text = cell.render() if isinstance(cell, Report) else cell
                lines += ["", f"{family} × {task}:", *("  " + line for line in text.splitlines())]
        passed = sum(self.status(f, t) == "PASS" for f, t in self.cells)
        lines += ["", f"{passed}/{len(self.cells)} PASS" + ("" if self.ok else " — FAILED")]
        return "\n".join(lines)


def verify_matrix(families: list[str] | None = None, heads: list[str] | None = None, seed: int = 0) -> Matrix:
    """Export + verify-export for every registered family × head (or the ones named) on tiny random models."""
    from .export import save_pretrained
    from .models.auto import CLASS_SUFFIX, FAMILIES, family_of

    names = list(families or FAMILIES)
    chosen = [family_of(name) for name in names]
    tasks = [task_name(h) for h in heads] if heads else list(CLASS_SUFFIX)
    cells: dict[tuple[str, str], Report | str] = {}
    with tempfile.TemporaryDirectory(prefix="hfkit-verify-matrix-") as tmp:
        for family in chosen:
            for task in tasks:
                if task not in family_tasks(family):
                    continue
                try:
                    model = tiny_model(family, task, seed)
                    out = save_pretrained(model, Path(tmp) / f"{family.model_type}-{task}")
                    cells[family.model_type, task] = verify_export(out, source=model, seed=seed)
                except Exception as err:  # one broken cell must not hide the rest of the grid
                    cells[family.model_type, task] = f"{type(err).__name__}: {err}"
    return Matrix(names, tasks, cells)
