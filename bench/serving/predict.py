"""`python -m bench predict`: classify image files with a logged or registered model.

Each file goes through the same pyfunc `mlflow models serve` runs, so the CLI and the server agree on
decoding, limits and errors. A file that cannot be classified gets one line on stderr, never a traceback.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from bench import paths as bench_paths
from bench.errors import ConfigError
from bench.serving.pyfunc import IMAGE_COLUMN, RequestError

TOP_K = 3


@dataclass(frozen=True)
class FileResult:
    path: str
    record: dict[str, Any] | None = None
    error: str | None = None


def _probabilities(record: dict[str, Any]) -> dict[str, float]:
    return {key.removeprefix("prob_"): value for key, value in record.items() if key.startswith("prob_")}


def write_table(results: list[FileResult], stream: TextIO) -> None:
    rows = [("file", "label", "confidence", f"top {TOP_K}")]
    for result in results:
        top = sorted(_probabilities(result.record).items(), key=lambda item: -item[1])[:TOP_K]
        rows.append((
            result.path,
            result.record["label"],
            f"{result.record['confidence']:.3f}",
            ", ".join(f"{name} {p:.3f}" for name, p in top),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        stream.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] + "\n")


def write_csv(results: list[FileResult], stream: TextIO) -> None:
    if not results:
        return
    fields = ["file", *results[0].record]
    writer = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow({"file": result.path, **result.record})


OUTPUTS: dict[str, Callable[[list[FileResult], TextIO], None]] = {"table": write_table, "csv": write_csv}


def load(model_uri: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(bench_paths.tracking_uri())
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ConfigError(f"cannot load model {model_uri!r}: {message.strip().splitlines()[0]}") from None


def classify(model: Any, files: list[str]) -> list[FileResult]:
    """One result per file, in order; unreadable or unusable files carry an error instead of a record."""
    results = []
    for name in files:
        try:
            data = Path(name).read_bytes()
        except OSError as error:
            results.append(FileResult(name, error=f"cannot read: {error.strerror or error}"))
            continue
        try:
            frame = model.predict(pd.DataFrame({IMAGE_COLUMN: [data]}))
        except RequestError as error:
            results.append(FileResult(name, error=error.message.removeprefix("image 0: ")))
            continue
        results.append(FileResult(name, record=frame.iloc[0].to_dict()))
    return results


def main(model_uri: str, paths: list[str], *, output: str = "table", out_file: str | None = None) -> int:
    """Print a table (or write CSV) of label, confidence and top probabilities; 1 if any file failed."""
    if output not in OUTPUTS:
        raise ConfigError(f"--output must be one of {sorted(OUTPUTS)}; got {output!r}")
    results = classify(load(model_uri), paths)
    for result in results:
        if result.error:
            print(f"{result.path}: {result.error}", file=sys.stderr)
    good = [result for result in results if result.record is not None]
    if out_file:
        with open(out_file, "w", newline="") as stream:
            OUTPUTS[output](good, stream)
    else:
        OUTPUTS[output](good, sys.stdout)
    return 0 if len(good) == len(results) else 1
