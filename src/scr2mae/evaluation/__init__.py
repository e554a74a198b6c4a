"""Evaluation helpers: linear probing of representations, label transfer and training-time
measurement."""

# ruff: noqa: F403
# every module lists its public names once, in its own ``__all__``
from . import _label_transfer, _linear_probe, _probing, _reconstruction, _timing
from ._label_transfer import *
from ._linear_probe import *
from ._probing import *
from ._reconstruction import *
from ._timing import *

__all__ = sorted(
    [
        *_label_transfer.__all__,
        *_linear_probe.__all__,
        *_probing.__all__,
        *_reconstruction.__all__,
        *_timing.__all__,
    ]
)
