"""`refit_full`: after the champion is chosen on validation, its configuration trains once more on train AND
validation, and that model is registered (AutoGluon's `refit_full`, the usual last step once selection is over).

Why: on a dataset of few sources the validation carved from train by group holds sources the model never learns
from. On the Kaggle blood cells it is 3 of the 16 monocyte cells (617 of 2,066 images); every champion trained on
train alone lost the TEST's monocyte smear BloodImage_00110 (155 copies, 6.2 accuracy points).

How: each of the champion's fits (the one trial or refit, or every member of an ensemble, with its weight) trains
again with the same parameters and seed on train + validation, for the same `epochs` schedule, stopped after the
epoch that fit kept (`best_epoch`): the same recipe as the validated model, with more data. No split is left to
choose an epoch on, so none is chosen. An ensemble keeps its members' weights and TTA.

Honest numbers: the refitted model has no validation score of its own. Its registered version carries the chosen
fit's validation objective as the estimate (and `hemabench.refit_full_of`); test is scored on the refitted model, read once,
never used to decide. The run (`hemabench.role=refit_full`, `hemabench.refit_full_of` = the chosen fit's run)
records the epochs and images. It runs after the deadline, as the refit does; a resumed study whose champion
already has a finished refit_full run reuses it. A failure leaves the chosen fit the champion.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import keras
import mlflow
import numpy as np

from bench import serving, tracking
from bench.data import Dataset
from bench.metrics import classification_metrics
from bench.search import workers
from bench.search.context import SearchContext
from bench.search.ensemble import ensemble_graph, load_keras_model, predict
from bench.search.trial import logged_params, trial_seed
from bench.text import count, one_line
from bench.tracking import tags as tag
from bench.training import fit_and_score, start_trial

RETRAINED = ", retrained on train + validation"
"""What the champion's label (`hemabench.champion_fit`) gains when refit_full retrained it."""


@dataclass
class Member:
    """One fit of the champion to train again: its run, weight in the ensemble, parameters, seed and epochs."""

    trial: int
    run_id: str
    weight: float
    params: dict
    seed: int
    epochs: int  # the schedule's length
    keep: int  # the epoch that fit kept: the refit stops after it


@dataclass
class FullFit:
    """The champion retrained on train + validation: its run, model and test scores."""

    run_id: str
    model_uri: str
    model: keras.Model
    test_metrics: dict[str, float]
    test_prob: np.ndarray
    seconds: float = 0.0  # 0 for a reused run


def member(ctx: SearchContext, run_id: str, weight: float) -> Member:
    run = ctx.client.get_run(run_id)
    number = int(run.data.tags[tag.TRIAL])
    epochs = int(run.data.params.get("epochs", ctx.config.epochs))
    return Member(number, run_id, weight, logged_params(run.data.params), trial_seed(ctx.config, number), epochs,
                  int(run.data.metrics.get("best_epoch", epochs)))


def train_and_validation(ds: Dataset) -> Dataset:
    """`ds` with validation added to its training split (validation itself is left, unused, for the feature
    cache's shapes); its own fingerprint, so no cache mistakes it for `ds`."""
    return dataclasses.replace(ds, x_train=np.concatenate([ds.x_train, ds.x_val]),
                               y_train=np.concatenate([ds.y_train, ds.y_val]), fingerprint=f"{ds.fingerprint}+val")


def earlier_run(ctx: SearchContext, role: str, of_tag: str, of_run: str, *, where: str = ""):
    """The latest FINISHED run of this study with `role` and `of_tag` = `of_run` (and the extra filter `where`) that
    logged a model, with that model, its test probabilities and test metrics, for a resumed study to reuse; None when
    there is none."""
    earlier = ctx.client.search_runs([ctx.experiment_id], tag.run_filter({
        tag.ROLE: role, tag.STUDY: ctx.config.study_name, of_tag: of_run}) + " and attributes.status = 'FINISHED'" + where,
        order_by=["attributes.start_time DESC"], max_results=1)
    if not earlier or tag.MODEL_URI not in earlier[0].data.tags:
        return None
    run = earlier[0]
    model = load_keras_model(run.data.tags[tag.MODEL_URI])
    print(f"{role}: the champion's earlier {role} run {run.info.run_id} is reused", flush=True)
    ds = ctx.dataset
    prob = predict(model, ds.x_test, run.data.tags.get(tag.TTA, "none"))
    return run, model, prob, classification_metrics(ds.y_test, prob, ds.class_names, prefix="test")


