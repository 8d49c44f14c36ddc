"""`bag_folds`: after the champion is chosen on validation, its configuration is bagged over K grouped folds of
train + validation, and the bag is registered (AutoGluon's k-fold bagging, its `num_bag_folds`).

Why: a validation split carved from train by group holds few sources, so its score moves with the carve and the
model never learns from them. On the Kaggle blood cells the space's defaults scored 0.832 to 0.926 validation
macro-F1 on the five folds of one such cut; the out-of-fold score over all 256 sources was 0.892 against test
0.885, and the bag of the five fits scored 0.883 test accuracy, above each of them (0.807-0.881; README).

How: train + validation are cut into K class-stratified folds of whole groups (a file is its own group where
none is known), seeded by the study's seed. The best trial's configuration (its parameters, `epochs` and seed; not
an adopted ensemble's members, so the bag costs K fits, not K per member) trains K times: fit i on the other K - 1
folds, seed `the trial's seed + i`, keeping its best epoch on fold i, as a trial keeps its best epoch on
validation. The bag is ONE Keras graph averaging the K networks (bench.search.ensemble.ensemble_graph), so serving
stays one call; TTA is kept when the study's final fit adopted it. The bag is registered instead of whichever fit
won on validation: the user asked for it, and its score is not on the same images as theirs.

Honest numbers: every train + validation image is predicted once, by the fits that never trained on it; the
objective of those out-of-fold predictions over all of them is the bag's validation score (its fits chose their
epochs on the same folds, as a trial chooses on validation). It is logged as `oof_*` metrics and registered as
the version's validation value, with `hemabench.bag_of` naming the trial it bags. Test is scored on the bag, read
once, never used to decide. The run (`hemabench.role=bag`) runs after the deadline, as the refit does; a resumed
study whose champion already has a finished bag with the same K reuses it. A failure leaves the chosen fit the
champion.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from bench import tracking
from bench.data import Dataset
from bench.data.splits import row_groups
from bench.errors import DataError
from bench.metrics import classification_metrics
from bench.search import workers
from bench.search.context import SearchContext
from bench.search.ensemble import predict
from bench.search.refit_full import earlier_run, log_graph, member
from bench.text import count, one_line
from bench.tracking import tags as tag
from bench.training import fit_and_score, start_trial

BAGGED = "bag of {k} folds of "
"""What the champion's label (`hemabench.champion_fit`) gains in front when it was bagged."""


@dataclass
class Bag:
    """The champion bagged over K folds of train + validation: its run, model, out-of-fold and test scores."""

    run_id: str
    model_uri: str
    model: keras.Model
    value: float  # the objective of the out-of-fold predictions
    test_metrics: dict[str, float]
    test_prob: np.ndarray
    seconds: float = 0.0  # 0 for a reused run


