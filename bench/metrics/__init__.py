"""Metrics: the one metric table (names, directions, scores), per-split classification metrics, calibration,
and bootstrap intervals. Imports only the core. The table loads with the package; the rest (pandas, scipy,
scikit-learn) on first use."""

from bench.lazy import lazy_exports, names
from bench.metrics.table import (
    INTERVAL_METRICS, METRIC_NAMES, METRICS, OBJECTIVES, Direction, MetricSpec, board_columns, direction, test_key,
)

_HEAVY = {
    "bench.metrics.bootstrap": ("TABLE_METRICS", "Interval", "bootstrap_intervals", "resample_indices"),
    "bench.metrics.calibration": ("expected_calibration_error", "reliability_bins"),
    "bench.metrics.classification": ("classification_metrics", "classification_report", "group_losses"),
}
__getattr__ = lazy_exports(__name__, _HEAVY)
__all__ = ["INTERVAL_METRICS", "METRICS", "METRIC_NAMES", "OBJECTIVES", "Direction", "MetricSpec", "board_columns",
           "direction", "test_key", *names(_HEAVY)]
