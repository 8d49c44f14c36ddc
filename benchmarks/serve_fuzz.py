"""Fuzz a real `mlflow models serve` of HemaBench's image pyfunc: every answer must be a 200 or a 400 with a
one-line message, never a 500 and never a traceback.

Requests are random and mutated: valid images in every envelope, truncated and bit-flipped image files, wrong
types, huge and non-finite numbers, deeply nested junk, wrong or missing envelopes, and byte-level mutations of
valid JSON bodies (all sent as application/json). Without --model-uri it serves an untrained tiny CNN (32 px,
3 classes) from a temporary sqlite store. tests/test_serve_fuzz.py runs a few hundred of the same cases.

    .venv/bin/python benchmarks/serve_fuzz.py [--requests 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serving import log_model, serve  # noqa: E402

SIZE, CLASSES = 32, ("a", "b", "c")
FORMATS = ("PNG", "JPEG", "BMP", "TIFF")


# --- the served model ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def tiny_server(root: Path, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """An untrained tiny CNN logged as the serving pyfunc in a sqlite store under `root`, registered as
    `fuzz@champion`, and served by `mlflow models serve`; yields its base URL."""
    import keras
    import mlflow

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(x))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serve-fuzz", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        log_model(model, class_names=list(CLASSES), image_size=SIZE, registered_model_name="fuzz")
    mlflow.MlflowClient().set_registered_model_alias("fuzz", "champion", "1")
    with serve("models:/fuzz@champion", env={"MLFLOW_TRACKING_URI": uri, **(env or {})},
               log_file=root / "server.log", cwd=root) as url:
        yield url


# --- cases ---------------------------------------------------------------------------------------------------

def image_file(rng: np.random.Generator, fmt: str | None = None) -> bytes:
    fmt = fmt or FORMATS[rng.integers(len(FORMATS))]
    height, width = (int(v) for v in rng.integers(1, 80, 2))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def envelope(rng: np.random.Generator, items: list[Any]) -> dict[str, Any]:
    """`items` (one per image) in one of the three accepted request forms."""
    form = rng.integers(3)
    if form == 0:
        return {"dataframe_records": [{"image": item} for item in items]}
    if form == 1:
        return {"dataframe_split": {"columns": ["image"], "data": [[item] for item in items]}}
    return {"inputs": {"image": items}}


def _truncated(rng: np.random.Generator) -> str:
    data = image_file(rng)
    return b64(data[: int(rng.integers(0, len(data)))])


def _flipped(rng: np.random.Generator) -> str:
    data = bytearray(image_file(rng))
    for _ in range(int(rng.integers(1, 20))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    return b64(bytes(data))


def _junk(rng: np.random.Generator, depth: int = 0) -> Any:
    """A random JSON value: scalars of every type, huge numbers, strings, nested lists and objects."""
    kind = rng.integers(12 if depth < 6 else 8)
    scalars = [None, True, False, 0, -1, 10**30, -(10**400), 1e308, -1.5e-320, "", "x" * int(rng.integers(1, 50)),
               "data:image/png;base64,", "\u00ff\u2603", "\udbff"]
    if kind < 8:
        return scalars[int(rng.integers(len(scalars)))]
    if kind < 10:
        return [_junk(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if kind < 11:
        return {str(_junk(rng, depth + 1))[:10]: _junk(rng, depth + 1) for _ in range(int(rng.integers(0, 3)))}
    return [[[_junk(rng, depth + 1)] * 3] * 2] * 2  # almost a pixel array


def _pixels(rng: np.random.Generator) -> Any:
    """Pixel arrays: good, wrong shapes, out of range, non-finite, huge, ragged, mixed types."""
    h, w = (int(v) for v in rng.integers(1, 40, 2))
    good = rng.integers(0, 256, (h, w, 3)).tolist()
    kind = rng.integers(9)
    if kind == 0:
        return good
    if kind == 1:
        return rng.integers(0, 256, (h, w, int(rng.integers(1, 6)))).tolist()  # channels other than 3
    if kind == 2:
        good[0][0][0] = [1e308, -1e308, 256, -1, 10**30, "7", None, True, [1, 2]][int(rng.integers(9))]
        return good
    if kind == 3:
        good[-1] = good[-1][:-1] if len(good[-1]) > 1 else []  # ragged
        return good
    if kind == 4:
        return rng.uniform(-1e6, 1e6, (h, w, 3)).tolist()
    if kind == 5:
        return [[[0] * 3] * 2] * int(rng.integers(0, 3))
    if kind == 6:
        return rng.integers(0, 256, int(rng.integers(1, 50))).tolist()  # flat
    if kind == 7:
        return [[[[[0, 0, 0]]]]]  # too deep
    return rng.integers(0, 256, (1, 2 * SIZE + 1, 3)).tolist()  # a 1-pixel-high strip


def _item(rng: np.random.Generator) -> Any:
    kind = rng.integers(8)
    return [lambda: b64(image_file(rng)), lambda: _truncated(rng), lambda: _flipped(rng), lambda: _junk(rng),
            lambda: _pixels(rng), lambda: b64(rng.bytes(int(rng.integers(0, 200)))),
            lambda: b64(image_file(rng))[:-int(rng.integers(1, 5))],  # bad padding
            lambda: "data:image/png;base64," + b64(image_file(rng, "PNG"))][kind]()


def _envelope_junk(rng: np.random.Generator) -> Any:
    item = b64(image_file(rng, "PNG"))
    options = [
        {}, [], "image", None, 7, [{"image": item}], {"instances": [{"image": item}]},
        {"dataframe_records": _junk(rng)}, {"dataframe_split": _junk(rng)}, {"inputs": _junk(rng)},
        {"dataframe_split": {"columns": ["image"], "data": _junk(rng)}},
        {"dataframe_split": {"columns": _junk(rng), "data": [[item]]}},
        {"dataframe_split": {"index": [5, 5], "columns": ["image"], "data": [[item]]}},
        {"dataframe_records": [{"image": item, "extra": _junk(rng)}]},
        {"dataframe_records": [{"image": item}], "inputs": {"image": [item]}},
        {"inputs": {"image": [item]}, "params": _junk(rng)},
        {"inputs": {"image": item}},
        {"inputs": {"image": [item], "other": [1]}},
        {"inputs": [item]}, {"inputs": item},
        {"inputs": {"image": [[item]]}},
        {"dataframe_split": {"columns": ["image", "image"], "data": [[item, item]]}},
        {"dataframe_split": {"columns": [f"c{i}" for i in range(500)], "data": [[0] * 500]}},
        {"inputs": {f"k{i}" * 20: [1] for i in range(500)}},
        {"inputs": {"image": [float("nan"), float("inf")]}},
        {"inputs": [[[float("nan")] * 3] * 2] * 2},
    ]
    return options[int(rng.integers(len(options)))]


def _mutated_text(rng: np.random.Generator, text: str) -> str:
    chars = list(text)
    for _ in range(int(rng.integers(1, 6))):
        at = int(rng.integers(len(chars) + 1))
        op = rng.integers(3)
        if op == 0 and chars:
            del chars[min(at, len(chars) - 1)]
        elif op == 1:
            chars.insert(at, "{}[]\",:0e-\\ \x00"[int(rng.integers(13))])
        else:
            chars = chars[:at]
    return "".join(chars)


def cases(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """`count` (kind, JSON body) requests, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        kind = ["valid", "items", "envelope", "text"][int(rng.choice(4, p=[0.1, 0.5, 0.2, 0.2]))]
        if kind == "valid":
            body = json.dumps(envelope(rng, [b64(image_file(rng)) for _ in range(int(rng.integers(1, 4)))]))
        elif kind == "items":
            body = json.dumps(envelope(rng, [_item(rng) for _ in range(int(rng.integers(1, 4)))]))
        elif kind == "envelope":
            body = json.dumps(_envelope_junk(rng))
        else:
            body = _mutated_text(rng, json.dumps(envelope(rng, [b64(image_file(rng, "PNG"))])))
        yield kind, body.encode("utf-8", "surrogatepass")


