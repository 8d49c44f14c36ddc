"""Every `hemabench.*` run, version and experiment tag, in one place; MLflow's own tags are named here too.

Each constant is `hemabench.<its name in lower case>`.
"""

from __future__ import annotations

PREFIX = "hemabench."


def _named(*names: str) -> tuple[str, ...]:
    return tuple(PREFIX + name for name in names)


# Runs: what a run is (ROLE: parent | invocation | trial | refit | refit_full | bag | ensemble | benchmark | contender), and its study, engine, space and data.
ROLE, STUDY, ENGINE, SPACE, DATA, OBJECTIVE = _named("role", "study", "engine", "space", "data", "objective")
DATASET_FINGERPRINT, SPLITS_FINGERPRINT, CLASSES, GIT_COMMIT = _named(
    "dataset_fingerprint", "splits_fingerprint", "classes", "git_commit")
# Trials: number, state (COMPLETE | PRUNED | FAIL | RUNNING), why they ended, their logged model.
TRIAL, STATE, REASON, TRACEBACK, MODEL_URI = _named("trial", "state", "reason", "traceback", "model_uri")
# Parent runs: the study's best trial, and diagnostics that failed without failing the study.
BEST_RUN_ID, INSIGHT_ERROR = _named("best_run_id", "insight_error")
# Parent and invocation runs: the process driving the run (JSON: host, boot, pid, start), so that the next process
# on the study can end it KILLED (with REASON) when that process died; an invocation's study parent run.
PROCESS, STUDY_PARENT = _named("process", "study_parent")
# Parent, trial, refit and benchmark runs: the machine its numbers were measured on (bench.machine.describe: CPU model,
# CPUs, vector units, memory, GPUs), since machines drawn for one project differ ~2x in speed.
MACHINE = PREFIX + "machine"
# Benchmark runs.
KIND, CONTENDER, WINNER, WINNER_VERSION = _named("kind", "contender", "winner", "winner_version")
# Model versions: the alias given at registration, why (REASON), on which split it was chosen, what replaced a champion.
ALIAS, CHOSEN_ON, SUPERSEDED_BY = _named("alias", "chosen_on", "superseded_by")

# Ensemble runs (bench.search.ensemble): their members (JSON: trial, run id, weight), test-time augmentation, and
# whether the fit was adopted (beat the best single trial on validation); on the parent, which fit was registered.
MEMBERS, TTA, ADOPTED, ENSEMBLE_RUN_ID, CHAMPION_FIT = _named("members", "tta", "adopted", "ensemble_run_id",
                                                              "champion_fit")
# Refit runs (bench.search.finish): the best configuration trained again at full budget (all of train, every epoch);
# REFIT_OF is the run id of the trial it refits; on the parent, the refit run, whichever fit became champion.
REFIT_OF, REFIT_RUN_ID = _named("refit_of", "refit_run_id")
# refit_full runs (bench.search.refit_full): the champion trained again on train + validation; REFIT_FULL_OF is the
# run of the fit it retrains (trial, refit or ensemble run); on the parent, the refit_full run.
REFIT_FULL_OF, REFIT_FULL_RUN_ID = _named("refit_full_of", "refit_full_run_id")
# Bag runs (bench.search.bag): the best trial's configuration bagged over grouped folds of train + validation; BAG_OF
# is that trial's run; on the parent, the bag run.
BAG_OF, BAG_RUN_ID = _named("bag_of", "bag_run_id")

# Values of ROLE. An invocation is an `mlflow run` of a study that already had its parent run; an ensemble run holds
# the study's final fit (an ensemble of its best trials and/or test-time augmentation).
PARENT, TRIAL_ROLE, CONTENDER_ROLE, BENCHMARK_ROLE = "parent", "trial", "contender", "benchmark"
INVOCATION_ROLE, ENSEMBLE_ROLE, REFIT_ROLE, REFIT_FULL_ROLE, BAG_ROLE = "invocation", "ensemble", "refit", "refit_full", "bag"

# MLflow's own.
PARENT_RUN_ID, NOTE = "mlflow.parentRunId", "mlflow.note.content"


def run_filter(tags: dict[str, str]) -> str:
    """An MLflow search filter matching every `{tag: value}` given."""
    return " and ".join(f"tags.`{tag}` = '{value.replace(chr(39), chr(92) + chr(39))}'" for tag, value in tags.items())
