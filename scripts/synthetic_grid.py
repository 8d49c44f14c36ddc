"""Draw docs/synthetic_grid.png: one row of examples per class of the embedded "synthetic" dataset."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib
from PIL import Image

# Runnable as `python scripts/synthetic_grid.py` from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.data.synthetic import generate  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "synthetic_grid.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images, labels, names = generate(args.columns, args.size, seed=args.seed, difficulty=args.difficulty)
    fig, axes = plt.subplots(len(names), args.columns, figsize=(1.1 * args.columns + 1.6, 1.1 * len(names)))
    for row, name in enumerate(names):
        for col in range(args.columns):
            ax = axes[row, col]
            ax.imshow(images[row * args.columns + col], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(name.replace("_", "\n"), rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"synthetic: {args.size} px, difficulty {args.difficulty}, seed {args.seed}", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    # A 256-colour palette keeps the README figure small (noisy pixels defeat PNG's compression).
    Image.open(buffer).convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
