"""One fit-and-score function for every trial, reference setup and benchmark contender."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

from bench.training import features
from bench.training.pipeline import batches, predict_proba
from bench.data import Dataset, class_weights
from bench.errors import ConfigError
from bench.metrics import Direction, classification_metrics, direction
from bench.models import Phase, build_model, training_phases

EpochHook = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (1-based epoch, that epoch's metrics); the engine may raise to prune."""

_OPTIMIZERS: dict[str, Callable[[dict[str, Any]], keras.optimizers.Optimizer]] = {
    "adam": lambda p: keras.optimizers.Adam(p["learning_rate"]),
    "adamw": lambda p: keras.optimizers.AdamW(p["learning_rate"], weight_decay=p.get("weight_decay", 1e-4)),
    "sgd": lambda p: keras.optimizers.SGD(p["learning_rate"], momentum=p.get("momentum", 0.9), nesterov=True),
    "rmsprop": lambda p: keras.optimizers.RMSprop(p["learning_rate"]),
}


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    model: keras.Model
    history: list[dict[str, float]]  # one dict per epoch: loss, accuracy, val_loss, val_accuracy, [objective]
    val_prob: np.ndarray
    best_epoch: int  # 1-based epoch whose weights the model holds
    best_value: float
    train_seconds: float
    n_params: int


def make_optimizer(params: dict[str, Any]) -> keras.optimizers.Optimizer:
    name = params.get("optimizer", "adam")
    if name not in _OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {sorted(_OPTIMIZERS)}; got {name!r}")
    return _OPTIMIZERS[name](params)


class _EpochMonitor(keras.callbacks.Callback):
    """Scores the validation split each epoch with scikit-learn, keeps the best weights, reports to the
    engine (pruning), and stops at once when the loss diverges.

    With the feature cache the model being fitted is only the trainable suffix: `x_val` then holds the
    cached validation features, and `keep` is the full model whose weights are kept."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, class_names: list[str], objective: str,
                 on_epoch: EpochHook | None) -> None:
        super().__init__()
        self.x_val, self.y_val, self.class_names = x_val, y_val, class_names
        self.objective, self.on_epoch = objective, on_epoch
        self.sign = 1.0 if direction(objective) is Direction.MAXIMIZE else -1.0
        self.history: list[dict[str, float]] = []
        self.best_value, self.best_epoch, self.best_weights, self.best_prob = -math.inf, 0, None, None
        self.keep: keras.Model | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrialDiverged(f"training loss became {float(loss)} at epoch {len(self.history) + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        prob = predict_proba(self.model, self.x_val)
        scores = classification_metrics(self.y_val, prob, self.class_names, prefix="val", per_class=False)
        row = {"loss": float(logs["loss"]), "accuracy": float(logs.get("accuracy", float("nan"))),
               "val_loss": scores["val_loss"], "val_accuracy": scores["val_accuracy"]}
        value = scores[self.objective]
        row[self.objective] = value
        self.history.append(row)
        if math.isfinite(value) and self.sign * value > self.best_value:
            self.best_value, self.best_epoch = self.sign * value, epoch + 1
            self.best_weights, self.best_prob = (self.keep or self.model).get_weights(), prob
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, row)


def fit_and_score(
    params: dict[str, Any],
    dataset: Dataset,
    *,
    family: str,
    epochs: int,
    seed: int,
    objective: str = "val_f1_macro",
    on_epoch: EpochHook | None = None,
    verbose: int = 0,
    weights: str = "none",
    feature_cache: bool = True,
    initial_weights: list[np.ndarray] | None = None,
) -> FitResult:
    """Build `family` with `params`, train on the train split, score each epoch on validation, and return
    the model holding its best epoch's weights with that epoch's validation probabilities.

    The family's schedule may split the epochs into phases (a fit each, recompiled in between, e.g. a
    head warm-up then fine-tuning). In each phase, when the model starts with a frozen, deterministic
    prefix (`bench.features`), that prefix's outputs are computed once (cached across trials) and only the
    rest is trained on them; the returned model is always the full raw-pixels -> softmax model. `initial_weights`
    (those of an earlier fit of the same `params`) continue that fit instead of starting afresh."""
    n_classes = len(dataset.class_names)
    model = build_model(family, params, image_size=dataset.image_size, n_classes=n_classes, seed=seed,
                        weights=weights)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    balanced = params.get("class_weight") == "balanced"
    class_weight = class_weights(dataset.y_train, n_classes) if balanced else None
    monitor = _EpochMonitor(dataset.x_val, dataset.y_val, dataset.class_names, objective, on_epoch)
    monitor.keep = model
    started = time.perf_counter()
    done = 0
    for phase in training_phases(family, model, params, epochs):
        if phase.prepare is not None:
            phase.prepare(model)
        route = features.route(model, dataset) if feature_cache else None
        trainer, x_train = (route.trainer, route.x_train) if route else (model, dataset.x_train)
        monitor.x_val = route.x_val if route else dataset.x_val
        _fit_phase(trainer, phase, params, x_train, dataset.y_train, monitor=monitor, initial_epoch=done,
                   class_weight=class_weight, seed=seed, verbose=verbose)
        done += phase.epochs
    seconds = time.perf_counter() - started
    if monitor.best_weights is None:
        raise TrialDiverged(f"no epoch gave a finite {objective}")
    model.set_weights(monitor.best_weights)
    return FitResult(
        model=model,
        history=monitor.history,
        val_prob=monitor.best_prob,
        best_epoch=monitor.best_epoch,
        best_value=monitor.sign * monitor.best_value,
        train_seconds=seconds,
        n_params=int(model.count_params()),
    )


def _fit_phase(trainer: keras.Model, phase: Phase, params: dict[str, Any], x: np.ndarray, y: np.ndarray, *,
               monitor: _EpochMonitor, initial_epoch: int, class_weight: dict[int, float] | None, seed: int,
               verbose: int) -> None:
    rate = {"learning_rate": phase.learning_rate} if phase.learning_rate is not None else {}
    # Compiled per phase: the trainable set and the rate change between phases.
    trainer.compile(optimizer=make_optimizer({**params, **rate}), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"], jit_compile=False)
    trainer.fit(
        batches(x, y, batch_size=int(params.get("batch_size", 64)), seed=seed, shuffle=True),
        initial_epoch=initial_epoch,
        epochs=initial_epoch + phase.epochs,
        callbacks=[monitor],
        class_weight=class_weight,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=verbose,
    )
