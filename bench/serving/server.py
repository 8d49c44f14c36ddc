"""Logging a classifier as the serving pyfunc, and running `mlflow models serve` on it.

The logged model is an MLflow "model from code": `MODEL_CODE` plus the only bench modules it imports at load time
(`CODE_MODULES`: errors, images, the serving pyfunc and its TTA), the Keras file and a small JSON config. Nothing in it is a
pickle, and the rest of bench is never needed to serve it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

if TYPE_CHECKING:
    import keras

from bench.errors import ConfigError
from bench.serving.pyfunc import CONFIG_ARTIFACT, KERAS_ARTIFACT, KERAS_FILE, ServingConfig, ServingLimits

# Pinned to the versions installed here so `--env-manager uv|virtualenv` rebuilds the same stack.
REQUIREMENTS = ("tensorflow-cpu", "keras", "mlflow", "pillow", "numpy", "pandas")
# The modules a logged model needs at load time, relative to the bench package; copied alone.
CODE_MODULES = ("errors.py", "images.py", "serving/pyfunc.py", "serving/tta.py")
# MLflow "models from code": the logged model holds this file, not a pickle, so loading it unpickles nothing.
MODEL_CODE = """\"\"\"HemaBench image classifier, an MLflow model from code.\"\"\"
import mlflow

from bench.serving.pyfunc import ImageClassifier

mlflow.models.set_model(ImageClassifier())
"""
BENCH_DIR = Path(__file__).resolve().parents[1]
# Bare package markers: the real `__init__` files import what a served model must not need.
PACKAGE_MARKER = '"""HemaBench modules packaged with a logged model."""\n'


def output_signature(class_names: list[str]) -> ModelSignature:
    """Outputs only; see the module docstring for why there is no input schema."""
    columns = [ColSpec("string", "label"), ColSpec("double", "confidence")]
    columns += [ColSpec("double", f"prob_{name}") for name in class_names]
    return ModelSignature(inputs=None, outputs=Schema(columns))


def pinned_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def without_optimizer(model: keras.Model) -> keras.Model:
    """The same architecture and weights with no optimizer state (a third of the size after Adam)."""
    if getattr(model, "optimizer", None) is None:
        return model
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _check_model(model: keras.Model, config: ServingConfig) -> None:
    size = config.image_size
    input_shape = tuple(model.input_shape)
    if input_shape[1:] not in ((size, size, 3), (None, None, 3)):
        raise ConfigError(f"model input shape must be (None, {size}, {size}, 3); got {input_shape}")
    if model.output_shape[-1] != len(config.class_names):
        raise ConfigError(
            f"model has {model.output_shape[-1]} outputs but {len(config.class_names)} class_names were given"
        )


def log_model(
    model: keras.Model,
    *,
    class_names: list[str],
    image_size: int,
    resize_mode: str = "pad",
    name: str = "model",
    registered_model_name: str | None = None,
    limits: ServingLimits | None = None,
    tta: str = "none",
) -> mlflow.models.model.ModelInfo:
    """Log `model` (raw 0..255 pixels in, softmax out) as an image-serving pyfunc in the active run; with `tta`
    (bench.serving.tta) each answer averages the model over that set of flipped/rotated copies."""
    config = ServingConfig(list(class_names), image_size, resize_mode, limits or ServingLimits(), tta)
    _check_model(model, config)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        keras_path = root / Path(KERAS_FILE).name
        without_optimizer(model).save(keras_path)
        config_path = root / "serving.json"
        config_path.write_text(config.to_json())
        code = root / "bench"
        for module in CODE_MODULES:
            target = code / module
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(BENCH_DIR / module, target)
        for folder in {parent for module in CODE_MODULES for parent in (code / module).parents if parent.is_relative_to(code)}:
            (folder / "__init__.py").write_text(PACKAGE_MARKER)
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
                metadata={"class_names": config.class_names, "image_size": image_size, "resize_mode": resize_mode,
                          "tta": tta},
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
