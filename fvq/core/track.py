"""The tracking hook: what `fvq.train` logs, and how, without importing mlflow.

`fvq.train.train(cfg, run_dir, tracker=...)` receives any object with the :class:`Sink` methods
(sweeps/tracking.py adapts MLflow to it). Training never waits on the network:

- every metric is appended at once to ``run_dir/metrics.jsonl`` (the local record, always complete);
- a background thread ships batches to the sink every ``flush_s`` seconds (MLflow's ``log_batch``
  costs ~0.14 s per 1,000 metrics through a server, ``log_metric`` ~49 ms per call: batching is what keeps
  tracking under 1% of a step);
- if the sink fails (server gone), the batch stays buffered and is retried at the next flush; what is
  still unsent when the run ends is left in ``run_dir/unsent_metrics.jsonl``, and an end status the sink
  could not take in ``run_dir/unfinished.json``, so nothing is lost: the next start of the same run sends
  them first, and ``python sweeps/run.py grid=... sync=true`` (any relaunch too) sends those of ended runs;
- on resume from a checkpoint at step S, ``metrics.jsonl`` is repaired: a torn last line (kill -9 mid
  write) and the rows after S (logged again by the resumed run) are dropped, so every (key, step) is once.
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Protocol


class Sink(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None: ...  # (key, value, step)
    def log_artifact(self, path: str, subdir: str = "") -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str) -> None: ...  # FINISHED | FAILED | KILLED


class NullSink:
    """No remote tracking: the run dir's files are the record."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, rows: list[tuple[str, float, int]]) -> None: ...
    def log_artifact(self, path: str, subdir: str = "") -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str) -> None: ...


class NullTracker:
    """The tracker of data-parallel ranks other than 0: no file, no thread, no sink (rank 0 records the run)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str, subdir: str = "") -> None: ...
    def close(self, status: str, retries: int = 3) -> None: ...
    def resume(self, step: int) -> None: ...


UNSENT, UNFINISHED = "unsent_metrics.jsonl", "unfinished.json"


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


def pending(run_dir: str) -> bool:
    """True when a run dir holds metrics or an end status its tracking sink has not taken yet."""
    return any(os.path.exists(os.path.join(run_dir, n)) for n in (UNSENT, UNFINISHED))


class BufferedTracker:
    """Wraps a sink: local jsonl record + batched, failure-tolerant background shipping."""

    def __init__(self, sink: Sink | None, run_dir: str, flush_s: float = 10.0, log=print):
        self.sink = sink or NullSink()
        self.run_dir = run_dir
        self.flush_s = flush_s
        self.log = log
        # metrics an earlier start of this run could not send go out first (the sink is the same run)
        self._buf: list[tuple[str, float, int]] = [(r["key"], float(r["value"]), int(r["step"]))
                                                   for r in read_jsonl(os.path.join(run_dir, UNSENT))]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._failing = False
        self._local = open(os.path.join(run_dir, "metrics.jsonl"), "a", buffering=1)
        self._thread = threading.Thread(target=self._loop, name="fvq-tracker", daemon=True)
        self._thread.start()

    def resume(self, step: int) -> None:
        """Repair the local record for a run that (re)starts at ``step``: drop a torn last line and every row
        after ``step`` (the resumed run logs those steps again), so each (key, step) appears once."""
        path = os.path.join(self.run_dir, "metrics.jsonl")
        rows = [r for r in read_jsonl(path) if int(r.get("step", -1)) <= step]
        self._local.close()
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(path + ".tmp", path)
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
        self._call(self.sink.log_params, params)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call(self.sink.set_tags, tags)

    def log_artifact(self, path: str, subdir: str = "") -> None:
        self._call(self.sink.log_artifact, path, subdir)

    def flush(self) -> bool:
        """Ship everything buffered now; True when the buffer is empty afterwards."""
        with self._lock:
            batch, self._buf = self._buf, []
        if not batch:
            return True
        try:
            while batch:  # MLflow accepts at most 1,000 metrics per batch
                self.sink.log_metrics(batch[:1000])
                batch = batch[1000:]
        except Exception as e:  # server away: keep the unsent rows, say so once
            with self._lock:
                self._buf = batch + self._buf
            if not self._failing:
                self.log(f"[track] tracking sink failed ({type(e).__name__}: {str(e)[:120]}); "
                         f"buffering and retrying every {self.flush_s:.0f}s", flush=True)
            self._failing = True
            return False
        if self._failing:
            self.log("[track] tracking sink reachable again; buffered metrics flushed", flush=True)
        self._failing = False
        unsent = os.path.join(self.run_dir, UNSENT)
        with self._lock:
            if not self._buf and os.path.exists(unsent):
                os.unlink(unsent)  # what an earlier start left unsent is in the sink now
        return True

    def close(self, status: str, retries: int = 3) -> None:
        """Flush, end the sink's run with ``status``; later calls do nothing (the first status wins)."""
        if self._local.closed:
            return
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=60)
        ok = any(self.flush() or time.sleep(1.0) for _ in range(retries))
        if not ok:
            with self._lock:
                rows, self._buf = self._buf, []
            path = os.path.join(self.run_dir, UNSENT)
            with open(path + ".tmp", "w") as f:  # the whole buffer, earlier leftovers included
                f.writelines(json.dumps({"key": k, "value": v, "step": s}) + "\n" for k, v, s in rows)
            os.replace(path + ".tmp", path)
            self.log(f"[track] {len(rows)} metrics could not be sent; kept in {path} (sent at the next "
                     f"start of this run, or by `python sweeps/run.py grid=... sync=true`)", flush=True)
        marker = os.path.join(self.run_dir, UNFINISHED)
        if ok and self._call(self.sink.finish, status):
            if os.path.exists(marker):
                os.unlink(marker)
        else:  # never leave the remote run RUNNING without a record of how it ended
            with open(marker, "w") as f:
                json.dump({"status": status}, f)
        self._local.close()

    # -- internals ---------------------------------------------------------------------------
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
