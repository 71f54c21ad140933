"""End-to-end training on CPU: files, MLflow, resume after kill -9, failure modes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fvq.core.config import Config, apply_overrides
from fvq.core.rundir import RunDirError
from fvq.train import RunFailed, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few dozen steps of the cpu preset on a small slice of the built-in photos.
SMALL = ["optim.steps=30", "log.every=5", "log.ckpt_every=10", "data.train_size=256", "data.val_size=16",
         "eval.images=16", "eval.batch=16", "optim.batch=16", "quant.codebook_size=256", "optim.base_lr=4e-4",
         "log.progress=off", "eval.fid_images=0"]


def small(*extra: str) -> Config:
    return apply_overrides(Config(), SMALL + list(extra))


def cli(out, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fvq.train", f"out={out}", *SMALL, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_short_run_writes_metrics_checkpoint_and_final(tmp_path):
    res = train(small("eval.fid=false"), str(tmp_path), log=lambda *a, **k: None)
    for name in ("config.json", "status.json", "ckpt.pt", "metrics.jsonl", "final.json", "recon.png", "codebook.pt"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "FINISHED"
    m = res["metrics"]
    assert 0 < m["usage"] <= 1 and m["psnr"] > 0
    assert "rfid" in res["missing"] and "disabled" in res["missing"]["lpips"]
    keys = {json.loads(x)["key"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert {"train/total", "train/usage", "train/lr", "eval/usage"} <= keys
    cb = torch.load(tmp_path / "codebook.pt", weights_only=True)["codebook"]
    assert cb.shape == (256, 256)


@pytest.mark.slow
def test_kill9_then_resume_equals_uninterrupted(tmp_path):
    ref = cli(tmp_path / "ref", "eval.fid=false")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = cli(tmp_path / "cut", "eval.fid=false")
    status = tmp_path / "cut" / "status.json"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill -9 somewhere after the first checkpoint (step 10)
        if status.exists() and json.loads(status.read_text() or "{}").get("step", 0) >= 15:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert json.loads(status.read_text())["state"] == "RUNNING"
    again = cli(tmp_path / "cut", "eval.fid=false")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resumed" in out
    a = json.loads((tmp_path / "ref" / "final.json").read_text())
    b = json.loads((tmp_path / "cut" / "final.json").read_text())
    assert a["metrics"] == b["metrics"]  # bit for bit
    ca = torch.load(tmp_path / "ref" / "codebook.pt", weights_only=True)["codebook"]
    cb = torch.load(tmp_path / "cut" / "codebook.pt", weights_only=True)["codebook"]
    assert torch.equal(ca, cb)


def test_nan_loss_marks_the_run_failed(tmp_path):
    with pytest.raises(RunFailed, match=r"non-finite loss at step \d+"):
        train(small("optim.base_lr=1e30", "optim.grad_clip=0", "optim.steps=20", "sched.kind=constant"),
              str(tmp_path), log=lambda *a, **k: None)
    st = json.loads((tmp_path / "status.json").read_text())
    assert st["state"] == "FAILED" and "non-finite loss at step" in st["reason"]


@pytest.mark.parametrize("args, words", [
    (["data.image_size=30"], "not divisible by the downsampling ratio"),
    (["quant.group=3"], "group"),
    (["data.source=imagefolder", "data.path=/nonexistent/imagenet"], "/nonexistent/imagenet"),
    (["quant.grop=3"], "unknown config key"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    p = cli(tmp_path / "r", *args)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert words in err and err.strip().count("\n") == 0, err


def test_projector_lr_scales_only_the_projector_group():
    """optim.projector_lr: the projector in its own group at lr x multiplier, everything else at lr; at 1 one
    group as before. Bad values are one ConfigError."""
    from fvq.build import build_parts
    from fvq.core.config import ConfigError
    from fvq.train import train_step

    torch.manual_seed(0)
    p = build_parts(small("optim.projector_lr=0.1"), torch.device("cpu"))
    proj = {id(t) for t in p.model.quantizer.projector.parameters()}
    g0, g1 = p.opt.param_groups
    assert {id(t) for t in g1["params"]} == proj and not proj & {id(t) for t in g0["params"]}
    train_step(p, torch.zeros(2, 3, 32, 32), 0, 1e-3)
    assert g0["lr"] == 1e-3 and g1["lr"] == pytest.approx(1e-4)
    assert len(build_parts(small(), torch.device("cpu")).opt.param_groups) == 1
    with pytest.raises(ConfigError, match="optim.projector_lr"):
        small("optim.projector_lr=0")


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = cli(blocker / "run")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "is not writable" in err and err.strip().count("\n") == 0


def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    p = cli(tmp_path, "eval.fid=false")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "corrupt or unreadable" in err and err.strip().count("\n") == 0
    assert (tmp_path / "ckpt.pt").read_bytes() == b"not a checkpoint"  # nothing earlier lost


def test_other_config_in_run_dir_is_refused(tmp_path):
    train(small("optim.steps=5", "eval.fid=false"), str(tmp_path), log=lambda *a, **k: None)
    before = (tmp_path / "final.json").read_text()
    with pytest.raises(RunDirError, match="holds a run with another config"):
        train(small("optim.steps=5", "eval.fid=false", "quant.beta=0.5"), str(tmp_path), log=lambda *a, **k: None)
    assert (tmp_path / "final.json").read_text() == before


@pytest.mark.slow
def test_mlflow_run_against_real_server_and_sqlite(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import MLflowSink, open_run

    for uri in (mlflow_server.uri, f"sqlite:///{tmp_path}/mlflow.db"):
        run_dir = tmp_path / uri.split(":")[0]
        run_id = open_run(uri, "t-train", str(run_dir), "small", {"signature": "small"})
        train(small("optim.steps=10", "eval.fid=false"), str(run_dir), MLflowSink(uri, run_id),
              log=lambda *a, **k: None)
        client = MlflowClient(uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["quant.codebook_size"] == "256"
        assert "eval/usage" in run.data.metrics and "missing.rfid" in run.data.tags
        assert len(client.get_metric_history(run_id, "train/usage")) == 2
        arts = {a.path for a in client.list_artifacts(run_id)}
        assert {"config.json", "final.json", "recon.png", "codebook.pt"} <= arts


def test_pruned_run_is_recorded_pruned_and_skipped(tmp_path):
    """An Optuna pruner stopping a run: PRUNED in the run dir, KILLED + tag state=PRUNED in MLflow, and the
    relaunch rules skip it like a finished run."""
    from mlflow.tracking import MlflowClient

    from sweeps.state import classify
    from sweeps.tracking import MLflowSink, ensure_experiment, open_run

    uri, run_dir = f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "run")
    ensure_experiment(uri, "prune")
    run_id = open_run(uri, "prune", run_dir, "pruned", {})
    cfg = small("optim.steps=8", "eval.every=4", "eval.fid=false")
    out = train(cfg, run_dir, MLflowSink(uri, run_id), log=lambda *a, **k: None, on_eval=lambda step, m: True)
    assert out["pruned"] and out["step"] == 4
    assert json.loads(open(os.path.join(run_dir, "status.json")).read())["state"] == "PRUNED"
    assert classify(run_dir)[0] == "pruned"
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["state"] == "PRUNED"
