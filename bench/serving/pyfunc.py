"""The served MLflow pyfunc: images in, one label and all class probabilities out. It imports only `bench.errors`,
`bench.images` and `bench.serving.tta`: these four modules are copied into every logged model (bench.serving.server).
With a `tta` other than `none` in its config, each answer is the mean over flipped/rotated copies (bench.serving.tta).

Request contract (`mlflow models serve`, POST /invocations, JSON):
- `{"dataframe_records": [{"image": B64}, ...]}`, `{"dataframe_split": {"columns": ["image"], "data": [[B64], ...]}}`
  or `{"inputs": {"image": [B64, ...]}}`, where B64 is a base64 PNG, JPEG, BMP or TIFF file (a `data:` URL
  prefix and line breaks are tolerated);
- `{"inputs": PIXELS}` with PIXELS a nested N×H×W×3 array of raw pixel values 0..255 (integers or floats),
  already RGB; arrays of another size are resized like decoded images.
Response: `{"predictions": [{"label", "confidence", "prob_<class>"...}, ...]}`, one record per image.
A bad request gets HTTP 400 and `{"error_code": "INVALID_PARAMETER_VALUE", "message": <one line>}`.

The model carries no input schema on purpose: with an `image` column schema, MLflow's own enforcement
answers a missing column with the whole request echoed back, an optional column makes "no column" and
"empty batch" indistinguishable, and a raw pixel array is squeezed into the string column. Requests are
validated here instead, and nothing from a request is ever unpickled or executed. The logged model itself
holds no pickle either: it is an MLflow "model from code" plus the few bench modules it imports.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from PIL import Image

from bench import images
from bench.errors import BenchError, Constraint, Rules, check
from bench.serving.tta import TRANSFORMS, augment, fold

_logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
FORMAT_NAMES = f"{', '.join(ALLOWED_FORMATS[:-1])} or {ALLOWED_FORMATS[-1]}"
CONFIG_ARTIFACT = "serving_config"
KERAS_ARTIFACT = "keras_model"
KERAS_FILE = "artifacts/model.keras"  # where the Keras model lies inside a logged model
class ServingError(MlflowException, BenchError):
    """An error answered by the scoring server as JSON with exactly this one-line message and no stack trace."""

    def __init__(self, message: str, *, error_code: int = INTERNAL_ERROR) -> None:
        super().__init__(message, error_code=error_code)

    # mlflow's scoring server rewrites `e.message` to "Failed to predict data '<the whole request>'..."
    # before answering; keeping the first value keeps the answer short and free of echoed data.
    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


class RequestError(ServingError):
    """A bad request: HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