def log_graph(ds: Dataset, run_id: str, models: list[keras.Model], weights: list[float], tta: str):
    """One graph of `models` averaged with `weights`, logged as run `run_id`'s served model: the graph, its test
    probabilities (under TTA `tta`) and metrics, and the logged model's URI."""
    model = ensemble_graph(models, weights, ds.image_size)
    prob = predict(model, ds.x_test, tta)
    with mlflow.start_run(run_id=run_id, nested=True):
        info = serving.log_model(model, class_names=list(ds.class_names), image_size=ds.image_size,
                                 resize_mode=ds.resize_mode, name="model", tta=tta)
    return model, prob, classification_metrics(ds.y_test, prob, ds.class_names, prefix="test"), info.model_uri


def _reused(ctx: SearchContext, of_run: str) -> FullFit | None:
    if (earlier := earlier_run(ctx, tag.REFIT_FULL_ROLE, tag.REFIT_FULL_OF, of_run)) is None:
        return None
    run, model, prob, test = earlier
    return FullFit(run.info.run_id, run.data.tags[tag.MODEL_URI], model, test, prob)


def refit_full(ctx: SearchContext, label: str, of_run: str, fits: list[tuple[str, float]], tta: str,
               estimate: float) -> FullFit | None:
    """Train the champion (`label`, run `of_run`) again on train + validation: `fits` are its (run id, weight) pairs,
    one for a single fit. `estimate` is its validation objective, logged as the refitted model's estimate.
    None when it fails (printed; the run ends FAILED with why)."""
    if (again := _reused(ctx, of_run)) is not None:
        return again
    config, ds, c, started = ctx.config, ctx.dataset, ctx.client, time.perf_counter()
    full = train_and_validation(ds)
    members = [member(ctx, run_id, weight) for run_id, weight in fits]
    n = len(full.y_train)
    kept = ", ".join(f"trial {m.trial} for {count(m.keep, 'epoch')} of {m.epochs}" for m in members)
    print(f"refit_full: {label} trains again on all {n:,} train + validation images ({kept}); "
          f"its validation estimate stays {config.objective}={estimate:.4f} (refit_full=false skips this)", flush=True)
    run_id = tracking.start_child(c, ctx.experiment_id, ctx.parent_run_id, name="refit-full", tags={
        **ctx.tags, tag.ROLE: tag.REFIT_FULL_ROLE, tag.REFIT_FULL_OF: of_run, tag.TTA: tta,
        tag.PROCESS: json.dumps(workers.identity()),
        tag.MEMBERS: json.dumps([{"trial": m.trial, "run_id": m.run_id, "weight": m.weight} for m in members]),
        tag.NOTE: f"{label} of study {config.study_name}, trained again on train + validation ({n:,} images: "
                  f"{kept}). No validation score of its own: the estimate is the chosen fit's."})
    try:
        with tracking.ending(c, run_id):
            models = []
            for m in members:
                start_trial(m.seed)
                models.append(fit_and_score(m.params, full, family=ctx.space.family, epochs=m.epochs, seed=m.seed,
                                            weights=config.weights, stop_after=m.keep).model)
            model, prob, test, model_uri = log_graph(ds, run_id, models, [m.weight for m in members], tta)
            seconds = time.perf_counter() - started
            tracking.log_batch(c, run_id, metrics={**test, "train_images": n, "refit_full_seconds": seconds,
                                                   f"estimate_{config.objective}": estimate},
                               params={"members": ",".join(str(m.trial) for m in members),
                                       "epochs_kept": ",".join(str(m.keep) for m in members),
                                       "weights": ",".join(f"{m.weight:.4f}" for m in members), "tta": tta},
                               tags={tag.MODEL_URI: model_uri})
    except Exception as exc:  # noqa: BLE001 - the chosen fit stays the champion; the run ended FAILED
        print(f"refit_full of {label} failed: {one_line(exc)}; the champion stays the chosen fit", flush=True)
        return None
    return FullFit(run_id, model_uri, model, test, prob, seconds)
