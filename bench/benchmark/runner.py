"""`benchmark`: every contender on the same data and compute budget, one table with bootstrap intervals.

Contenders are a registry of (name, kind, config). Kinds: `null` (DummyClassifier "prior", the floor),
`reference` (a fixed YAML setup from `search_spaces/reference/`, one fit of `epochs` through the trial runner,
so it logs exactly like a trial) and `search` (`bench.search.run` with its own study and a budget in epochs,
trials or seconds, `bench.search.budget`). Each stochastic contender runs once per seed (`repeats`) on the same
data and splits. Everything lands on one parent MLflow run: a child run per contender and seed, the per-seed
rows (`benchmark.csv`), the comparison (`benchmark.md`, `benchmark_summary.csv`) and the plotly report
(`benchmark_report.html`). The winner is chosen on validation (never on test) and, with `register=true`,
registered under the champion rules. When every contender but the null model fails, the benchmark ends
with a `BenchError` (exit status 2) after logging its rows.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from mlflow.tracking import MlflowClient

from bench import machine, paths, tracking
from bench.benchmark.config import BenchmarkConfig, weights_for
from bench.benchmark.contenders import Contender, Outcome, select
from bench.benchmark.compare import markdown, summarize, verdict_line
from bench.benchmark.race import epochs_to_reach, race_table
from bench.benchmark.report import table_row, write_report
from bench.data import Dataset, load_dataset
from bench.errors import BenchError
from bench.metrics import classification_metrics, direction
from bench.search import SearchConfig, defaults, load_space, make_config
from bench.search import run as run_search
from bench.search.finish import load_keras_model
from bench.search import TrialRunner
from bench.search.budget import EPOCHS_METRIC
from bench.text import one_line
from bench.tracking import tags as tag
from bench.training import predict_proba


@dataclass
class Bench:
    """Shared state of one benchmark: the config, the data, MLflow ids."""

    config: BenchmarkConfig
    dataset: Dataset
    client: MlflowClient
    experiment_id: str
    parent_run_id: str
    race: pd.DataFrame | None = None

    @property
    def tag(self) -> str:
        return self.parent_run_id[:8]

    def study(self, contender: Contender, seed: int) -> str:
        return f"benchmark-{self.tag}-{contender.name}-seed{seed}"

    def search_config(self, contender: Contender, seed: int, **extra: Any) -> SearchConfig:
        cfg = self.config
        search_only = {k: v for k, v in contender.config.items() if k != "space"}
        experiment = self.client.get_experiment(self.experiment_id).name
        values = dict(data=cfg.data, space=contender.config.get("space", "scratch_cnn"), epochs=cfg.epochs,
                      image_size=cfg.image_size, seed=seed, experiment=experiment, registered_model=cfg.registered_model,
                      storage=cfg.storage, study=self.study(contender, seed), objective=cfg.objective,
                      weights=weights_for(cfg.weights, _backbone(contender)), register=False, verbose=cfg.verbose,
                      # a contender is its search strategy alone: no warm start, ensemble or refit
                      warm_start=False, ensemble=False, refit="never")
        return make_config(**{**values, **cfg.search_budget(), **search_only, **extra})


def _backbone(contender: Contender) -> str | None:
    space = load_space(contender.config.get("space", "scratch_cnn"))
    if space.family != "backbone":
        return None
    return next((p.default for p in space.params if p.name == "backbone" and p.type == "fixed"), space.name)


def _online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def with_real_weights(chosen: list[Contender], weights: str) -> list[Contender]:
    """Backbone contenders run only with real pretrained weights (a file, or imagenet while online); the others
    are left out with one printed line: a random-initialised backbone would pass for a pretrained one."""
    left = []
    for contender in chosen:
        backbone = _backbone(contender) if contender.kind in ("reference", "search") else None
        value = weights_for(weights, backbone) if backbone else ""
        if backbone and not (Path(value).is_file() or (value == "imagenet" and _online())):
            left.append(f"{contender.name} ({backbone}: {value})")
    if left:
        print(f"left out without real pretrained weights: {', '.join(left)}; pass weights=<file> or "
              f"weights=<backbone>=<file> (or imagenet where online)", flush=True)
    return [c for c in chosen if not any(entry.startswith(f"{c.name} (") for entry in left)]


def _run_null(bench: Bench, contender: Contender, seed: int) -> Outcome:
    ds, k = bench.dataset, len(bench.dataset.class_names)
    model = DummyClassifier(strategy="prior").fit(np.zeros((len(ds.y_train), 1)), ds.y_train)

    def proba(n: int) -> np.ndarray:
        full = np.zeros((n, k))
        full[:, model.classes_] = model.predict_proba(np.zeros((n, 1)))
        return full

    run_id = tracking.start_child(bench.client, bench.experiment_id, bench.parent_run_id, name=contender.name,
                                  tags={tag.ROLE: tag.CONTENDER_ROLE, tag.CONTENDER: contender.name,
                                        tag.KIND: contender.kind,
                                        tag.SPLITS_FINGERPRINT: bench.dataset.splits_fingerprint})
    val = classification_metrics(ds.y_val, proba(len(ds.y_val)), ds.class_names, prefix="val", per_class=False)
    tracking.log_batch(bench.client, run_id, metrics=val, params={"strategy": "prior"})
    bench.client.set_terminated(run_id, "FINISHED")
    return Outcome(contender.name, contender.kind, run_id, seed, test_prob=proba(len(ds.y_test)),
                   val_value=val[bench.config.objective], val_f1=val["val_f1_macro"], train_seconds=0.0, trials=1, n_params=k)


def _run_reference(bench: Bench, contender: Contender, seed: int) -> Outcome:
    space = load_space(contender.config["space"])
    cfg = bench.search_config(contender, seed, trials=1)
    tags = {tag.STUDY: cfg.study_name, tag.ENGINE: "reference", tag.SPACE: space.name,
            tag.DATA: bench.dataset.name, tag.DATASET_FINGERPRINT: bench.dataset.fingerprint,
            tag.SPLITS_FINGERPRINT: bench.dataset.splits_fingerprint, tag.ROLE: tag.CONTENDER_ROLE, tag.CONTENDER: contender.name, tag.KIND: contender.kind}
    runner = TrialRunner(cfg, bench.dataset, space, bench.client, bench.experiment_id, bench.parent_run_id,
                         is_best=lambda value: True, tags=tags)
    outcome = runner.run(0, defaults(space))  # pretrained weights travel in cfg.weights, as in a search
    bench.client.set_tag(outcome.run_id, "mlflow.runName", f"{contender.name}-seed{seed}")
    # Score the model as logged, so the table describes the artifact a user would deploy.
    prob = predict_proba(load_keras_model(outcome.model_uri), bench.dataset.x_test)
    m = outcome.metrics
    return Outcome(contender.name, contender.kind, outcome.run_id, seed, test_prob=prob, val_value=outcome.value,
                   val_f1=m["val_f1_macro"], train_seconds=m["train_seconds"], epochs=len(outcome.history), trials=1,
                   n_params=m["n_params"],
                   model_uri=outcome.model_uri, model_run_id=outcome.run_id, search_config=cfg, space=space.name,
                   weights=_weights_label(space.family, cfg))


@contextlib.contextmanager
def _own_parent_run() -> Iterator[None]:
    """`mlflow run` sets MLFLOW_RUN_ID, which `bench.search` would adopt as its parent: hide it so each search
    resumes the parent run created for it under the benchmark's run."""
    saved = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_RUN_ID"] = saved


