"""Layouts whose images arrive as arrays: the embedded synthetic set, MedMNIST `.npz`, `medmnist:<name>@<size>`."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd
from PIL import Image

from bench import paths
from bench.errors import DataError
from bench.images import fit
from bench.data import synthetic
from bench.data.layouts.base import Source, register_layout

SYNTHETIC_OPTIONS = {"n_per_class": int, "difficulty": float}
MEDMNIST_RE = re.compile(r"^medmnist:(?P<name>[a-z0-9_]+)(?:@(?P<size>\d+))?$", re.IGNORECASE)
# Label names of the MedMNIST sets this project cares about; others fall back to their index.
MEDMNIST_LABELS = {
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocyte", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"],
}


def _table(labels: np.ndarray, class_names: list[str], official: list[str], prefix: str) -> pd.DataFrame:
    return pd.DataFrame({
        "file": [f"{prefix}[{i}]" for i in range(len(labels))],
        "class": [class_names[i] for i in labels],
        "official": official,
        "group": "",
    })


def parse_synthetic(data: str) -> dict:
    """`synthetic` or `synthetic?n_per_class=100&difficulty=0.7` → keyword arguments."""
    _, _, query = data.partition("?")
    options = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []:
        if key not in SYNTHETIC_OPTIONS:
            raise DataError(f"synthetic option must be one of {sorted(SYNTHETIC_OPTIONS)}; got {key!r}")
        try:
            options[key] = SYNTHETIC_OPTIONS[key](value)
        except ValueError:
            raise DataError(f"synthetic option {key} must be a {SYNTHETIC_OPTIONS[key].__name__}; got {value!r}") from None
    return options


@register_layout(
    "synthetic", order=10, detect=lambda data: data == "synthetic" or data.startswith("synthetic?"),
    description="embedded generated cells: synthetic or synthetic?n_per_class=N&difficulty=D",
)
def load_synthetic(data: str, *, image_size: int, seed: int, options: dict | None = None) -> Source:
    kwargs = {"n_per_class": 200, **parse_synthetic(data)}
    try:
        x, y, class_names = synthetic.generate(image_size=image_size, seed=seed, **kwargs)
    except ValueError as exc:
        raise DataError(f"synthetic: {exc}") from None
    y = np.asarray(y, dtype=np.int64)
    table = _table(y, list(class_names), [""] * len(y), "synthetic")
    return Source("synthetic", list(class_names), "synthetic", x=np.asarray(x, dtype=np.uint8), table=table,
                  options={**kwargs, "seed": seed})


def _resize_all(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    if x.shape[1:3] == (size, size):
        return x
    return np.stack([np.asarray(fit(Image.fromarray(img), size, mode), dtype=np.uint8) for img in x])


def read_npz(path: Path, *, image_size: int, class_names: list[str] | None = None) -> Source:
    """MedMNIST layout: `{train,val,test}_{images,labels}`; gray images become RGB, resized with pad."""
    try:
        npz = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    with npz:
        splits = [s for s in ("train", "val", "test") if f"{s}_images" in npz.files]
        if "train" not in splits or any(f"{s}_labels" not in npz.files for s in splits):
            raise DataError(f"{path}: a MedMNIST .npz needs train_images/train_labels (and val_*, test_*); "
                            f"got keys {sorted(npz.files)}")
        xs, ys, official = [], [], []
        for split in splits:
            x, y = npz[f"{split}_images"], npz[f"{split}_labels"]
            if y.ndim == 2 and y.shape[1] != 1:
                raise DataError(f"{path}: {split}_labels has {y.shape[1]} columns; only single-label sets are supported")
            if x.ndim == 3:
                x = np.repeat(x[..., None], 3, axis=-1)
            if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
                raise DataError(f"{path}: {split}_images must be uint8 (N,H,W) or (N,H,W,3); got {x.dtype} {x.shape}")
            xs.append(_resize_all(x, image_size, "pad"))
            ys.append(y.reshape(-1).astype(np.int64))
            official += [split] * len(x)
    y = np.concatenate(ys)
    n_classes = int(y.max()) + 1
    class_names = class_names or MEDMNIST_LABELS.get(path.stem.split("_")[0].lower())
    if not class_names or len(class_names) < n_classes:
        class_names = [f"class_{i}" for i in range(n_classes)]
    class_names = list(class_names[:n_classes])  # the labels present define the classes
    table = _table(y, class_names, official, path.name)
    return Source("medmnist_npz", class_names, str(path), x=np.concatenate(xs), table=table)  # pixels fingerprinted


@register_layout(
    "medmnist_npz", order=40, detect=lambda data: data.lower().endswith(".npz") and Path(data).is_file(),
    description="MedMNIST .npz (train_/val_/test_ images and labels), e.g. bloodmnist_64.npz",
)
def load_npz(data: str, *, image_size: int, seed: int, options: dict | None = None) -> Source:
    return read_npz(Path(data), image_size=image_size)


@register_layout(
    "medmnist", order=20, detect=lambda data: data.lower().startswith("medmnist:"),
    description="medmnist:<name>@<size>, downloaded by the medmnist package (pip install medmnist)",
)
def load_medmnist(data: str, *, image_size: int, seed: int, options: dict | None = None) -> Source:
    match = MEDMNIST_RE.match(data)
    if not match:
        raise DataError(f"--data must look like medmnist:<name>@<size> (e.g. medmnist:bloodmnist@64); got {data!r}")
    name, size = match["name"].lower(), int(match["size"] or 28)
    try:
        medmnist = importlib.import_module("medmnist")
    except ImportError:
        raise DataError(f"{data} needs the medmnist package: pip install medmnist "
                        f"(or pass a downloaded {name}_{size}.npz)") from None
    if name not in medmnist.INFO:
        raise DataError(f"medmnist name must be one of {sorted(medmnist.INFO)}; got {name!r}")
    root = paths.cache_dir() / "medmnist"
    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(medmnist, medmnist.INFO[name]["python_class"])(split="train", download=True, size=size, root=str(root))
    except Exception as exc:  # network errors arrive as many types; the user needs one line either way
        raise DataError(f"{data}: download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    npz = root / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    labels = medmnist.INFO[name].get("label") or {}
    source = read_npz(npz, image_size=image_size, class_names=[labels[str(i)] for i in range(len(labels))])
    source.layout = "medmnist"
    return source
