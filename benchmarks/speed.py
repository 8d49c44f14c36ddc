"""Where the CPU time of a search goes, and how to spend 2 cores: the speed table of the README (issue 13 item 8).

Three sections, each printed as a Markdown table (`--sections trial,cores,size` picks):

- **trial**: a real search (`bench.search.study.run`, random sampler, no pruning, its own MLflow store in a temporary
  folder) of `--trials` trials on `--data`, then, from each trial's MLflow run, its training images/s (the epochs of
  `fit`, validation scoring excluded), `train_seconds` against `trial_seconds`, and the share of the trial spent
  outside `fit`: model build, validation scoring after each epoch, evaluation artifacts, model logging and the
  MLflow writes. The study line adds what the whole search spent outside its trials (data load, summary, registry).
- **cores**: the best use of the cores. The space's default CNN trains for `--epochs` timed epochs (after one untimed
  epoch that traces the graph) on `--images` random images, in 1 process with `--cores` TensorFlow threads, in
  `--cores` processes with 1 thread each, and in `--cores` processes left at TensorFlow's default threads (what
  `workers=N` on one machine gets unless told otherwise). Throughput is all processes' images over the slowest
  process's seconds.
- **size**: how an epoch's cost grows with image size (`--sizes`, at `--images` images) and with dataset size
  (`--counts`, at `--size` px): seconds per epoch and images/s of the default CNN, one process.

Times are wall-clock seconds on whatever else the machine is doing: the header states the load average; run it on a
quiet machine.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/speed.py [--sections trial,cores,size] [--data synthetic]
        [--trials 4] [--epochs 3] [--images 2048] [--size 64] [--sizes 32,48,64,96,128] [--counts 1024,2048,4096,8192]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def epoch_seconds(images: int, size: int, epochs: int, threads: int = 0) -> float:
    """Best-of-`epochs` seconds of one training epoch of the scratch space's default CNN on random images, after one
    untimed epoch; `threads` > 0 sets TensorFlow's intra- and inter-op threads first (must run before any op)."""
    import bench  # noqa: F401 - installs the quiet TensorFlow import first
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    from bench.models import build_model
    from bench.search.space import defaults, load_space
    from bench.training import batches
    from bench.training.fit import make_optimizer

    params = defaults(load_space("scratch_cnn"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 8, images)
    keras.backend.clear_session()
    model = build_model("scratch_cnn", params, image_size=size, n_classes=8, seed=0)
    model.compile(optimizer=make_optimizer(params), loss="sparse_categorical_crossentropy", jit_compile=False)
    data = batches(x, y, batch_size=int(params["batch_size"]), seed=0, shuffle=True, rot90=bool(params.get("aug_rot90")))
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def trial_section(args: argparse.Namespace) -> None:
    import mlflow

    work = Path(tempfile.mkdtemp(prefix="hemabench-speed-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    from bench.search import make_config
    from bench.search import study as search

    config = make_config(data=args.data, trials=args.trials, epochs=args.epochs, sampler="random", pruner="none",
                         experiment="speed", register="false", warm_start="false", ensemble="false",
                         storage=str(work / "optuna.journal"), study="speed", seed=0)
    started = time.perf_counter()
    result = search.run(config)
    total = time.perf_counter() - started
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
                              search_all_experiments=True).sort_values("start_time")
    print(f"\n**trial**: `{args.data}` at {config.image_size} px, {args.trials} trials of {args.epochs} epochs "
          f"(random sampler, no pruning)\n")
    print("| Trial | State | Train images/s | Train s | Trial s | Outside fit |\n|---:|---|---:|---:|---:|---:|")
    trial_sum = 0.0
    for _, run in runs.iterrows():
        train, whole = run.get("metrics.train_seconds", np.nan), run["metrics.trial_seconds"]
        trial_sum += whole
        print(f"| {run['tags.hemabench.trial']} | {run['tags.hemabench.state']} | "
              f"{run.get('metrics.train_images_per_second', np.nan):,.0f} | {train:.1f} | {whole:.1f} | "
              f"{100 * (1 - train / whole):.1f} % |")
    print(f"\nThe whole search: {total:.1f} s wall, {trial_sum:.1f} s in trials; {total - trial_sum:.1f} s "
          f"({100 * (1 - trial_sum / total):.1f} %) outside them (data load, study set-up, summary).")


def cores_section(args: argparse.Namespace) -> None:
    print(f"\n**cores**: the default CNN, {args.images} random images at {args.size} px, best of {args.epochs} "
          f"epochs per process\n")
    print("| Layout | Threads per process | s/epoch (slowest process) | Images/s, all processes |\n|---|---:|---:|---:|")
    layouts = [(1, args.cores), (args.cores, 1), (args.cores, 0)]
    for processes, threads in layouts:
        command = [sys.executable, __file__, "--child", json.dumps([args.images, args.size, args.epochs, threads])]
        children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        seconds = [float(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        if any(child.returncode for child in children):
            raise SystemExit(f"a child process failed in layout {processes}x{threads}")
        slowest = max(seconds)
        print(f"| {processes} process{'es' if processes > 1 else ''} | {threads or 'default'} | {slowest:.2f} | "
              f"{processes * args.images / slowest:,.0f} |", flush=True)


def size_section(args: argparse.Namespace) -> None:
    print(f"\n**size**: one process, TensorFlow's default threads, best of {args.epochs} epochs\n")
    print("| Images | Size (px) | s/epoch | Images/s |\n|---:|---:|---:|---:|")
    rows = [(args.images, s) for s in args.sizes] + [(n, args.size) for n in args.counts if n != args.images]
    for images, size in rows:
        seconds = epoch_seconds(images, size, args.epochs)
        print(f"| {images:,} | {size} | {seconds:.2f} | {images / seconds:,.0f} |", flush=True)


SECTIONS = {"trial": trial_section, "cores": cores_section, "size": size_section}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        images, size, epochs, threads = json.loads(sys.argv[2])
        print(epoch_seconds(images, size, epochs, threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="trial,cores,size")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[32, 48, 64, 96, 128])
    parser.add_argument("--counts", type=lambda s: [int(v) for v in s.split(",")], default=[1024, 2048, 4096, 8192])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    from bench import machine
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {machine.describe()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    for name in args.sections.split(","):
        SECTIONS[name](args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
