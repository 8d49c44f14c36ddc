"""Serving: the MLflow pyfunc that decodes images and answers with labels and probabilities, logging it with a
lean copy of its code, running `mlflow models serve`, and `predict` for files. Imports only the core."""

from bench.lazy import lazy_exports, names

_HEAVY = {
    "bench.serving.pyfunc": (
        "IMAGE_COLUMN", "KERAS_FILE", "ImageClassifier", "RequestError", "ServingConfig", "ServingError",
        "ServingLimits", "parse_request",
    ),
    "bench.serving.server": ("CODE_MODULES", "free_port", "log_model", "pinned_requirements", "serve"),
}
__getattr__ = lazy_exports(__name__, _HEAVY)
__all__ = names(_HEAVY)
