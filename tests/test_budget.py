"""Search budgets: every engine stops on every unit (trials, epochs summed over trials, seconds) and reports what
it spent; KerasTuner's Hyperband continues promoted trials from their parent's weights up to `max_epochs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.search import list_engines
from bench.search import study as search
from bench.search.budget import EPOCHS_METRIC, UNLIMITED_TRIALS, Budget, startup_trials
from bench.search.engines.keras_tuner_engine import WEIGHTS_FILE, project_dir
from tests.conftest import children, tiny_config
from tests.searchproc import write_space


def spent(result) -> tuple[int, int]:
    runs = children(MlflowClient(), result.parent_run_id)
    return len(runs), int(sum(r.data.metrics[EPOCHS_METRIC] for r in runs))


@pytest.mark.parametrize("engine", list_engines())
@pytest.mark.parametrize("unit, limits, trials, epochs", [
    ("trials", {"trials": 2, "epochs": 1}, (2, 2), (2, 2)),
    ("epochs", {"trials": UNLIMITED_TRIALS, "epochs": 2, "epoch_budget": 3}, (2, 2), (3, 4)),  # within a trial of it
    ("seconds", {"trials": UNLIMITED_TRIALS, "epochs": 1, "timeout": 0.01}, (1, 1), (1, 1)),  # the first trial ends past it
])
def test_every_engine_stops_on_every_budget_unit(tracking: Path, engine: str, unit: str, limits: dict, trials: tuple,
                                                 epochs: tuple, capsys: pytest.CaptureFixture) -> None:
    extra = {"tuner": "random"} if engine == "keras-tuner" else {"pruner": "none"}
    result = search.run(tiny_config(tracking, engine=engine, register=False, **limits, **extra))
    n, e = spent(result)
    assert trials[0] <= n <= trials[1] and epochs[0] <= e <= epochs[1], (unit, n, e)
    last = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")][-1]
    position = {"trials": f"[{n:>2}/2]", "epochs": f"[{n:>2} | {e}/3 epochs]", "seconds": f"[{n:>2} | 0:"}[unit]
    assert last.startswith(position), last  # the progress line counts in the budget's unit


def test_budget_names_the_first_unit_spent_and_reports_images_and_cpu() -> None:
    budget = Budget({"trials": 10, "epochs": 5, "seconds": 0}, n_train=100)
    budget.spend(3)
    assert budget.exhausted() is None
    budget.spend(2)
    assert budget.exhausted() == "epochs"
    report = budget.spent()
    assert (report["trials"], report["epochs"], report["images"]) == (2, 5, 500)
    assert report["cpu_seconds"] >= 0 and report["wall_seconds"] >= 0


def test_tpe_start_up_trials_scale_with_the_epochs_budget(tracking: Path) -> None:
    assert startup_trials(tiny_config(tracking, trials=1000, epochs=3, epoch_budget=36)) == 4  # 12 affordable trials
    assert startup_trials(tiny_config(tracking, trials=1000, epochs=3, epoch_budget=9)) == 3
    assert startup_trials(tiny_config(tracking, trials=1000, epochs=1, epoch_budget=300)) == 10


def test_hyperband_continues_promoted_trials_from_their_parent_to_max_epochs(tracking: Path) -> None:
    # max_epochs 3, factor 3: bracket 1 runs 3 trials of 1 epoch, then promotes the best to 3 epochs (2 more).
    # The tiny space has no cost ceiling: a draw rejected before training would take a place in the bracket.
    config = tiny_config(tracking, space=str(write_space(tracking)), engine="keras-tuner", tuner="hyperband",
                         trials=1000, epochs=3, epoch_budget=5, register=False)
    result = search.run(config)
    folder = project_dir() / config.study_name
    trials = {p.parent.name.removeprefix("trial_"): json.loads(p.read_text())["hyperparameters"]["values"]
              for p in folder.glob("trial_*/trial.json")}
    promoted = {tid: v for tid, v in trials.items() if "tuner/trial_id" in v}
    assert len(trials) == 4 and len(promoted) == 1
    (tid, values), = promoted.items()
    assert (values["tuner/initial_epoch"], values["tuner/epochs"]) == (1, 3)  # trained to max_epochs in total
    assert (folder / f"trial_{values['tuner/trial_id']}" / WEIGHTS_FILE).is_file()  # the parent's weights it loaded
    runs = {int(r.data.tags["hemabench.trial"]): r for r in children(MlflowClient(), result.parent_run_id)}
    assert runs[int(tid)].data.metrics[EPOCHS_METRIC] == 2  # continued, not retrained from scratch
    assert spent(result) == (4, 5)