def _run_search(bench: Bench, contender: Contender, seed: int) -> Outcome:
    cfg = bench.search_config(contender, seed)
    c = bench.client
    # bench.search resumes the latest parent run of its study: create it here, as a child of the benchmark run.
    parent = tracking.start_child(c, bench.experiment_id, bench.parent_run_id, name=f"{contender.name}-seed{seed}",
                                  tags={tag.STUDY: cfg.study_name, tag.ROLE: tag.PARENT,
                                        tag.CONTENDER: contender.name, tag.KIND: contender.kind})
    started = time.time()
    try:
        with _own_parent_run():
            result = run_search(cfg, bench.dataset)
    except BaseException:
        if c.get_run(parent).info.status == "RUNNING":  # failed before bench.search took the run over
            c.set_terminated(parent, "FAILED")
        raise
    space = load_space(cfg.space)
    out = Outcome(contender.name, contender.kind, parent, seed, search_config=cfg, study=cfg.study_name, started=started,
                  space=space.name, weights=_weights_label(space.family, cfg))
    trials = c.search_runs([bench.experiment_id], tag.run_filter({tag.STUDY: cfg.study_name, tag.ROLE: tag.TRIAL_ROLE}), max_results=50000)
    out.trials = len(trials)
    out.train_seconds = float(sum(r.data.metrics.get("train_seconds", 0.0) for r in trials))
    out.epochs = int(sum(r.data.metrics.get(EPOCHS_METRIC, 0.0) for r in trials))
    if result.best is None:
        out.error = "no trial completed"
        return out
    best = c.get_run(result.best["run_id"])
    out.test_prob = result.test_prob
    out.val_value = float(result.best[f"best_{cfg.objective}"])
    out.val_f1 = float(result.best.get("best_val_f1_macro", np.nan))
    out.n_params = best.data.metrics.get("n_params", np.nan)
    out.model_uri, out.model_run_id, out.trial = best.data.tags.get(tag.MODEL_URI, ""), best.info.run_id, result.best["trial"]
    return out


