"""Evaluation helpers: linear probing of representations, label transfer and training-time
measurement."""

from ._label_transfer import transfer_labels
from ._linear_probe import (
    LinearProbeResult,
    cap_cells_per_donor,
    donor_level_auroc,
    donor_level_spearman,
    linear_probe,
    macro_auroc,
    split_donors,
)
from ._probing import ProbeResult, cross_validated_probe
from ._reconstruction import (
    RECONSTRUCTION_RATIOS,
    masked_reconstruction_score,
    r2mae_predictor,
    scvi_predictor,
)
from ._timing import EpochTimer

__all__ = ["EpochTimer", "ProbeResult", "cross_validated_probe"]
__all__ += [
    "RECONSTRUCTION_RATIOS",
    "LinearProbeResult",
    "cap_cells_per_donor",
    "donor_level_auroc",
    "donor_level_spearman",
    "linear_probe",
    "macro_auroc",
    "masked_reconstruction_score",
    "r2mae_predictor",
    "scvi_predictor",
    "split_donors",
    "transfer_labels",
]
