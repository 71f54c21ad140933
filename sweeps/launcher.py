"""Launch grid points with submitit: ``local`` (slots on this machine) or ``slurm`` (one job array).

local: each run is a submitit LocalExecutor job (a subprocess); at most ``parallel`` run at once
       (two single-thread runs side by side beat one two-thread run on 2 cores). The launcher waits and
       shows a live table; Ctrl-C leaves checkpoints to resume from.
slurm: all points of one launch are ONE job array (``executor.batch()``), with the spec from slurm/*.yaml.
       Jobs run from a pinned copy of the code at the launch commit (``<runs>/.code/<commit>``), so
       editing the tree while jobs queue changes nothing. The launcher returns at once;
       ``python sweeps/run.py grid=... status=true`` shows progress.

Run state lives in each run dir (fvq/core/rundir.py): ``job.json`` (who runs it), ``status.json`` (fvq.train).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import submitit

from fvq.core.errors import SetupError
from fvq.core.rundir import DONE, read_json, read_status, write_json
from sweeps.job import TrainJob

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


class LaunchError(SetupError):
    """Refused before anything was submitted; one-line message."""


def refuse_dirty(dirty: bool, force: bool) -> None:
    """Slurm jobs run from the launch commit: an uncommitted tree is refused unless force=true."""
    if dirty and not force:
        raise LaunchError("the working tree has uncommitted changes; Slurm jobs run from the launch "
                          "commit - commit them, or pass force=true to launch a snapshot of the tree as it is")


def git_commit(repo: str = REPO) -> tuple[str, bool]:
    """(commit, dirty) of the working tree; ("unknown", True) outside git."""
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip() != ""
        return commit, dirty
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown", True


def snapshot_tree(repo: str = REPO) -> str:
    """Tree id of the working tree as it is (tracked + untracked, not ignored), without touching the index.
    The scratch index lives in a temporary dir: in a git worktree ``.git`` is a file, not a directory."""
    with tempfile.TemporaryDirectory(prefix="fvq-snapshot-") as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": os.path.join(scratch, "index")}
        subprocess.run(["git", "-C", repo, "add", "-A"], env=env, check=True, capture_output=True, timeout=60)
        return subprocess.run(["git", "-C", repo, "write-tree"], env=env, check=True, capture_output=True,
                              text=True, timeout=60).stdout.strip()


def pin_code(commit: str, runs_root: str, dirty: bool = False) -> tuple[str, str]:
    """Export the code jobs run to ``<runs>/.code/<id>`` once (git archive | tar); return (dir, label).

    Clean tree: the launch commit. Dirty tree (only with force=true): a snapshot of the working tree as
    it is now, labelled ``<commit>+dirty.<tree>``, so what runs is still exactly what was launched.
    """
    ref = snapshot_tree() if dirty else commit
    label = f"{commit}+dirty.{ref[:10]}" if dirty else commit
    dest = os.path.join(os.path.abspath(runs_root), ".code", ref)
    if os.path.isdir(dest):
        return dest, label
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    archive = subprocess.Popen(["git", "-C", REPO, "archive", ref], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", tmp], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise LaunchError(f"git archive {ref} failed")
    os.replace(tmp, dest)
    return dest, label


def classify(run_dir: str) -> tuple[str, str]:
    """State of a run dir for the relaunch rules: finished or pruned -> skip; active -> skip; failed -> skip
    unless retry; stalled (queued/running but nobody runs it any more, e.g. killed) or missing -> submit."""
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
    if job.get("launcher") == "slurm":
        st = slurm_state(job.get("job_id", ""))
        if st in ACTIVE_SLURM:
            return "active", f"slurm {job.get('job_id')} {st}"
        return "stalled", f"slurm {job.get('job_id')} {st or 'gone'}, last step {status.get('step')}"
    pid = status.get("pid") if state == "RUNNING" else job.get("launcher_pid")
    if pid and _alive(int(pid)):
        return "active", f"local pid {pid}"
    return "stalled", f"{(state or 'queued').lower()}, nobody running it, last step {status.get('step')}"


def slurm_state(job_id: str) -> str:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def est_cost(cfg) -> float:
    """Relative cost of a run for ordering: steps x training-step FLOPs (0 when there is no config)."""
    from fvq.vq.flops import train_step_flops

    return 0.0 if cfg is None else float(cfg.optim.steps) * train_step_flops(cfg)


def warm_fid_references(plans: list, threads: int, log=print) -> None:
    """Before local runs start side by side: extract the real images' Inception features once, here, with
    every slot's thread (`fvq.build.warm_fid_reference`), instead of once in each run of the first wave.
    A failure is only reported: each run then extracts them itself, as it would without this step."""
    import torch

    from fvq.build import warm_fid_reference

    seen, before = set(), torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        for p in plans:
            key = None if p.cfg is None else (p.cfg.data, p.cfg.seed, p.cfg.eval, p.cfg.device)
            if key is None or key in seen or not p.cfg.eval.fid:
                continue
            seen.add(key)
            t0 = time.time()
            try:
                log(f"[fvq] {warm_fid_reference(p.cfg)} in {time.time() - t0:.0f}s", flush=True)
            except Exception as e:  # the runs will hit (and report) the same problem
                log(f"[fvq] rFID reference not prepared: {type(e).__name__}: {e}"[:300], flush=True)
    finally:
        torch.set_num_threads(before)


def launch_local(plans: list, runs_root: str, uri: str, experiment: str, parallel: int,
                 show=None, shortest_first: bool = False) -> dict[str, str]:
    """Run every plan as a local submitit job, ``parallel`` at a time, longest first; block until all end.

    Longest-first (by `fvq.vq.flops.train_step_flops` x steps; Graham's LPT rule) keeps a long run from being
    the lone last job while other slots idle. ``shortest_first`` reverses it: the most runs done by a deadline.
    The rFID reference is extracted once before any run starts (`warm_fid_references`)."""
    folder = os.path.join(runs_root, ".submitit")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + env_path if env_path else "")  # jobs import sweeps.*
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=24 * 60, gpus_per_node=0, tasks_per_node=1)
    queue = sorted(plans, key=lambda p: est_cost(p.cfg), reverse=not shortest_first)
    running, results = {}, {}
    for p in plans:  # claimed (queued here) first, so a relaunch meanwhile skips them
        write_json(os.path.join(p.run_dir, "job.json"), {"launcher": "local", "launcher_pid": os.getpid()})
    warm_fid_references(plans, parallel)
    while queue or running:
        while queue and len(running) < parallel:
            p = queue.pop(0)
            job = executor.submit(TrainJob(p.run_dir, uri, experiment))
            write_json(os.path.join(p.run_dir, "job.json"), {"launcher": "local", "launcher_pid": os.getpid(),
                                                             "job_id": str(job.job_id)})
            running[p.sig] = (p, job)
        for sig, (p, job) in list(running.items()):
            if job.done():
                del running[sig]
                try:
                    job.result()
                    results[sig] = "finished"
                except Exception as e:  # the run's own status.json holds the reason
                    results[sig] = f"failed: {read_status(p.run_dir).get('reason') or str(e).splitlines()[-1]}"
                    tail = job.stderr() or ""
                    print(f"[fvq] run {sig} failed; last log lines:\n" + "\n".join(tail.splitlines()[-5:]),
                          file=sys.stderr, flush=True)
        if show is not None:
            show(results, running, queue)
        time.sleep(1.0)
    return results


def slurm_executor(spec, code: str, runs_root: str) -> submitit.AutoExecutor:
    """A Slurm executor for ``spec`` whose jobs run the pinned code dir ``code``."""
    folder = os.path.join(os.path.abspath(runs_root), ".submitit", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = spec.submitit_params()
    setup = list(params.pop("slurm_setup", []) or [])
    # quoted: a runs_dir with a space, or with $(...) in its name, is a path, never shell code
    setup += [f"cd {shlex.quote(code)}", f"export PYTHONPATH={shlex.quote(code)}${{PYTHONPATH:+:$PYTHONPATH}}"]
    executor.update_parameters(slurm_setup=setup, **params)
    return executor


def launch_slurm(plans: list, runs_root: str, uri: str, experiment: str, spec, commit: str,
                 dirty: bool = False) -> list[str]:
    """Submit one job array for ``plans`` from a pinned copy of the code; return job ids."""
    code, commit = pin_code(commit, runs_root, dirty)
    executor = slurm_executor(spec, code, runs_root)
    max_requeues = getattr(spec, "max_requeues", 3)
    jobs = []
    try:
        with executor.batch():
            for p in plans:
                jobs.append(executor.submit(TrainJob(p.run_dir, uri, experiment, max_requeues)))
    except Exception as e:
        raise LaunchError(f"sbatch refused the job array: {str(e).strip().splitlines()[-1][:300]}") from None
    for p, job in zip(plans, jobs):
        write_json(os.path.join(p.run_dir, "job.json"), {"launcher": "slurm", "job_id": str(job.job_id),
                                                         "commit": commit, "code": code})
    return [str(j.job_id) for j in jobs]
