"""`python -m bench ui`: the MLflow UI, lean, with a link that opens an experiment as a leaderboard.

The server: `mlflow ui` on 127.0.0.1 with one worker, background jobs and telemetry off (about 0.5 GB of memory
instead of about 2.6 GB for the defaults).

The link: out of the box the runs table hides metric and parameter columns, nests trials under their parent and
opens GenAI experiments in a traces view. The MLflow UI (3.17) restores a *shared view* named by the URL parameter
`viewStateShareKey=<key>` from the experiment tag `mlflow.sharedViewState.<key>` (its own Share button writes the
same tag): the search facets (filter, sort key and direction) and the UI state (selected columns). The URL's own
`searchFilter`/`orderByKey`/`orderByAsc` parameters can sort and filter but cannot choose columns, and the UI ignores
the shared view when they are present, so the link carries only the key. The tag `mlflow.experimentKind` set to
`custom_model_development` makes the UI open the runs view rather than the GenAI one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mlflow.tracking import MlflowClient

from bench.reporting import leaderboard
from bench import paths, tracking
from bench.errors import BenchError
from bench.metrics import direction
from bench.tracking import tags as tag

SHARE_TAG_PREFIX = "mlflow.sharedViewState."
SHARE_URL_PARAM = "viewStateShareKey"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# Environment of the server process: no background job runners, no usage reporting.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
TAG_COLUMNS = (tag.STUDY, tag.ENGINE, tag.SPACE, tag.STATE)
MAX_PARAM_COLUMNS = 40
_TAG_VALUE_LIMIT = 5000  # MLflow's limit for an experiment tag value


def column_key(kind: str, name: str) -> str:
    """The UI's canonical column key: ``metrics.`val_f1_macro` ``."""
    return f"{kind}.`{name}`"


def leaderboard_view(runs: Any, *, objective: str, study: str | None = None) -> dict[str, Any]:
    """The shared-view state: trial runs only (flat, not nested), sorted by the objective, key columns shown."""
    metric_names = {c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}
    metrics = [m for m in dict.fromkeys((objective, *leaderboard.KEY_METRICS)) if m in metric_names or m == objective]
    params = sorted(c.removeprefix("params.") for c in runs.columns if c.startswith("params."))
    params = sorted((p for p in params if p not in ("epochs", "image_size")), key=lambda p: (p.startswith("aug_"), p))
    columns = ([column_key("attributes", "Description")]
               + [column_key("metrics", m) for m in metrics]
               + [column_key("tags", t) for t in TAG_COLUMNS]
               + [column_key("params", p) for p in params[:MAX_PARAM_COLUMNS]])
    return {
        "searchFilter": leaderboard.study_filter(study),
        "orderByKey": column_key("metrics", objective),
        "orderByAsc": direction(objective).ascending,
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": {column_key("attributes", "Description"): 260},  # the default width hides the metrics
    }


def encode_view(state: dict[str, Any]) -> str:
    """The UI's compressed tag format: `deflate;` + base64 of zlib-deflated JSON."""
    return "deflate;" + base64.b64encode(zlib.compress(json.dumps(state, separators=(",", ":")).encode())).decode()


def install_view(c: MlflowClient, experiment_id: str, state: dict[str, Any]) -> str:
    """Store the view as an experiment tag; returns its key (a hash of the state, so re-running reuses it)."""
    value = encode_view(state)
    if len(value) > _TAG_VALUE_LIMIT:
        raise BenchError(f"leaderboard view for experiment {experiment_id} is {len(value)} characters encoded; "
                         f"MLflow's limit is {_TAG_VALUE_LIMIT}")
    key = hashlib.sha256(value.encode()).hexdigest()[:32]
    c.set_experiment_tag(experiment_id, f"{SHARE_TAG_PREFIX}{key}", value)
    c.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    return key


def leaderboard_url(base: str, experiment_id: str, key: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?{SHARE_URL_PARAM}={key}&workflowType=machine_learning"


def prepare(experiment: str, *, study: str | None = None, objective: str | None = None) -> tuple[str, str]:
    """Install the leaderboard view on `experiment`; returns (experiment id, view key)."""
    c = tracking.client()
    experiment_id = leaderboard.experiment_ids_for(experiment)[0]
    runs = leaderboard.trial_runs([experiment_id], study=study)
    objective = objective or leaderboard.usual_objective(runs)
    return experiment_id, install_view(c, experiment_id, leaderboard_view(runs, objective=objective, study=study))


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BenchError(f"port {port} on {host} is not free ({exc.strerror}); pass --port") from None


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and its worker (they share a process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _last_line(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return f": {lines[-1][:300]}" if lines else ""


def start_server(backend_store_uri: str, *, port: int, host: str = "127.0.0.1", timeout: float = 60.0,
                 log_path: Path | None = None) -> Server:
    """Start `mlflow ui` (its output to `log_path`, or nowhere) and wait until `/health` answers; one-line error,
    with the log's last line, if it exits or stays silent."""
    _check_port(host, port)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_store_uri, "--host", host,
               "--port", str(port), "--workers", "1"]
    with open(log_path, "w") if log_path else open(os.devnull, "w") as log:
        process = subprocess.Popen(command, env={**os.environ, **SERVER_ENV}, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(process, f"http://{host}:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"mlflow ui exited with status {process.returncode} before answering on "
                             f"{server.base_url}{_last_line(log_path)}")
        try:
            if requests.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.25)
    server.stop()
    raise BenchError(f"mlflow ui did not answer on {server.base_url} within {timeout:.0f}s{_last_line(log_path)}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(experiment: str, *, port: int = 5000, backend_store_uri: str | None = None, study: str | None = None,
         objective: str | None = None) -> int:
    """`python -m bench ui`: install the view, start the server, print the link, serve until Ctrl-C."""
    if backend_store_uri:
        os.environ["MLFLOW_TRACKING_URI"] = backend_store_uri
    uri = paths.tracking_uri()
    experiment_id, key = prepare(experiment, study=study, objective=objective)
    # The server runs in its own process group; a SIGTERM to us must still take it down.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    # The server's access log would bury the link: it goes to a file, named in the message.
    log_path = Path(tempfile.gettempdir()) / f"hemabench-mlflow-ui-{port}.log"
    with start_server(uri, port=port, log_path=log_path) as server:
        print(f"MLflow UI up in {time.perf_counter() - started:.1f}s ({uri}, log {log_path}); leaderboard of "
              f"experiment '{experiment}'{f' study {study}' if study else ''}:\n"
              f"  {leaderboard_url(server.base_url, experiment_id, key)}\nCtrl-C stops it.", flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
    return 0
