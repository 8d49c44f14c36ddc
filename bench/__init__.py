"""HemaBench: an MLflow-tracked AutoML benchmarking harness for blood-cell image classification."""

import os
import warnings

from bench.quiet import install

__version__ = "0.1.0"

# Quiet defaults for a tool people watch: TF's C++ banner, MLflow's per-download progress bars, and library
# warnings that say nothing actionable to a user of HemaBench. Each can be overridden from the environment.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
for _pattern in (
    r"Some regimes for parameter",  # Optuna importances on few trials
    r"Target and region quantiles select the same set",
):
    warnings.filterwarnings("ignore", message=f".*{_pattern}")
install()  # TensorFlow's C++ start-up lines (absl, oneDNN) never reach the console
