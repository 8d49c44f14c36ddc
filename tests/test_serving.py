"""The served pyfunc: request parsing and validation in-process, then a real `mlflow models serve` over HTTP."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image

from bench import images
from bench.errors import BenchError, ConfigError
from bench.serving.pyfunc import (
    LIMIT_ENV_VARS,
    ImageClassifier,
    RequestError,
    ServingConfig,
    ServingError,
    ServingLimits,
    parse_request,
    predictions_frame,
)
from bench.serving.server import log_model, serve, without_optimizer
from tests.conftest import store_uri

SIZE = 16
CLASSES = ["basophil", "eosinophil", "neutrophil"]
LIMITS = ServingLimits(max_batch=8, max_image_bytes=20_000, max_image_pixels=100 * 100)


def tiny_model() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))


def image_bytes(fmt: str = "PNG", width: int = 24, height: int = 20, seed: int = 0, *, noise: bool = True) -> bytes:
    """Random noise, or one flat colour where a file must be small in bytes but large in pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3) if noise else (1, 1, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).copy()).save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse(model_input, limits: ServingLimits = LIMITS) -> np.ndarray:
    return parse_request(model_input, image_size=SIZE, resize_mode="pad", limits=limits)


# ---------------------------------------------------------------- parsing, no server


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_base64_image_decodes_exactly_as_in_training(fmt):
    data = image_bytes(fmt)
    batch = parse(pd.DataFrame({"image": [b64(data)]}))
    assert batch.dtype == np.float32 and batch.shape == (1, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch[0], images.decode(data, SIZE, "pad"))


def test_data_url_prefix_and_line_breaks_are_tolerated():
    data = image_bytes()
    wrapped = "\n".join(b64(data)[i : i + 76] for i in range(0, len(b64(data)), 76))
    batch = parse(pd.DataFrame({"image": [f"data:image/png;base64,{wrapped}"]}))
    np.testing.assert_array_equal(batch[0], images.decode(data, SIZE, "pad"))


def test_raw_pixel_array_of_model_size_passes_through_unchanged():
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3))
    np.testing.assert_allclose(parse(pixels), pixels.astype(np.float32))


def test_raw_pixel_array_of_another_size_is_resized_like_a_decoded_image():
    pixels = np.random.default_rng(2).integers(0, 256, (1, 30, 20, 3), dtype=np.uint8)
    expected = images.fit(Image.fromarray(pixels[0]), SIZE, "pad")
    np.testing.assert_array_equal(parse(pixels)[0], np.asarray(expected))


def test_dict_of_base64_strings_is_accepted():
    assert parse({"image": np.array([b64(image_bytes()), b64(image_bytes(seed=3))])}).shape[0] == 2


@pytest.mark.parametrize(
    ("model_input", "fragment"),
    [
        (pd.DataFrame({"image": ["not base64!"]}), "image 0: not valid base64"),
        (pd.DataFrame({"image": [b64(image_bytes()), b64(b"plain text")]}), "image 1: not a PNG, JPEG, BMP or TIFF image"),
        (pd.DataFrame({"image": [b64(image_bytes("GIF"))]}), "not a PNG, JPEG, BMP or TIFF image"),
        (pd.DataFrame({"image": [b64(image_bytes()[:400])]}), "corrupt or truncated"),
        (pd.DataFrame({"image": [b64(image_bytes(width=101, height=100, noise=False))]}), "over the 10,000-pixel limit"),
        (pd.DataFrame({"image": [b64(image_bytes("BMP", 90, 90))]}), "over the 20,000-byte limit"),
        (pd.DataFrame({"img": ["x"]}), "no 'image' column"),
        (pd.DataFrame(), "empty batch"),
        ({"image": np.array([])}, "empty batch"),
        ({"pixels": np.zeros((1, 4, 4, 3))}, "no 'image' input"),
        (pd.DataFrame({"image": [b64(image_bytes())] * 9}), "batch of 9 images is over the limit of 8"),
        (np.full((1, 4, 4, 3), 300.0), "within 0..255"),
        (np.zeros((1, 4, 4, 4)), "HxWx3"),
        (pd.DataFrame({"image": [7]}), "got int"),
    ],
    ids=[
        "bad-base64", "not-an-image", "gif", "truncated", "too-many-pixels", "too-many-bytes", "missing-column",
        "empty-frame", "empty-inputs", "missing-input", "batch-too-big", "pixels-out-of-range", "four-channels",
        "number",
    ],
)
def test_bad_input_raises_one_line_request_error_naming_the_problem(model_input, fragment):
    with pytest.raises(RequestError) as caught:
        parse(model_input)
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message and len(caught.value.message) < 160
    assert caught.value.get_http_status_code() == 400
    assert isinstance(caught.value, BenchError)  # the CLI prints it as one line