def pooled(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The labels and groups (a row's file where it has none) of train + validation, in the order of
    `np.concatenate([ds.x_train, ds.x_val])`."""
    rows = ds.splits[ds.splits["split"] != "test"]
    rows = rows.iloc[np.argsort((rows["split"] == "val").to_numpy(), kind="stable")]  # train rows, then val rows
    return np.concatenate([ds.y_train, ds.y_val]), row_groups(rows).astype(str)


def folds(ds: Dataset, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) of `k` class-stratified folds of whole groups over `pooled(ds)`. A one-line
    DataError when some fold would hold out no image of a class (too few groups of it for `k` folds)."""
    y, groups = pooled(ds)
    units = {name: len(set(groups[y == i])) for i, name in enumerate(ds.class_names)}
    fewest = min(units, key=units.get)
    if units[fewest] < k:
        raise DataError(f"bag_folds={k}: class {fewest!r} has {count(units[fewest], 'group')} in train + validation, "
                        f"too few for {k} folds that each hold it out; lower bag_folds")
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    cuts = list(splitter.split(np.zeros(len(y)), y, groups))
    for i, (_, held) in enumerate(cuts):
        if missing := [name for j, name in enumerate(ds.class_names) if not (y[held] == j).any()]:
            raise DataError(f"bag_folds={k}: fold {i} of train + validation holds out no {missing[0]!r} image "
                            f"({count(units[missing[0]], 'group')} of that class); lower bag_folds")
    return cuts


def _reused(ctx: SearchContext, of_run: str) -> Bag | None:
    earlier = earlier_run(ctx, tag.BAG_ROLE, tag.BAG_OF, of_run, where=f" and params.folds = '{ctx.config.bag_folds}'")
    if earlier is None:
        return None
    run, model, prob, test = earlier
    return Bag(run.info.run_id, run.data.tags[tag.MODEL_URI], model, run.data.metrics[oof_key(ctx.config.objective)],
               test, prob)


def oof_key(objective: str) -> str:
    """`val_f1_macro` -> `oof_f1_macro`."""
    return "oof_" + objective.removeprefix("val_")


def bag(ctx: SearchContext, label: str, of_run: str, tta: str) -> Bag | None:
    """Bag the configuration of trial run `of_run` (`label`) over `bag_folds` folds of train + validation (see the
    module). None when it fails (printed; the run ends FAILED)."""
    if (again := _reused(ctx, of_run)) is not None:
        return again
    config, ds, c, started = ctx.config, ctx.dataset, ctx.client, time.perf_counter()
    k, objective, m = config.bag_folds, config.objective, member(ctx, of_run, 1.0)
    (y, groups), x = pooled(ds), np.concatenate([ds.x_train, ds.x_val])
    print(f"bag: {label} trains {count(k, 'more time')}, on {k} folds of all {len(y):,} train + validation images "
          f"({len(set(groups)):,} groups), each fit keeping its best epoch on the fold it leaves out (bag_folds=0 "
          f"skips this)", flush=True)
    run_id = tracking.start_child(c, ctx.experiment_id, ctx.parent_run_id, name="bag", tags={
        **ctx.tags, tag.ROLE: tag.BAG_ROLE, tag.BAG_OF: of_run, tag.TTA: tta,
        tag.PROCESS: json.dumps(workers.identity()),
        tag.NOTE: f"The configuration of {label} of study {config.study_name}, bagged over {k} grouped folds of train "
                  f"+ validation ({len(y):,} images). Its validation score is out of fold: each image predicted by "
                  f"the fit that did not train on it."})
    try:
        with tracking.ending(c, run_id):
            models, oof, values, epochs = [], np.zeros((len(y), len(ds.class_names)), dtype=np.float32), [], []
            for i, (train, held) in enumerate(folds(ds, k, config.seed)):
                fold_started = time.perf_counter()
                part = dataclasses.replace(ds, x_train=x[train], y_train=y[train], x_val=x[held], y_val=y[held],
                                           fingerprint=f"{ds.fingerprint}+fold{i}of{k}")
                start_trial(m.seed + i)
                fit = fit_and_score(m.params, part, family=ctx.space.family, epochs=m.epochs, seed=m.seed + i,
                                    weights=config.weights)
                oof[held] = fit.val_prob if tta == "none" else predict(fit.model, x[held], tta)
                models.append(fit.model)
                values.append(fit.best_value)
                epochs.append(fit.best_epoch)
                print(f"bag: fold {i + 1}/{k}: {objective}={fit.best_value:.4f} on the {len(held):,} images it left "
                      f"out (kept epoch {fit.best_epoch}), {time.perf_counter() - fold_started:.0f}s", flush=True)
            out_of_fold = classification_metrics(y, oof, ds.class_names, prefix="oof")
            model, prob, test, model_uri = log_graph(ds, run_id, models, [1.0 / k] * k, tta)
            seconds = time.perf_counter() - started
            tracking.log_batch(c, run_id, metrics={**out_of_fold, **test, "bag_seconds": seconds,
                                                   "train_images": len(y)},
                               params={"folds": k, "trial": m.trial, "tta": tta,
                                       "fold_best_epochs": ",".join(map(str, epochs))},
                               tags={tag.MODEL_URI: model_uri},
                               history=[{f"fold_{objective}": v} for v in values])
    except Exception as exc:  # noqa: BLE001 - the chosen fit stays the champion; the run ended FAILED
        print(f"bag of {label} failed: {one_line(exc)}; the champion stays the chosen fit", flush=True)
        return None
    value = out_of_fold[oof_key(objective)]
    print(f"bag: out-of-fold {oof_key(objective)}={value:.4f} over all {len(y):,} train + validation images "
          f"(each fold's own {objective}: {min(values):.4f} to {max(values):.4f})", flush=True)
    return Bag(run_id, model_uri, model, value, test, prob, seconds)
