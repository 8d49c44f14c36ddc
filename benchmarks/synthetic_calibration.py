"""How hard the embedded synthetic set is: validation macro-F1 of a pixel model and the fixed CNN references, by difficulty.

The data is loaded as `make search` loads it (`load_dataset("synthetic?difficulty=D", image_size, seed)`: 200 per
class, stratified 60/20/20), so the numbers are those the search's leaderboard is read against. Rows:

- `lr_8x8`: logistic regression (standardised) on 8x8-averaged pixels (192 features), fitted on train;
- `keras_sequential_cnn`: the small fixed reference as the benchmark runs it (its YAML values alone);
- `keras_sequential_cnn (warm start)`: the same setup as a search's warm start enqueues it (the scratch space's
  defaults for what the reference does not name: cosine schedule, rot90/translate/stain augmentation);
- `scratch_cnn default`: the scratch space's default configuration, a yardstick for what a search can reach.

CNNs train `--epochs` epochs with the trial's seed and report their best epoch's validation macro-F1, as a trial does.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/synthetic_calibration.py [--difficulties 0.5,0.8,1] [--rows lr,ref,warm,default]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROWS = ("lr", "ref", "warm", "default")


def lr_8x8(dataset) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def pixels(x: np.ndarray) -> np.ndarray:
        n, size = len(x), x.shape[1]
        block = size // 8
        return x[:, :block * 8, :block * 8].reshape(n, 8, block, 8, block, 3).mean(axis=(2, 4)).reshape(n, -1)

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(pixels(dataset.x_train), dataset.y_train)
    return float(f1_score(dataset.y_val, model.predict(pixels(dataset.x_val)), average="macro"))


def cnn(dataset, params: dict, *, epochs: int, seed: int) -> tuple[float, int, float]:
    from bench.training import fit_and_score, start_trial

    start_trial(seed)
    fit = fit_and_score(params, dataset, family="scratch_cnn", epochs=epochs, seed=seed)
    return fit.best_value, fit.best_epoch, fit.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulties", default="0.5,0.8,1.0")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {ROWS}")
    parser.add_argument("--n-per-class", type=int, default=0, help="0 = the loader's default")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"--rows must be a subset of {ROWS}; got {unknown}")

    from bench.data import load_dataset
    from bench.search.space import defaults, load_space
    from bench.search.warm_start import fit_to_space

    reference = defaults(load_space("reference/keras_sequential_cnn"))
    space = load_space("scratch_cnn")
    setups = {"ref": ("keras_sequential_cnn", reference),
              "warm": ("keras_sequential_cnn (warm start)", fit_to_space(space, reference)),
              "default": ("scratch_cnn default", defaults(space))}
    from bench import machine
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {machine.describe()}, load average "
          f"{os.getloadavg()[0]:.1f}; {args.image_size} px, {args.epochs} epochs, seed {args.seed}\n")
    print("| difficulty | model | val macro-F1 | best epoch | train s |\n|---:|---|---:|---:|---:|", flush=True)
    for d in (float(v) for v in args.difficulties.split(",")):
        data = f"synthetic?difficulty={d}" + (f"&n_per_class={args.n_per_class}" if args.n_per_class else "")
        dataset = load_dataset(data, image_size=args.image_size, seed=args.seed)
        if "lr" in rows:
            started = time.perf_counter()
            score = lr_8x8(dataset)
            print(f"| {d:g} | lr_8x8 | {score:.3f} | | {time.perf_counter() - started:.0f} |", flush=True)
        for row in (r for r in rows if r in setups):
            name, params = setups[row]
            score, epoch, seconds = cnn(dataset, params, epochs=args.epochs, seed=args.seed)
            print(f"| {d:g} | {name} | {score:.3f} | {epoch} | {seconds:.0f} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
