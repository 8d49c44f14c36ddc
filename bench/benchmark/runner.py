"""`benchmark`: every contender on the same data and compute budget, one table with bootstrap intervals.

Contenders are a registry of (name, kind, config). Kinds: `null` (DummyClassifier "prior", the floor),
`reference` (a fixed YAML setup from `search_spaces/reference/`, one fit of `epochs` through the trial runner,
so it logs exactly like a trial) and `search` (`bench.search.run` with its own study, `trials=budget` or
`timeout=budget` seconds). Everything lands on one parent MLflow run: a child run per contender, the table
(`benchmark.md`, `benchmark.csv`) and the plotly report (`benchmark_report.html`). The winner is chosen on
validation (never on test) and, with `register=true`, registered under the champion rules.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from mlflow.tracking import MlflowClient

from bench import paths, tracking
from bench.benchmark.config import BenchmarkConfig, weights_for
from bench.benchmark.contenders import Contender, Outcome, select
from bench.benchmark.report import markdown, race_table, table_row, write_report
from bench.data import Dataset, load_dataset
from bench.metrics import classification_metrics, direction
from bench.search import SearchConfig, defaults, load_space, make_config
from bench.search import run as run_search
from bench.search.finish import load_keras_model
from bench.search import TrialRunner
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

    @property
    def tag(self) -> str:
        return self.parent_run_id[:8]

    def study(self, contender: Contender) -> str:
        return f"benchmark-{self.tag}-{contender.name}"

    def search_config(self, contender: Contender, **extra: Any) -> SearchConfig:
        cfg = self.config
        search_only = {k: v for k, v in contender.config.items() if k != "space"}
        space = load_space(contender.config.get("space", "scratch_cnn"))
        backbone = next((p.default for p in space.params if p.name == "backbone" and p.type == "fixed"), None)
        budget = {"trials": int(cfg.budget)} if cfg.budget_unit == "trials" else {"trials": 100000, "timeout": cfg.budget}
        experiment = self.client.get_experiment(self.experiment_id).name
        values = dict(data=cfg.data, space=contender.config.get("space", "scratch_cnn"), epochs=cfg.epochs,
                      image_size=cfg.image_size, seed=cfg.seed, experiment=experiment, registered_model=cfg.registered_model,
                      storage=cfg.storage, study=self.study(contender), objective=cfg.objective,
                      weights=weights_for(cfg.weights, backbone),
                      register=False, verbose=cfg.verbose)
        return make_config(**{**values, **budget, **search_only, **extra})


def _run_null(bench: Bench, contender: Contender) -> Outcome:
    ds, k = bench.dataset, len(bench.dataset.class_names)
    model = DummyClassifier(strategy="prior").fit(np.zeros((len(ds.y_train), 1)), ds.y_train)

    def proba(n: int) -> np.ndarray:
        full = np.zeros((n, k))
        full[:, model.classes_] = model.predict_proba(np.zeros((n, 1)))
        return full

    run_id = tracking.start_child(bench.client, bench.experiment_id, bench.parent_run_id, name=contender.name,
                                  tags={tag.ROLE: tag.CONTENDER_ROLE, tag.CONTENDER: contender.name,
                                        tag.KIND: contender.kind})
    val = classification_metrics(ds.y_val, proba(len(ds.y_val)), ds.class_names, prefix="val", per_class=False)
    tracking.log_batch(bench.client, run_id, metrics=val, params={"strategy": "prior"})
    bench.client.set_terminated(run_id, "FINISHED")
    return Outcome(contender.name, contender.kind, run_id, test_prob=proba(len(ds.y_test)),
                   val_value=val[bench.config.objective], val_f1=val["val_f1_macro"], train_seconds=0.0, trials=1, n_params=k)


def _run_reference(bench: Bench, contender: Contender) -> Outcome:
    space = load_space(contender.config["space"])
    cfg = bench.search_config(contender, trials=1)
    tags = {tag.STUDY: cfg.study_name, tag.ENGINE: "reference", tag.SPACE: space.name,
            tag.DATA: bench.dataset.name, tag.DATASET_FINGERPRINT: bench.dataset.fingerprint,
            tag.ROLE: tag.CONTENDER_ROLE, tag.CONTENDER: contender.name, tag.KIND: contender.kind}
    runner = TrialRunner(cfg, bench.dataset, space, bench.client, bench.experiment_id, bench.parent_run_id,
                         is_best=lambda value: True, tags=tags)
    outcome = runner.run(0, defaults(space))  # pretrained weights travel in cfg.weights, as in a search
    bench.client.set_tag(outcome.run_id, "mlflow.runName", contender.name)
    # Score the model as logged, so the table describes the artifact a user would deploy.
    prob = predict_proba(load_keras_model(outcome.model_uri), bench.dataset.x_test)
    m = outcome.metrics
    return Outcome(contender.name, contender.kind, outcome.run_id, test_prob=prob, val_value=outcome.value,
                   val_f1=m["val_f1_macro"], train_seconds=m["train_seconds"], trials=1, n_params=m["n_params"],
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


def _run_search(bench: Bench, contender: Contender) -> Outcome:
    cfg = bench.search_config(contender)
    c = bench.client
    # bench.search resumes the latest parent run of its study: create it here, as a child of the benchmark run.
    parent = tracking.start_child(c, bench.experiment_id, bench.parent_run_id, name=contender.name,
                                  tags={tag.STUDY: cfg.study_name, tag.ROLE: tag.PARENT,
                                        tag.CONTENDER: contender.name, tag.KIND: contender.kind})
    started = time.time()
    try:
        with _own_parent_run():
            result = run_search(cfg)
    except BaseException:
        if c.get_run(parent).info.status == "RUNNING":  # failed before bench.search took the run over
            c.set_terminated(parent, "FAILED")
        raise
    space = load_space(cfg.space)
    out = Outcome(contender.name, contender.kind, parent, search_config=cfg, study=cfg.study_name, started=started,
                  space=space.name, weights=_weights_label(space.family, cfg))
    trials = c.search_runs([bench.experiment_id], tag.run_filter({tag.STUDY: cfg.study_name, tag.ROLE: tag.TRIAL_ROLE}), max_results=50000)
    out.trials = len(trials)
    out.train_seconds = float(sum(r.data.metrics.get("train_seconds", 0.0) for r in trials))
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


KINDS: dict[str, Callable[[Bench, Contender], Outcome]] = {"null": _run_null, "reference": _run_reference, "search": _run_search}


def run(config: BenchmarkConfig) -> pd.DataFrame:
    started = time.perf_counter()
    chosen = select(config.contenders)
    dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
    print(dataset.summary, flush=True)
    c = tracking.client()
    experiment_id = tracking.experiment_id_for(c, config.experiment)
    parent = tracking.start_parent(c, experiment_id, name="benchmark", resume_run_id=None, tags={
        tag.ROLE: tag.BENCHMARK_ROLE, tag.DATA: dataset.name, tag.DATASET_FINGERPRINT: dataset.fingerprint,
        tag.GIT_COMMIT: tracking.git_commit(),
        tag.NOTE: f"Benchmark of {len(chosen)} contenders on {dataset.name} at {config.image_size}px: "
                               f"{config.budget:g} {config.budget_unit} per search, {config.epochs} epochs per fit."})
    bench = Bench(config, dataset, c, experiment_id, parent)
    grouped = "by group (cluster bootstrap)" if dataset.groups_test is not None else "by image"
    print(f"benchmark {bench.tag}: {len(chosen)} contenders ({', '.join(x.name for x in chosen)}); "
          f"{config.budget:g} {config.budget_unit} x {config.epochs} epochs per search; CIs resampled {grouped}; "
          f"MLflow run {parent}", flush=True)
    outcomes = []
    with tracking.ending(c, parent):
        tracking.log_params_once(c, parent, vars(config))  # `mlflow run` has logged its own strings already
        for contender in chosen:
            print(f"\n=== {contender.name} ({contender.kind}) ===", flush=True)
            t0 = time.perf_counter()
            try:
                outcome = KINDS[contender.kind](bench, contender)
            except Exception as exc:  # noqa: BLE001 - one failing contender is a row, not the end of the benchmark
                outcome = Outcome(contender.name, contender.kind, "", error=one_line(exc))
                print(f"{contender.name} failed: {outcome.error}", flush=True)
            outcome.wall_seconds = time.perf_counter() - t0
            outcomes.append(outcome)
        table = pd.DataFrame([table_row(o, dataset, config) for o in outcomes])
        race = race_table(c, experiment_id, [o for o in outcomes if o.study], config.objective)
        _log_results(bench, table, outcomes, race)
        if config.register:
            _register_winner(bench, outcomes)
    print("\n" + markdown(table), flush=True)
    print(f"\nbenchmark done in {time.perf_counter() - started:.0f}s; MLflow run {parent}; "
          f"mlflow ui --backend-store-uri {paths.tracking_uri()}", flush=True)
    return table


def _log_results(bench: Bench, table: pd.DataFrame, outcomes: list[Outcome], race: pd.DataFrame) -> None:
    c, ds = bench.client, bench.dataset
    numeric = [k for k in table.columns if k.startswith(("test_", "val_")) or k in ("train_seconds", "wall_seconds", "trials")]
    metrics = {f"{r['contender']}.{k}": float(r[k]) for _, r in table.iterrows() for k in numeric
               if pd.notna(r.get(k)) and np.isfinite(float(r[k]))}
    tracking.log_batch(c, bench.parent_run_id, metrics=metrics)
    for o, (_, r) in zip(outcomes, table.iterrows()):
        if o.run_id and pd.notna(r.get("test_accuracy")):
            tracking.log_batch(c, o.run_id, metrics={k: float(r[k]) for k in numeric if k.startswith("test_") and pd.notna(r[k])})
    scored = [o for o in outcomes if o.test_prob is not None]

    def write(folder: Path) -> None:
        table.to_csv(folder / "benchmark.csv", index=False)
        (folder / "benchmark.md").write_text(markdown(table) + "\n")
        race.to_csv(folder / "search_race.csv", index=False)
        write_report(folder / "benchmark_report.html", table=markdown(table), race=race, y_true=ds.y_test,
                     probs={o.name: o.test_prob for o in scored}, class_names=list(ds.class_names),
                     references={o.name: (o.wall_seconds, o.val_f1) for o in scored if o.kind == "reference"},
                     title=f"HemaBench benchmark {bench.tag} on {ds.name} at {ds.image_size}px")

    tracking.log_files(c, bench.parent_run_id, write)


def _register_winner(bench: Bench, outcomes: list[Outcome]) -> None:
    """The contender with the best validation objective (test decides nothing) goes to the registry."""
    candidates = [o for o in outcomes if o.model_uri and o.search_config is not None and np.isfinite(o.val_value)]
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