# MLflow's scoring server answers a body that is not JSON, or not one of its envelopes, itself, before the model
# sees it: a 400 with a long message (the first echoes the whole body on several lines; mlflow/pyfunc/
# scoring_server). Nothing in the model can shorten them; they are counted apart.
MLFLOW_OWN_ERRORS = ("Invalid input.", "The input must be a JSON dictionary with exactly one of the input fields")
MAX_MESSAGE = 300  # the model's own 400 messages are one short line


def problem(response: requests.Response) -> str | None:
    """What is wrong with an answer, or None: a 200 with predictions, or a 400 with a message that is one short
    line (or MLflow's own answer to a body that is not JSON)."""
    text = response.text
    if "Traceback" in text or "stack_trace" in text:
        return f"{response.status_code} with a traceback"
    if response.status_code == 200:
        return None if "predictions" in text else "200 without predictions"
    if response.status_code != 400:
        return f"status {response.status_code}"
    try:
        message = response.json()["message"]
    except (ValueError, KeyError, TypeError):
        return "400 without a JSON message"
    if message.startswith(MLFLOW_OWN_ERRORS):
        return None
    return None if "\n" not in message and len(message) <= MAX_MESSAGE else "400 with a long or multi-line message"


def fuzz(url: str, seed: int, count: int) -> tuple[Counter, list[tuple[str, str, bytes, str]]]:
    """Send the cases; returns the status counts and the (kind, problem, body, answer) of each bad answer."""
    statuses, bad = Counter(), []
    with requests.Session() as session:
        for kind, body in cases(seed, count):
            response = session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
                                    timeout=60)
            statuses["400 from MLflow (bad JSON or envelope)" if any(e in response.text for e in MLFLOW_OWN_ERRORS)
                     else str(response.status_code)] += 1
            wrong = problem(response)
            if wrong:
                bad.append((kind, wrong, body, response.text))
    return statuses, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve-fuzz-") as tmp, tiny_server(Path(tmp)) as url:
        started = time.perf_counter()
        statuses, bad = fuzz(url, args.seed, args.requests)
        seconds = time.perf_counter() - started
        alive = requests.get(f"{url}/ping", timeout=5).status_code
    print(f"{args.requests} fuzz requests (seed {args.seed}) in {seconds:.0f} s against mlflow models serve; "
          f"answers: {dict(sorted(statuses.items()))}; /ping afterwards: {alive}")
    for kind, wrong, body, answer in bad[:10]:
        print(f"BAD ({kind}): {wrong}\n  request: {body[:300]!r}\n  answer: {answer[:500]!r}")
    print(f"{len(bad)} bad answers")
    return 1 if bad or alive != 200 else 0


if __name__ == "__main__":
    raise SystemExit(main())
