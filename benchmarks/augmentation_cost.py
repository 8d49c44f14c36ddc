"""CPU cost of each training augmentation: seconds per epoch of the default scratch CNN with that augmentation alone.

Every row trains the scratch space's default model (augmentation off) with one augmentation on, through the real
input pipeline and `fit`, on random uint8 images: one epoch to trace the graph, then `--repeats` timed epochs
(the best is kept: the machine is shared). `aug_rot90` and `aug_mixup` are in the input pipeline
(bench.training.pipeline); the others are Keras layers inside the model (bench.models.blocks).

    .venv/bin/python benchmarks/augmentation_cost.py [--images 1024] [--size 64] [--repeats 2]
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

ROWS = {
    "none": {},
    "aug_flip": {"aug_flip": True},
    "aug_rot90 (pipeline)": {"aug_rot90": True},
    "aug_translate 0.1": {"aug_translate": 0.1},
    "aug_stain 0.2": {"aug_stain": 0.2},
    "aug_contrast 0.1": {"aug_contrast": 0.1},
    "aug_rotation 0.1": {"aug_rotation": 0.1},
    "aug_zoom 0.1": {"aug_zoom": 0.1},
    "aug_mixup 0.2 (pipeline)": {"aug_mixup": 0.2},
}
OFF = {"aug_flip": False, "aug_rot90": False, "aug_translate": 0.0, "aug_stain": 0.0, "aug_contrast": 0.0,
       "aug_rotation": 0.0, "aug_zoom": 0.0, "aug_mixup": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import keras

    from bench.models import build_model
    from bench.search.space import defaults, load_space
    from bench.training import batches
    from bench.training.fit import make_optimizer

    base = {**defaults(load_space("scratch_cnn")), **OFF, "lr_schedule": "constant"}
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    y = rng.integers(0, 8, args.images)
    from bench import machine
    print(f"{datetime.date.today()}, {machine.describe()}, load average "
          f"{os.getloadavg()[0]:.1f}; {args.images} images at {args.size} px, batch {base['batch_size']}, "
          f"best of {args.repeats} epochs\n")
    print("| augmentation | s/epoch | overhead | s per 10,000 images |\n|---|---:|---:|---:|")
    reference = None
    for name, extra in ROWS.items():
        params = {**base, **extra}
        keras.backend.clear_session()
        model = build_model("scratch_cnn", params, image_size=args.size, n_classes=8, seed=0)
        mixup = float(params["aug_mixup"])  # blends one-hot labels: the categorical loss
        model.compile(optimizer=make_optimizer(params), jit_compile=False,
                      loss="categorical_crossentropy" if mixup else "sparse_categorical_crossentropy")
        data = batches(x, y, batch_size=int(params["batch_size"]), seed=0, shuffle=True,
                       rot90=bool(params.get("aug_rot90")), one_hot=8 if mixup else 0, mixup=mixup)
        model.fit(data, epochs=1, verbose=0)
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            seconds.append(time.perf_counter() - started)
        best = min(seconds)
        reference = best if reference is None else reference
        print(f"| {name} | {best:.2f} | {100 * (best / reference - 1):+.0f} % | {best * 10000 / args.images:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
