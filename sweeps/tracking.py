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
- The run dir is the record and the MLflow run its copy (fvq/core/track.py): `sync_run` compares the two
  (metric rows by key and step, params, tags, artifacts, end status) and sends exactly what MLflow lacks;
  ``python sweeps/run.py grid=... sync=true``, and any launch of the grid, does it for every point. A
  launch whose parent run could not be closed (server away) records that in the runs dir; `sync_launches`
  closes it later.
- HTTP retries are capped so that a vanished server costs seconds, not minutes; the buffered tracker in
  fvq/core/track.py keeps the metrics meanwhile.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

# Before mlflow reads them: fail fast, the BufferedTracker retries at its own pace.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from fvq.core.errors import SetupError, one_line  # noqa: E402
from fvq.core.track import Held, behind, hold, read_jsonl, reconcile, record  # noqa: E402

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
    if db is not None:
        check_sqlite(db)
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


def check_sqlite(db: str) -> None:
    """An existing sqlite store that is cut short or not a database is refused in one line; MLflow would
    fail on it mid-launch with a long traceback. The checks are one read of the schema and the header's page
    count against the file's size, made under the read's shared lock (so a writer's commit is never seen
    halfway): cheap, unlike ``PRAGMA quick_check``, which would hold that lock for a full scan."""
    import sqlite3

    if not os.path.isfile(db) or os.path.getsize(db) == 0:
        return  # no store yet (or sqlite's empty database): MLflow creates it
    try:
        # read-write, as MLflow opens it: a hot journal left by a killed writer is rolled back, not refused
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN")
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            damage = _sqlite_damage(db)
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        damage = _sqlite_damage(db) or f"unreadable as an MLflow store ({e})"
    if damage:
        raise TrackingError(f"{db} is {damage}: restore it from a backup, move it aside, or pass tracking_uri=")


def _sqlite_damage(db: str) -> str:
    """What the file's 100-byte header says is wrong with it ("" when nothing)."""
    with open(db, "rb") as f:
        head, size = f.read(100), os.fstat(f.fileno()).st_size
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "not an sqlite database"
    page = int.from_bytes(head[16:18], "big") or 65536  # 1 encodes 65,536
    pages = int.from_bytes(head[28:32], "big")
    # the header's page count is valid only while its change counter matches (sqlite file format, 1.3.7)
    if head[24:28] == head[92:96] and size < page * pages:
        return f"truncated ({size:,} of {page * pages:,} bytes)"
    return ""


def ensure_experiment(uri: str, name: str) -> str:
    """Create the experiment if missing (launcher only); return its id. A sqlite store keeps artifacts
    beside its file; an experiment whose stored location is elsewhere (a moved project) is refused."""
    check_experiment_name(name)
    db = sqlite_path(uri)
    art = "file://" + os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts", name) if db else None
    with store_lock(db):
        return _ensure_experiment(MlflowClient(uri), uri, name, art)


@contextlib.contextmanager
def store_lock(db: str | None):
    """Two launches on a fresh sqlite store would both create its schema and one would fail (MLflow's
    migrations: ``duplicate column name``; Optuna's tables): the first to take ``<db>.lock`` creates the
    store, the other waits. Also held while a search recovers its study's unfinished trials."""
    if db is None:
        yield
        return
    with open(os.path.abspath(db) + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_experiment(client, uri: str, name: str, art: str | None) -> str:
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
    exp_id = ensure_experiment(uri, experiment)  # first: a fresh store is created under its lock
    run = MlflowClient(uri).create_run(exp_id, run_name=name, tags={"launch": "1", **tags})
    return run.info.run_id


PENDING_LAUNCHES = "launches_to_end.jsonl"  # in the runs dir: parent runs `sync_launches` has to close


def end_launch(uri: str, run_id: str, status: str = "FINISHED", runs_dir: str = "", **tags: str) -> None:
    """Close the launch's parent run (a Slurm launch ends when submitted: its runs go on under it). With the
    server away, the end is recorded in ``runs_dir`` for `sync_launches` and a one-line TrackingError says so."""
    try:
        client = MlflowClient(uri)
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        client.set_terminated(run_id, status=status)
    except Exception as e:
        if not runs_dir:
            raise
        with open(os.path.join(runs_dir, PENDING_LAUNCHES), "a") as f:
            f.write(json.dumps({"tracking_uri": uri, "run_id": run_id, "status": status, "tags": tags}) + "\n")
        raise TrackingError(f"could not end the launch's MLflow run {run_id} ({type(e).__name__}: "
                            f"{one_line(e)[:120]}); it is ended {status} by the next `sync=true`") from None


def sync_launches(runs_dir: str) -> list[str]:
    """End the parent runs that `end_launch` could not (recorded in the runs dir); one line per run ended.
    A one-line TrackingError while the server is still away; what is left stays recorded for the next try."""
    path = os.path.join(runs_dir, PENDING_LAUNCHES)
    todo, lines = read_jsonl(path), []
    try:
        while todo:
            rec = todo[0]
            try:
                end_launch(rec["tracking_uri"], rec["run_id"], rec["status"], **rec.get("tags", {}))
            except Exception as e:
                raise TrackingError(f"launch run {rec['run_id']}: not ended ({type(e).__name__}: "
                                    f"{one_line(e)[:120]})") from None
            lines.append(f"launch run {rec['run_id']}: ended {rec['status']}")
            todo.pop(0)
    finally:
        if todo:
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in todo)
            os.replace(path + ".tmp", path)
        elif os.path.exists(path):
            os.unlink(path)
    return lines


