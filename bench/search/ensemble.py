"""The study's final fit: greedy ensemble selection over its best trials' models, and test-time augmentation.

Ensemble selection (Caruana et al. 2004, "Ensemble selection from libraries of models", as auto-sklearn and
AutoGluon do it): starting from an empty bag, each round adds, with replacement, the model whose addition gives the
best objective on the validation split for the bag's averaged probabilities; the bag of the best round is kept
(the earliest on a tie), and each member's weight is its share of the bag. Candidates are the `TOP` best COMPLETE
trials that logged a model, best first.

The final fit (the ensemble, with `tta` when set; or the best trial alone with `tta`) is logged as its own child
run of the study (`hemabench.role=ensemble`: the leaderboard lists trials only) with its members, weights and
validation and test metrics. It is *adopted* (its model logged, and registered instead of the best trial) only
when its validation objective strictly beats the best trial's, both predicted here the same way. The same split
chose the bag, so its validation score is optimistic; the test metrics, recorded and never used to decide, show
whether the gain held. A resumed study whose final fit is unchanged reuses the earlier run (no new run or version).
The adopted model is ONE Keras graph: every member on the same input, each softmax scaled
by its weight (`Rescaling`) and summed (`Add`), built-in layers only, so the existing pyfunc serves it in one call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import mlflow
import numpy as np
import pandas as pd

from bench import serving, tracking
from bench.data import Dataset
from bench.metrics import METRICS, classification_metrics, direction
from bench.search.context import SearchContext
from bench.serving.pyfunc import KERAS_FILE
from bench.serving.tta import TRANSFORMS, transform
from bench.tracking import tags as tag
from bench.training import predict_proba

TOP = 5  # candidate models: the best trials' (N small: each is loaded and run on validation and test)
ROUNDS = 20  # selection rounds: the most members a bag can hold, repeats included


@dataclass
class FinalFit:
    """The final fit of a study and what decided it; `members` are (trial, run id, weight), best trial first."""

    run_id: str
    members: list[tuple[int, str, float]]
    tta: str
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    test_prob: np.ndarray
    single_value: float  # the best trial's validation objective, predicted the same way
    adopted: bool
    reason: str
    model_uri: str = ""
    models: list[keras.Model] = field(default_factory=list, repr=False)
    seconds: float = 0.0  # selection, evaluation and logging

    @property
    def label(self) -> str:
        """e.g. `ensemble of trials 3 (0.60), 0 (0.40), TTA flip` or `trial 3 with TTA d4`."""
        if len(self.members) == 1:
            return f"trial {self.members[0][0]}" + (f" with TTA {self.tta}" if self.tta != "none" else "")
        parts = ", ".join(f"{trial} ({weight:.2f})" for trial, _, weight in self.members)
        return f"ensemble of trials {parts}" + (f", TTA {self.tta}" if self.tta != "none" else "")


def load_keras_model(model_uri: str) -> keras.Model:
    # `models:/<id>/sub/path` is not a valid artifact URI: fetch the (small) model folder, then the file.
    folder = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    return keras.saving.load_model(Path(folder) / KERAS_FILE, compile=False)


def predict(model: keras.Model, x: np.ndarray, tta: str = "none") -> np.ndarray:
    """Probabilities for uint8 images `x`, averaged over the copies of TTA `tta` (bench.serving.tta)."""
    return np.mean([predict_proba(model, transform(x, turns, mirror)) for turns, mirror in TRANSFORMS[tta]], axis=0)


def scorer(objective: str, y: np.ndarray) -> Callable[[np.ndarray], float]:
    """Probabilities -> `objective` on labels `y`, signed so that higher is better."""
    spec = next(m for m in METRICS if f"val_{m.name}" == objective)
    sign = 1.0 if direction(objective).better(1.0, 0.0) else -1.0
    return lambda prob: sign * float(spec.score(y, prob.argmax(axis=1), prob))


def greedy_selection(probs: list[np.ndarray], score: Callable[[np.ndarray], float], *, rounds: int = ROUNDS
                     ) -> list[int]:
    """How many times each model is in the selected bag (Caruana et al. 2004, with replacement): each round adds
    the model that makes the bag's mean probabilities score best (the first on a tie: list the best model
    first); the bag of the best-scoring round is returned, the smallest on a tie."""
    counts, total = [0] * len(probs), np.zeros_like(probs[0])
    best_counts, best_score = counts, -np.inf
    for size in range(1, rounds + 1):
        scores = [score((total + p) / size) for p in probs]
        pick = int(np.argmax(scores))
        counts, total = [c + (i == pick) for i, c in enumerate(counts)], total + probs[pick]
        if scores[pick] > best_score:
            best_counts, best_score = counts, scores[pick]
    return best_counts


def ensemble_graph(models: list[keras.Model], weights: list[float], image_size: int) -> keras.Model:
    """One model: the weighted sum of `models`' softmax outputs (weights summing to 1), built-in layers only."""
    if len(models) == 1:
        return models[0]
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    # Each member inside a uniquely named wrapper (members share names such as "scratch_cnn"). A wrapper, not
    # keras.Model(m.input, m.output): a loaded Sequential (the backbone family) has no `input` until it is called.
    scaled = [keras.layers.Rescaling(float(w), name=f"weight_{i}")(keras.Sequential([m], name=f"member_{i}")(inputs))
              for i, (m, w) in enumerate(zip(models, weights))]
    return keras.Model(inputs, keras.layers.Add(name="weighted_mean")(scaled), name="ensemble")


