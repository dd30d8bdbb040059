"""One trainer for both stages, with checkpoint/resume."""

from lbr.training.stages import learn, represent
from lbr.training.trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError", "learn", "represent"]
