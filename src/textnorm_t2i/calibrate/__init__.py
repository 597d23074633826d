"""TextNorm calibration, ensembles and honest hyper-parameter selection."""

from textnorm_t2i.calibrate.ensemble import Ensemble, combine
from textnorm_t2i.calibrate.select import Selection, cross_validate, kfold_assignment, select_hyperparameters
from textnorm_t2i.calibrate.textnorm import TextNorm, normalize_sets, pad_sets

__all__ = ["Ensemble", "Selection", "TextNorm", "combine", "cross_validate", "kfold_assignment",
           "normalize_sets", "pad_sets", "select_hyperparameters"]
