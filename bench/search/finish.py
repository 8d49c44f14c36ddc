"""After the trials: the leaderboard, the engine's figures, the best model on the test split, the refit, the
registry.

The leaderboard is read back from MLflow (every child run of the study), so it is the same for every engine
and covers trials from earlier, resumed or parallel processes.

The refit (`refit=auto`): a search's best trial may have trained less than the full budget (a cheap early look: few
epochs under Hyperband, a `subset` of train, or stopped by the deadline). Its configuration then trains once more
with the same seed, on the whole training split for all `epochs`, keeping its best epoch on validation as trials do,
in its own child run (`hemabench.role=refit`, `hemabench.refit_of` = the trial's run). It runs after the deadline
(it is the search's result, not a trial) and without the space's cost ceilings (the configuration was accepted).
A trial that already ran at full budget is not refitted: it would be the same fit. A resumed study whose best
trial already has a finished refit reuses it.

The champion, registered and named on the parent (`hemabench.champion_fit`), is the best on VALIDATION (never test)
of the best trial, its refit and the adopted ensemble (bench.search.ensemble). A tie between the trial and its refit
goes to the refit (it trained on all of train); the ensemble must beat the best single fit strictly.

With `refit_full`, the chosen champion then trains again on train + validation (bench.search.refit_full), and
that model is registered with the chosen fit's validation score as its estimate (`… retrained on train +
validation` in `hemabench.champion_fit`; the version's `hemabench.refit_full_of` names the fit it retrains).
With `bag_folds` K instead, the best trial's configuration is bagged over K grouped folds of train + validation
(bench.search.bag) and the bag is registered with its out-of-fold score (`bag of K folds of trial N`; the version's
`hemabench.bag_of` names the trial it bags).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

import keras
import numpy as np

from bench import tracking
from bench.data import Dataset
from bench.metrics import classification_metrics, direction, test_key
from bench.reporting import insight
from bench.reporting import board
from bench.reporting import write_evaluation_artifacts, write_html
from bench.search import workers
from bench.search.bag import BAGGED, bag
from bench.search.config import SearchConfig
from bench.search.context import SearchContext, SearchResult
from bench.search.ensemble import FinalFit, final_fit, load_keras_model
from bench.search.progress import summary_table
from bench.search.refit_full import RETRAINED, refit_full
from bench.search.trial import TRAIN_IMAGES, TrialRunner, logged_params
from bench.text import count, one_line
from bench.tracking import tags as tag
from bench.training import predict_proba


def previous_parent(c: MlflowClient, experiment_id: str, study: str) -> str | None:
    """The parent run of an earlier invocation of the same study, to resume it."""
    runs = c.search_runs([experiment_id], tag.run_filter({tag.STUDY: study, tag.ROLE: tag.PARENT}),
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def log_dataset(c: MlflowClient, run_id: str, dataset: Dataset) -> None:
    def write(folder: Path) -> None:
        dataset.splits.to_csv(folder / "splits.csv", index=False)
        if len(dataset.skipped):
            dataset.skipped.to_csv(folder / "skipped_files.csv", index=False)

    tracking.log_files(c, run_id, write)
    counts = {f"n_{split}": int(n) for split, n in (("train", len(dataset.y_train)), ("val", len(dataset.y_val)),
                                                     ("test", len(dataset.y_test)))}
    tracking.log_batch(c, run_id, metrics={**counts, "n_skipped_files": len(dataset.skipped)},
                       tags={tag.SPLITS_FINGERPRINT: dataset.splits_fingerprint, tag.CLASSES: ",".join(dataset.class_names)})


def leaderboard(experiment_id: str, study: str, objective: str) -> pd.DataFrame:
    """Every trial of the study, best first: state, objective, validation metrics, parameters, run id."""
    return board([experiment_id], objective=objective, study=study)


def log_insight(c: MlflowClient, run_id: str, model: keras.Model, dataset: Dataset, test_prob: np.ndarray) -> None:
    """Grad-CAM and mistakes galleries, reliability diagram (bench.insight) on the parent run. They are diagnostics:
    a failure there is reported and tagged, and must not fail a study whose model is already registered."""
    try:
        insight.log_insights(c, run_id, model, dataset, test_prob)
    except Exception as exc:  # noqa: BLE001
        print(f"insight skipped: {one_line(exc)}", flush=True)
        tracking.log_batch(c, run_id, tags={tag.INSIGHT_ERROR: one_line(exc)})


@dataclass
class Fit:
    """A candidate for champion: its label, run, model and what it scores; `trial` is what the registry records."""

    label: str
    run_id: str
    model_uri: str
    val_value: float
    trial: int | str
    test_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    test_prob: np.ndarray | None = None
    model: keras.Model | None = None  # a single network (for the insight galleries); None for an ensemble
    seconds: float = 0.0  # training time; 0 for a reused run


def evaluate(fit: Fit, ds: Dataset, c: MlflowClient) -> Fit:
    """Load the fit's model, score it on test (recorded, never used to choose) and log that on its run."""
    fit.model = load_keras_model(fit.model_uri)
    fit.test_prob = predict_proba(fit.model, ds.x_test)
    fit.test_metrics = classification_metrics(ds.y_test, fit.test_prob, ds.class_names, prefix="test")
    tracking.log_batch(c, fit.run_id, metrics=fit.test_metrics)
    return fit


