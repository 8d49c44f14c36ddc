"""Data: dataset layouts, decoding with an on-disk cache, leak-free splits, the `data inspect` report and the
embedded synthetic set. Imports only the core.

`data` is "synthetic" (options: `synthetic?n_per_class=100&difficulty=0.7`), `medmnist:<name>@<size>`, a dataset
card (a name in `datasets/` or a path to a .yaml), a MedMNIST `.npz`, or a directory whose layout is detected.
"""

from bench.data.inspection import inspect
from bench.data.layouts import Source, detect_layout, list_layouts, register_layout
from bench.data.loading import class_weights, cross_class_duplicates, load, load_dataset
from bench.data.splits import SPLITS
from bench.data.types import Dataset, Loaded

__all__ = ["SPLITS", "Dataset", "Loaded", "Source", "class_weights", "cross_class_duplicates", "detect_layout",
           "inspect", "list_layouts", "load", "load_dataset", "register_layout"]
