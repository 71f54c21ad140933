"""The tracking hook against a real MLflow server: batching, outage tolerance, requeue = same run."""
import json
import os
import time

import pytest
from mlflow.tracking import MlflowClient

from fvq.core.track import BufferedTracker, behind, pending
from sweeps.tracking import MLflowSink, TrackingError, check_reachable, ensure_experiment, open_run

pytestmark = pytest.mark.slow


def test_batched_metrics_reach_the_server(mlflow_server, tmp_path):
    uri = mlflow_server.uri
    ensure_experiment(uri, "t-batch")
    run_id = open_run(uri, "t-batch", str(tmp_path), "r1", {"signature": "abc"})
    tr = BufferedTracker(MLflowSink(uri, run_id), str(tmp_path), flush_s=0.2)
    tr.log_params({"quant.codebook_size": 1024})
    t0 = time.perf_counter()
    for step in range(1, 301):
        tr.log_metrics({"train/loss": 1.0 / step, "train/usage": step / 300}, step)
    per_call = (time.perf_counter() - t0) / 300
    tr.close("FINISHED")
    client = MlflowClient(uri)
    hist = client.get_metric_history(run_id, "train/loss")
    assert len(hist) == 300 and client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["quant.codebook_size"] == "1024"
    assert per_call < 0.005  # the training thread never waits on the network
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 600


def test_requeued_job_continues_the_same_run(mlflow_server, tmp_path):
    uri = mlflow_server.uri
    first = open_run(uri, "t-requeue", str(tmp_path), "r", {"signature": "x"})
    MlflowClient(uri).set_terminated(first, "KILLED")
    again = open_run(uri, "t-requeue", str(tmp_path), "r", {"signature": "x"})
    assert again == first and MlflowClient(uri).get_run(first).info.status == "RUNNING"


def test_server_outage_buffers_then_flushes(tmp_path):
    from conftest import MLflowServer

    server = MLflowServer(str(tmp_path)).start()
    uri = server.uri
    run_id = open_run(uri, "t-outage", str(tmp_path), "r", {})
    logs = []
    tr = BufferedTracker(MLflowSink(uri, run_id), str(tmp_path), flush_s=0.5,
                         log=lambda *a, **k: logs.append(" ".join(map(str, a))))
    tr.log_metrics({"m": 1.0}, 1)
    assert tr.flush()
    server.stop()  # the server goes away mid-run
    for s in range(2, 12):
        tr.log_metrics({"m": float(s)}, s)
    assert not tr.flush() and any("failed" in line for line in logs)
    server.start()  # ... and comes back on the same port and store
    assert tr.flush()
    tr.close("FINISHED")
    server.stop()
    assert any("reachable again" in line for line in logs)
    server.start()
    steps = sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "m"))
    server.stop()
    assert steps == list(range(1, 12))


def test_unsent_metrics_are_kept_in_the_run_dir(tmp_path):
    class Down:
        def __getattr__(self, name):
            def fail(*a, **k):
                raise ConnectionError("server down")
            return fail

    tr = BufferedTracker(Down(), str(tmp_path), flush_s=60, log=lambda *a, **k: None)
    tr.log_metrics({"a": 1.0, "b": 2.0}, 7)
    tr.close("FINISHED", retries=1)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {(r["key"], r["step"]) for r in rows} == {("a", 7), ("b", 7)}
    assert pending(str(tmp_path)) and "2 buffered metrics" in behind(str(tmp_path))
    assert json.loads((tmp_path / "tracked.json").read_text())["status"] == "FINISHED"


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(TrackingError, match="no MLflow tracking server reachable at http://127.0.0.1:9"):
        check_reachable("http://127.0.0.1:9")