def _weights_label(family: str, cfg: SearchConfig) -> str:
    if family != "backbone":
        return ""
    name = Path(cfg.weights).name
    return cfg.weights if cfg.weights in ("none", "imagenet") else f"file {name[:20]}…" if len(name) > 20 else f"file {name}"


KINDS: dict[str, Callable[[Bench, Contender, int], Outcome]] = {"null": _run_null, "reference": _run_reference, "search": _run_search}


@dataclass
class Result:
    runs: pd.DataFrame  # one row per contender and seed (benchmark.csv)
    summary: pd.DataFrame  # one row per contender: seed means, intervals, paired tests (benchmark.md)
    winner: str  # the best mean validation objective ("" when no contender has a model)
    markdown: str


class AllFailed(BenchError):
    """Every contender but the null model failed: there is nothing to compare (exit status 2)."""


def run(config: BenchmarkConfig) -> Result:
    started = time.perf_counter()
    dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
    print(dataset.summary, flush=True)
    chosen = with_real_weights(select(config.contenders), config.weights)
    c = tracking.client()
    experiment_id = tracking.experiment_id_for(c, config.experiment)
    parent = tracking.start_parent(c, experiment_id, name="benchmark", resume_run_id=None, tags={
        tag.ROLE: tag.BENCHMARK_ROLE, tag.DATA: dataset.name, tag.DATASET_FINGERPRINT: dataset.fingerprint,
        tag.SPLITS_FINGERPRINT: dataset.splits_fingerprint, tag.GIT_COMMIT: tracking.git_commit(),
        tag.MACHINE: machine.describe(),
        tag.NOTE: f"Benchmark of {len(chosen)} contenders on {dataset.name} at {config.image_size}px: "
                  f"{config.budget:g} {config.budget_unit} per search, {config.epochs} epochs per fit, "
                  f"{config.repeats} seeds."})
    bench = Bench(config, dataset, c, experiment_id, parent)
    grouped = "by group within class" if dataset.groups_test is not None else "by image within class"
    print(f"benchmark {bench.tag}: {len(chosen)} contenders ({', '.join(x.name for x in chosen)}); "
          f"{config.budget:g} {config.budget_unit} per search, {config.epochs} epochs per fit, seeds "
          f"{', '.join(map(str, config.seeds))}; CIs resampled {grouped}; MLflow run {parent}", flush=True)
    outcomes = []
    with tracking.ending(c, parent):
        tracking.log_params_once(c, parent, vars(config))  # `mlflow run` has logged its own strings already
        for contender in chosen:
            for seed in [config.seed] if contender.kind == "null" else config.seeds:  # the null model is deterministic
                print(f"\n=== {contender.name} ({contender.kind}), seed {seed} ===", flush=True)
                outcomes.append(_run_one(bench, contender, seed))
        result = _compare(bench, outcomes)
        _log_results(bench, result, outcomes)
        failed = [o for o in outcomes if o.kind != "null" and o.test_prob is None]
        if failed and len(failed) == sum(o.kind != "null" for o in outcomes):
            raise AllFailed("every contender but the null model failed: " + "; ".join(
                f"{o.name} (seed {o.seed}): {o.error}" for o in failed[:3]) + ("; ..." if len(failed) > 3 else ""))
        if config.register:
            _register_winner(bench, outcomes, result.winner)
    print("\n" + result.markdown, flush=True)
    print(f"\nbenchmark done in {time.perf_counter() - started:.0f}s; MLflow run {parent}; "
          f"mlflow ui --backend-store-uri {paths.tracking_uri()}", flush=True)
    return result


def _run_one(bench: Bench, contender: Contender, seed: int) -> Outcome:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        outcome = KINDS[contender.kind](bench, contender, seed)
    except Exception as exc:  # noqa: BLE001 - one failing contender is a row, not the end of the benchmark
        outcome = Outcome(contender.name, contender.kind, "", seed, error=one_line(exc))
        print(f"{contender.name} (seed {seed}) failed: {outcome.error}", flush=True)
    outcome.wall_seconds, outcome.cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    return outcome


