"""TextNorm calibration, ensembles and honest hyper-parameter selection."""

from textnorm.calibrate.ensemble import Ensemble, combine
from textnorm.calibrate.select import Selection, cross_validate, kfold_assignment, select_hyperparameters
from textnorm.calibrate.textnorm import TextNorm, normalize_sets, pad_sets

__all__ = ["Ensemble", "Selection", "TextNorm", "combine", "cross_validate", "kfold_assignment",
           "normalize_sets", "pad_sets", "select_hyperparameters"]
