"""A tiny real search end to end: resume (the run structure every engine shares is in test_engines.py)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.search import study as search
from tests.conftest import children, tiny_config



def test_running_the_same_command_again_resumes_the_study(tracking: Path) -> None:
    first = search.run(tiny_config(tracking, trials=1))
    second = search.run(tiny_config(tracking, trials=2))
    c = MlflowClient()
    assert second.parent_run_id == first.parent_run_id  # the study's parent run is resumed, not duplicated
    assert [r.info.run_name for r in children(c, first.parent_run_id)] == ["trial-0", "trial-1"]
    third = search.run(tiny_config(tracking, trials=2))  # nothing left to do: no new trial, no new version
    assert c.get_run(first.parent_run_id).data.tags["resumed_with.trials"] == "2"
    assert len(children(c, third.parent_run_id)) == 2
    versions = c.search_model_versions("name='tests-model'")
    assert len({v.run_id for v in versions}) == len(versions)