def _row_int(row: pd.Series, name: str, default: int) -> int:
    value = row.get(name)
    return int(value) if value is not None and pd.notna(value) else default


def refit(ctx: SearchContext, best: pd.Series) -> tuple[Fit | None, str]:
    """The best trial's configuration at full budget (see the module), and a note for the champion's label when
    there is none: `already full budget`, `refit off` or `refit failed`."""
    config, ds, number = ctx.config, ctx.dataset, int(best["trial"])
    n_train, epochs = len(ds.y_train), config.epochs
    trained, images = _row_int(best, "epochs_run", epochs), _row_int(best, TRAIN_IMAGES, n_train)
    full = f"{count(epochs, 'epoch')} on all {n_train:,} training images"
    label = f"refit of trial {number} at {full}"
    if config.refit == "never":
        return None, "refit off"
    if trained >= epochs and images >= n_train:
        print(f"no refit: trial {number} already ran at full budget ({full})", flush=True)
        return None, "already full budget"
    earlier = ctx.client.search_runs([ctx.experiment_id], tag.run_filter({
        tag.ROLE: tag.REFIT_ROLE, tag.STUDY: config.study_name, tag.REFIT_OF: best["run_id"], tag.STATE: "COMPLETE"})
        + f" and attributes.status = 'FINISHED' and params.epochs = '{epochs}'", max_results=1)
    if earlier and tag.MODEL_URI in earlier[0].data.tags and config.objective in earlier[0].data.metrics:
        run = earlier[0]
        print(f"refit of trial {number}: its earlier refit run {run.info.run_id} is reused", flush=True)
        return Fit(label, run.info.run_id, run.data.tags[tag.MODEL_URI], run.data.metrics[config.objective],
                   f"refit of trial {number}"), ""
    search_fit = f"{trained} of {epochs} epochs on {images:,} of {n_train:,} training images"
    passed = time.perf_counter() - ctx.progress.started >= config.timeout
    after = ("" if not config.timeout else f" after the search's {config.timeout:g} s deadline" if passed
             else f" (the search's {config.timeout:g} s deadline does not bind it)")
    print(f"refit: trial {number} trained {search_fit}; it trains again{after}, {full} (refit=never skips this)",
          flush=True)
    runner = TrialRunner(dataclasses.replace(config, subset=1.0, timeout=0.0), ds, ctx.space, ctx.client,
                         ctx.experiment_id, ctx.parent_run_id, is_best=lambda _: True, cost_ceiling=False,
                         tags={**ctx.tags, tag.ROLE: tag.REFIT_ROLE, tag.REFIT_OF: best["run_id"],
                               tag.PROCESS: json.dumps(workers.identity())})
    try:
        outcome = runner.run(number, logged_params(ctx.client.get_run(best["run_id"]).data.params),
                             name=f"refit-trial-{number}",
                             note=f"The {label} of study {config.study_name} (the trial: {search_fit}).")
    except Exception as exc:  # noqa: BLE001 - the trial is still a champion; the refit run ended FAILED with why
        print(f"refit of trial {number} failed: {one_line(exc)}; the champion is chosen without it", flush=True)
        return None, "refit failed"
    return Fit(label, outcome.run_id, outcome.model_uri, float(outcome.value), f"refit of trial {number}",
               seconds=outcome.seconds), ""