def test_request_error_keeps_its_message_when_the_scoring_server_rewrites_it():
    error = RequestError("image 0: not valid base64")
    error.message = f"Failed to predict data '{'A' * 5000}'. \nError: {error.message}"
    assert json.loads(error.serialize_as_json())["message"] == "image 0: not valid base64"
    assert "stack_trace" not in json.loads(error.serialize_as_json())


def test_a_failing_forward_pass_is_a_500_without_traceback_or_data():
    classifier = ImageClassifier()
    classifier.config = ServingConfig(CLASSES, SIZE, "pad", LIMITS)

    def broken_forward(batch):
        raise RuntimeError(f"secret internals {batch.shape}")

    classifier._forward = broken_forward
    with pytest.raises(ServingError) as caught:
        classifier.predict(None, pd.DataFrame({"image": [b64(image_bytes())]}))
    assert caught.value.get_http_status_code() == 500
    assert json.loads(caught.value.serialize_as_json())["message"] == "prediction failed: RuntimeError"


def test_environment_overrides_logged_limits():
    limits = LIMITS.with_env({LIMIT_ENV_VARS["max_batch"]: "3", LIMIT_ENV_VARS["max_image_bytes"]: "999"})
    assert (limits.max_batch, limits.max_image_bytes, limits.max_image_pixels) == (3, 999, LIMITS.max_image_pixels)


@pytest.mark.parametrize("env", [{"BENCH_SERVE_MAX_BATCH": "many"}, {"BENCH_SERVE_MAX_PIXELS": "0"}])
def test_bad_limit_in_environment_is_a_config_error(env):
    with pytest.raises(ConfigError, match=f"The .{next(iter(env))}. parameter must be a positive integer"):
        LIMITS.with_env(env)


def test_predictions_frame_has_label_confidence_and_every_class():
    frame = predictions_frame(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), CLASSES)
    assert list(frame.columns) == ["label", "confidence"] + [f"prob_{c}" for c in CLASSES]
    assert frame["label"].tolist() == ["eosinophil", "basophil"]
    assert frame["confidence"].tolist() == [0.7, 0.5]


def test_saved_model_drops_optimizer_state_and_keeps_weights(tmp_path):
    model = tiny_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.zeros((4, SIZE, SIZE, 3)), np.arange(4) % 3, verbose=0)
    without_optimizer(model).save(tmp_path / "lean.keras")
    with zipfile.ZipFile(tmp_path / "lean.keras") as archive:
        assert "optimizer" not in archive.read("model.weights.h5").decode("latin-1")
    reloaded = keras.saving.load_model(tmp_path / "lean.keras", compile=False)
    for left, right in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(left, right)


def test_log_model_refuses_class_names_that_do_not_match_the_outputs():
    with pytest.raises(ConfigError, match="3 outputs but 2 class_names"):
        log_model(tiny_model(), class_names=["a", "b"], image_size=SIZE)


