"""slurm/: the spec loader (fast), and submitit against a real single-node Slurm with fake A100s (slow).

The session fixture runs slurm/dev-cluster/start.sh (installs Debian's Slurm + MariaDB on a fresh machine,
~15 s; ~2 s when installed). It is skipped only when the machine cannot have the cluster (not root, no apt).
At the end it cancels this file's jobs and stops the cluster again if it started it; FVQ_KEEP_SLURM=1 keeps
it running (then `source slurm/dev-cluster/env.sh` and use squeue/sacct; `make slurm-down` stops it).
Jobs run the functions below: they import this module, so PYTHONPATH is exported in the job's setup lines.
"""
import os
import subprocess
import time

import pytest
import submitit

from slurm.devcluster import running_again, wait_until
from slurm.spec import SlurmSpec, load_spec, names

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
JOB_NAME = f"fvq-slurm-test-{os.getpid()}"  # this session's jobs; the finalizer scancels by this name


# ---- what the jobs run ------------------------------------------------------------------------------------
def job_env() -> dict:
    return {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_PARTITION", "SLURM_ARRAY_JOB_ID")}


def square(x: int, sleep_s: float = 0.0) -> int:
    time.sleep(sleep_s)
    return x * x


class Progress(submitit.helpers.Checkpointable):
    """Counts to ``steps`` and appends each step to ``path``; a restart resumes from the count in the file.

    With ``hold``, the first run stops after ``hold`` steps, writes "hold", and waits there until Slurm stops it
    (requeue: SIGKILL after KillWait; preemption: submitit's USR2 handler). A signal sent once "hold" is in the
    file then lands mid-run however late it comes; a run that kept counting could end before the signal, and
    then nothing requeued it."""

    def __init__(self, path: str, steps: int, step_s: float, hold: int | None = None):
        self.path, self.steps, self.step_s, self.hold = path, steps, step_s, hold

    def __call__(self) -> int:
        lines = _lines(self.path)
        done = sum(line.startswith("step") for line in lines)
        first_run = not any(line.startswith("start") for line in lines)
        _append(self.path, f"start {done} {time.time()}")
        for i in range(done, self.steps):
            if first_run and i == self.hold:
                _append(self.path, f"hold {i} {time.time()}")
                while True:
                    time.sleep(self.step_s)
            time.sleep(self.step_s)
            _append(self.path, f"step {i + 1} {time.time()}")
        return self.steps


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


# ---- fixtures and helpers ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _cancel_leftovers(slurm_cluster):
    """The session fixture `slurm_cluster` lives in conftest.py; cancel what a failed test left here."""
    yield
    try:
        slurm_cluster.run("scancel", "--name", JOB_NAME)
    except (RuntimeError, subprocess.SubprocessError):
        pass


def executor_for(spec: SlurmSpec, folder) -> submitit.AutoExecutor:
    """An executor for ``spec``, as sweeps/launcher.py builds one, whose jobs can import this module."""
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = spec.submitit_params()
    setup = [*params.pop("slurm_setup", []), f"export PYTHONPATH={HERE}:{REPO}"]
    executor.update_parameters(name=JOB_NAME, slurm_setup=setup, **params)
    return executor


# A Python job's own start (interpreter, imports, unpickling its function) on a loaded 2-core machine: no
# Slurm setting bounds it, so it gets a budget of its own; what Slurm does is waited on with Slurm's delays.
JOB_START_S = 60


def result(job, timeout: float = 60):
    wait_until(job.done, timeout, f"job {job.job_id} to finish", interval=0.2)
    return job.result()


slow = pytest.mark.slow


# ---- against the dev cluster -------------------------------------------------------------------------------
@slow
def test_job_on_a_fake_a100_returns_its_result(slurm_cluster, tmp_path):
    executor = executor_for(load_spec("dev").replace(gpus_per_node=1), tmp_path)
    t0 = time.monotonic()
    job = executor.submit(job_env)
    env = result(job)
    print(f"submit -> result: {time.monotonic() - t0:.2f}s", flush=True)
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["SLURM_JOB_PARTITION"] == "a100"
    rows = wait_until(lambda: slurm_cluster.sacct(job.job_id, ("AllocTRES",)), slurm_cluster.delays().accounting_s,
                      "sacct to list the job")
    tres = rows[0]["AllocTRES"]
    assert "gres/gpu:a100=1" in tres, tres


@slow
@pytest.mark.parametrize("how", ["batch", "map_array"])
def test_four_jobs_form_one_array(slurm_cluster, tmp_path, how):
    executor = executor_for(load_spec("dev"), tmp_path)
    if how == "batch":  # what sweeps/launcher.py does
        with executor.batch():
            jobs = [executor.submit(square, i, 1.0) for i in range(4)]
    else:
        jobs = executor.map_array(square, range(4), [1.0] * 4)
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(4)]
    queued = slurm_cluster.run("squeue", "-h", "-r", "-j", array_id, "-o", "%i").split()
    assert queued and all(q.startswith(f"{array_id}_") for q in queued), queued  # 2 CPUs: some still wait
    assert [result(j) for j in jobs] == [0, 1, 4, 9]

    def all_completed() -> bool:
        rows = slurm_cluster.sacct(array_id)
        return sorted(r["JobID"] for r in rows) == [j.job_id for j in jobs] and all(
            r["State"] == "COMPLETED" for r in rows)

    wait_until(all_completed, slurm_cluster.delays().accounting_s, "sacct to list the 4 array tasks COMPLETED")


