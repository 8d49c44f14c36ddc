"""Test-time augmentation: a prediction averaged over flipped and rotated copies of each image.

Blood-cell smears have no up, down, left or right, so the 8 symmetries of the square (the dihedral group D4:
4 rotations by 90 degrees, each with or without a mirror) are label-preserving. A named set of them is applied to a
batch in numpy, the model runs once on the stacked copies, and the probabilities are averaged per image; the same
code runs at evaluation (bench.search.ensemble) and in the served pyfunc, whose logged model carries a copy of it.
"""

from __future__ import annotations

import numpy as np

# name -> (quarter turns counter-clockwise, then mirror left-right?) per copy; the first copy is the image itself.
TRANSFORMS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "rot90": tuple((k, False) for k in range(4)),
    "d4": tuple((k, mirror) for mirror in (False, True) for k in range(4)),
}


def transform(batch: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """`batch` (N, H, W, C) turned by `turns` quarter turns, then mirrored left-right when `mirror`."""
    out = np.rot90(batch, turns, axes=(1, 2))
    return out[:, :, ::-1] if mirror else out


def augment(batch: np.ndarray, name: str) -> np.ndarray:
    """The copies of `batch` for TTA `name`, stacked transform by transform: (T * N, H, W, C), contiguous."""
    copies = [transform(batch, turns, mirror) for turns, mirror in TRANSFORMS[name]]
    return np.ascontiguousarray(copies[0] if len(copies) == 1 else np.concatenate(copies))


def fold(probabilities: np.ndarray, name: str) -> np.ndarray:
    """The mean over copies of the (T * N, K) output of a model run on `augment(batch, name)`: (N, K)."""
    copies = len(TRANSFORMS[name])
    return probabilities.reshape(copies, -1, probabilities.shape[-1]).mean(axis=0)