def choose(objective: str, trial: Fit, again: Fit | None, ensemble: Fit | None) -> Fit:
    """The champion: the best on validation (`objective`) of the trial, its refit (which wins a tie) and the
    ensemble (which must win strictly)."""
    better = direction(objective).better
    champion = again if again is not None and not better(trial.val_value, again.val_value) else trial
    return ensemble if ensemble is not None and better(ensemble.val_value, champion.val_value) else champion


def retrained(ctx: SearchContext, chosen: Fit, final: FinalFit | None) -> Fit | None:
    """`chosen` trained again on train + validation (bench.search.refit_full), as a Fit that keeps its validation
    value as the estimate; None when that failed. `final`: the adopted final fit when `chosen` is it."""
    fits = [(run_id, weight) for _, run_id, weight in final.members] if final else [(chosen.run_id, 1.0)]
    full = refit_full(ctx, chosen.label, chosen.run_id, fits, final.tta if final else "none", chosen.val_value)
    if full is None:
        return None
    single = full.model if len(fits) == 1 else None
    return Fit(chosen.label + RETRAINED, full.run_id, full.model_uri, chosen.val_value,
               chosen.trial, full.test_metrics, full.test_prob, single, full.seconds)


def bagged(ctx: SearchContext, best: Fit, tta: str) -> Fit | None:
    """The best trial's configuration bagged over `bag_folds` folds of train + validation (bench.search.bag), as a Fit
    whose validation value is the bag's out-of-fold score; None when that failed."""
    result = bag(ctx, f"trial {best.trial}", best.run_id, tta)
    if result is None:
        return None
    label = BAGGED.format(k=ctx.config.bag_folds) + f"trial {best.trial}"
    # model None: a bag is several networks, so the insight galleries read the best trial's
    return Fit(label, result.run_id, result.model_uri, result.value, label, result.test_metrics, result.test_prob,
               None, result.seconds)


def scores(config: SearchConfig, val: float, test: dict[str, float]) -> str:
    objective_test = test_key(config.objective)
    return (f"{config.objective}={val:.4f}, {objective_test}={test[objective_test]:.4f}, "
            f"test_accuracy={test['test_accuracy']:.4f}")


