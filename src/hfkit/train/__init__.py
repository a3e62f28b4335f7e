"""Training: one Trainer for CPU, one GPU and `torchrun` DDP; data, collation, metrics, checkpoints."""

from .config import TrainingConfig
from .trainer import Trainer

__all__ = ["Trainer", "TrainingConfig"]
