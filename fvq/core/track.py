"""The tracking hook: what `fvq.train` logs, and how, without importing mlflow.

`fvq.train.train(cfg, run_dir, tracker=...)` receives any object with the :class:`Sink` methods
(sweeps/tracking.py adapts MLflow to it). Training never waits on the network:

- every metric is appended at once to ``run_dir/metrics.jsonl``, and every param, tag, artifact and the end
  status to ``run_dir/tracked.json``: the run dir is the record, always complete (a generator run keeps its
  curve a row per step and records the rest the same way: `metric_pairs` reads both shapes);
- a background thread ships batches to the sink every ``flush_s`` seconds (MLflow's ``log_batch``
  costs ~0.14 s per 1,000 metrics through a server, ``log_metric`` ~49 ms per call: batching is what keeps
  tracking under 1% of a step); a failed batch stays buffered and is retried at the next flush;
- one mechanism, `reconcile`, makes the sink's run hold exactly that record: it compares what the sink
  holds (metric rows by key and step, params, tags, artifact sizes, status) with the run dir and sends only
  what is missing. Each start reconciles before its first batch (rows held in memory at a kill -9 are
  re-derived from metrics.jsonl; steps the sink holds are never sent again, so a resume from an older
  checkpoint duplicates nothing) and at close; ``sweeps/run.py ... sync=true`` and relaunches reconcile
  ended runs. A complete reconcile stamps ``synced.json``; `pending` is True once the record changes;
- the live tracker holds ``track.lock`` (flock, released at any death), so a sync never races it;
- on resume from a checkpoint at step S, ``metrics.jsonl`` is repaired: a torn last line (kill -9 mid
  write) and the rows after S (logged again by the resumed run) are dropped, so every (key, step) is once.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from fvq.core.rundir import read_json, write_json


@dataclass(frozen=True)
class Held:
    """What a sink's run holds: rows per metric (key, step), params, tags, artifact sizes by path (None when
    they could not be listed), status."""
    metrics: dict[tuple[str, int], int]
    params: dict[str, str]
    tags: dict[str, str]
    artifacts: dict[str, int] | None
    status: str


class Sink(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None: ...  # (key, value, step)
    def log_artifact(self, path: str, subdir: str = "") -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str) -> None: ...  # FINISHED | FAILED | KILLED
    def held(self) -> Held | None: ...  # None: no remote copy to reconcile


class NullSink:
    """No remote tracking: the run dir's files are the record."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None: ...
    def log_artifact(self, path: str, subdir: str = "") -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str) -> None: ...
    def held(self) -> Held | None: ...


class NullTracker:
    """The tracker of data-parallel ranks other than 0: no file, no thread, no sink (rank 0 records the run)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str, subdir: str = "") -> None: ...
    def close(self, status: str, retries: int = 3) -> None: ...
    def resume(self, step: int) -> None: ...


METRICS, TRACKED, SYNCED, LOCK = "metrics.jsonl", "tracked.json", "synced.json", "track.lock"
# Left by trackers before `reconcile`: their rows are in metrics.jsonl too; read for the end status, then removed.
UNSENT, UNFINISHED = "unsent_metrics.jsonl", "unfinished.json"
ENDED = ("FINISHED", "FAILED", "KILLED")


def truncate_jsonl(path: str, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (a run resuming there logs the later ones again), dropping a torn
    last line; rewritten atomically."""
    rows = [r for r in read_jsonl(path) if int(r.get("step", -1)) <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path + ".tmp", path)


