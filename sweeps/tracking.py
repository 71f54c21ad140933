"""MLflow side of the tracking hook: `MLflowSink` implements `fvq.core.track.Sink` for one MLflow run.

- The experiment is created once by the launcher (`ensure_experiment`), never raced by jobs, as a model
  training experiment (MLflow 3 otherwise may open it on its GenAI overview instead of the runs table).
- Each launch is one parent run (`open_launch`, named after the command) and the runs it creates are
  nested under it; each run is named by its grid and point in the paper's terms (``patch_size vqbridge
  K=16k p=16``), its signature kept as the ``signature`` tag.
- A run's MLflow run id is stored in its run dir (``mlflow.json``), so a requeued or resumed job continues
  the same MLflow run instead of opening a new one.
- Local default: a sqlite file (``sqlite:///<repo>/mlflow.db``) with artifacts beside it
  (``<dir of the db>/mlartifacts/<experiment>``); on a cluster: a tracking server URI (``make mlflow-ui`` /
  ``mlflow server`` bound to 127.0.0.1). A store whose experiment keeps its artifacts elsewhere (the
  project was moved or copied) is refused, never written into the old tree.
- Unsent metrics and unfinished end states left in a run dir (fvq/core/track.py) are sent by `sync_run`:
  ``python sweeps/run.py grid=... sync=true``, and any launch of the grid, does it for every point.
- HTTP retries are capped so that a vanished server costs seconds, not minutes; the buffered tracker in
  fvq/core/track.py keeps the metrics meanwhile.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any

# Before mlflow reads them: fail fast, the BufferedTracker retries at its own pace.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from fvq.core.errors import SetupError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_URI = f"sqlite:///{os.path.join(REPO, 'mlflow.db')}"
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql")
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# The UI's "experiment type": runs table first, not the GenAI traces overview.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


class TrackingError(SetupError):
    """Tracking store unreachable or unusable; one-line message."""


def sqlite_path(uri: str) -> str | None:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None


def check_experiment_name(name: str) -> None:
    """An experiment name becomes a directory under the artifact root: no separators, no ``..``."""
    if not EXPERIMENT_NAME.fullmatch(name) or ".." in name:
        raise TrackingError(f"experiment={name!r}: use letters, digits, '_', '.', '-' (no '/' or '..')")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before anything is submitted: unknown URI scheme, a sqlite file whose directory does not exist
    (MLflow would create it silently), or an HTTP tracking server that does not answer /health."""
    scheme = uri.split(":", 1)[0] if "://" in uri else ""
    if scheme.split("+")[0] not in SCHEMES:
        raise TrackingError(f"tracking_uri={uri!r}: expected one of {', '.join(s + '://' for s in SCHEMES)}")
    db = sqlite_path(uri)
    if scheme == "sqlite" and (db is None or not os.path.isdir(os.path.dirname(db) or ".")):
        raise TrackingError(f"tracking_uri={uri!r}: the directory of the sqlite file does not exist "
                            f"(sqlite:///relative/or/absolute/path/mlflow.db)")
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
    """Create the experiment if missing (launcher only); return its id. A sqlite store keeps artifacts
    beside its file; an experiment whose stored location is elsewhere (a moved project) is refused."""
    check_experiment_name(name)
    db = sqlite_path(uri)
    art = "file://" + os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts", name) if db else None
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if art and exp.artifact_location.startswith("file://") and exp.artifact_location != art:
            raise TrackingError(f"experiment {name!r} in {uri} keeps its artifacts in {exp.artifact_location}, "
                                f"not beside this store ({art}): the project was moved or copied; use a new "
                                f"experiment= or tracking_uri=")
        if exp.tags.get(KIND_TAG) != KIND:
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
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
    """`fvq.core.track.Sink` over MlflowClient.log_batch (at most 1,000 metrics / 100 params per call)."""

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


def sync_run(run_dir: str) -> str:
    """Send what a run dir holds that its MLflow run has not taken (fvq/core/track.py: unsent metrics, an end
    status); a one-line account, "" when there was nothing to send."""
    from fvq.core.rundir import read_json
    from fvq.core.track import UNFINISHED, UNSENT, read_jsonl

    ml = read_json(os.path.join(run_dir, "mlflow.json"))
    unsent, marker = os.path.join(run_dir, UNSENT), os.path.join(run_dir, UNFINISHED)
    if not ml or not (os.path.exists(unsent) or os.path.exists(marker)):
        return ""
    sink = MLflowSink(ml["tracking_uri"], ml["run_id"])
    rows = [(r["key"], float(r["value"]), int(r["step"])) for r in read_jsonl(unsent)]
    for i in range(0, len(rows), 1000):
        sink.log_metrics(rows[i:i + 1000])
    if os.path.exists(unsent):
        os.unlink(unsent)
    status = read_json(marker).get("status")
    if status:
        sink.finish(status)
        os.unlink(marker)
    return f"{os.path.basename(run_dir)}: {len(rows)} metrics sent" + (f", ended {status}" if status else "")
