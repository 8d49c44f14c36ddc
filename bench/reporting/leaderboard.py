"""The leaderboard: every trial of an experiment read back from MLflow, best first.

One reading serves the end-of-search summary (one study), `python -m bench leaderboard` (every study, engine and
space of an experiment) and the columns of the MLflow UI link (`bench.ui`). Trials are the child runs tagged
`hemabench.role=trial`, so the board is the same for every engine and for resumed or parallel studies.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from bench import tracking
from bench.errors import BenchError, ConfigError
from bench.metrics import OBJECTIVES, board_columns, direction
from bench.text import summarize
from bench.tracking import tags as tag

TRIAL_FILTER = tag.run_filter({tag.ROLE: tag.TRIAL_ROLE})
DEFAULT_OBJECTIVE = "val_f1_macro"
# Board column -> run tag; the tags every trial carries (bench.trial, bench.search).
TAG_COLUMNS = {
    "study": tag.STUDY,
    "engine": tag.ENGINE,
    "space": tag.SPACE,
    "data": tag.DATA,
    "state": tag.STATE,
    "model_uri": tag.MODEL_URI,
    "reason": tag.REASON,
    "study_objective": tag.OBJECTIVE,
}
STATE_RANK = {"COMPLETE": 0, "PRUNED": 1}  # then FAIL, RUNNING, unknown
# The metrics a reader compares first; the terminal table shows these, then a one-line parameter summary.
KEY_METRICS = (*board_columns("val"), *board_columns("test"),
               "best_epoch", "train_seconds", "n_params")
OUTPUTS = ("table", "csv", "html")


def study_filter(study: str | None) -> str:
    if not study:
        return TRIAL_FILTER
    return tag.run_filter({tag.ROLE: tag.TRIAL_ROLE, tag.STUDY: study})


def trial_runs(experiment_ids: list[str], *, study: str | None = None) -> pd.DataFrame:
    """MLflow's flat frame of the trial runs (`metrics.*`, `params.*`, `tags.*` columns)."""
    return mlflow.search_runs(experiment_ids, study_filter(study), max_results=50000)


def usual_objective(runs: pd.DataFrame) -> str:
    """The objective most of the runs' studies optimised (`val_f1_macro` when untagged)."""
    tagged = runs.get("tags.hemabench.objective", pd.Series(dtype=object)).dropna()
    return Counter(tagged).most_common(1)[0][0] if len(tagged) else DEFAULT_OBJECTIVE


