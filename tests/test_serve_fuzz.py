"""A real `mlflow models serve` under fuzz and load, short versions of benchmarks/serve_fuzz.py (>= 1,000 requests)
and benchmarks/serve_load.py (8 clients for 2 minutes): every fuzzed request gets a 200 or a 400 with one short
line, never a 500 or a traceback; concurrent clients get only correct 200s."""

from __future__ import annotations


import pytest
import requests

from benchmarks.serve_fuzz import fuzz, tiny_server
from benchmarks.serve_load import load
from tests.conftest import store_uri



@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve-fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store_uri(root))
        try:
            with tiny_server(root) as base:
                yield base
        except Exception:
            print((root / "server.log").read_text()[-3000:])
            raise


def test_seeded_fuzz_gets_only_200s_and_one_line_400s(url: str) -> None:
    statuses, bad = fuzz(url, seed=0, count=300)
    assert not bad, "\n".join(f"{kind}: {wrong}: {body[:200]!r} -> {answer[:300]!r}" for kind, wrong, body, answer in bad[:5])
    assert statuses["200"] >= 30 and statuses["400"] >= 100  # both answers are exercised, not only MLflow's own
    assert sum(statuses.values()) == 300 and set(statuses) <= {"200", "400", "400 from MLflow (bad JSON or envelope)"}
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200


def test_duplicated_image_column_is_a_one_line_400_without_traceback(url: str) -> None:
    from benchmarks.serve_fuzz import b64, image_file
    import numpy as np

    item = b64(image_file(np.random.default_rng(0), "PNG"))
    response = requests.post(f"{url}/invocations", timeout=30,
                             json={"dataframe_split": {"columns": ["image", "image"], "data": [[item, item]]}})
    assert response.status_code == 400 and response.json()["message"] == "request has more than one 'image' column"
    assert "stack_trace" not in response.json()  # before: MLflow's "unexpected error" with a Python traceback


def test_eight_concurrent_clients_get_only_correct_answers(url: str) -> None:
    result = load(url, clients=8, seconds=3)
    assert result["errors"] == [] and result["requests"] >= 8
