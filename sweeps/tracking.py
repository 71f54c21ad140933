"""MLflow side of the tracking hook: `MLflowSink` implements `fvq.track.Sink` for one MLflow run.

- The experiment is created once by the launcher (`ensure_experiment`), never raced by jobs, as a model
  training experiment (MLflow 3 otherwise may open it on its GenAI overview instead of the runs table).
- Each launch is one parent run (`open_launch`, named after the command) and the runs it creates are
  nested under it; each run is named by its grid and point in the paper's terms (``patch_size vqbridge
  K=16k p=16``), its signature kept as the ``signature`` tag.
- A run's MLflow run id is stored in its run dir (``mlflow.json``), so a requeued or resumed job continues
  the same MLflow run instead of opening a new one.
- Local default: a sqlite file (``sqlite:///<repo>/mlflow.db``) with artifacts under ``<repo>/mlartifacts``;
  on a cluster: a tracking server URI (``make mlflow-ui`` / ``mlflow server`` bound to 127.0.0.1).
- HTTP retries are capped so that a vanished server costs seconds, not minutes; the buffered tracker in
  fvq/track.py keeps the metrics meanwhile.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

# Before mlflow reads them: fail fast, the BufferedTracker retries at its own pace.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from fvq.errors import SetupError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_URI = f"sqlite:///{os.path.join(REPO, 'mlflow.db')}"
DEFAULT_ARTIFACTS = os.path.join(REPO, "mlartifacts")
# The UI's "experiment type": runs table first, not the GenAI traces overview.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


class TrackingError(SetupError):
    """Tracking store unreachable or unusable; one-line message."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before anything is submitted when an HTTP tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status == 200:
                return
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise TrackingError(f"no MLflow tracking server reachable at {uri} ({getattr(e, 'reason', e)}); "
                            f"start one with `make mlflow-server` or pass tracking_uri=") from None
    raise TrackingError(f"MLflow tracking server at {uri} answered /health with an error")


def ensure_experiment(uri: str, name: str) -> str:
    """Create the experiment if missing (launcher only); return its id."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(KIND_TAG) != KIND:
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    art = None if uri.startswith("http") else "file://" + os.path.join(DEFAULT_ARTIFACTS, name)
    try:
        return client.create_experiment(name, artifact_location=art, tags={KIND_TAG: KIND})
    except Exception:  # created concurrently by another launcher
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def open_launch(uri: str, experiment: str, name: str, tags: dict[str, str]) -> str:
    """The parent run of one launch (``grid=patch_size scale=cpu``); its runs are nested under it."""
    client = MlflowClient(uri)
    run = client.create_run(ensure_experiment(uri, experiment), run_name=name, tags={"launch": "1", **tags})
    return run.info.run_id


def end_launch(uri: str, run_id: str, status: str = "FINISHED", **tags: str) -> None:
    """Close the launch's parent run (a Slurm launch ends when submitted: its runs go on under it)."""
    client = MlflowClient(uri)
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.set_terminated(run_id, status=status)


def open_run(uri: str, experiment: str, run_dir: str, run_name: str, tags: dict[str, str]) -> str:
    """Return the MLflow run id bound to ``run_dir``, creating the run the first time."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "mlflow.json")
    client = MlflowClient(uri)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("tracking_uri") == uri:
            client.update_run(stored["run_id"], status="RUNNING")
            client.log_batch(stored["run_id"], tags=[RunTag(k, str(v)) for k, v in tags.items()])
            return stored["run_id"]
    exp_id = ensure_experiment(uri, experiment)
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"tracking_uri": uri, "experiment": experiment, "run_id": run.info.run_id}, f)
    os.replace(tmp, path)
    return run.info.run_id


class MLflowSink:
    """`fvq.track.Sink` over MlflowClient.log_batch (at most 1,000 metrics / 100 params per call)."""

    def __init__(self, uri: str, run_id: str):
        self.client = MlflowClient(uri)
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, s) for k, v, s in rows])

    def log_artifact(self, path: str, subdir: str = "") -> None:
        if os.path.exists(path):
            self.client.log_artifact(self.run_id, path, subdir or None)

    def set_tags(self, tags: dict[str, str]) -> None:
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
