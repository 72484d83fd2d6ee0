"""Stage 4 — training steering vectors: joint factor/direction training on an exact fast path."""

from prosv_lens.training.config import TrainConfig
from prosv_lens.training.trainer import TrainResult, response_loss, train

__all__ = ["TrainConfig", "TrainResult", "response_loss", "train"]
