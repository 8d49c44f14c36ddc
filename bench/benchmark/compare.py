"""The comparison: per contender, the mean over seeds with its 95 % interval across seeds beside the test-
resampling interval of its seed-median run (by validation); what it spent; and paired tests against the
validation winner on the same test images (paired bootstrap of macro-F1 and accuracy, stratified by class
and group; McNemar's exact test), with the mean rank over seeds and a verdict in words."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.benchmark.contenders import Outcome
from bench.data import Dataset
from bench.metrics import METRICS, direction
from bench.metrics.bootstrap import Interval, mcnemar_exact, mean_ranks, paired_bootstrap, seed_interval

TABLE_COLUMNS = {m.name: m.label for m in METRICS if m.interval}
SPENT = ("epochs", "images", "cpu_seconds", "wall_seconds", "trials")
ALPHA = 0.05
SAME = "cannot be told apart from the winner"


def _median_run(runs: list[Outcome], objective: str) -> Outcome:
    """The seed whose validation objective is the median (the lower middle for an even count)."""
    ordered = sorted(runs, key=lambda o: o.val_value, reverse=not direction(objective).ascending)
    return ordered[(len(ordered) - 1) // 2]


def summarize(outcomes: list[Outcome], runs: pd.DataFrame, ds: Dataset, *, objective: str, n_bootstrap: int,
              seed: int) -> tuple[pd.DataFrame, str]:
    """One row per contender (in order) and the name of the validation winner ("" when nothing has a model)."""
    names = list(dict.fromkeys(o.name for o in outcomes))
    ok = {n: [o for o in outcomes if o.name == n and o.test_prob is not None] for n in names}
    median = {n: _median_run(runs_of_n, objective) for n, runs_of_n in ok.items() if runs_of_n}
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        every = [o for o in outcomes if o.name == name]
        row: dict[str, Any] = {"contender": name, "kind": every[0].kind, "weights": every[0].weights,
                               "seeds": len(ok[name]), "failed_seeds": len(every) - len(ok[name]),
                               "error": next((o.error for o in every if o.error), "")}
        rows[name] = row
        if not ok[name]:
            continue
        mine = runs[(runs["contender"] == name) & runs["test_accuracy"].notna()]
        at_median = mine[mine["seed"] == median[name].seed].iloc[0]
        for metric in TABLE_COLUMNS:
            spread = seed_interval(mine[f"test_{metric}"].to_numpy())
            row.update({f"test_{metric}": spread.value, f"test_{metric}_seed_low": spread.low,
                        f"test_{metric}_seed_high": spread.high,
                        f"test_{metric}_low": at_median[f"test_{metric}_low"],
                        f"test_{metric}_high": at_median[f"test_{metric}_high"]})
        row.update({k: float(mine[k].mean()) for k in ("val_value", "val_f1_macro", "val_test_gap_f1", "test_ece", *SPENT)})
        row.update({"n_params": at_median["n_params"], "median_seed": median[name].seed})
    scored = [n for n in names if ok[n] and rows[n]["kind"] != "null"]
    if not scored:
        return pd.DataFrame(rows.values()), ""
    best = sorted(scored, key=lambda n: rows[n]["val_value"], reverse=not direction(objective).ascending)[0]
    reference = median[best].test_prob
    for name in median:
        prob = median[name].test_prob
        row = rows[name]
        if name == best:
            row["verdict"] = "winner (best mean validation objective)"
            continue
        paired = paired_bootstrap(ds.y_test, prob, reference, groups=ds.groups_test, n_resamples=n_bootstrap, seed=seed)
        for metric, d in paired.items():
            row.update({f"diff_{metric}": d.difference, f"diff_{metric}_low": d.low, f"diff_{metric}_high": d.high,
                        f"p_{metric}": d.p_value})
        row["p_mcnemar"] = mcnemar_exact(ds.y_test, prob.argmax(axis=1), reference.argmax(axis=1)).p_value
        same = min(row["p_f1_macro"], row["p_accuracy"], row["p_mcnemar"]) >= ALPHA
        row["verdict"] = SAME if same else ("worse than the winner" if row["diff_f1_macro"] < 0 else
                                            "better than the winner on test")
    _add_ranks(rows, runs, ok)
    return pd.DataFrame(rows.values()), best


def _add_ranks(rows: dict[str, dict[str, Any]], runs: pd.DataFrame, ok: dict[str, list[Outcome]]) -> None:
    """Mean rank of test macro-F1 over seeds, among contenders that scored on every seed (a deterministic
    contender, run once, keeps its score on every seed)."""
    seeds = sorted({o.seed for group in ok.values() for o in group if o.kind != "null"})
    if len(seeds) < 2:
        return
    scores = {}
    for name, group in ok.items():
        by_seed = {o.seed: runs.loc[(runs["contender"] == name) & (runs["seed"] == o.seed), "test_f1_macro"].iloc[0]
                   for o in group}
        if len(by_seed) == 1 and group and group[0].kind == "null":
            by_seed = dict.fromkeys(seeds, next(iter(by_seed.values())))
        if set(by_seed) >= set(seeds):
            scores[name] = [by_seed[s] for s in seeds]
    for name, rank in mean_ranks(scores).items():
        rows[name]["mean_rank"] = rank


def _num(value: Any, fmt: str) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) or pd.isna(value) else format(value, fmt)


def _cell(r: pd.Series, metric: str) -> str:
    seeds = Interval(r[f"test_{metric}"], r[f"test_{metric}_seed_low"], r[f"test_{metric}_seed_high"])
    seeds_text = str(seeds) if np.isfinite(seeds.low) else f"{seeds.value:.3f}"
    return f"{seeds_text}; test [{r[f'test_{metric}_low']:.3f}, {r[f'test_{metric}_high']:.3f}]"


def _difference(r: pd.Series, metric: str) -> str:
    if pd.isna(r.get(f"diff_{metric}")):
        return ""
    return (f"{r[f'diff_{metric}']:+.3f} [{r[f'diff_{metric}_low']:+.3f}, {r[f'diff_{metric}_high']:+.3f}] "
            f"p={r[f'p_{metric}']:.3f}")


HEAD = ["Contender", "Kind", "Seeds", *TABLE_COLUMNS.values(), "Val F1", "Val-test gap", "ECE", "Epochs", "Images",
        "CPU s", "Wall s", "Trials", "Params", "ΔF1 vs winner", "ΔAccuracy vs winner", "McNemar p", "Mean rank",
        "Epochs to best reference", "Verdict"]


def markdown(summary: pd.DataFrame, *, reach: dict[str, str] | None = None) -> str:
    """The comparison table: each test metric as mean [95 % interval across seeds]; test [95 % resampling
    interval of the seed-median run]. Spent columns are means per seed."""
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for _, r in summary.iterrows():
        weights = r.get("weights")
        kind = f"{r['kind']} (weights {weights})" if isinstance(weights, str) and weights else r["kind"]
        if not r["seeds"]:
            cells = [f"failed: {r.get('error', '')}"] + [""] * (len(HEAD) - 4)
            lines.append("| " + " | ".join([r["contender"], kind, "0", *cells]) + " |")
            continue
        seeds = f"{r['seeds']}" + (f" ({r['failed_seeds']} failed: {r['error']})" if r["failed_seeds"] else "")
        cells = [_cell(r, m) for m in TABLE_COLUMNS]
        cells += [_num(r["val_f1_macro"], ".3f"), _num(r["val_test_gap_f1"], "+.3f"), _num(r["test_ece"], ".3f"),
                  _num(r["epochs"], ".0f"), _num(r["images"], ",.0f"), _num(r["cpu_seconds"], ".0f"),
                  _num(r["wall_seconds"], ".0f"), _num(r["trials"], ".1f"),
                  _num(int(r["n_params"]) if pd.notna(r["n_params"]) else None, ",d"),
                  _difference(r, "f1_macro"), _difference(r, "accuracy"), _num(r.get("p_mcnemar"), ".3f"),
                  _num(r.get("mean_rank"), ".2f"), (reach or {}).get(r["contender"], ""), str(r.get("verdict", ""))]
        lines.append("| " + " | ".join([r["contender"], kind, seeds, *cells]) + " |")
    return "\n".join(lines)


def verdict_line(summary: pd.DataFrame, winner: str) -> str:
    if not winner:
        return "No contender has a model: there is no winner."
    same = summary.loc[summary.get("verdict", pd.Series(dtype=str)) == SAME, "contender"].tolist()
    return (f"Winner on validation: {winner}. Cannot be told apart from it on the test images (paired bootstrap "
            f"of macro-F1 and accuracy and McNemar's exact test, all p >= {ALPHA}): "
            f"{', '.join(same) if same else 'none'}.")