@slow
@pytest.mark.parametrize("how", ["scontrol requeue", "preemption signal"])
def test_checkpointable_job_resumes_after_requeue(slurm_cluster, tmp_path, how):
    path = str(tmp_path / "progress.txt")
    delays = slurm_cluster.delays()
    job = executor_for(load_spec("dev"), tmp_path / "log").submit(Progress(path, steps=12, step_s=0.5, hold=3))
    slurm_cluster.wait_job(job.job_id, lambda j: j["JobState"] == "RUNNING", delays.start_s, "first run to start")
    wait_until(lambda: any(ln.startswith("hold") for ln in _lines(path)), JOB_START_S, "first run to count to 3")
    t0 = time.time()
    if how == "scontrol requeue":  # an admin or the scheduler requeues it: SIGTERM, then SIGKILL after KillWait
        slurm_cluster.run("scontrol", "requeue", job.job_id)
    else:  # preemption as submitit sees it: USR2 -> checkpoint() -> DelayedSubmission -> scontrol requeue
        job._interrupt()
    # Each step as slurmctld reports it, each with its own deadline: a requeue that never happens fails in
    # seconds with the job's state, not after a budget meant for the whole restart.
    slurm_cluster.wait_job(job.job_id, lambda j: int(j["Restarts"]) >= 1, delays.signal_s, "requeue")
    # the old run stops first (its processes die, the step reports its end): on a loaded machine that is the
    # slow part, bounded by Slurm's own UnkillableStepTimeout, and the restart's budget starts after it
    slurm_cluster.wait_job(job.job_id, lambda j: j["JobState"] != "COMPLETING", delays.stop_s, "requeued run to stop")
    slurm_cluster.wait_job(job.job_id, running_again, delays.requeue_s, "requeued job to run again")
    # Slurm says it runs again; its Python may still be starting on a loaded machine. Wait on the job itself:
    # fail at once if it ends without starting, else give its start the budget of a whole first run.
    def second_start():
        return [ln for ln in _lines(path) if ln.startswith("start")][1:]

    slurm_cluster.wait_job(job.job_id, lambda j: bool(second_start()), 5 * JOB_START_S, "second run to start counting")
    starts = second_start()
    resumed_at, restarted = int(starts[0].split()[1]), float(starts[0].split()[2])
    print(f"{how} -> running again: {restarted - t0:.1f}s", flush=True)
    assert resumed_at >= 3  # resumed from its own checkpoint, not from 0
    assert result(job, 60) == 12
    steps = [int(ln.split()[1]) for ln in _lines(path) if ln.startswith("step")]
    assert steps[-1] == 12 and sorted(set(steps)) == list(range(1, 13))


@slow
@pytest.mark.parametrize("spec, words", [
    (lambda: load_spec("dev").replace(gpus_per_node=3), "Requested node configuration is not available"),
    (lambda: load_spec("dev").replace(partition="v100"), "Invalid partition name specified"),
    (lambda: load_spec("a100x1"), "More processors requested than permitted"),  # 16 CPUs > 2 here
], ids=["gpu:3", "unknown-partition", "a100x1-on-dev"])
def test_impossible_request_is_refused_at_submit(slurm_cluster, tmp_path, spec, words):
    before = slurm_cluster.run("squeue", "-h", "-o", "%i").split()
    executor = executor_for(spec(), tmp_path)
    with pytest.raises(submitit.core.utils.FailedJobError, match=words):
        with executor.batch():
            executor.submit(square, 1)
            executor.submit(square, 2)
    assert set(slurm_cluster.run("squeue", "-h", "-o", "%i").split()) <= set(before)  # nothing was submitted


