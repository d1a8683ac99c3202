"""THE fit loop, its configuration, samplers, losses, callbacks and checkpoints."""

from recforge.training.callbacks import Callback, LoggingCallback
from recforge.training.config import TrainConfig
from recforge.training.device import resolve_device
from recforge.training.loop import History, TrainingDiverged, fit

__all__ = [
    "Callback",
    "History",
    "LoggingCallback",
    "TrainConfig",
    "TrainingDiverged",
    "fit",
    "resolve_device",
]
