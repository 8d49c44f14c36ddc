"""Dataset cards: a YAML file in `datasets/` naming a root, a directory layout and its options.

See `datasets/README.md` for the format. Relative roots resolve against `BENCH_DATA_DIR` when it
is set, then against the card's own folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from bench import paths
from bench.errors import DataError
from bench.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, RESIZE_MODES
from bench.validation import Rules, between, check, one_of, satisfies
from bench.data.layouts.base import Source, get_layout, register_layout

DIRECTORY_LAYOUTS = ("split_folders", "class_folders", "filename_labels")
GROUP_LEAK_POLICIES = ("drop", "keep", "error")
CARD_KEYS = {
    "name": str, "description": str, "source": str, "license": str, "root": str, "layout": str,
    "splits": dict, "classes": dict, "groups": dict, "labels": dict, "resize_mode": str, "image_size": int,
    "group_leak": str, "label_pattern": str, "group_pattern": str, "near_duplicates": bool, "exclude": dict,
}
CARD_DEFAULTS = {"resize_mode": "pad", "group_leak": "drop", "image_size": None, "exclude": None}  # None: the caller's default
_SIZE = between(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
CARD_RULES: Rules = (
    ("layout", one_of(DIRECTORY_LAYOUTS)),
    ("resize_mode", one_of(RESIZE_MODES)),
    ("image_size", satisfies(lambda v: v is None or _SIZE.test(v), _SIZE.rule)),
    ("group_leak", one_of(GROUP_LEAK_POLICIES)),
    ("exclude", satisfies(lambda v: v is None or all(isinstance(k, str) and isinstance(r, str) and r.strip()
                                                     for k, r in v.items()), "a mapping of group or file to a reason")),
)
CSV_KEYS = {"groups": ("csv", "file_column", "group_column"), "labels": ("csv", "file_column", "class_column")}


def card_path(data: str) -> Path | None:
    """The card `data` names: a .yaml path, or a bare name in `bench.paths.DATASET_CARDS_DIR`."""
    if data.lower().endswith((".yaml", ".yml")):
        return Path(data) if Path(data).is_file() else None
    if "/" in data or "\\" in data or ":" in data or "?" in data:
        return None
    for suffix in (".yaml", ".yml"):
        candidate = paths.DATASET_CARDS_DIR / f"{data}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_card(path: Path) -> dict:
    """The card as a dict, every key and type checked; one-line DataError otherwise."""
    try:
        card = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"dataset card {path}: cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(card, dict):
        raise DataError(f"dataset card {path}: must be a YAML mapping; got {type(card).__name__}")
    try:
        for key, value in card.items():
            check((("key", one_of(CARD_KEYS)),), {"key": key}, error=DataError)
            check(((key, satisfies(lambda v, kind=CARD_KEYS[key]: isinstance(v, kind), f"a {CARD_KEYS[key].__name__}")),),
                  card, error=DataError)
        for key in ("root", "layout"):
            if key not in card:
                raise DataError(f"{key} is required")
        check(CARD_RULES, {**CARD_DEFAULTS, **card}, error=DataError)
    except DataError as exc:
        raise DataError(f"dataset card {path}: {exc}") from None
    for key, required in CSV_KEYS.items():
        missing = [k for k in required if k not in card.get(key, {k: 1 for k in required})]
        if missing:
            raise DataError(f"dataset card {path}: {key} needs {', '.join(required)}; missing {', '.join(missing)}")
    return card


def card_image_size(data: str) -> int | None:
    """The image size the card `data` names (its `image_size` key), or None when `data` is no card or sets none.
    The caller's explicit size wins over it."""
    path = card_path(data)
    return None if path is None else read_card(path).get("image_size")


def resolve_root(card: dict, path: Path) -> Path:
    root = Path(card["root"]).expanduser()
    candidates = [root] if root.is_absolute() else []
    if not root.is_absolute():
        if paths.data_dir() is not None:
            candidates += [paths.data_dir() / root, paths.data_dir() / root.name]
        candidates.append(path.resolve().parent / root)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(f"dataset card {path}: root {card['root']!r} not found (looked in "
                    f"{', '.join(str(c) for c in candidates)}; set BENCH_DATA_DIR)")


def _csv_column(card: dict, key: str, root: Path, path: Path) -> dict[str, str]:
    spec = card[key]
    csv = root / spec["csv"]
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise DataError(f"dataset card {path}: {key} csv {csv} cannot be read ({str(exc).splitlines()[0]})") from None
    value_column = spec["group_column"] if key == "groups" else spec["class_column"]
    for column in (spec["file_column"], value_column):
        if column not in frame.columns:
            raise DataError(f"dataset card {path}: {key} csv {csv} has no column {column!r}; "
                            f"columns are {list(frame.columns)}")
    return dict(zip(frame[spec["file_column"]], frame[value_column]))


@register_layout(
    "card", order=30, detect=lambda data: card_path(data) is not None,
    description="dataset card: datasets/<name>.yaml (or a path to one) naming root, layout, splits, groups",
)
def load_card(data: str, *, image_size: int, seed: int, options: dict | None = None) -> Source:
    path = card_path(data)
    card = read_card(path)
    root = resolve_root(card, path)
    layout_options = {k: card[k] for k in ("splits", "classes", "label_pattern", "group_pattern") if k in card}
    source = get_layout(card["layout"]).load(str(root), image_size=image_size, seed=seed, options=layout_options)
    files = source.files
    if "labels" in card:
        labels = _csv_column(card, "labels", root, path)
        known = files["file"].isin(labels.keys())
        source.skipped += [(f, "no label in the labels csv") for f in files.loc[~known, "file"]]
        files = files[known].copy()
        files["class"] = files["file"].map(labels)
    if "groups" in card:
        groups = _csv_column(card, "groups", root, path)
        files["group"] = files["file"].map(groups).fillna("")
        missing = int((files["group"] == "").sum())
        if missing:
            source.notes.append(f"{missing} files without a group in {card['groups']['csv']} (each its own group)")
    source.files = files.reset_index(drop=True)
    source.class_names = sorted(files["class"].unique().tolist())
    source.layout = f"card {card.get('name', path.stem)} ({card['layout']})"
    source.resize_mode = card.get("resize_mode", "pad")
    source.options = {**source.options, **{k: v for k, v in card.items() if k not in ("description", "source", "license")},
                      "group_leak": card.get("group_leak", "drop")}
    return source
