"""Reporting: evaluation figures, the insight galleries, the leaderboard read back from MLflow, and the lean MLflow
UI. Imports tracking, metrics, data types and serving's helpers."""

from bench.lazy import lazy_exports, names

_HEAVY = {
    "bench.reporting.leaderboard": ("board",),
    "bench.reporting.plots": ("write_evaluation_artifacts", "write_html"),
    "bench.reporting.insight": ("log_insights", "grad_cam"),
}
__getattr__ = lazy_exports(__name__, _HEAVY)
__all__ = names(_HEAVY)
