"""The single-cell front: :class:`R2MAEModel`, its torch module and training plan."""

from ._config import Options, resolve_options
from ._model import R2MAEModel, default_max_epochs
from ._module import R2MAEModule
from ._training_plan import PAPER_OPTIMIZER, VALIDATION_METRIC, R2MAETrainingPlan

__all__ = [
    "PAPER_OPTIMIZER",
    "VALIDATION_METRIC",
    "Options",
    "R2MAEModel",
    "R2MAEModule",
    "R2MAETrainingPlan",
    "default_max_epochs",
    "resolve_options",
]
