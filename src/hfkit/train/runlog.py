"""Where a run's records go: a progress bar, OUTPUT_DIR/metrics.jsonl, and TensorBoard when it is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class RunLog:
    """One record per log or eval event. Only the main process makes one with an output_dir and a bar."""

    def __init__(self, output_dir: str | Path | None, total_steps: int, initial_step: int, progress: bool):
        self.file = self.board = self.bar = None
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self.file = open(Path(output_dir) / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.board = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.board is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, record["step"])
        if self.bar is not None:
            self.bar.update(record["step"] - self.bar.n)
            shown = {k: v for k, v in record.items() if k in ("loss", "tokens_per_s") or k.startswith("eval_")}
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=True)

    def close(self) -> None:
        for handle in (self.file, self.board, self.bar):
            if handle is not None:
                handle.close()
