"""One fit-and-score function for every trial, reference setup and benchmark contender."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

from bench.training import features
from bench.training.cost import CostCeiling, flops_per_image
from bench.training.pipeline import batches, predict_proba
from bench.data import Dataset, class_weights
from bench.errors import ConfigError
from bench.metrics import Direction, classification_metrics, direction
from bench.models import Phase, build_model, training_phases

EpochHook = Callable[[int, dict[str, float]], None]
"""Called after each epoch with (1-based epoch, that epoch's metrics); the engine may raise to prune."""

_OPTIMIZERS: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "adam": lambda p, **ema: keras.optimizers.Adam(p["learning_rate"], **ema),
    "adamw": lambda p, **ema: keras.optimizers.AdamW(p["learning_rate"], weight_decay=p.get("weight_decay", 1e-4),
                                                     **ema),
    "sgd": lambda p, **ema: keras.optimizers.SGD(p["learning_rate"], momentum=p.get("momentum", 0.9), nesterov=True,
                                                 **ema),
    "rmsprop": lambda p, **ema: keras.optimizers.RMSprop(p["learning_rate"], **ema),
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
    mflops_per_image: float = 0.0  # forward pass, from the layer shapes (bench.training.cost)
    images_per_second: float = 0.0  # training images per second of `fit` epochs (validation scoring excluded)
    stopped: str = ""  # why training ended before its last epoch ("deadline"), or ""


def learning_rate(params: dict[str, Any], rate: float, *, steps_per_epoch: int, epochs: int
                  ) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """`rate`, or with `lr_schedule: cosine` a cosine decay to 0 over the phase after a linear warm-up from 0 over
    `lr_warmup_epochs` (Keras' own `CosineDecay`, so it needs no project code)."""
    if params.get("lr_schedule", "constant") == "constant":
        return rate
    if params["lr_schedule"] != "cosine":
        raise ConfigError(f"lr_schedule must be one of ['constant', 'cosine']; got {params['lr_schedule']!r}")
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, round(float(params.get("lr_warmup_epochs", 0)) * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else rate, decay_steps=total - warmup,
                                                  warmup_target=rate if warmup else None, warmup_steps=warmup)


def ema_momentum(params: dict[str, Any]) -> float:
    """The momentum of the weights' exponential moving average (`ema_momentum`, 0 = off): with it, the optimizer
    keeps an average of the weights over roughly the last 1 / (1 - momentum) steps (Keras' `use_ema`), and every
    epoch is scored, kept and saved with the averaged weights (Keras' `SwapEMAWeights`)."""
    momentum = float(params.get("ema_momentum", 0.0))
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"ema_momentum must be in [0, 1); got {momentum}")
    return momentum


def make_optimizer(params: dict[str, Any]) -> keras.optimizers.Optimizer:
    name = params.get("optimizer", "adam")
    if name not in _OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {sorted(_OPTIMIZERS)}; got {name!r}")
    momentum = ema_momentum(params)
    return _OPTIMIZERS[name](params, **({"use_ema": True, "ema_momentum": momentum} if momentum else {}))


