"""Serve a trained classifier as an MLflow pyfunc: images in, one label and all class probabilities out.

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
import contextlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema
from PIL import Image

from bench import images
from bench.errors import BenchError, ConfigError

_logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
FORMAT_NAMES = f"{', '.join(ALLOWED_FORMATS[:-1])} or {ALLOWED_FORMATS[-1]}"
CONFIG_ARTIFACT = "serving_config"
KERAS_ARTIFACT = "keras_model"
KERAS_FILE = "artifacts/model.keras"  # where the Keras model lies inside a logged model
# Pinned to the versions installed here so `--env-manager uv|virtualenv` rebuilds the same stack.
REQUIREMENTS = ("tensorflow-cpu", "keras", "mlflow", "pillow", "numpy", "pandas")
# The modules a logged model needs at load time; copied alone so the rest of bench never has to import.
CODE_MODULES = ("errors.py", "images.py", "serving.py")
# MLflow "models from code": the logged model holds this file, not a pickle, so loading it unpickles nothing.
MODEL_CODE = """\"\"\"HemaBench image classifier, an MLflow model from code.\"\"\"
import mlflow

from bench.serving import ImageClassifier

mlflow.models.set_model(ImageClassifier())
"""


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


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits: images per request, encoded bytes per image, pixels per image."""

    max_batch: int = 64
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 16_000_000

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"serving limit {item.name} must be a positive integer; got {value!r}")
        if self.max_image_pixels > images.MAX_PIXELS:
            raise ConfigError(
                f"serving limit max_image_pixels must be at most {images.MAX_PIXELS:,}; got {self.max_image_pixels:,}"
            )

    def with_env(self, environ: dict[str, str] | None = None) -> ServingLimits:
        """These limits with any `BENCH_SERVE_*` variable set in `environ` (default os.environ) applied."""
        environ = os.environ if environ is None else environ
        overrides = {}
        for name, var in LIMIT_ENV_VARS.items():
            if var in environ:
                try:
                    overrides[name] = int(environ[var])
                except ValueError:
                    overrides[name] = 0
                if overrides[name] < 1:
                    raise ConfigError(f"{var} must be a positive integer; got {environ[var]!r}")
        return ServingLimits(**{**asdict(self), **overrides})


@dataclass(frozen=True)
class ServingConfig:
    """Everything besides the weights that serving needs; stored as a small JSON artifact."""

    class_names: list[str]
    image_size: int
    resize_mode: str = "pad"
    limits: ServingLimits = field(default_factory=ServingLimits)

    def __post_init__(self) -> None:
        names = self.class_names
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"class_names must be distinct non-empty strings; got {names!r}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ConfigError(f"image_size must be a positive integer; got {self.image_size!r}")
        if self.resize_mode not in images.RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {images.RESIZE_MODES}; got {self.resize_mode!r}")

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


def _items(model_input: Any) -> list[Any]:
    """The request's images, one entry each, from any form mlflow's scoring server hands over."""
    if isinstance(model_input, pd.DataFrame):
        if len(model_input) == 0:
            raise RequestError("empty batch: the request holds no images")
        if IMAGE_COLUMN not in model_input.columns:
            raise RequestError(f"request has no '{IMAGE_COLUMN}' column; got columns {list(model_input.columns)}")
        return model_input[IMAGE_COLUMN].tolist()
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise RequestError(f"request has no '{IMAGE_COLUMN}' input; got inputs {sorted(model_input)}")
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
            return predictions_frame(self._forward(batch), config.class_names)
        except Exception as error:  # the traceback goes to the server log, not to the client
            _logger.exception("prediction failed")
            raise ServingError(f"prediction failed: {type(error).__name__}") from None


def output_signature(class_names: list[str]) -> ModelSignature:
    """Outputs only; see the module docstring for why there is no input schema."""
    columns = [ColSpec("string", "label"), ColSpec("double", "confidence")]
    columns += [ColSpec("double", f"prob_{name}") for name in class_names]
    return ModelSignature(inputs=None, outputs=Schema(columns))


def pinned_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def without_optimizer(model: Any) -> Any:
    """The same architecture and weights with no optimizer state (a third of the size after Adam)."""
    if getattr(model, "optimizer", None) is None:
        return model
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _check_model(model: Any, config: ServingConfig) -> None:
    size = config.image_size
    input_shape = tuple(model.input_shape)
    if input_shape[1:] not in ((size, size, 3), (None, None, 3)):
        raise ConfigError(f"model input shape must be (None, {size}, {size}, 3); got {input_shape}")
    if model.output_shape[-1] != len(config.class_names):
        raise ConfigError(
            f"model has {model.output_shape[-1]} outputs but {len(config.class_names)} class_names were given"
        )


def log_model(
    model: Any,
    *,
    class_names: list[str],
    image_size: int,
    resize_mode: str = "pad",
    name: str = "model",
    registered_model_name: str | None = None,
    limits: ServingLimits | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log `model` (raw 0..255 pixels in, softmax out) as an image-serving pyfunc in the active run."""
    config = ServingConfig(list(class_names), image_size, resize_mode, limits or ServingLimits())
    _check_model(model, config)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        keras_path = root / Path(KERAS_FILE).name
        without_optimizer(model).save(keras_path)
        config_path = root / "serving.json"
        config_path.write_text(config.to_json())
        code = root / "bench"
        code.mkdir()
        # A bare package marker: the real bench/__init__ may grow imports a served model must not need.
        (code / "__init__.py").write_text('"""HemaBench modules packaged with a logged model."""\n')
        for module in CODE_MODULES:
            shutil.copy2(Path(__file__).with_name(module), code / module)
        entry = root / "hemabench_model.py"
        entry.write_text(MODEL_CODE)
        with warnings.catch_warnings():  # no input example on purpose: it would run the model at log time
            warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(entry),
                artifacts={CONFIG_ARTIFACT: str(config_path), KERAS_ARTIFACT: str(keras_path)},
                code_paths=[str(code)],
                signature=output_signature(config.class_names),
                pip_requirements=pinned_requirements(),
                registered_model_name=registered_model_name,
                metadata={"class_names": config.class_names, "image_size": image_size, "resize_mode": resize_mode},
            )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(
    model_uri: str,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
    log_file: Path | None = None,
    cwd: Path | None = None,
) -> Iterator[str]:
    """Run `mlflow models serve --env-manager local` on 127.0.0.1 and yield its base URL.

    The server runs in its own process group, stopped (uvicorn worker included) when the block exits.
    """
    port = port or free_port()
    environ = {**os.environ, **(env or {})}
    # mlflow starts `uvicorn` through the shell: make it this interpreter's, not whatever PATH finds first.
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    with open(log_file or os.devnull, "ab") as log:
        process = subprocess.Popen(
            command, env=environ, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with status {process.returncode} before answering")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow models serve did not answer on {url} within {ready_timeout:.0f} s")
                time.sleep(0.25)
        yield url
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the whole group (the mlflow CLI and its uvicorn child), then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    process.wait()
