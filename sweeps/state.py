"""Run state, in one place: what a run dir's files and the process or Slurm job behind them say about a run.

The relaunch rules (sweeps/submit.py) act on `classify`:
- ``finished`` / ``pruned``: ended by itself -> skipped;
- ``active``: a live process or Slurm job holds it (queued in a launcher, starting, training) -> skipped;
- ``failed``: recorded a reason -> skipped unless retry=true;
- ``preempted``: stopped at a checkpoint by SIGTERM and nobody resumes it -> submitted (resumes);
- ``stalled``: queued or running but nobody runs it any more (a kill -9, a lost node) -> submitted (resumes);
- ``missing``: never launched -> submitted.

Liveness comes from the job, not from the launcher: ``job.json`` records the launcher's pid while the run
waits in its queue, then the submitted job's own pid (local) or Slurm job id, each with the process start
time, so a recycled pid is not mistaken for the run. A launcher killed right after it submitted a job leaves
that job alive and the run ``active``: a relaunch does not start a second copy.
"""
from __future__ import annotations

import os
import subprocess

from fvq.core.rundir import DONE, alive, read_json, read_status

ACTIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
# what the relaunch rules submit (a failed run only with retry=true)
TO_SUBMIT = ("missing", "stalled", "preempted")


def classify(run_dir: str) -> tuple[str, str]:
    """(state, detail) of a run dir; the states are the module docstring's."""
    status = read_status(run_dir)
    state = status.get("state")
    if not status and os.path.exists(os.path.join(run_dir, "status.json")):
        # torn or garbled: never restart a run on that alone (a finished one would train again)
        if read_json(os.path.join(run_dir, "final.json")).get("metrics"):
            return "finished", "status.json unreadable; final.json holds the evaluation"
        return "failed", "status.json unreadable (repair or delete it, then retry=true)"
    if state in DONE:
        return state.lower(), f"step {status.get('step')}"
    if state == "FAILED":
        return "failed", status.get("reason", "")
    job = read_json(os.path.join(run_dir, "job.json"))
    if not job and not state:
        return "missing", ""
    last = f"last step {status.get('step')}"
    if job.get("launcher") == "slurm":
        st = slurm_state(job.get("job_id", ""))
        if st in ACTIVE_SLURM:
            return "active", f"slurm {job.get('job_id')} {st}"
        if state == "PREEMPTED":
            return "preempted", f"slurm {job.get('job_id')} {st or 'gone'}, checkpoint at step {status.get('step')}"
        return "stalled", f"slurm {job.get('job_id')} {st or 'gone'}, {last}"
    if state == "RUNNING" and alive(status.get("pid"), status.get("pid_start")):
        return "active", f"training, pid {status['pid']}"
    if alive(job.get("job_pid"), job.get("job_start")):  # submitted: starting, training or stopping
        return "active", f"local job pid {job['job_pid']}"
    if not job.get("job_pid") and alive(job.get("launcher_pid"), job.get("launcher_start")):
        return "active", f"queued in launcher pid {job['launcher_pid']}"
    if state == "PREEMPTED":
        return "preempted", f"checkpoint at step {status.get('step')}, nobody resuming it"
    if state == "RUNNING":  # the process vanished without recording an exit: kill -9, OOM killer, lost node
        return "stalled", f"killed without a trace (no exit recorded: kill -9 or out of memory?), {last}"
    return "stalled", f"queued, nobody running it, {last}"


def progress(status: dict, total: int | None = None, live: bool = True) -> str:
    """Where a run stands, as the launch progress and the generation table print it: ``1500/3000 gFID`` (its
    last logged step, of ``total`` where given, and the phase after training while the run is live)."""
    if not status:
        return ""
    step = f"{status.get('step', 0)}" + (f"/{total}" if total is not None else "")
    return step + (f" {status['phase']}" if live and status.get("phase") else "")


def slurm_state(job_id: str) -> str:
    """The scheduler's state of a job (squeue while it is known there, then sacct); "" when unknown."""
    if not job_id:
        return ""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                             timeout=10).stdout.split()
        if out:
            return out[0]
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                             text=True, timeout=10).stdout.split()
        return out[0].split()[0] if out else ""
    except (subprocess.SubprocessError, FileNotFoundError):
        return ""
