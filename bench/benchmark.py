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
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from bench import paths, registry, tracking
from bench.config import SearchConfig, make_config
from bench.data import Dataset, load_dataset
from bench.errors import ConfigError
from bench.metrics import OBJECTIVES, classification_metrics, direction
from bench.space import defaults, list_spaces, load_space

REFERENCE_DIR = "reference"
BUDGET_UNITS = ("trials", "seconds")
# The default set: the null floor, both scratch references, the cheap frozen backbone (its features are computed
# once), and three search strategies on the scratch space (TPE + median pruning, random + no pruning, Hyperband);
# `mlflow run . -e benchmark --env-manager local` took 592 s on 2 shared CPU cores (load ~3). `contenders=all` adds
# the rest: KerasTuner random search, the ResNet50 references and an Optuna search of every backbone space.
DEFAULT_REFERENCES = ("keras_sequential_cnn", "four_block_cnn_sgd", "mobilenet_v2_frozen")
TIMEOUT_ENGINES = {"optuna"}  # engines that stop on SearchConfig.timeout (KerasTuner's search has no time limit)


@dataclass(frozen=True)
class BenchmarkConfig:
    data: str = "synthetic"
    image_size: int = 64
    epochs: int = 4  # per reference fit and per search trial
    budget: float = 4.0  # per search contender: trials, or wall-clock seconds (budget_unit)
    budget_unit: str = "trials"
    contenders: str = "default"  # default | all | a comma list of names
    seed: int = 0
    experiment: str = "hemabench"
    registered_model: str = "bloodcell-classifier"
    register: bool = False
    weights: str = "none"  # backbones: none | imagenet | a weights file, or per backbone: mobilenet_v2=<file>,resnet50=imagenet
    objective: str = "val_f1_macro"
    storage: str = ""
    n_bootstrap: int = 1000
    verbose: int = 0

    def __post_init__(self) -> None:
        rules = [
            ("budget", self.budget > 0 and (self.budget_unit == "seconds" or float(self.budget).is_integer()),
             "a whole number of trials >= 1, or seconds > 0 with budget_unit=seconds"),
            ("budget_unit", self.budget_unit in BUDGET_UNITS, f"one of {', '.join(BUDGET_UNITS)}"),
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("n_bootstrap", self.n_bootstrap >= 100, "an integer >= 100"),
            ("objective", self.objective in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
            ("contenders", bool(self.contenders.strip()), "'default', 'all' or a comma list of contender names"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"The '{name}' parameter must be {rule}. Got {getattr(self, name)!r} instead.")
        chosen = select(self.contenders)  # unknown names fail here, before any data is loaded
        untimed = [c.name for c in chosen if c.kind == "search" and c.config.get("engine") not in TIMEOUT_ENGINES]
        if self.budget_unit == "seconds" and untimed:
            raise ConfigError(f"contenders {', '.join(untimed)} cannot stop on a wall-clock budget (their engine has no "
                              f"timeout): use budget_unit=trials, or choose contenders without them")
        weights_for(self.weights, None)


def weights_for(spec: str, backbone: str | None) -> str:
    """The weights one backbone gets: `spec` itself (none, imagenet, a path) for every backbone, or its entry in
    `name=value,name=value` (a backbone not listed gets none)."""
    if "=" not in spec:
        return spec
    pairs = [part.split("=", 1) for part in spec.split(",") if part.strip()]
    bad = [part for part in pairs if not part[0].strip() or not part[1].strip()]
    if bad:
        raise ConfigError(f"The 'weights' parameter must be none, imagenet, a path, or backbone=value pairs separated by "
                          f"commas. Got {spec!r} instead.")
    return {name.strip(): value.strip() for name, value in pairs}.get(backbone or "", "none")


def make_benchmark_config(**values: Any) -> BenchmarkConfig:
    fields = {f.name: f for f in dataclasses.fields(BenchmarkConfig)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(sorted(fields))}")
    out = {}
    for name, value in values.items():
        if value is None:
            continue
        kind = type(fields[name].default)
        try:
            if kind is bool and isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = value.strip().lower() in ("true", "1", "yes")
            elif kind is int and not isinstance(value, int):
                number = float(value)
                if not number.is_integer():
                    raise ValueError
                value = int(number)
            out[name] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"The '{name}' parameter must be of type {kind.__name__}. Got {value!r} instead.") from None
    return BenchmarkConfig(**out)


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # a key of KINDS
    config: dict[str, Any] = field(default_factory=dict)  # reference: space; search: SearchConfig fields
    default: bool = True  # in the default set (sized to finish in minutes on 2 CPU cores)


def _backbone_spaces() -> list[str]:
    """Spaces of the pretrained-backbone family, found by reading the YAMLs: a new backbone is a new contender."""
    out = []
    for name in list_spaces():
        try:
            if load_space(name).family == "backbone":
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken space fails when it is run, not when contenders are listed
            continue
    return out


def contenders() -> list[Contender]:
    refs = [Contender(p.stem, "reference", {"space": str(p)}, default=p.stem in DEFAULT_REFERENCES)
            for p in sorted((paths.SEARCH_SPACES_DIR / REFERENCE_DIR).glob("*.yaml"))]
    searches = [
        Contender("optuna_tpe_scratch", "search", {"space": "scratch_cnn", "engine": "optuna", "sampler": "tpe", "pruner": "median"}),
        Contender("optuna_random_scratch", "search", {"space": "scratch_cnn", "engine": "optuna", "sampler": "random", "pruner": "none"}),
        Contender("kt_random_scratch", "search", {"space": "scratch_cnn", "engine": "keras-tuner", "tuner": "random"},
                  default=False),
        Contender("kt_hyperband_scratch", "search", {"space": "scratch_cnn", "engine": "keras-tuner", "tuner": "hyperband"}),
    ]
    backbones = [Contender(f"optuna_tpe_{name}", "search", {"space": name, "engine": "optuna", "sampler": "tpe", "pruner": "median"},
                           default=False) for name in _backbone_spaces()]
    return [Contender("null_model", "null"), *refs, *searches, *backbones]


def select(spec: str) -> list[Contender]:
    known = contenders()
    if spec.strip() in ("default", "all"):
        return [c for c in known if spec.strip() == "all" or c.default]
    by_name = {c.name: c for c in known}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(f"unknown contender {missing[0]!r}; available: default, all, {', '.join(by_name)}")
    return [by_name[n] for n in dict.fromkeys(names)]


@dataclass
class Outcome:
    """What a contender hands back: its test probabilities and what the table reports beside them."""

    name: str
    kind: str
    run_id: str
    test_prob: np.ndarray | None = None
    val_value: float = float("nan")  # the objective on validation (the selection rule)
    val_f1: float = float("nan")
    train_seconds: float = float("nan")  # summed fit time of every trial
    wall_seconds: float = float("nan")  # the contender's whole wall-clock time
    trials: int = 0
    n_params: float = float("nan")
    model_uri: str = ""
    model_run_id: str = ""
    search_config: SearchConfig | None = None
    space: str = ""
    weights: str = ""  # what a pretrained backbone started from ("" for the rest)
    trial: int = 0
    study: str = ""
    started: float = 0.0  # epoch seconds, for the search race
    error: str = ""


@dataclass
class Bench:
    """Shared state of one benchmark: the config, the data, MLflow ids."""

    config: BenchmarkConfig
    dataset: Dataset
    client: Any
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
    from sklearn.dummy import DummyClassifier

    ds, k = bench.dataset, len(bench.dataset.class_names)
    model = DummyClassifier(strategy="prior").fit(np.zeros((len(ds.y_train), 1)), ds.y_train)

    def proba(n: int) -> np.ndarray:
        full = np.zeros((n, k))
        full[:, model.classes_] = model.predict_proba(np.zeros((n, 1)))
        return full

    run_id = tracking.start_child(bench.client, bench.experiment_id, bench.parent_run_id, name=contender.name,
                                  tags={"hemabench.role": "contender", "hemabench.contender": contender.name,
                                        "hemabench.kind": contender.kind})
    val = classification_metrics(ds.y_val, proba(len(ds.y_val)), ds.class_names, prefix="val", per_class=False)
    tracking.log_batch(bench.client, run_id, metrics=val, params={"strategy": "prior"})
    bench.client.set_terminated(run_id, "FINISHED")
    return Outcome(contender.name, contender.kind, run_id, test_prob=proba(len(ds.y_test)),
                   val_value=val[bench.config.objective], val_f1=val["val_f1_macro"], train_seconds=0.0, trials=1, n_params=k)


def _run_reference(bench: Bench, contender: Contender) -> Outcome:
    from bench.summary import load_keras_model
    from bench.train import predict_proba
    from bench.trial import TrialRunner

    space = load_space(contender.config["space"])
    cfg = bench.search_config(contender, trials=1)
    tags = {"hemabench.study": cfg.study_name, "hemabench.engine": "reference", "hemabench.space": space.name,
            "hemabench.data": bench.dataset.name, "hemabench.dataset_fingerprint": bench.dataset.fingerprint,
            "hemabench.role": "contender", "hemabench.contender": contender.name, "hemabench.kind": contender.kind}
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
    from bench import search

    cfg = bench.search_config(contender)
    c = bench.client
    # bench.search resumes the latest parent run of its study: create it here, as a child of the benchmark run.
    parent = tracking.start_child(c, bench.experiment_id, bench.parent_run_id, name=contender.name,
                                  tags={"hemabench.study": cfg.study_name, "hemabench.role": "parent",
                                        "hemabench.contender": contender.name, "hemabench.kind": contender.kind})
    started = time.time()
    try:
        with _own_parent_run():
            result = search.run(cfg)
    except BaseException:
        if c.get_run(parent).info.status == "RUNNING":  # failed before bench.search took the run over
            c.set_terminated(parent, "FAILED")
        raise
    space = load_space(cfg.space)
    out = Outcome(contender.name, contender.kind, parent, search_config=cfg, study=cfg.study_name, started=started,
                  space=space.name, weights=_weights_label(space.family, cfg))
    trials = c.search_runs([bench.experiment_id], f"tags.`hemabench.study` = '{cfg.study_name}' and "
                           f"tags.`hemabench.role` = 'trial'", max_results=50000)
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
    out.model_uri, out.model_run_id, out.trial = best.data.tags.get("hemabench.model_uri", ""), best.info.run_id, result.best["trial"]
    return out


def _weights_label(family: str, cfg: SearchConfig) -> str:
    if family != "backbone":
        return ""
    name = Path(cfg.weights).name
    return cfg.weights if cfg.weights in ("none", "imagenet") else f"file {name[:20]}…" if len(name) > 20 else f"file {name}"


KINDS: dict[str, Callable[[Bench, Contender], Outcome]] = {"null": _run_null, "reference": _run_reference, "search": _run_search}


def run(config: BenchmarkConfig) -> pd.DataFrame:
    from bench.benchmark_report import markdown, race_table, table_row

    started = time.perf_counter()
    chosen = select(config.contenders)
    dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)
    print(dataset.summary, flush=True)
    c = tracking.client()
    experiment_id = tracking.experiment_id_for(c, config.experiment)
    parent = tracking.start_parent(c, experiment_id, name="benchmark", resume_run_id=None, tags={
        "hemabench.role": "benchmark", "hemabench.data": dataset.name, "hemabench.dataset_fingerprint": dataset.fingerprint,
        "hemabench.git_commit": tracking.git_commit(),
        "mlflow.note.content": f"Benchmark of {len(chosen)} contenders on {dataset.name} at {config.image_size}px: "
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
                from bench.trial import one_line

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
    from bench.benchmark_report import markdown, write_report

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
    maximize = direction(bench.config.objective) == "maximize"
    winner = sorted(candidates, key=lambda o: o.val_value, reverse=maximize)[0]
    ds = bench.dataset
    test_metrics = classification_metrics(ds.y_test, winner.test_prob, ds.class_names, prefix="test")
    version = registry.register(bench.client, config=winner.search_config, run_id=winner.model_run_id,
                                model_uri=winner.model_uri, dataset=ds, test_metrics=test_metrics, trial=winner.trial,
                                space=winner.space)
    tracking.log_batch(bench.client, bench.parent_run_id, tags={"hemabench.winner": winner.name,
                                                                "hemabench.winner_version": version.version})
    print(f"winner on validation: {winner.name} ({bench.config.objective}={winner.val_value:.4f}); registered "
          f"{bench.config.registered_model} v{version.version} as {version.alias} ({version.reason})", flush=True)
