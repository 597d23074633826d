"""TIA2 benchmark: data loading, per-prompt alignment metrics, tables."""

from textnorm_t2i.bench.evaluate import evaluate_subset, published_table
from textnorm_t2i.bench.metrics import METRICS, per_prompt_metrics
from textnorm_t2i.bench.tia2 import SUBSETS, Subset, load_benchmark, load_subset

__all__ = [
    "METRICS",
    "SUBSETS",
    "Subset",
    "evaluate_subset",
    "load_benchmark",
    "load_subset",
    "per_prompt_metrics",
    "published_table",
]