def candidates(complete: pd.DataFrame, size: int) -> pd.DataFrame:
    """The best `size` COMPLETE trials of the board (best first) that logged a model."""
    return complete[complete["model_uri"] != ""].head(size)


@dataclass
class Selection:
    """A selected bag: the kept models' indexes (best model = 0) and weights, and what they score."""

    keep: list[int]
    weights: list[float]
    val_prob: np.ndarray
    test_prob: np.ndarray
    value: float  # the bag's validation objective
    single_value: float  # model 0's, without TTA


def select(models: list[keras.Model], ds: Dataset, objective: str, tta: str) -> Selection:
    """Greedy selection over `models` (best first) on validation probabilities under TTA `tta`; the bag's
    validation and test probabilities, and model 0's validation objective without TTA."""
    val = [predict(m, ds.x_val, tta) for m in models]
    score = scorer(objective, ds.y_val)
    counts = greedy_selection(val, score) if len(models) > 1 else [1]
    keep = [i for i, count in enumerate(counts) if count]
    weights = [counts[i] / sum(counts) for i in keep]
    val_prob = sum(w * val[i] for i, w in zip(keep, weights))
    test_prob = sum(w * predict(models[i], ds.x_test, tta) for i, w in zip(keep, weights))
    sign = 1.0 if direction(objective).better(1.0, 0.0) else -1.0
    single = val[0] if tta == "none" else predict(models[0], ds.x_val)
    return Selection(keep, weights, val_prob, test_prob, sign * score(val_prob), sign * score(single))