class _EpochMonitor(keras.callbacks.Callback):
    """Scores the validation split each epoch with scikit-learn, keeps the best weights, reports to the
    engine (pruning), and stops at once when the loss diverges. Once `deadline` (a `time.monotonic()` value)
    has passed, it stops training at the end of the epoch, keeping the best epoch so far. It times each
    epoch's training (not its validation scoring) and enforces the cost ceiling's seconds per epoch in the
    first epoch, from its first batches' pace.

    With the feature cache the model being fitted is only the trainable suffix: `x_val` then holds the
    cached validation features, and `keep` is the full model whose weights are kept.

    With `stop_after` it scores nothing: it stops training after that epoch and keeps that epoch's weights (a fit
    whose validation split is in its training data has none left to choose on)."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, class_names: list[str], objective: str,
                 on_epoch: EpochHook | None, *, deadline: float | None = None, ceiling: CostCeiling | None = None,
                 stop_after: int | None = None) -> None:
        super().__init__()
        self.deadline, self.ceiling, self.stopped, self.stop_after = deadline, ceiling or CostCeiling(), "", stop_after
        self.train_seconds, self.images, self.n_train = 0.0, 0, 0
        self._epoch_started = self._pace_from = 0.0
        self.measured: dict[str, float] = {}
        self.x_val, self.y_val, self.class_names = x_val, y_val, class_names
        self.objective, self.on_epoch = objective, on_epoch
        self.sign = 1.0 if direction(objective) is Direction.MAXIMIZE else -1.0
        self.history: list[dict[str, float]] = []
        self.best_value, self.best_epoch, self.best_weights, self.best_prob = -math.inf, 0, None, None
        self.keep: keras.Model | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrialDiverged(f"training loss became {float(loss)} at epoch {len(self.history) + 1}, batch {batch + 1}")
        if self.history or self.ceiling.max_seconds_per_epoch is None:
            return
        steps = (self.params or {}).get("steps") or 0
        if batch == 0:  # the first batch traces the graph: pace the epoch from the second one on
            self._pace_from = time.perf_counter()
        elif batch >= 5 and steps > batch + 1:
            pace = (time.perf_counter() - self._pace_from) / batch
            self.ceiling.check_epoch(time.perf_counter() - self._epoch_started + pace * (steps - batch - 1),
                                    estimated=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._epoch_started
        self.train_seconds, self.images = self.train_seconds + seconds, self.images + self.n_train
        self.measured["train_images_per_second"] = self.images / self.train_seconds
        if not self.history:
            self.ceiling.check_epoch(seconds, estimated=False)
        row = {"loss": float(logs["loss"]), "accuracy": float(logs.get("accuracy", float("nan")))}
        self.history.append(row)
        if self.stop_after is not None:
            self.best_epoch, self.best_weights = epoch + 1, (self.keep or self.model).get_weights()
            if epoch + 1 >= self.stop_after:
                self.stopped, self.model.stop_training = "stop_after", True
            return
        prob = predict_proba(self.model, self.x_val)
        scores = classification_metrics(self.y_val, prob, self.class_names, prefix="val", per_class=False)
        value = scores[self.objective]
        row.update({"val_loss": scores["val_loss"], "val_accuracy": scores["val_accuracy"], self.objective: value})
        if math.isfinite(value) and self.sign * value > self.best_value:
            self.best_value, self.best_epoch = self.sign * value, epoch + 1
            self.best_weights, self.best_prob = (self.keep or self.model).get_weights(), prob
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, row)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped, self.model.stop_training = "deadline", True


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
    deadline: float | None = None,
    ceiling: CostCeiling | None = None,
    measured: dict[str, float] | None = None,
    initial_weights: list[np.ndarray] | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Build `family` with `params`, train on the train split, score each epoch on validation, and return
    the model holding its best epoch's weights with that epoch's validation probabilities.

    The family's schedule may split the epochs into phases (a fit each, recompiled in between, e.g. a
    head warm-up then fine-tuning). In each phase, when the model starts with a frozen, deterministic
    prefix (`bench.features`), that prefix's outputs are computed once (cached across trials) and only the
    rest is trained on them; the returned model is always the full raw-pixels -> softmax model.

    `deadline` (a `time.monotonic()` value) ends training at the first epoch end after it, with the best epoch
    so far (`FitResult.stopped == "deadline"`). `ceiling` rejects the model before training when its FLOPs per
    image exceed the ceiling, and stops it in its first epoch when that epoch is too slow (`OverCostCeiling`).
    `measured`, when given, is filled as training goes (so a pruned or rejected trial has it too) with
    `mflops_per_image` and `train_images_per_second`. `initial_weights` (those of an earlier fit of the same
    `params`) continue that fit instead of starting afresh. `stop_after` trains the same `epochs` schedule but
    stops after that epoch and returns its weights, unscored (`val_prob` empty, `best_value` NaN): the refit on
    train + validation (bench.search.refit_full) of a fit that kept that epoch."""
    n_classes = len(dataset.class_names)
    model = build_model(family, params, image_size=dataset.image_size, n_classes=n_classes, seed=seed,
                        weights=weights)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    mflops = flops_per_image(model) / 1e6
    measured = {} if measured is None else measured
    measured["mflops_per_image"] = mflops
    (ceiling or CostCeiling()).check_flops(mflops)
    balanced = params.get("class_weight") == "balanced"
    class_weight = class_weights(dataset.y_train, n_classes) if balanced else None
    monitor = _EpochMonitor(dataset.x_val, dataset.y_val, dataset.class_names, objective, on_epoch,
                            deadline=deadline, ceiling=ceiling, stop_after=stop_after)
    monitor.keep, monitor.n_train, monitor.measured = model, len(dataset.x_train), measured
    started = time.perf_counter()
    done = 0
    for phase in training_phases(family, model, params, epochs):
        if phase.prepare is not None:
            phase.prepare(model)
        # rot90 and MixUp happen in the input pipeline, on pixels: they rule the cached-features route out.
        on_pixels = params.get("aug_rot90") or params.get("aug_mixup", 0) > 0
        route = features.route(model, dataset) if feature_cache and not on_pixels else None
        trainer, x_train = (route.trainer, route.x_train) if route else (model, dataset.x_train)
        monitor.x_val = route.x_val if route else dataset.x_val
        _fit_phase(trainer, phase, params, x_train, dataset.y_train, monitor=monitor, initial_epoch=done,
                   class_weight=class_weight, seed=seed, verbose=verbose)
        done += phase.epochs
        if monitor.stopped:
            break
    seconds = time.perf_counter() - started
    if monitor.best_weights is None:
        raise TrialDiverged(f"no epoch gave a finite {objective}")
    model.set_weights(monitor.best_weights)
    scored = stop_after is None
    return FitResult(
        model=model,
        history=monitor.history,
        val_prob=monitor.best_prob if scored else np.empty((0, n_classes)),
        best_epoch=monitor.best_epoch,
        best_value=monitor.sign * monitor.best_value if scored else math.nan,
        train_seconds=seconds,
        n_params=int(model.count_params()),
        mflops_per_image=mflops,
        images_per_second=monitor.images / monitor.train_seconds if monitor.train_seconds else 0.0,
        stopped=monitor.stopped,
    )


