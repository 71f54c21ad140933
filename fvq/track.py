"""The tracking hook: what `fvq.train` logs, and how, without importing mlflow.

`fvq.train.train(cfg, run_dir, tracker=...)` receives any object with the :class:`Sink` methods
(sweeps/tracking.py adapts MLflow to it). Training never waits on the network:

- every metric is appended at once to ``run_dir/metrics.jsonl`` (the local record, always complete);
- a background thread ships batches to the sink every ``flush_s`` seconds (MLflow's ``log_batch``
  costs ~0.14 s per 1,000 metrics through a server, ``log_metric`` ~49 ms per call: batching is what keeps
  tracking under 1% of a step);
- if the sink fails (server gone), the batch stays buffered and is retried at the next flush; what is
  still unsent when the run ends is left in ``run_dir/unsent_metrics.jsonl`` so nothing is lost and it can
  be re-sent later (``python sweeps/run.py sync=...``).
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


class BufferedTracker:
    """Wraps a sink: local jsonl record + batched, failure-tolerant background shipping."""

    def __init__(self, sink: Sink | None, run_dir: str, flush_s: float = 10.0, log=print):
        self.sink = sink or NullSink()
        self.run_dir = run_dir
        self.flush_s = flush_s
        self.log = log
        self._buf: list[tuple[str, float, int]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._failing = False
        self._local = open(os.path.join(run_dir, "metrics.jsonl"), "a", buffering=1)
        self._thread = threading.Thread(target=self._loop, name="fvq-tracker", daemon=True)
        self._thread.start()

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
            path = os.path.join(self.run_dir, "unsent_metrics.jsonl")
            with open(path, "a") as f:
                for k, v, s in rows:
                    f.write(json.dumps({"key": k, "value": v, "step": s}) + "\n")
            self.log(f"[track] {len(rows)} metrics could not be sent; kept in {path}", flush=True)
        self._call(self.sink.finish, status)
        self._local.close()

    # -- internals ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_s)
            if self._stop:
                return
            self.flush()

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            self.log(f"[track] {getattr(fn, '__name__', fn)} failed: {type(e).__name__}: {str(e)[:160]}",
                     flush=True)
