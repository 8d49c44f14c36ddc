"""Latency and throughput of `mlflow models serve`: HemaBench's image pyfunc against the stock mlflow.keras route.

Both routes serve the same Keras model from a real `mlflow models serve --env-manager local` process on
127.0.0.1, one at a time, and are called sequentially by one keep-alive client:
- hemabench pyfunc, base64 PNGs in a `dataframe_records` request (decode + resize inside the model);
- hemabench pyfunc, the same pixels as an `{"inputs": N×H×W×3}` array;
- stock `mlflow.keras` flavor, the same pixels as `{"inputs": ...}` (its pyfunc calls `model.predict`).
Without --model-uri it builds a Conv32-Pool-Conv64-Pool-Dense128 CNN (untrained: latency does not care),
64 px, 8 classes, in a temporary sqlite store; `--ensemble N` serves N such CNNs (seeds 0..N-1) as the one-graph
weighted mean a search's ensemble is (bench.search.ensemble), and `--tta NAME` logs it with that test-time
augmentation (bench.serving.tta). `--routes base64` measures the first route only.

    .venv/bin/python benchmarks/serve_latency.py [--model-uri models:/bloodcell-classifier@champion]
    .venv/bin/python benchmarks/serve_latency.py --ensemble 3 --tta flip --routes base64
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serving import KERAS_FILE, ServingConfig, log_model, pinned_requirements, serve  # noqa: E402


def build_cnn(size: int, classes: int, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(32, 3, activation="relu")(x))
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(64, 3, activation="relu")(x))
    x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def log_stock(model, size: int, classes: int) -> str:
    import mlflow.keras
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]),
    )
    # Explicit requirements: inferring them takes ~8 s; an input example crashes this flavor (mlflow #16183).
    return mlflow.keras.log_model(model, name="keras", signature=signature, pip_requirements=pinned_requirements()).model_uri


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def timed(session: requests.Session, url: str, body: bytes, count: int) -> np.ndarray:
    """Seconds per request for `count` sequential requests; every answer must be a 200."""
    seconds = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        response = session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        seconds[i] = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"request failed with {response.status_code}: {response.text[:300]}")
    return seconds


def measure(url: str, one: dict, batch: dict, batch_size: int, args: argparse.Namespace) -> dict[str, float]:
    one_body, batch_body = json.dumps(one).encode(), json.dumps(batch).encode()
    with requests.Session() as session:
        timed(session, url, one_body, args.warmup)
        timed(session, url, batch_body, max(3, args.warmup // 4))
        single = timed(session, url, one_body, args.requests)
        batched = timed(session, url, batch_body, args.batch_requests)
    return {
        "p50": np.percentile(single, 50) * 1000,
        "p99": np.percentile(single, 99) * 1000,
        "batch_p50": np.percentile(batched, 50) * 1000,
        "throughput": batch_size * len(batched) / batched.sum(),
    }


def routes(pyfunc_uri: str, stock_uri: str, pixels: np.ndarray) -> list[tuple[str, str, dict, dict]]:
    """(name, model URI, one-image payload, batch payload) per route."""
    records = [{"image": png_base64(p)} for p in pixels]
    as_inputs = {"inputs": pixels[:1].tolist()}, {"inputs": pixels.tolist()}
    as_float_inputs = {"inputs": pixels[:1].astype(float).tolist()}, {"inputs": pixels.astype(float).tolist()}
    return [
        ("hemabench pyfunc, base64 PNG records", pyfunc_uri, {"dataframe_records": records[:1]}, {"dataframe_records": records}),
        ("hemabench pyfunc, pixel array `inputs`", pyfunc_uri, *as_inputs),
        ("stock mlflow.keras, pixel array `inputs`", stock_uri, *as_float_inputs),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="a model logged by bench.serving.log_model (default: build one)")
    parser.add_argument("--requests", type=int, default=300, help="one-image requests measured (after warm-up)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch-requests", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--ensemble", type=int, default=1, help="members of the built model (without --model-uri)")
    parser.add_argument("--tta", default="none", help="test-time augmentation: none, flip, rot90 or d4")
    parser.add_argument("--routes", choices=["all", "base64"], default="all")
    args = parser.parse_args(argv)

    import keras
    import mlflow

    load_before = os.getloadavg()[0]
    user_tracking = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="serve-latency-") as tmp:
        root = Path(tmp)
        if args.model_uri:  # read size and weights from the given model, in the caller's store
            config = ServingConfig.from_json(
                Path(mlflow.artifacts.download_artifacts(f"{args.model_uri}/artifacts/serving.json")).read_text()
            )
            size, classes = config.image_size, len(config.class_names)
            model = keras.saving.load_model(
                mlflow.artifacts.download_artifacts(f"{args.model_uri}/{KERAS_FILE}"), compile=False
            )
        else:
            from bench.search.ensemble import ensemble_graph

            size, classes = args.image_size, args.classes
            members = [build_cnn(size, classes, seed) for seed in range(args.ensemble)]
            model = ensemble_graph(members, [1 / len(members)] * len(members), size)
        temp_tracking = f"sqlite:///{root / 'mlflow.db'}"
        mlflow.set_tracking_uri(temp_tracking)
        experiment = mlflow.create_experiment("serve-latency", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            stock_uri = log_stock(model, size, classes) if args.routes == "all" else ""
            pyfunc_uri = args.model_uri or log_model(
                model, class_names=[f"class{i}" for i in range(classes)], image_size=size, tta=args.tta
            ).model_uri

        pixels = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        rows = []
        for name, uri, one, batch in routes(pyfunc_uri, stock_uri, pixels)[: None if args.routes == "all" else 1]:
            tracking = user_tracking if (uri == args.model_uri and user_tracking) else temp_tracking
            with serve(uri, env={"MLFLOW_TRACKING_URI": tracking}, log_file=root / "server.log", cwd=root) as url:
                rows.append((name, measure(url, one, batch, args.batch, args)))

    from bench import machine
    print(f"{datetime.date.today()}, {machine.describe()}, "
          f"{size}x{size} px, {classes} classes, model {args.model_uri or f'{args.ensemble} untrained scratch CNN(s)'}"
          f", TTA {args.tta}; "
          f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (shared machines read high)")
    print(f"command: python benchmarks/serve_latency.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print()
    print(f"| route | p50 ms, 1 image | p99 ms, 1 image | p50 ms, batch of {args.batch} | images/s, batches of {args.batch} |")
    print("|---|---:|---:|---:|---:|")
    for name, result in rows:
        print(f"| {name} | {result['p50']:.1f} | {result['p99']:.1f} | {result['batch_p50']:.1f} | {result['throughput']:.0f} |")
    if args.routes != "all":
        return 0
    stock = rows[-1][1]["p50"]
    print()
    print(f"one-image p50 speed-up over the stock route: base64 {stock / rows[0][1]['p50']:.1f}x, "
          f"pixel array {stock / rows[1][1]['p50']:.1f}x ({args.requests} requests after {args.warmup} warm-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