def final_fit(ctx: SearchContext, complete: pd.DataFrame, best_model: keras.Model) -> FinalFit | None:
    """Select, evaluate and log the study's final fit (see the module); None when neither `ensemble` nor `tta`
    is on. `complete`: the board's COMPLETE trials, best first; `best_model`: the first one's model, loaded."""
    config, ds, started = ctx.config, ctx.dataset, time.perf_counter()
    if not config.ensemble and config.tta == "none":
        return None
    rows = candidates(complete, TOP if config.ensemble else 1)
    models = [best_model] + [load_keras_model(uri) for uri in rows["model_uri"].iloc[1:]]
    bag = select(models, ds, config.objective, config.tta)
    same = bag.keep == [0] and config.tta == "none"
    adopted = not same and direction(config.objective).better(bag.value, bag.single_value)
    best_trial = int(rows["trial"].iloc[0])
    reason = (f"selection kept trial {best_trial} alone" if same else
              f"{config.objective} {bag.value:.4f} {'beats' if adopted else 'does not beat'} trial {best_trial}'s "
              f"{bag.single_value:.4f} on validation")
    fit = FinalFit("", [(int(rows["trial"].iloc[i]), rows["run_id"].iloc[i], w) for i, w in zip(bag.keep, bag.weights)],
                   config.tta, classification_metrics(ds.y_val, bag.val_prob, ds.class_names, prefix="val"),
                   classification_metrics(ds.y_test, bag.test_prob, ds.class_names, prefix="test"), bag.test_prob,
                   bag.single_value, adopted, reason, models=[models[i] for i in bag.keep])
    if not reuse(ctx, fit):
        log_fit(ctx, fit, ds)
        fit.seconds = time.perf_counter() - started
        tracking.log_batch(ctx.client, fit.run_id, metrics={"final_fit_seconds": fit.seconds})
    return fit


def _members_json(fit: FinalFit) -> str:
    return json.dumps([{"trial": t, "run_id": r, "weight": w} for t, r, w in fit.members])


def reuse(ctx: SearchContext, fit: FinalFit) -> bool:
    """Take over the run (and model) of an earlier final fit of this study with the same members, weights and
    TTA: a resumed study with nothing new logs and registers nothing new."""
    earlier = ctx.client.search_runs([ctx.experiment_id], tag.run_filter({
        tag.ROLE: tag.ENSEMBLE_ROLE, tag.STUDY: ctx.config.study_name, tag.MEMBERS: _members_json(fit),
        tag.TTA: fit.tta, tag.ADOPTED: str(fit.adopted).lower()}) + " and attributes.status = 'FINISHED'",
        max_results=1)
    if not earlier or (fit.adopted and tag.MODEL_URI not in earlier[0].data.tags):
        return False
    fit.run_id, fit.model_uri = earlier[0].info.run_id, earlier[0].data.tags.get(tag.MODEL_URI, "")
    return True


def log_fit(ctx: SearchContext, fit: FinalFit, ds: Dataset) -> None:
    """The final fit's child run: members, weights, TTA, validation and test metrics; its model when adopted."""
    c = ctx.client
    fit.run_id = tracking.start_child(c, ctx.experiment_id, ctx.parent_run_id, name="ensemble", tags={
        **ctx.tags, tag.ROLE: tag.ENSEMBLE_ROLE, tag.MEMBERS: _members_json(fit), tag.TTA: fit.tta,
        tag.ADOPTED: str(fit.adopted).lower(), tag.REASON: fit.reason,
        tag.NOTE: f"Final fit of study {ctx.config.study_name}: {fit.label}; {fit.reason}."})
    with tracking.ending(c, fit.run_id):
        tracking.log_batch(c, fit.run_id, metrics={**fit.val_metrics, **fit.test_metrics,
                                                   "single_best_" + ctx.config.objective: fit.single_value},
                           params={"members": ",".join(str(t) for t, _, _ in fit.members),
                                   "weights": ",".join(f"{w:.4f}" for _, _, w in fit.members),
                                   "tta": fit.tta, "candidates": TOP, "rounds": ROUNDS})
        if fit.adopted:
            weights = [w for _, _, w in fit.members]
            with mlflow.start_run(run_id=fit.run_id, nested=True):
                info = serving.log_model(ensemble_graph(fit.models, weights, ds.image_size),
                                         class_names=list(ds.class_names), image_size=ds.image_size,
                                         resize_mode=ds.resize_mode, name="model", tta=fit.tta)
            fit.model_uri = info.model_uri
            tracking.log_batch(c, fit.run_id, tags={tag.MODEL_URI: fit.model_uri})
