"""Full-ranking offline evaluation (never sampled negatives)."""

from recall_core.evaluation.metrics import ranking_metrics
from recall_core.evaluation.protocols import PROTOCOLS, EvalQueries, EvalSplit, make_split

__all__ = ["PROTOCOLS", "EvalQueries", "EvalSplit", "make_split", "ranking_metrics"]