# Environment variables read when a model is loaded; they override the limits logged with it.
LIMIT_ENV_VARS = {
    "max_batch": "BENCH_SERVE_MAX_BATCH",
    "max_image_bytes": "BENCH_SERVE_MAX_BYTES",
    "max_image_pixels": "BENCH_SERVE_MAX_PIXELS",
}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _integer(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


POSITIVE = Constraint(_positive_int, "a positive integer")
LIMIT_RULES: Rules = (
    ("max_batch", POSITIVE),
    ("max_image_bytes", POSITIVE),
    ("max_image_pixels", Constraint(lambda v: _positive_int(v) and v <= images.MAX_PIXELS,
                                    f"a positive integer <= {images.MAX_PIXELS:,}")),
)
CONFIG_RULES: Rules = (
    ("class_names", Constraint(lambda v: bool(v) and all(isinstance(n, str) and n for n in v) and len(set(v)) == len(v),
                               "a list of distinct non-empty strings")),
    ("image_size", POSITIVE),
    ("resize_mode", Constraint(lambda v: v in images.RESIZE_MODES, f"one of {', '.join(images.RESIZE_MODES)}")),
    ("tta", Constraint(lambda v: v in TRANSFORMS, f"one of {', '.join(TRANSFORMS)}")),
)


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits: images per request, encoded bytes per image, pixels per image."""

    max_batch: int = 64
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 16_000_000

    def __post_init__(self) -> None:
        check(LIMIT_RULES, self)

    def with_env(self, environ: dict[str, str] | None = None) -> ServingLimits:
        """These limits with any `BENCH_SERVE_*` variable set in `environ` (default os.environ) applied."""
        environ = os.environ if environ is None else environ
        overrides = {name: _integer(environ[var]) for name, var in LIMIT_ENV_VARS.items() if var in environ}
        check(tuple((var, POSITIVE) for name, var in LIMIT_ENV_VARS.items() if name in overrides),
              {LIMIT_ENV_VARS[name]: value for name, value in overrides.items()})
        return ServingLimits(**{**asdict(self), **overrides})


@dataclass(frozen=True)
class ServingConfig:
    """Everything besides the weights that serving needs; stored as a small JSON artifact."""

    class_names: list[str]
    image_size: int
    resize_mode: str = "pad"
    limits: ServingLimits = field(default_factory=ServingLimits)
    tta: str = "none"  # test-time augmentation (bench.serving.tta): the model runs once on every copy

    def __post_init__(self) -> None:
        check(CONFIG_RULES, self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServingConfig:
        data = json.loads(text)
        return cls(**{**data, "limits": ServingLimits(**data.get("limits", {}))})


def _decode_base64(text: str, index: int, limits: ServingLimits) -> bytes:
    if text.startswith("data:"):  # browsers and JS clients send data URLs
        text = text.partition(",")[2]
    compact = "".join(text.split())  # `base64` wraps lines at 76 columns
    if len(compact) // 4 * 3 > limits.max_image_bytes:
        raise RequestError(
            f"image {index}: about {len(compact) // 4 * 3:,} bytes is over the "
            f"{limits.max_image_bytes:,}-byte limit ({LIMIT_ENV_VARS['max_image_bytes']})"
        )
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"image {index}: not valid base64") from None


def _decode_file_bytes(data: bytes, index: int, size: int, mode: str, limits: ServingLimits) -> np.ndarray:
    if len(data) > limits.max_image_bytes:
        raise RequestError(
            f"image {index}: {len(data):,} bytes is over the {limits.max_image_bytes:,}-byte limit "
            f"({LIMIT_ENV_VARS['max_image_bytes']})"
        )
    # Any decoder failure on untrusted bytes is the client's bad input, whatever PIL raises for it.
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError:
        raise RequestError(
            f"image {index}: over the {limits.max_image_pixels:,}-pixel limit ({LIMIT_ENV_VARS['max_image_pixels']})"
        ) from None
    except Exception:
        raise RequestError(f"image {index}: not a {FORMAT_NAMES} image") from None
    _check_pixels(width, height, index, limits)
    try:
        return images.decode(data, size, mode)
    except Exception:
        raise RequestError(f"image {index}: corrupt or truncated image data") from None


def _check_pixels(width: int, height: int, index: int, limits: ServingLimits) -> None:
    if width * height > limits.max_image_pixels:
        raise RequestError(
            f"image {index}: {width}x{height} pixels is over the {limits.max_image_pixels:,}-pixel limit "
            f"({LIMIT_ENV_VARS['max_image_pixels']})"
        )


def _from_pixels(value: Any, index: int, size: int, mode: str, limits: ServingLimits) -> np.ndarray:
    try:
        pixels = np.asarray(value)
    except ValueError:  # ragged nested lists
        pixels = np.asarray([])
    if pixels.dtype.kind not in "uif" or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise RequestError(
            f"image {index}: a pixel array must be a non-empty HxWx3 array of numbers; "
            f"got shape {pixels.shape} of {pixels.dtype}"
        )
    _check_pixels(pixels.shape[1], pixels.shape[0], index, limits)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise RequestError(f"image {index}: pixel values must be finite and within 0..255")
    if pixels.shape[:2] == (size, size):
        return pixels.astype(np.float32)
    rgb = Image.fromarray(np.rint(pixels).astype(np.uint8))
    return np.asarray(images.fit(rgb, size, mode), dtype=np.float32)


def _some(names: Any, shown: int = 5) -> str:
    """At most `shown` of a request's column or input names, each cut short: messages stay one short line."""
    names = [str(name)[:40] for name in names]
    return repr(names[:shown])[:-1] + (f", … {len(names) - shown} more]" if len(names) > shown else "]")


def _items(model_input: Any) -> list[Any]:
    """The request's images, one entry each, from any form mlflow's scoring server hands over."""
    if isinstance(model_input, pd.DataFrame):
        if len(model_input) == 0:
            raise RequestError("empty batch: the request holds no images")
        if IMAGE_COLUMN not in model_input.columns:
            raise RequestError(f"request has no '{IMAGE_COLUMN}' column; got columns {_some(model_input.columns)}")
        if list(model_input.columns).count(IMAGE_COLUMN) > 1:
            raise RequestError(f"request has more than one '{IMAGE_COLUMN}' column")
        return model_input[IMAGE_COLUMN].tolist()
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise RequestError(f"request has no '{IMAGE_COLUMN}' input; got inputs {_some(sorted(model_input))}")
        model_input = model_input[IMAGE_COLUMN]
    try:
        array = np.asarray(model_input)
    except ValueError:  # ragged nested lists
        raise RequestError("inputs must be a list of base64 strings or an NxHxWx3 pixel array") from None
    if array.dtype.kind in "uif" and array.ndim in (3, 4):
        return list(array) if array.ndim == 4 else [array]
    if array.ndim == 1 or array.size == 0:
        return array.tolist()
    raise RequestError(
        f"inputs must be a list of base64 strings or an NxHxWx3 pixel array; got shape {array.shape}"
    )


def parse_request(model_input: Any, *, image_size: int, resize_mode: str, limits: ServingLimits) -> np.ndarray:
    """A request's images as a float32 (N, S, S, 3) batch of raw 0..255 pixels; RequestError names what's wrong."""
    items = _items(model_input)
    if not items:
        raise RequestError("empty batch: the request holds no images")
    if len(items) > limits.max_batch:
        raise RequestError(
            f"batch of {len(items)} images is over the limit of {limits.max_batch} "
            f"({LIMIT_ENV_VARS['max_batch']})"
        )
    batch = np.empty((len(items), image_size, image_size, 3), dtype=np.float32)
    for index, item in enumerate(items):
        if isinstance(item, str):
            item = _decode_base64(item, index, limits)
        if isinstance(item, (bytes, bytearray)):
            batch[index] = _decode_file_bytes(bytes(item), index, image_size, resize_mode, limits)
        elif isinstance(item, (list, np.ndarray)):
            batch[index] = _from_pixels(item, index, image_size, resize_mode, limits)
        else:
            raise RequestError(
                f"image {index}: expected a base64 string or an HxWx3 pixel array; got {type(item).__name__}"
            )
    return batch


def predictions_frame(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per image: `label`, `confidence` and `prob_<class>` for every class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    best = probabilities.argmax(axis=1)
    columns: dict[str, Any] = {
        "label": [class_names[i] for i in best],
        "confidence": probabilities[np.arange(len(best)), best],
    }
    columns.update({f"prob_{name}": probabilities[:, j] for j, name in enumerate(class_names)})
    return pd.DataFrame(columns)


def _compiled_forward(model: Any, image_size: int) -> Any:
    """`model(x, training=False)` as one traced graph for any batch size (3-4x faster than eager on CPU)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda batch: keras.ops.convert_to_numpy(model(batch, training=False))
    import tensorflow as tf

    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
    graph = tf.function(lambda batch: model(batch, training=False), input_signature=[spec])
    return lambda batch: graph(batch).numpy()


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """The served pyfunc, built by MODEL_CODE; everything it knows comes from its artifacts at load."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import keras

        config = ServingConfig.from_json(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        self.config = replace(config, limits=config.limits.with_env())
        model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self._forward = _compiled_forward(model, config.image_size)
        # Trace and allocate now so the first request is as fast as the rest.
        self._forward(np.zeros((1, config.image_size, config.image_size, 3), dtype=np.float32))

    # model_input is a dict or an ndarray for `inputs` requests, but DataFrame is one of the few hints
    # from which mlflow neither infers a signature nor validates (which would change request parsing).
    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        config = self.config
        batch = parse_request(
            model_input, image_size=config.image_size, resize_mode=config.resize_mode, limits=config.limits
        )
        try:
            return predictions_frame(fold(self._forward(augment(batch, config.tta)), config.tta), config.class_names)
        except Exception as error:  # the traceback goes to the server log, not to the client
            _logger.exception("prediction failed")
            raise ServingError(f"prediction failed: {type(error).__name__}") from None