# ---------------------------------------------------------------- a real `mlflow models serve`


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny model registered in a temporary sqlite store, served on a free loopback port."""
    root = tmp_path_factory.mktemp("serving")
    uri = store_uri(root)
    model = tiny_model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)  # an earlier test may have set another store globally
        experiment = mlflow.create_experiment("serving", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            log_model(model, class_names=CLASSES, image_size=SIZE, registered_model_name="cells", limits=LIMITS)
        mlflow.MlflowClient().set_registered_model_alias("cells", "champion", "1")
        env = {"MLFLOW_TRACKING_URI": uri, LIMIT_ENV_VARS["max_batch"]: "4"}  # overrides the logged 8
        log_file = root / "server.log"
        try:
            # From a directory without bench/: the logged model must carry the code it needs.
            with serve("models:/cells@champion", env=env, log_file=log_file, cwd=root) as url:
                yield url, model
        except Exception:
            print(log_file.read_text()[-3000:])
            raise


def post(url: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=30)


def good_payload() -> dict:
    return {"dataframe_records": [{"image": b64(image_bytes())}]}


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_records": [{"image": b64(image_bytes())}, {"image": b64(image_bytes(seed=1))}]},
        {"dataframe_split": {"columns": ["image"], "data": [[b64(image_bytes())], [b64(image_bytes(seed=1))]]}},
        {"inputs": {"image": [b64(image_bytes()), b64(image_bytes(seed=1))]}},
        {"inputs": np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3)).tolist()},
        {"inputs": np.random.default_rng(0).uniform(0, 255, (2, 40, 30, 3)).tolist()},
    ],
    ids=["records", "split", "inputs", "pixels-uint8", "pixels-float-resized"],
)
def test_each_request_form_gets_one_record_per_image(served, payload):
    url, _ = served
    response = post(url, payload)
    assert response.status_code == 200, response.text
    records = response.json()["predictions"]
    assert len(records) == 2
    for record in records:
        assert list(record) == ["label", "confidence"] + [f"prob_{c}" for c in CLASSES]
        probs = [record[f"prob_{c}"] for c in CLASSES]
        assert record["label"] == CLASSES[int(np.argmax(probs))]
        assert record["confidence"] == max(probs) and sum(probs) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_served_probabilities_match_the_keras_model_on_the_training_decode(served, fmt):
    url, model = served
    data = image_bytes(fmt, 40, 28, seed=5)
    response = post(url, {"dataframe_records": [{"image": b64(data)}]})
    assert response.status_code == 200, response.text
    expected = np.asarray(model(images.decode(data, SIZE, "pad")[None].astype("float32"), training=False))[0]
    served_probs = [response.json()["predictions"][0][f"prob_{c}"] for c in CLASSES]
    np.testing.assert_allclose(served_probs, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"dataframe_records": [{"image": "%%% not base64 %%%"}]}, "image 0: not valid base64"),
        ({"dataframe_records": [{"image": b64(b"GIF89a? no, just text")}]}, "image 0: not a PNG, JPEG, BMP or TIFF image"),
        ({"dataframe_records": [{"image": b64(image_bytes(width=120, height=120, noise=False))}]}, "10,000-pixel limit"),
        ({"dataframe_records": [{"image": b64(image_bytes("BMP", 90, 90))}]}, "20,000-byte limit"),
        ({"dataframe_records": [{"picture": b64(image_bytes())}]}, "no 'image' column"),
        ({"dataframe_records": []}, "empty batch"),
        ({"inputs": {"image": []}}, "empty batch"),
        ({"inputs": {"image": [b64(image_bytes())] * 5}}, "batch of 5 images is over the limit of 4"),
        ({"inputs": [[[1, 2]]]}, "HxWx3"),
    ],
    ids=[
        "bad-base64", "not-an-image", "too-many-pixels", "too-many-bytes", "missing-column", "empty-records",
        "empty-inputs", "batch-over-env-limit", "bad-pixel-array",
    ],
)
def test_bad_request_gets_a_short_400_and_the_server_keeps_answering(served, payload, fragment):
    url, _ = served
    response = post(url, payload)
    assert response.status_code == 400
    body = response.json()
    assert fragment in body["message"]
    assert "stack_trace" not in body and "Traceback" not in response.text
    assert "\n" not in body["message"] and len(body["message"]) < 160
    assert post(url, good_payload()).status_code == 200