def read_jsonl(path: str) -> list[dict]:
    """The rows of a jsonl file; a torn or garbled line (a write cut by kill -9) is skipped, not fatal."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def metric_pairs(rows: list[dict]):
    """((key, step), value) of a metrics.jsonl: a row per metric (``key``, ``value``, ``step``: the tracker's)
    or a row per step (``step`` and one column per metric: the generator's curve, fvq/generation/ar.py)."""
    for r in rows:
        if {"key", "step", "value"} <= r.keys():
            yield (r["key"], int(r["step"])), float(r["value"])
        elif "step" in r:
            yield from (((k, int(r["step"])), float(v)) for k, v in r.items()
                        if k not in ("step", "time") and isinstance(v, (int, float)))


def record(run_dir: str, params: dict | None = None, tags: dict | None = None, artifact: tuple[str, str] | None = None,
           status: str | None = None) -> None:
    """Add to ``tracked.json`` what the run asked its sink to hold besides metrics (before it is sent, so a
    failed send is still on record). ``status=""`` clears the end status: the run is running again."""
    path = os.path.join(run_dir, TRACKED)
    rec = read_json(path)
    rec.setdefault("params", {}).update({k: str(v) for k, v in (params or {}).items()})
    rec.setdefault("tags", {}).update({k: str(v) for k, v in (tags or {}).items()})
    if artifact:  # {path in the sink: [local path, relative to the run dir when inside it, subdir]}
        local, subdir = artifact
        rel = os.path.relpath(os.path.abspath(local), os.path.abspath(run_dir))
        local = local if rel.startswith("..") else rel
        rec.setdefault("artifacts", {})["/".join(filter(None, [subdir, os.path.basename(local)]))] = [local, subdir]
    if status is not None:
        rec["status"] = status
    write_json(path, rec)


def fingerprint(run_dir: str) -> list:
    """Sizes and times of the record's files: a change means the sink's copy must be compared again."""
    out = []
    for name in (METRICS, TRACKED):
        try:
            st = os.stat(os.path.join(run_dir, name))
            out.append([name, st.st_size, st.st_mtime_ns])
        except OSError:
            pass
    return out


def pending(run_dir: str) -> bool:
    """True when a run dir may hold records its sink's run lacks: no comparison since the record last changed
    found the sink complete (a kill -9, a sink down past the end, a failed upload)."""
    if any(os.path.exists(os.path.join(run_dir, n)) for n in (UNSENT, UNFINISHED)):
        return True
    fp = fingerprint(run_dir)
    return bool(fp) and read_json(os.path.join(run_dir, SYNCED)).get("fingerprint") != fp


def behind(run_dir: str) -> str:
    """What a pending run dir's sink lacks, as its last comparison saw it; "" when nothing is pending."""
    if not pending(run_dir):
        return ""
    return read_json(os.path.join(run_dir, SYNCED)).get("behind") or "records not compared with MLflow yet"


def hold(run_dir: str):
    """The run's tracking lock (an open file holding flock), or None while another process holds it: the live
    tracker of the run, or a sync. Released when the file is closed or the process dies (kill -9 included)."""
    f = open(os.path.join(run_dir, LOCK), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except OSError:  # a file system without flock (Lustre mounted without it): track unserialised, not never
        pass
    return f


@dataclass(frozen=True)
class Account:
    """What one `reconcile` sent ({kind: count}) and failed to send ({kind: "4 artifacts (why)"}), and the
    metric pairs the sink holds afterwards."""
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    held: frozenset = frozenset()

    def line(self) -> str:
        """``sent 400 metrics, 4 artifacts; not sent: 1 end status (...)``; "" when nothing was missing."""
        sent = ", ".join(f"{n} {k}" for k, n in self.sent.items())
        failed = "; ".join(self.failed.values())
        return "; ".join(([f"sent {sent}"] if sent else []) + ([f"not sent: {failed}"] if failed else []))


def _short(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:120]}" if text else type(e).__name__


def reconcile(sink: Sink, run_dir: str) -> Account:
    """Compare the sink's run with the run dir and send exactly what it lacks: metric rows by (key, step) (never
    a pair it holds, whatever the value), params, tags of another value, artifacts missing or of another size,
    the recorded end status. Every part is tried even if another fails; only a reconcile without failure
    stamps the run dir as in step (`pending` False until the record changes again)."""
    stamp = fingerprint(run_dir)  # before reading: a change made meanwhile leaves the run pending
    held = sink.held()
    if held is None:
        return Account()
    rec = read_json(os.path.join(run_dir, TRACKED))
    local = dict(metric_pairs(read_jsonl(os.path.join(run_dir, METRICS))))
    pairs = set(held.metrics)
    sent: dict[str, int] = {}
    failed: dict[str, str] = {}

    def part(kind: str, n: int, send) -> None:
        if not n:
            return
        try:
            send()
            sent[kind] = n
        except Exception as e:
            failed[kind] = f"{n} {kind} ({_short(e)})"

    rows = [(k, v, s) for (k, s), v in sorted(local.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            if (k, s) not in pairs]

    def send_rows() -> None:
        for i in range(0, len(rows), 1000):  # MLflow accepts at most 1,000 metrics per batch
            sink.log_metrics(rows[i:i + 1000])
            pairs.update((k, s) for k, _, s in rows[i:i + 1000])

    part("metrics", len(rows), send_rows)
    params = {k: v for k, v in rec.get("params", {}).items() if k not in held.params}
    part("params", len(params), lambda: sink.log_params(params))
    tags = {k: v for k, v in rec.get("tags", {}).items() if held.tags.get(k) != v}
    part("tags", len(tags), lambda: sink.set_tags(tags))
    arts = [(os.path.join(run_dir, p), subdir) for name, (p, subdir) in rec.get("artifacts", {}).items()
            if os.path.exists(os.path.join(run_dir, p))  # a file removed since cannot be sent
            and (held.artifacts is None or held.artifacts.get(name) != os.path.getsize(os.path.join(run_dir, p)))]
    part("artifacts", len(arts), lambda: [sink.log_artifact(p, s) for p, s in arts])
    status = rec.get("status") or read_json(os.path.join(run_dir, UNFINISHED)).get("status")
    if status in ENDED and held.status != status:
        part("end status", 1, lambda: sink.finish(status))
    acct = Account(sent, failed, frozenset(pairs))
    write_json(os.path.join(run_dir, SYNCED), {"fingerprint": None if failed else stamp,
                                               "behind": "; ".join(failed.values()), "time": time.time()})
    if not failed:
        for name in (UNSENT, UNFINISHED):
            if os.path.exists(os.path.join(run_dir, name)):
                os.unlink(os.path.join(run_dir, name))
    return acct


class BufferedTracker:
    """Wraps a sink: local record + batched, failure-tolerant background shipping, reconciled with the sink's
    run before the first batch and at the end."""

    def __init__(self, sink: Sink | None, run_dir: str, flush_s: float = 10.0, log=print):
        self.sink = sink or NullSink()
        self.run_dir = run_dir
        self.flush_s = flush_s
        self.log = log
        self._buf: list[tuple[str, float, int]] = []
        self._held: set[tuple[str, int]] | None = None  # pairs the sink holds; None until reconciled
        self._lock = threading.Lock()  # the buffer
        self._ship = threading.Lock()  # one flush or reconcile at a time (the thread's, close()'s, a caller's)
        self._hold = None  # track.lock, taken by the first reconcile and kept until close
        self._wake = threading.Event()
        self._stop = False
        self._failing = False
        self._local = open(os.path.join(run_dir, METRICS), "a", buffering=1)
        self._thread = threading.Thread(target=self._loop, name="fvq-tracker", daemon=True)
        self._thread.start()

    def resume(self, step: int) -> None:
        """Repair the local record for a run that (re)starts at ``step``: drop a torn last line and every row
        after ``step`` (the resumed run logs those steps again), so each (key, step) appears once."""
        path = os.path.join(self.run_dir, METRICS)
        self._local.close()
        truncate_jsonl(path, step)
        self._local = open(path, "a", buffering=1)

    # -- called from the training loop (cheap, never blocks on the network) --------------------
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        rows = [(k, float(v), int(step)) for k, v in metrics.items()]
        t = time.time()
        for k, v, s in rows:
            self._local.write(json.dumps({"key": k, "value": v, "step": s, "time": t}) + "\n")
        with self._lock:
            self._buf.extend(rows)

    def log_params(self, params: dict[str, Any]) -> None:
        record(self.run_dir, params=params)
        self._call(self.sink.log_params, params)

    def set_tags(self, tags: dict[str, str]) -> None:
        if tags:
            record(self.run_dir, tags=tags)
            self._call(self.sink.set_tags, tags)

    def log_artifact(self, path: str, subdir: str = "") -> None:
        record(self.run_dir, artifact=(path, subdir))
        self._call(self.sink.log_artifact, path, subdir)

    def flush(self) -> bool:
        """Ship everything buffered now (after reconciling, the first time); True when nothing is left."""
        with self._ship:
            if self._held is None and not self._reconcile():
                return False
            with self._lock:
                batch, self._buf = self._buf, []
            # steps an earlier start sent (a resume from an older checkpoint retrains them): never twice
            batch = [r for r in batch if (r[0], r[2]) not in self._held]
            try:
                while batch:  # MLflow accepts at most 1,000 metrics per batch
                    self.sink.log_metrics(batch[:1000])
                    self._held.update((k, s) for k, _, s in batch[:1000])
                    batch = batch[1000:]
            except Exception as e:  # server away: keep the unsent rows
                with self._lock:
                    self._buf = batch + self._buf
                self._down(_short(e))
                return False
            self._up()
            return True

    def close(self, status: str, retries: int = 3) -> None:
        """Flush, record ``status`` and reconcile once more (which ends the sink's run with it); what the sink
        still lacks stays in the run dir for the next start or `sync`. Later calls do nothing (the first
        status wins)."""
        if self._local.closed:
            return
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=60)
        self._local.close()
        try:
            acct = None
            flushed = any(self.flush() or time.sleep(1.0) for _ in range(retries))
            record(self.run_dir, status=status)  # after the rows: the sink's run ends once it holds them
            if flushed:
                with self._ship:
                    acct = self._reconciled()
            if acct is None:  # never compared: say what this start knows it did not send
                what = f"{len(self._buf)} buffered metrics, end status {status}"
                write_json(os.path.join(self.run_dir, SYNCED),
                           {"fingerprint": None, "behind": what, "time": time.time()})
            if acct is None or acct.failed:
                what = "; ".join(acct.failed.values()) if acct else what
                self.log(f"[track] not in the tracking sink yet: {what}; {self.run_dir} keeps it (sent at the next "
                         f"start of this run, or by `python sweeps/run.py grid=... sync=true`)", flush=True)
        finally:
            if self._hold is not None:
                self._hold.close()

    # -- internals ---------------------------------------------------------------------------
    def _reconcile(self) -> bool:
        """Reconcile; True when the sink holds every local metric row afterwards (batches may go)."""
        acct = self._reconciled()
        if acct is None or "metrics" in acct.failed:
            return False
        self._held = set(acct.held)
        return True

    def _reconciled(self) -> Account | None:
        """Under the run's lock (taken once, kept until close): one `reconcile`, or None when it could not
        compare (the sink away, or a sync holding the lock: the next flush tries again)."""
        if self._hold is None:
            self._hold = hold(self.run_dir)
            if self._hold is None:
                return None
        with self._lock:
            mine = len({(k, s) for k, _, s in self._buf})  # this start's rows: sent by the batches anyway
        try:
            acct = reconcile(self.sink, self.run_dir)
        except Exception as e:
            self._down(_short(e))
            return None
        if acct.sent.get("metrics", 0) > mine or set(acct.sent) - {"metrics", "end status"}:
            # rows an earlier start held in memory at a kill, a failed upload: worth a line
            self.log(f"[track] reconciled with the tracking sink: {acct.line()}", flush=True)
        if "metrics" in acct.failed:
            self._down(acct.failed["metrics"])
        return acct

    def _down(self, why: str) -> None:
        if not self._failing:  # say so once per outage
            self.log(f"[track] tracking sink failed ({why}); buffering and retrying every {self.flush_s:.0f}s",
                     flush=True)
        self._failing = True

    def _up(self) -> None:
        if self._failing:
            self.log("[track] tracking sink reachable again; buffered metrics flushed", flush=True)
        self._failing = False

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_s)
            if self._stop:
                return
            self.flush()

    def _call(self, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception as e:
            self.log(f"[track] {getattr(fn, '__name__', fn)} failed: {type(e).__name__}: {str(e)[:160]}",
                     flush=True)
            return False
