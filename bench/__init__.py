"""HemaBench: an MLflow-tracked AutoML benchmarking harness for blood-cell image classification."""

__version__ = "0.1.0"