def _fit_phase(trainer: keras.Model, phase: Phase, params: dict[str, Any], x: np.ndarray, y: np.ndarray, *,
               monitor: _EpochMonitor, initial_epoch: int, class_weight: dict[int, float] | None, seed: int,
               verbose: int) -> None:
    batch_size = int(params.get("batch_size", 64))
    rate = learning_rate(params, phase.learning_rate if phase.learning_rate is not None else params["learning_rate"],
                         steps_per_epoch=math.ceil(len(x) / batch_size), epochs=phase.epochs)
    smoothing, mixup = float(params.get("label_smoothing", 0.0)), float(params.get("aug_mixup", 0.0))
    one_hot = trainer.output_shape[-1] if smoothing > 0 or mixup > 0 else 0
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=smoothing) if one_hot
            else "sparse_categorical_crossentropy")
    # Compiled per phase: the trainable set and the rate change between phases.
    trainer.compile(optimizer=make_optimizer({**params, "learning_rate": rate}), loss=loss,
                    metrics=["accuracy"], jit_compile=False)
    trainer.fit(
        batches(x, y, batch_size=batch_size, seed=seed, shuffle=True, rot90=bool(params.get("aug_rot90")),
                one_hot=one_hot, mixup=mixup),
        initial_epoch=initial_epoch,
        epochs=initial_epoch + phase.epochs,
        # SwapEMAWeights first: the monitor then scores and keeps the averaged weights at each epoch end.
        callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True), monitor] if ema_momentum(params) else [monitor],
        class_weight=class_weight,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=verbose,
    )
