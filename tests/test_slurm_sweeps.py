"""A real grid through real Slurm: `sweeps/run.py grid=annealing launcher=slurm slurm=dev` at cpu
scale on the single-node dev cluster (fake A100 GRES: the jobs get CUDA_VISIBLE_DEVICES but run on CPU —
the only fake here, because there is no A100 on this machine). Checks one job array in sacct, the MLflow
runs on a real tracking server, a `scontrol requeue` that resumes the same run from its checkpoint, and
that relaunching submits nothing."""
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from slurm.devcluster import running_again, wait_until
from conftest import needs_fashion_mnist

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["grid=annealing", "launcher=slurm", "slurm=dev", "force=true", "optim.steps=300", "log.every=10",
        "log.ckpt_every=20", "data.train_size=256", "data.val_size=8", "eval.images=8", "eval.batch=8",
        "optim.batch=8", "eval.fid=false", "quant.codebook_size=256", "log.progress=lines"]


def launch(tmp_path, uri, *extra):
    return subprocess.run([sys.executable, os.path.join(REPO, "sweeps", "run.py"), f"runs_dir={tmp_path}/runs",
                           f"tracking_uri={uri}", "experiment=slurm-test", *ARGS, *extra],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})


def status(run_dir):
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_grid_on_real_slurm_with_requeue(tmp_path, slurm_cluster, mlflow_server):
    r = launch(tmp_path, mlflow_server.uri)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted job array" in r.stdout, r.stdout
    runs = tmp_path / "runs"
    dirs = sorted(str(runs / d) for d in os.listdir(runs) if not d.startswith("."))
    assert len(dirs) == 2
    jobs = [json.load(open(os.path.join(d, "job.json")))["job_id"] for d in dirs]
    array = {j.split("_")[0] for j in jobs}
    assert len(array) == 1  # one job array per launch
    delays = slurm_cluster.delays()
    rows = wait_until(lambda: slurm_cluster.sacct(next(iter(array))), delays.accounting_s, "the array in sacct")
    assert {row["JobID"] for row in rows} >= set(jobs) or len(rows) >= 1

    # requeue the first run mid-training: SIGTERM -> checkpoint -> requeued -> resumes, same MLflow run
    victim, job = dirs[0], jobs[0]
    wait_until(lambda: status(victim).get("step", 0) >= 40, 240, "first run past its second checkpoint")
    run_id = json.load(open(os.path.join(victim, "mlflow.json")))["run_id"]
    slurm_cluster.run("scontrol", "requeue", job)
    # the scheduler's part of the restart has deadlines from its own delays; the 400 s below is training time
    slurm_cluster.wait_job(job, running_again, delays.requeue_s, "the requeued run to start again")
    wait_until(lambda: all(status(d).get("state") == "FINISHED" for d in dirs), 400, "both runs finished")
    assert json.load(open(os.path.join(victim, "mlflow.json")))["run_id"] == run_id
    assert len(json.load(open(os.path.join(victim, "attempts.json")))) == 2
    logs = "".join(p.read_text(errors="ignore") for p in (runs / ".submitit").rglob("*.out"))
    assert "resumed" in logs and "attempt 2" in logs

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("slurm-test")
    found = client.search_runs([exp.experiment_id], "tags.`grid.annealing` = '1'")
    assert len(found) == 2 and {x.info.status for x in found} == {"FINISHED"}
    hist = client.get_metric_history(run_id, "train/usage")
    assert max(m.step for m in hist) == 300  # the requeued run logged to the end in the same MLflow run

    again = launch(tmp_path, mlflow_server.uri)
    assert again.returncode == 0 and "2 points, 0 to submit (2 finished)" in again.stdout, again.stdout


def test_bad_gres_refused_nothing_submitted(tmp_path, slurm_cluster, mlflow_server):
    spec = tmp_path / "bad.yaml"
    spec.write_text(open(os.path.join(REPO, "slurm", "dev.yaml")).read().replace("gpus_per_node: 1", "gpus_per_node: 3"))
    r = launch(tmp_path, mlflow_server.uri, f"slurm={spec}")
    # sbatch's own message passes through on stderr; the harness's verdict is the last, single line
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: sbatch refused"), r.stderr
    runs = tmp_path / "runs"
    assert not any((runs / d / "job.json").exists() for d in os.listdir(runs) if not d.startswith("."))


GEN_ARGS = ["grid=generation", "launcher=slurm", "slurm=dev", "force=true", "optim.steps=3", "log.every=1",
            "data.train_size=64", "data.val_size=16", "eval.images=16", "eval.batch=16", "optim.batch=8",
            "quant.codebook_size=64", "eval.fid=false", "log.progress=off", "ar.train_images=64", "ar.batch=8",
            "ar.steps=6", "ar.log_every=2", "ar.samples=4"]


@needs_fashion_mnist
def test_generation_waits_for_its_tokenizer_with_afterok(tmp_path, slurm_cluster, mlflow_server):
    def gen():
        return subprocess.run([sys.executable, os.path.join(REPO, "sweeps", "run.py"), f"runs_dir={tmp_path}/runs",
                               f"tracking_uri={mlflow_server.uri}", "experiment=slurm-gen", *GEN_ARGS],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})

    r = gen()
    assert r.returncode == 0 and "submitted 2 tokenizer job(s), 2 generator job(s)" in r.stdout, r.stdout + r.stderr
    runs = tmp_path / "runs"
    gens = sorted(runs / d for d in os.listdir(runs) if d.startswith("gen-"))
    assert len(gens) == 2
    ids = [json.load(open(g / "job.json"))["job_id"] for g in gens]

    def done():  # a job sacct does not list yet (just submitted) is not done: all() of no rows would say it is
        rows = [slurm_cluster.sacct(i) for i in ids]
        return all(rows) and all(r["State"] == "COMPLETED" for job_rows in rows for r in job_rows)

    wait_until(done, 400, "both generator jobs completed", interval=2)
    for g in gens:
        assert status(g).get("state") == "FINISHED"
        job = json.load(open(g / "job.json"))
        tok_dir = json.load(open(g / "final.json"))["config"]["tokenizer"]
        tok_job = json.load(open(os.path.join(tok_dir, "job.json")))["job_id"]
        assert job["after"] == tok_job  # the dependency the generator was submitted with
        fields = ("JobID", "State", "Start", "End")
        (t,), (a,) = slurm_cluster.sacct(tok_job, fields), slurm_cluster.sacct(job["job_id"], fields)
        assert t["State"] == a["State"] == "COMPLETED" and a["Start"] >= t["End"], (t, a)  # ISO times sort

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("slurm-gen")
    found = client.search_runs([exp.experiment_id], "tags.`grid.generation` = '1'")  # tokenizers and generators
    assert len(found) == 4 and {x.info.status for x in found} == {"FINISHED"}
    found = [x for x in found if x.data.tags["signature"].startswith("gen-")]
    assert len(found) == 2 and all("gen/gen_samples" in x.data.metrics and "missing.is" in x.data.tags for x in found)
    again = gen()
    assert again.returncode == 0 and "submitted 0 tokenizer job(s), 0 generator job(s)" in again.stdout, again.stdout
