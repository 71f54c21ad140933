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


def _generator_run(run_dir) -> dict:
    """A generator run dir as fvq.generation.ar leaves it: its curve a row per step, the sample grid."""
    import torch
    import torchvision

    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps({"step": s, "ar/loss": 3.0 / s, "ar/val_loss": 3.1 / s}) + "\n" for s in (1, 2))
    torchvision.utils.save_image(torch.zeros(2, 3, 8, 8), os.path.join(run_dir, "samples.png"))
    with open(os.path.join(run_dir, "environment.json"), "w") as f:  # two starts, the second on another ISA
        json.dump([{"attempt": 1, "step": 0, "isa": "AVX2"}, {"attempt": 2, "step": 1, "isa": "AVX512"}], f)
    card = {"metric": "gfid", "reference": "photos val", "ref_images": None, "cfg_scale": 1.75}
    return {"config": {"steps": 2, "model": "tiny"}, "metrics": {"gfid": 90.5, "precision": 0.1},
            "missing": {"is": "no logits"}, "gfid_card": card}


def test_generator_record_reaches_mlflow_and_waits_out_an_outage(tmp_path):
    """A generator run records params, curve, final metrics, card tags, samples and its end in the run dir,
    then MLflow gets what it lacks; with the server away at the end the run dir stays pending (the launch
    says so) and a later sync sends it, each metric step once."""
    from conftest import MLflowServer
    from fvq.generation.ar import ARConfig
    from sweeps.generation import _record, _send
    from sweeps.tracking import sync_one

    server = MLflowServer(str(tmp_path)).start()
    try:
        uri, runs = server.uri, {}
        for name in ("up", "away"):
            d = str(tmp_path / name)
            runs[name] = (d, open_run(uri, "t-gen", d, name, {"signature": f"gen-{name}"}), _generator_run(d))
        d, run_id, res = runs["up"]
        _record(d, ARConfig(steps=2), res)
        _send(d)
        assert not pending(d)
        server.stop()  # the server is away when the second generator ends
        d, run_id, res = runs["away"]
        _record(d, ARConfig(steps=2), res)
        _record(d, ARConfig(steps=2), res)  # a requeue past this point records nothing twice
        _send(d)
        assert pending(d) and "gen/gfid" in (tmp_path / "away" / "metrics.jsonl").read_text()
        server.start()
        assert sync_one(d).startswith("away: sent ") and not pending(d)
        assert sync_one(d) == ""  # in step: nothing more to send
        client = MlflowClient(uri)
        for d, run_id, _ in runs.values():
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.data.metrics["gen/gfid"] == 90.5
            assert [m.step for m in client.get_metric_history(run_id, "ar/val_loss")] == [1, 2]
            assert [m.step for m in client.get_metric_history(run_id, "gen/gfid")] == [2]
            assert run.data.params["ar.model"] == "tiny" and run.data.tags["missing.is"] == "no logits"
            assert run.data.tags["gfid_card.reference"] == "photos val"
            assert run.data.tags["env.isa"] == "AVX512" and run.data.tags["env.changed"] == "isa"
            assert run.data.tags["gfid_card.ref_images"] == "unknown" and run.data.tags["gfid_card.cfg_scale"] == "1.75"
            assert [a.path for a in client.list_artifacts(run_id)] == ["samples.png"]
    finally:
        server.stop()
