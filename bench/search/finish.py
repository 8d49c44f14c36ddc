"""After the trials: the leaderboard, the engine's figures, the best model on the test split, the registry.

The leaderboard is read back from MLflow (every child run of the study), so it is the same for every engine
and covers trials from earlier, resumed or parallel processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

import keras
import numpy as np

from bench import tracking
from bench.data import Dataset
from bench.metrics import classification_metrics, test_key
from bench.reporting import insight
from bench.reporting import board
from bench.reporting import write_evaluation_artifacts, write_html
from bench.search.context import SearchContext, SearchResult
from bench.search.ensemble import final_fit, load_keras_model
from bench.search.progress import summary_table
from bench.text import one_line
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
    best_params = {k.removeprefix("params."): v for k, v in best.items() if k.startswith("params.") and pd.notna(v)}
    val_metrics = {f"best_{k}": float(best[k]) for k in best.index if k.startswith("val_") and pd.notna(best[k])}
    model = load_keras_model(best["model_uri"])
    test_prob = predict_proba(model, ds.x_test)
    test_metrics = classification_metrics(ds.y_test, test_prob, ds.class_names, prefix="test")
    tracking.log_files(c, parent, lambda d: (
        write_evaluation_artifacts(d, ds.y_test, test_prob, ds.class_names, prefix="test_", title="best model test"),
        (d / "best_params.json").write_text(json.dumps(best_params, indent=2, default=str)),
    ))
    tracking.log_batch(c, parent, metrics={**val_metrics, **test_metrics, "best_trial": int(best["trial"])},
                       tags={tag.BEST_RUN_ID: best["run_id"],
                             **{f"best_param.{k}": v for k, v in best_params.items()}})
    tracking.log_batch(c, best["run_id"], metrics=test_metrics)
    final = final_fit(ctx, complete, model)  # an ensemble and/or TTA, adopted only when it wins on validation
    chosen = final if final and final.adopted else None
    champion_fit = chosen.label if chosen else f"trial {int(best['trial'])}"
    tracking.log_batch(c, parent, tags={tag.CHAMPION_FIT: champion_fit,
                                        **({tag.ENSEMBLE_RUN_ID: final.run_id} if final else {})})
    version = None
    if config.register:
        version = tracking.register(
            c, name=config.registered_model, objective=config.objective, study=config.study_name,
            run_id=chosen.run_id if chosen else best["run_id"], model_uri=chosen.model_uri if chosen else best["model_uri"],
            dataset=ds, val_value=chosen.val_metrics[config.objective] if chosen else float(best[config.objective]),
            test_metrics=chosen.test_metrics if chosen else test_metrics,
            trial=chosen.label if chosen else int(best["trial"]), space=ctx.space.name)
    log_insight(c, parent, model, ds, test_prob)
    print("\nleaderboard (best first):\n" + summary_table(board, config.objective), flush=True)
    objective_test = test_key(config.objective)
    print(f"\nbest trial {int(best['trial'])}: {config.objective}={best[config.objective]:.4f}, "
          f"{objective_test}={test_metrics[objective_test]:.4f}, test_accuracy={test_metrics['test_accuracy']:.4f}",
          flush=True)
    if final:
        print(f"final fit {final.label}: {config.objective}={final.val_metrics[config.objective]:.4f}, "
              f"{objective_test}={final.test_metrics[objective_test]:.4f}, test_accuracy="
              f"{final.test_metrics['test_accuracy']:.4f}; {final.reason} ("
              f"{f'{final.seconds:.1f}s' if final.seconds else 'the same as the last finish: its run reused'})", flush=True)
    print(f"champion fit: {champion_fit}"
          + (f"; registered {config.registered_model} v{version.version} ({version.alias})" if version else ""),
          flush=True)
    return SearchResult(config.study_name, parent, {"trial": int(best["trial"]), "run_id": best["run_id"],
                                                    "params": best_params, **val_metrics},
                        test_metrics, version.version if version else None, 0.0, test_prob=test_prob)