def open_run(uri: str, experiment: str, run_dir: str, run_name: str, tags: dict[str, str]) -> str:
    """Return the MLflow run id bound to ``run_dir``, creating the run the first time."""
    os.makedirs(run_dir, exist_ok=True)
    record(run_dir, status="")  # running (again): a sync meanwhile must not end it with an old status
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

    def held(self) -> Held:
        """What the MLflow run holds, read from the server (never assumed): every metric's history, params,
        tags, artifact sizes (None if the artifact store cannot list them), status."""
        run = self.client.get_run(self.run_id)
        rows: Counter = Counter()
        for key in run.data.metrics:  # the latest value of each key: its history holds every row
            rows.update((key, m.step) for m in self.client.get_metric_history(self.run_id, key))
        artifacts: dict[str, int] | None = {}
        try:
            dirs = [None]
            while dirs:
                for f in self.client.list_artifacts(self.run_id, dirs.pop()):
                    if f.is_dir:
                        dirs.append(f.path)
                    else:
                        artifacts[f.path] = f.file_size
        except Exception:  # a failing artifact store: every recorded artifact is sent again (uploads overwrite)
            artifacts = None
        return Held(dict(rows), dict(run.data.params), dict(run.data.tags), artifacts, run.info.status)


def sync_run(run_dir: str) -> str:
    """Reconcile a run dir's MLflow run with it (fvq/core/track.py): compare metric rows, params, tags,
    artifacts and end status, send exactly what MLflow lacks. A one-line account, "" when the comparison
    found nothing missing; " not sent" in it when part could not be sent (kept for the next try)."""
    from fvq.core.rundir import read_json

    ml = read_json(os.path.join(run_dir, "mlflow.json"))
    if not ml:
        return ""
    lock = hold(run_dir)
    if lock is None:  # its live job keeps MLflow in step (and reconciles at its end)
        return f"{os.path.basename(run_dir)}: being tracked by its running job"
    with lock:
        account = reconcile(MLflowSink(ml["tracking_uri"], ml["run_id"]), run_dir)
    return f"{os.path.basename(run_dir)}: {account.line()}" if account.line() else ""


def sync_one(run_dir: str) -> str:
    """`sync_run`, its failure as the line (the run dir keeps its record for the next try)."""
    try:
        return sync_run(run_dir)
    except Exception as e:  # still unreachable
        return f"{os.path.basename(run_dir)}: not sent ({type(e).__name__}: {one_line(e)[:160]})"


def sync_ended(plans: list) -> None:
    """Before a launch: reconcile the planned runs that ended with records their MLflow run may lack (an
    outage past their end, a job killed between its end and its upload)."""
    for p in plans:
        if p.state in ("finished", "pruned", "failed") and behind(p.run_dir):
            print(f"[fvq] {sync_one(p.run_dir) or os.path.basename(p.run_dir) + ': in step with MLflow'}", flush=True)


def behind_note(run_dirs: list[str]) -> str:
    """For a launch summary: one line on the runs whose MLflow copy lacks records (a failed upload, the
    server away at their end), "" when none."""
    what = {os.path.basename(d): w for d in run_dirs if (w := behind(d))}
    if not what:
        return ""
    first = next(iter(what.items()))
    return (f"{len(what)} run(s) not complete in MLflow yet ({first[0]}: {first[1]}"
            + (", ..." if len(what) > 1 else "") + "); their run dirs keep it: `sync=true` sends it")