def board(experiment_ids: list[str], *, objective: str | None = None, study: str | None = None,
          runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every trial, best first: COMPLETE before PRUNED before the rest, then by `objective` in its direction.

    Columns: trial, state, model_uri, engine, study, space, data, run_id, run_name, reason, every metric by its
    name, every parameter as `params.<name>`. `objective` defaults to the one most studies used."""
    runs = trial_runs(experiment_ids, study=study) if runs is None else runs
    objective = objective or usual_objective(runs)
    if runs.empty:
        return pd.DataFrame(columns=["trial", "state", objective, "run_id"])
    index = runs.index
    out = pd.DataFrame({"trial": pd.to_numeric(runs.get("tags.hemabench.trial"), errors="coerce").astype("Int64")})
    for column, name in TAG_COLUMNS.items():
        out[column] = runs.get(f"tags.{name}", pd.Series("", index=index)).fillna("")
    out["state"] = out["state"].replace("", "?")
    out["run_id"] = runs["run_id"]
    out["run_name"] = runs.get("tags.mlflow.runName", pd.Series("", index=index)).fillna("")
    names = [c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")]
    key = [m for m in (objective, *KEY_METRICS) if m in names]
    metrics = {m: runs[f"metrics.{m}"] for m in dict.fromkeys(key + sorted(names))}
    params = {c: runs[c] for c in sorted(c for c in runs.columns if c.startswith("params."))}
    out = pd.concat([out, pd.DataFrame(metrics, index=index), pd.DataFrame(params, index=index)], axis=1)
    if objective not in out:
        out[objective] = np.nan
    rank = out["state"].map(STATE_RANK).fillna(len(STATE_RANK))
    ascending = direction(objective).ascending
    out = out.assign(_rank=rank).sort_values(["_rank", objective, "study", "trial"],
                                             ascending=[True, ascending, True, True], na_position="last")
    return out.drop(columns="_rank").reset_index(drop=True)


def _typed(value: object) -> object:
    """MLflow stores parameters as text; numbers read back as numbers so the summary rounds them."""
    try:
        return int(value) if str(value).lstrip("-").isdigit() else float(value)
    except (TypeError, ValueError):
        return value


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("params.")]


def table(frame: pd.DataFrame, objective: str, *, top: int | None = None, params_width: int = 70) -> str:
    """A terminal table: rank, where the trial comes from, the objective, key metrics, a parameter summary."""
    if frame.empty:
        return "no trial runs"
    shown = frame.head(top) if top else frame
    metrics = [objective] + [m for m in KEY_METRICS if m in shown and m != objective and shown[m].notna().any()]
    columns = ["study", "engine", "space", "trial", "state"]
    if shown["study"].nunique() == 1:
        columns.remove("study")  # named once in the header line instead
    view = shown[columns + metrics].copy()
    view.insert(0, "rank", range(1, len(view) + 1))
    # Architecture and optimiser first, augmentation last; epochs and image size are study settings.
    params = sorted((p for p in param_columns(shown) if p not in ("params.epochs", "params.image_size")),
                    key=lambda p: (p.startswith("params.aug_"), p))
    view["params"] = [summarize({p.removeprefix("params."): _typed(row[p]) for p in params if pd.notna(row[p])},
                                width=params_width) for _, row in shown.iterrows()]
    return view.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-",
                          formatters={c: _count for c in ("n_params", "best_epoch") if c in view})


def _count(value: float) -> str:
    return "-" if pd.isna(value) else f"{int(value):,}"


def experiment_ids_for(name: str) -> list[str]:
    """Ids of the experiment named `name`, with a one-line error listing what exists."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        names = sorted(e.name for e in mlflow.search_experiments())
        raise BenchError(f"experiment '{name}' does not exist at {mlflow.get_tracking_uri()}; "
                         f"experiments: {', '.join(names) or 'none'}")
    return [experiment.experiment_id]


def main(experiment: str, *, study: str | None = None, objective: str | None = None, output: str = "table",
         out_file: str | None = None, top: int | None = None) -> int:
    """`python -m bench leaderboard`: print or write the experiment's leaderboard."""
    if output not in OUTPUTS:
        raise ConfigError(f"The 'output' parameter must be one of {', '.join(OUTPUTS)}. Got {output!r} instead.")
    if objective is not None and objective not in OBJECTIVES:
        raise ConfigError(f"The 'objective' parameter must be one of {', '.join(OBJECTIVES)}. Got {objective!r} instead.")
    tracking.client()  # sets the tracking URI (MLFLOW_TRACKING_URI or ./mlflow.db)
    ids = experiment_ids_for(experiment)
    runs = trial_runs(ids, study=study)
    objective = objective or usual_objective(runs)
    full = board(ids, objective=objective, study=study, runs=runs)
    frame = full.head(top) if top else full
    if output == "table":
        studies = sorted(set(full["study"])) if not full.empty else []
        header = (f"experiment {experiment}: {len(full)} trials from {len(studies)} "
                  f"stud{'y' if len(studies) == 1 else 'ies'} ({', '.join(studies) or '-'}), best first by {objective}"
                  + (f", top {len(frame)} shown" if len(frame) < len(full) else ""))
        text = header + "\n" + table(frame, objective) + "\n"
    elif output == "csv":
        text = frame.to_csv(index=False)
    else:
        text = frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")
    if out_file:
        Path(out_file).write_text(text)
        print(f"wrote {len(frame)} trials to {out_file}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
