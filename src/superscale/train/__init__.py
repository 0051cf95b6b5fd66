"""Fine-tuning and training AuraSR on your own images: `superscale train` (see
docs/training.md). The result is a checkpoint in the official format that `serve` serves."""

from .degrade import Degradation
from .loop import Result, TrainingError, TrainOptions, train

__all__ = ["Degradation", "Result", "TrainOptions", "TrainingError", "train"]