def _compare(bench: Bench, outcomes: list[Outcome]) -> Result:
    config, ds = bench.config, bench.dataset
    runs = pd.DataFrame([table_row(o, ds, config) for o in outcomes])
    summary, winner = summarize(outcomes, runs, ds, objective=config.objective, n_bootstrap=config.n_bootstrap,
                                seed=config.seed)
    refs = summary[(summary["kind"] == "reference") & (summary["seeds"] > 0)] if "val_f1_macro" in summary else summary[:0]
    race = race_table(bench.client, bench.experiment_id, [o for o in outcomes if o.study], config.objective)
    reach = epochs_to_reach(race, float(refs["val_f1_macro"].max())) if len(refs) and len(race) else {}
    groups = "by group within class" if ds.groups_test is not None else "by image within class"
    text = "\n\n".join([
        f"Data {ds.name} at {ds.image_size}px ({len(ds.y_train)} train, {len(ds.y_val)} validation, {len(ds.y_test)} test "
        f"images); {config.epochs} epochs per fit; {config.budget:g} {config.budget_unit} per search and seed; seeds "
        f"{', '.join(map(str, config.seeds))} (the null model once). Metric cells: mean over seeds [95 % interval "
        f"across seeds]; test [95 % bootstrap interval of the seed-median run, resampled {groups}]. Spent columns are "
        f"means per seed. Differences and p-values: each contender's seed-median run against the winner's on the "
        f"same test images. Epochs to best reference: epochs a search needed to match the best reference's mean "
        f"validation F1 (median over seeds).",
        markdown(summary, reach=reach), verdict_line(summary, winner)])
    summary["epochs_to_best_reference"] = summary["contender"].map(reach)
    bench.race = race
    return Result(runs, summary, winner, text)


def _log_results(bench: Bench, result: Result, outcomes: list[Outcome]) -> None:
    c, ds, runs = bench.client, bench.dataset, result.runs
    numeric = [k for k in result.summary.columns if k.startswith(("test_", "val_", "diff_", "p_"))
               or k in ("epochs", "images", "cpu_seconds", "wall_seconds", "trials", "mean_rank")]
    metrics = {f"{r['contender']}.{k}": float(r[k]) for _, r in result.summary.iterrows() for k in numeric
               if pd.notna(r.get(k)) and np.isfinite(float(r[k]))}
    tracking.log_batch(c, bench.parent_run_id, metrics=metrics)
    for o, (_, r) in zip(outcomes, runs.iterrows()):
        if o.run_id and pd.notna(r.get("test_accuracy")):
            tracking.log_batch(c, o.run_id, metrics={k: float(r[k]) for k in runs.columns
                                                     if k.startswith("test_") and pd.notna(r[k])})
    medians = {}
    for name in dict.fromkeys(o.name for o in outcomes):
        seed = result.summary.set_index("contender").get("median_seed", pd.Series(dtype=float)).get(name)
        prob = next((o.test_prob for o in outcomes if o.name == name and o.seed == seed and o.test_prob is not None), None)
        if prob is not None:
            medians[name] = prob
    refs = [o for o in outcomes if o.kind == "reference" and o.test_prob is not None]
    references = {name: (float(np.mean([o.epochs for o in refs if o.name == name])),
                         float(np.mean([o.wall_seconds for o in refs if o.name == name])),
                         float(np.mean([o.val_f1 for o in refs if o.name == name]))) for name in dict.fromkeys(o.name for o in refs)}

    def write(folder: Path) -> None:
        runs.to_csv(folder / "benchmark.csv", index=False)
        result.summary.to_csv(folder / "benchmark_summary.csv", index=False)
        measured = f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine.describe()}."
        (folder / "benchmark.md").write_text(f"{measured}\n\n{result.markdown}\n")
        bench.race.to_csv(folder / "search_race.csv", index=False)
        write_report(folder / "benchmark_report.html", table=result.markdown, race=bench.race, y_true=ds.y_test,
                     probs=medians, class_names=list(ds.class_names), references=references,
                     title=f"HemaBench benchmark {bench.tag} on {ds.name} at {ds.image_size}px",
                     objective=bench.config.objective)

    tracking.log_files(c, bench.parent_run_id, write)


def _register_winner(bench: Bench, outcomes: list[Outcome], name: str) -> None:
    """The winner (best mean validation objective over seeds; test decides nothing) goes to the registry: its
    run with the best validation objective."""
    candidates = [o for o in outcomes if o.name == name and o.model_uri and o.search_config is not None
                  and np.isfinite(o.val_value)]
    if not candidates:
        print("no contender logged a model: nothing to register", flush=True)
        return
    winner = sorted(candidates, key=lambda o: o.val_value, reverse=not direction(bench.config.objective).ascending)[0]
    ds = bench.dataset
    test_metrics = classification_metrics(ds.y_test, winner.test_prob, ds.class_names, prefix="test")
    version = tracking.register(bench.client, name=winner.search_config.registered_model, objective=winner.search_config.objective,
                                study=winner.search_config.study_name, run_id=winner.model_run_id,
                                model_uri=winner.model_uri, dataset=ds, val_value=winner.val_value,
                                test_metrics=test_metrics, trial=winner.trial,
                                space=winner.space)
    tracking.log_batch(bench.client, bench.parent_run_id, tags={tag.WINNER: winner.name,
                                                                tag.WINNER_VERSION: version.version})
    print(f"winner on validation: {winner.name} ({bench.config.objective}={winner.val_value:.4f}); registered "
          f"{bench.config.registered_model} v{version.version} as {version.alias} ({version.reason})", flush=True)