def finish(ctx: SearchContext) -> SearchResult:
    config, c, parent, ds = ctx.config, ctx.client, ctx.parent_run_id, ctx.dataset
    board = leaderboard(ctx.experiment_id, config.study_name, config.objective)
    complete = board[(board["state"] == "COMPLETE") & (board["model_uri"] != "")]

    def write(folder: Path) -> None:
        board.to_csv(folder / "leaderboard.csv", index=False)
        (folder / "leaderboard.html").write_text(board.to_html(index=False, float_format=lambda v: f"{v:.4f}"))
        for name, figure in ctx.figures.items():
            write_html(figure, folder / name)

    tracking.log_files(c, parent, write)
    counts = board["state"].value_counts()
    tracking.log_batch(c, parent, metrics={f"trials_{s.lower()}": int(counts.get(s, 0)) for s in ("COMPLETE", "PRUNED", "FAIL")})
    if complete.empty:
        print("no trial completed: nothing to evaluate or register", flush=True)
        return SearchResult(config.study_name, parent, None, {}, None, 0.0)
    best = complete.iloc[0]
    number = int(best["trial"])
    best_params = {k.removeprefix("params."): v for k, v in best.items() if k.startswith("params.") and pd.notna(v)}
    val_metrics = {f"best_{k}": float(best[k]) for k in best.index if k.startswith("val_") and pd.notna(best[k])}
    trial = evaluate(Fit(f"trial {number}", best["run_id"], best["model_uri"], float(best[config.objective]), number),
                     ds, c)
    test_metrics, test_prob = trial.test_metrics, trial.test_prob
    tracking.log_files(c, parent, lambda d: (
        write_evaluation_artifacts(d, ds.y_test, test_prob, ds.class_names, prefix="test_", title="best model test"),
        (d / "best_params.json").write_text(json.dumps(best_params, indent=2, default=str)),
    ))
    tracking.log_batch(c, parent, metrics={**val_metrics, **test_metrics, "best_trial": number},
                       tags={tag.BEST_RUN_ID: best["run_id"],
                             **{f"best_param.{k}": v for k, v in best_params.items()}})
    again, note = refit(ctx, best)
    if again is not None:
        evaluate(again, ds, c)
    trial.label += f" ({note})" if note else ""
    final = final_fit(ctx, complete, trial.model)  # an ensemble and/or TTA, adopted only when it wins on validation
    ensemble = (Fit(final.label, final.run_id, final.model_uri, final.val_metrics[config.objective], final.label,
                    final.test_metrics, final.test_prob) if final and final.adopted else None)
    champion = choose(config.objective, trial, again, ensemble)
    chosen = champion
    if config.refit_full:
        champion = retrained(ctx, champion, final if champion is ensemble else None) or champion
    elif config.bag_folds:
        champion = bagged(ctx, trial, final.tta if final and final.adopted else "none") or champion
    after = tag.REFIT_FULL_RUN_ID if config.refit_full else tag.BAG_RUN_ID
    tracking.log_batch(c, parent, tags={tag.CHAMPION_FIT: champion.label,
                                        **({tag.REFIT_RUN_ID: again.run_id} if again else {}),
                                        **({tag.ENSEMBLE_RUN_ID: final.run_id} if final else {}),
                                        **({after: champion.run_id} if champion is not chosen else {})})
    version = None
    if config.register:
        version = tracking.register(
            c, name=config.registered_model, objective=config.objective, study=config.study_name,
            run_id=champion.run_id, model_uri=champion.model_uri, dataset=ds, val_value=champion.val_value,
            test_metrics=champion.test_metrics, trial=champion.trial, space=ctx.space.name)
        if champion is not chosen:  # what it retrains (refit_full) or bags (the best trial's configuration)
            of, run_id = (tag.REFIT_FULL_OF, chosen.run_id) if config.refit_full else (tag.BAG_OF, trial.run_id)
            c.set_model_version_tag(config.registered_model, version.version, of, run_id)
    single = champion if champion.model is not None else trial
    log_insight(c, parent, single.model, ds, single.test_prob)
    print("\nleaderboard (best first):\n" + summary_table(board, config.objective), flush=True)
    images, n_train = _row_int(best, TRAIN_IMAGES, len(ds.y_train)), len(ds.y_train)
    share = f" (trained on {images:,} of {n_train:,} training images)" if images < n_train else ""
    print(f"\nbest trial {number}{share}: {scores(config, trial.val_value, test_metrics)}", flush=True)
    if again:
        print(f"{again.label}: {scores(config, again.val_value, again.test_metrics)} "
              f"({f'{again.seconds:.1f}s' if again.seconds else 'its earlier run reused'})", flush=True)
    if final:
        print(f"final fit {final.label}: {scores(config, final.val_metrics[config.objective], final.test_metrics)}; "
              f"{final.reason} ({f'{final.seconds:.1f}s' if final.seconds else 'the same as the last finish: its run reused'})",
              flush=True)
    if champion is not chosen:
        estimate = ("the estimate of the fit it retrains" if config.refit_full
                    else "out of fold, over train + validation")
        print(f"{champion.label}: {scores(config, champion.val_value, champion.test_metrics)} (validation: "
              f"{estimate}; {f'{champion.seconds:.1f}s' if champion.seconds else 'its earlier run reused'})",
              flush=True)
    print(f"champion fit: {champion.label}"
          + (f"; registered {config.registered_model} v{version.version} ({version.alias})" if version else ""),
          flush=True)
    return SearchResult(config.study_name, parent, {"trial": number, "run_id": best["run_id"],
                                                    "params": best_params, **val_metrics},
                        test_metrics, version.version if version else None, 0.0, test_prob=test_prob)
