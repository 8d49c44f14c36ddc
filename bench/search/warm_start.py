"""Warm start: a new study's first trials are setups known to work, so that the pruner has a yardstick within
minutes and the search is never worse on validation than the best fixed recipe it knows.

They are, in this order: the best completed trial of any earlier study on the same dataset (the dataset's
fingerprint: content, image size, resize mode and split) in the same MLflow experiment, then the fixed
reference setups (`search_spaces/reference/*.yaml`) of the space's family, then the space's own defaults (each
default is a measured choice: on the synthetic default at difficulty 0.8 the scratch space's defaults score
0.901 validation macro-F1 against the Keras reference's 0.834, `benchmarks/synthetic_calibration.py`). Each is kept only when the space
can express it: every value it names must be a value the space can take (a choice, a point of a range and
its step, the same fixed value) and active there; a parameter it does not name takes the space's default
(so a reference runs with the space's defaults for the recipe parts it predates). Duplicates are dropped.

The Optuna engine enqueues them (`study.enqueue_trial`) when it opens a study that has no trial yet.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench import paths
from bench.metrics import direction
from bench.search.context import SearchContext
from bench.search.space import Param, Space, defaults, load_space
from bench.search.trial import logged_params
from bench.tracking import tags as tag

SEARCHED = 20  # earlier trials looked at (best first) for one that the space can express


def _allowed(p: Param, value: Any) -> bool:
    if p.type == "fixed":
        return value == p.default and type(value) is type(p.default)
    if p.type == "categorical":
        return any(value == c and type(value) is type(c) for c in p.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not p.low <= value <= p.high:
        return False
    if p.type == "int" and not float(value).is_integer():
        return False
    if p.step:
        steps = (value - p.low) / p.step
        return math.isclose(steps, round(steps), abs_tol=1e-6)
    return True


def fit_to_space(space: Space, setup: dict[str, Any]) -> dict[str, Any] | None:
    """The space's values for `setup` (absent parameters at their defaults), or None when the space cannot
    express it."""
    values: dict[str, Any] = {}
    for p in space.params:
        if p.active(values):
            value = setup.get(p.name, p.default)
            if not _allowed(p, value):
                return None
            values[p.name] = value
    return values if set(setup) <= set(values) else None


def references(space: Space, folder: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(name, values) of the reference setups of the space's family that the space can express."""
    out = []
    for path in sorted((folder or paths.SEARCH_SPACES_DIR / "reference").glob("*.yaml")):
        reference = load_space(str(path))  # a reference is a space of fixed values, read as the benchmark reads it
        if reference.family == space.family:
            values = fit_to_space(space, defaults(reference))
            if values is not None:
                out.append((reference.name, values))
    return out



def previous_best(ctx: SearchContext) -> tuple[str, dict[str, Any]] | None:
    """(label, values) of the best completed trial of another study on this dataset that the space can express."""
    objective = ctx.config.objective
    order = "ASC" if direction(objective).ascending else "DESC"
    runs = ctx.client.search_runs(
        [ctx.experiment_id],
        tag.run_filter({tag.ROLE: tag.TRIAL_ROLE, tag.STATE: "COMPLETE",
                        tag.DATASET_FINGERPRINT: ctx.dataset.fingerprint}) + f" and tags.`{tag.STUDY}` != "
        f"'{ctx.config.study_name}'", order_by=[f"metrics.`{objective}` {order}"], max_results=SEARCHED)
    for run in runs:
        logged = run.data.params
        if logged.get("family") != ctx.space.family or objective not in run.data.metrics:
            continue
        values = fit_to_space(ctx.space, logged_params(logged))
        if values is not None:
            label = f"best of study {run.data.tags.get(tag.STUDY)} (trial {run.data.tags.get(tag.TRIAL)}, " \
                    f"{objective} {run.data.metrics[objective]:.4f})"
            return label, values
    return None


def first_trials(ctx: SearchContext) -> list[tuple[str, dict[str, Any]]]:
    """(label, values) of the warm-start setups, best-known first, without duplicates."""
    found = [*([best] if (best := previous_best(ctx)) else []), *references(ctx.space),
             (f"space {ctx.space.name} defaults", defaults(ctx.space))]
    out, seen = [], []
    for label, values in found:
        if values not in seen:
            seen.append(values)
            out.append((label, values))
    return out


def searched(space: Space, values: dict[str, Any]) -> dict[str, Any]:
    """Only the values an engine suggests (fixed parameters are not suggested)."""
    fixed = {p.name for p in space.params if p.type == "fixed"}
    return {k: v for k, v in values.items() if k not in fixed}