@slow
def test_start_is_idempotent_and_restarts_warm(slurm_cluster, tmp_path):
    t0 = time.monotonic()
    assert slurm_cluster.start().startswith("slurm dev cluster up: partition a100")  # all running: no-op
    assert time.monotonic() - t0 < 10
    slurm_cluster.stop()
    assert not slurm_cluster.is_up()
    slurm_cluster.stop()  # idempotent
    t0 = time.monotonic()
    slurm_cluster.start()
    print(f"warm restart: {time.monotonic() - t0:.1f}s", flush=True)
    assert result(executor_for(load_spec("dev"), tmp_path).submit(square, 7)) == 49


# ---- the spec loader (no cluster) --------------------------------------------------------------------------
def _submitit_keys_valid(params: dict) -> bool:
    slurm_keys = submitit.SlurmExecutor._valid_parameters()
    generic = submitit.AutoExecutor._valid_parameters()
    return all(k in generic or (k.startswith("slurm_") and k[len("slurm_"):] in slurm_keys) for k in params)


def test_shipped_specs_load_and_map_to_submitit():
    assert {"a100x1", "a100x8", "a100x16", "dev"} <= set(names())
    for name in names():
        spec = load_spec(name)
        assert spec.partition == "a100" and _submitit_keys_valid(spec.submitit_params()), name
    x1, x16 = load_spec("a100x1").submitit_params(), load_spec("a100x16").submitit_params()
    assert x1["slurm_gres"] == "gpu:a100:1" and x1["cpus_per_task"] == 16 and x1["mem_gb"] == 120
    assert x16["nodes"] == 2 and x16["slurm_gres"] == "gpu:a100:8"
    assert "slurm_account" not in x1 and "slurm_qos" not in x1  # "" = none
    assert load_spec(os.path.join(REPO, "slurm", "dev.yaml")) == load_spec("dev")


def test_spec_keys_reach_submitit(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("partition: gpu\naccount: proj42\nqos: high\ngpus_per_node: 4\ngpu_type: ''\n"
                    "constraint: a100&ib\nadditional_parameters: {reservation: paper, exclusive: true}\n")
    params = load_spec(str(path)).submitit_params()
    assert params["slurm_account"] == "proj42" and params["slurm_qos"] == "high"
    assert params["slurm_gres"] == "gpu:4" and params["slurm_constraint"] == "a100&ib"
    assert params["slurm_additional_parameters"] == {"reservation": "paper", "exclusive": True}
    assert _submitit_keys_valid(params)


@pytest.mark.parametrize("text, words", [
    ("partition: a100\ngpus: 1\n", "slurm spec bad: unknown key 'gpus'"),
    ("account: x\n", "slurm spec bad has no partition"),
    ("partition: ''\n", "slurm spec bad has no partition"),
    ("partition: a100\ncpus_per_task: '16'\n", "cpus_per_task='16': expected int"),
    ("partition: a100\nnodes: true\n", "nodes=True: expected int"),
    ("partition: a100\nmem_gb: 0\n", "mem_gb=0: must be >= 1"),
    ("partition: a100\ngpus_per_node: -1\n", "gpus_per_node=-1: must be >= 0"),
    ("partition: a100\nsetup: module load cuda\n", "setup must be a list"),
    ("partition: a100\ngpu_type: a100:2\n", "gpu_type='a100:2'"),
    ("partition: a100\nadditional_parameters: {gres: 'gpu:1'}\n", "repeats ['gres']"),
    ("- partition\n", "must hold a mapping"),
    ("partition: [a100\n", "is not valid YAML"),
])
def test_bad_spec_is_a_one_line_value_error(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_spec(str(path))
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_unknown_spec_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"slurm spec 'a100x3' not found \(known specs: a100x1, a100x16"):
        load_spec("a100x3")
    with pytest.raises(ValueError, match="no file /nonexistent.yaml"):
        load_spec("/nonexistent.yaml")
    with pytest.raises(ValueError, match="expected int"):
        load_spec("dev").replace(nodes="2")
