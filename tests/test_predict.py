"""`python -m bench predict`: a table or CSV per file from a registered model, one line per bad file."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import io
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from bench import cli
from bench import images
from bench.serving import predict
from bench.errors import ConfigError
from bench.serving import KERAS_FILE, log_model
from tests.conftest import store_uri

SIZE = 16
CLASSES = ["lymphocyte", "monocyte", "platelet"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """(model URI, Keras model, folder of images) with the model registered in a temporary sqlite store."""
    root = tmp_path_factory.mktemp("predict")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))
    rng = np.random.default_rng(0)
    for name, fmt in [("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.tif", "TIFF")]:
        Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(root / name, fmt)
    (root / "notes.png").write_text("not an image")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store_uri(root))
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # an earlier test may have set another globally
        experiment = mlflow.create_experiment("predict", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            log_model(model, class_names=CLASSES, image_size=SIZE, registered_model_name="cells")
        mlflow.MlflowClient().set_registered_model_alias("cells", "champion", "1")
        yield "models:/cells@champion", model, root
        mlflow.set_tracking_uri(None)  # predict.load set it globally; later tests resolve their own


def expected_probs(model, path) -> np.ndarray:
    pixels = images.decode(path, SIZE, "pad")[None].astype("float32")
    return np.asarray(model(pixels, training=False))[0]


def test_table_lists_label_confidence_and_top_classes_per_file(registered, capsys):
    uri, model, root = registered
    files = [str(root / "a.png"), str(root / "b.jpg")]
    assert predict.main(uri, files) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["file", "label", "confidence"]
    for line, path in zip(lines[1:], files):
        probs = expected_probs(model, path)
        assert line.startswith(path)
        assert line.split()[1] == CLASSES[int(probs.argmax())]
        assert line.split()[2] == f"{probs.max():.3f}"
    assert len(lines) == 3


def test_csv_file_has_every_class_probability(registered, tmp_path):
    uri, model, root = registered
    out = tmp_path / "predictions.csv"
    assert predict.main(uri, [str(root / "c.tif")], output="csv", out_file=str(out)) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["file", "label", "confidence"] + [f"prob_{c}" for c in CLASSES]
    probs = expected_probs(model, root / "c.tif")
    np.testing.assert_allclose([float(rows[0][f"prob_{c}"]) for c in CLASSES], probs, atol=1e-6)


def test_bad_files_get_one_line_each_and_the_good_ones_are_still_classified(registered, capsys):
    uri, _, root = registered
    files = [str(root / "notes.png"), str(root / "a.png"), str(root / "missing.png"), str(root)]
    assert predict.main(uri, files, output="csv") == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"{root / 'notes.png'}: not a PNG, JPEG, BMP or TIFF image",
        f"{root / 'missing.png'}: cannot read: No such file or directory",
        f"{root}: cannot read: Is a directory",
    ]
    assert [row["file"] for row in csv.DictReader(io.StringIO(captured.out))] == [str(root / "a.png")]


def test_cli_wires_predict_and_reports_an_unknown_model_in_one_line(registered, capsys):
    uri, _, root = registered
    assert cli.main(["predict", "--model", uri, "--output", "csv", str(root / "a.png")]) == 0
    assert capsys.readouterr().out.startswith("file,label,confidence,prob_lymphocyte")
    assert cli.main(["predict", "--model", "models:/no-such-model@champion", str(root / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load model 'models:/no-such-model@champion'") and err.count("\n") == 1


def test_unknown_output_format_is_a_config_error(registered):
    uri, _, root = registered
    with pytest.raises(ConfigError, match="--output must be one of"):
        predict.main(uri, [str(root / "a.png")], output="xml")


def test_logged_model_is_code_and_artifacts_without_pickles(registered):
    uri, model, _ = registered
    local = Path(mlflow.artifacts.download_artifacts(uri))
    assert not list(local.rglob("*.pkl"))
    code = local / "code" / "bench"
    assert sorted(str(p.relative_to(code)) for p in code.rglob("*.py")) == [
        "__init__.py", "errors.py", "images.py", "serving/__init__.py", "serving/pyfunc.py", "serving/tta.py"
    ]
    reloaded = keras.saving.load_model(local / KERAS_FILE, compile=False)
    assert reloaded.count_params() == model.count_params()


def test_a_logged_model_serves_in_a_fresh_process_from_its_own_code_alone(registered, tmp_path):
    """The logged model's code is errors, images and the serving pyfunc: a fresh interpreter that cannot import the
    project's bench (it is hidden from sys.path) loads it and classifies an image with those files only."""
    uri, model, root = registered
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    script = (
        "import base64, sys\n"
        "sys.path = [p for p in sys.path if p not in ('', '.', sys.argv[2])]\n"
        "import importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bench' and not any(sys.argv[1] in p for p in sys.path):\n"
        "            raise ImportError('project bench hidden')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import mlflow.pyfunc, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "image = base64.b64encode(open(sys.argv[3], 'rb').read()).decode()\n"
        "out = m.predict(pd.DataFrame({'image': [image]}))\n"
        "import bench\n"
        "loaded = sorted(k for k in sys.modules if k.startswith('bench'))\n"
        "print(bench.__file__.startswith(sys.argv[1]), loaded, out['label'][0])\n"
    )
    project = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script, str(local), project, str(root / "a.png")], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("True ['bench', 'bench.errors', 'bench.images', 'bench.serving', 'bench.serving.pyfunc', "
                           "'bench.serving.tta'] ")
    assert line.split()[-1] == CLASSES[int(expected_probs(model, root / "a.png").argmax())]
