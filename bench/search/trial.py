"""One trial, engine-agnostic: train, score, and record it as an MLflow child run that never stays RUNNING."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from bench import machine, serving, tracking
from bench.data import Dataset
from bench.search.budget import EPOCHS_METRIC
from bench.search.config import SearchConfig
from bench.metrics import classification_metrics
from bench.reporting import write_evaluation_artifacts
from bench.search.space import Space
from bench.text import one_line, summarize
from bench.training import (CostCeiling, EpochHook, FitResult, OverCostCeiling, fit_and_score, start_trial,
                            train_subset)
from bench.tracking import tags as tag

TRAIN_IMAGES = "train_images"  # per trial: how many training images it trained on (fewer than the split with `subset`)
NOT_PARAMS = {"epochs", "image_size", "family", "subset"}  # what a trial logs as parameters besides its configuration


def trial_seed(config: SearchConfig, number: int) -> int:
    """The seed trial `number` of a study trains with (its refits too)."""
    return config.seed + number


def logged_params(logged: dict[str, str]) -> dict[str, Any]:
    """A trial run's configuration, read back from its MLflow parameters (text) as the YAML values it was logged from."""
    return {name: _typed(text) for name, text in logged.items() if name not in NOT_PARAMS}


def _typed(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-05" as text
        except ValueError:
            return value
    return value


@dataclass
class TrialOutcome:
    number: int
    params: dict[str, Any]
    state: str  # COMPLETE | PRUNED | FAIL
    run_id: str
    seconds: float
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    reason: str = ""
    model_uri: str = ""  # set when the trial's model was logged (it was the best so far, or config.ensemble)
    weights: list | None = None  # the model's (best-epoch) weights, so an engine can continue from them


@dataclass
class Study:
    """One study's fixed parts: what it searches, on which data, and where in MLflow its runs go."""

    config: SearchConfig
    dataset: Dataset
    space: Space
    client: MlflowClient
    experiment_id: str
    parent_run_id: str


@dataclass
class TrialRunner(Study):
    """Runs trials of one study. `is_best(value)` says whether a finished trial beats every earlier one,
    in which case its model is logged (so the study's best model always exists as an artifact); with
    `config.ensemble` every COMPLETE trial's model is logged (bench.search.ensemble chooses among them).

    `deadline` (`time.monotonic()`; by default `config.timeout` seconds after the runner is made, which each
    engine does as its search starts) ends a running trial at its next epoch end: it completes with its best
    epoch so far. The space's cost ceilings (`max_mflops_per_image`, `max_seconds_per_epoch`) reject a trial
    before training or in its first epoch: it ends PRUNED with the reason, and `OverCostCeiling` propagates so that
    the engine can tell its sampler (`cost_ceiling=False`: no ceiling, for the refit of an accepted configuration).

    Trials train on `train_data`: by default the dataset with its training split cut to `config.subset`
    (bench.training.subset, the same images for every trial of the study); validation is always the whole split."""

    is_best: Callable[[float], bool]
    tags: dict[str, str] = field(default_factory=dict)
    on_done: Callable[[TrialOutcome], None] | None = None
    last_run_id: str = ""
    deadline: float | None = None
    train_data: Dataset | None = None
    cost_ceiling: bool = True

    def __post_init__(self) -> None:
        if self.deadline is None and self.config.timeout:
            self.deadline = time.monotonic() + self.config.timeout
        if self.train_data is None:
            self.train_data = train_subset(self.dataset, self.config.subset, seed=self.config.seed)

    @property
    def ceiling(self) -> CostCeiling:
        if not self.cost_ceiling:
            return CostCeiling()
        return CostCeiling(self.space.extra.get("max_mflops_per_image"), self.space.extra.get("max_seconds_per_epoch"))

    def run(self, number: int, params: dict[str, Any], *, on_epoch: EpochHook | None = None,
            prune_exceptions: tuple[type[BaseException], ...] = (), initial_weights: list | None = None,
            name: str = "", note: str = "") -> TrialOutcome:
        """Train and record trial `number` with `params`; `name` and `note` replace the run's `trial-<number>`
        name and its one-line description (the refit has its own)."""
        c, cfg, train = self.client, self.config, self.train_data
        started = time.perf_counter()
        seed = trial_seed(cfg, number)
        start_trial(seed)
        run_id = tracking.start_child(
            c, self.experiment_id, self.parent_run_id, name=name or f"trial-{number}",
            tags={**self.tags, tag.TRIAL: str(number), tag.STATE: "RUNNING", tag.MACHINE: machine.describe(),
                  tag.NOTE: note or f"Trial {number} of study {cfg.study_name}: {summarize(params, width=400)}"},
        )
        tracking.log_batch(c, run_id, params={**params, "epochs": cfg.epochs, "image_size": cfg.image_size,
                                              "family": self.space.family, "subset": cfg.subset},
                           metrics={TRAIN_IMAGES: len(train.y_train)})
        self.last_run_id = run_id
        history: list[dict[str, float]] = []

        def hook(epoch: int, row: dict[str, float]) -> None:
            history.append(row)
            if on_epoch is not None:
                on_epoch(epoch, row)

        outcome = TrialOutcome(number, params, "FAIL", run_id, 0.0, history=history)
        measured: dict[str, float] = {}
        outcome.metrics = measured  # FLOPs per image and images/s, filled as training goes: logged in every state
        try:
            fit = fit_and_score(params, train, family=self.space.family, epochs=cfg.epochs,
                                seed=seed, objective=cfg.objective, on_epoch=hook, verbose=cfg.verbose,
                                weights=cfg.weights, deadline=self.deadline, ceiling=self.ceiling, measured=measured,
                                initial_weights=initial_weights)
        except OverCostCeiling as exc:
            outcome.state, outcome.reason = "PRUNED", str(exc)
            self._end(outcome, "KILLED", started)
            raise
        except prune_exceptions as exc:
            outcome.state, outcome.reason = "PRUNED", f"pruned after epoch {len(history)}"
            self._end(outcome, "KILLED", started)
            raise exc
        except BaseException as exc:  # noqa: BLE001 - every failure must end the run as FAILED, then propagate
            outcome.reason = one_line(exc)
            self._end(outcome, "FAILED", started, extra_tags={tag.TRACEBACK: traceback.format_exc()[-4000:]})
            raise
        outcome.state = "COMPLETE"
        self._complete(outcome, fit)
        self._end(outcome, "FINISHED", started)
        return outcome

    def _complete(self, outcome: TrialOutcome, fit: FitResult) -> None:
        ds = self.dataset
        outcome.metrics = {
            **classification_metrics(ds.y_val, fit.val_prob, ds.class_names, prefix="val"),
            "best_epoch": fit.best_epoch,
            "train_seconds": fit.train_seconds,
            "n_params": fit.n_params,
            "mflops_per_image": fit.mflops_per_image,
            "train_images_per_second": fit.images_per_second,
            "epochs_run": len(fit.history),
        }
        if fit.stopped == "deadline":
            outcome.reason = (f"stopped at the search deadline (timeout {self.config.timeout:g} s) after epoch "
                              f"{len(fit.history)} of {self.config.epochs}; kept epoch {fit.best_epoch}")
        outcome.value = outcome.metrics[self.config.objective]
        outcome.weights = fit.model.get_weights()
        tracking.log_files(self.client, outcome.run_id, lambda d: write_evaluation_artifacts(
            d, ds.y_val, fit.val_prob, ds.class_names, title=f"trial {outcome.number} validation"))
        if self.is_best(outcome.value) or self.config.ensemble:  # the ensemble picks from every complete trial
            with mlflow.start_run(run_id=outcome.run_id, nested=True):
                info = serving.log_model(fit.model, class_names=list(ds.class_names), image_size=ds.image_size,
                                         resize_mode=ds.resize_mode, name="model")
            outcome.model_uri = info.model_uri

    def _end(self, outcome: TrialOutcome, status: str, started: float, *, extra_tags: dict[str, str] | None = None) -> None:
        outcome.seconds = time.perf_counter() - started
        tags = {tag.STATE: outcome.state, **(extra_tags or {})}
        if outcome.model_uri:
            tags[tag.MODEL_URI] = outcome.model_uri
        if outcome.reason:
            tags[tag.REASON] = outcome.reason
        try:
            tracking.log_batch(self.client, outcome.run_id, metrics={**outcome.metrics, "trial_seconds": outcome.seconds,
                                                                        EPOCHS_METRIC: len(outcome.history)},
                               history=outcome.history, tags=tags)
        finally:
            self.client.set_terminated(outcome.run_id, status)
        if self.on_done is not None:
            self.on_done(outcome)
