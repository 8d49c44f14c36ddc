"""The pruners as the search builds them: which curves each one stops, on a real Optuna study fed epoch values."""

from __future__ import annotations

import optuna
import pytest

from bench.search import make_config
from bench.search.engines.strategies import PRUNERS
from tests.conftest import TINY_DATA

FROZEN = [0.80, 0.85, 0.88, 0.90, 0.91, 0.92, 0.92, 0.93, 0.93, 0.93]  # a frozen backbone: fast start, early plateau


def first_pruned_epoch(pruner: str, curve: list[float]) -> int | None:
    """The epoch (1-based, as the engine reports) after which `pruner` stops `curve`, with two finished frozen trials
    as the yardstick; None when it runs to the end."""
    study = optuna.create_study(direction="maximize", pruner=PRUNERS.get(pruner).build(make_config(data=TINY_DATA,
                                                                                                  epochs=10)))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=FROZEN[-1], intermediate_values=dict(enumerate(FROZEN, 1))))
    trial = study.ask()
    for epoch, value in enumerate(curve, 1):
        trial.report(value, epoch)
        if trial.should_prune():
            return epoch
    return None


CLIMBING = [0.40, 0.55, 0.66, 0.75, 0.82, 0.87, 0.91, 0.94, 0.95, 0.96]  # fine-tuning: slow start, higher finish
STALLED = [0.40, 0.45, 0.47, 0.44, 0.46, 0.45, 0.46, 0.45, 0.46, 0.45]  # a noisy plateau far below the rest


@pytest.mark.parametrize(("pruner", "curve", "expected"), [
    ("median", CLIMBING, 2),  # below the frozen trials at epoch 2: gone, though it would have won
    ("patient", CLIMBING, None),  # still improving every epoch: never judged
    ("median", STALLED, 2),
    ("patient", STALLED, 5),  # the first epoch whose last two values are both below the best before them
    ("patient", FROZEN, None),  # at the median: kept once it plateaus too
])
def test_the_patient_pruner_judges_a_curve_only_once_it_stops_improving(pruner: str, curve: list[float],
                                                                         expected: int | None) -> None:
    assert first_pruned_epoch(pruner, curve) == expected
