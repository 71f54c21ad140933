"""Launch grid points with submitit: ``local`` (slots on this machine) or ``slurm`` (one job array).

local: each run is a submitit LocalExecutor job (a subprocess); at most ``parallel`` run at once
       (two single-thread runs side by side beat one two-thread run on 2 cores). The launcher waits and
       shows a live table; Ctrl-C leaves checkpoints to resume from.
slurm: the points of one submit are ONE job array (``executor.batch()``), with the spec from slurm/*.yaml;
       a point that waits for another job (a generator for its tokenizer) is its own job with afterok.
       Jobs run from a pinned copy of the code at the launch commit (``<runs>/.code/<commit>``), so
       editing the tree while jobs queue changes nothing. The launcher returns at once;
       ``python sweeps/run.py grid=... status=true`` shows progress.

Every launch reaches these through sweeps/submit.py; what a run dir's files say about a run is
sweeps/state.py.
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
from fvq.core.rundir import proc_start, read_status, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def est_cost(cfg) -> float:
    """Relative cost of a run for ordering: steps x training-step FLOPs (0 for a run that is not a tokenizer's)."""
    from fvq.core.config import Config
    from fvq.vq.flops import train_step_flops

    return float(cfg.optim.steps) * train_step_flops(cfg) if isinstance(cfg, Config) else 0.0


def warm_fid_references(plans: list, threads: int, log=print) -> None:
    """Before local runs start side by side: extract the real images' Inception features once, here, with
    every slot's thread (`fvq.build.warm_fid_reference`), instead of once in each run of the first wave.
    A failure is only reported: each run then extracts them itself, as it would without this step."""
    import torch

    from fvq.build import warm_fid_reference
    from fvq.core.config import Config

    seen, before = set(), torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        for p in plans:
            cfg = getattr(p, "cfg", None)
            key = (cfg.data, cfg.seed, cfg.eval, cfg.device) if isinstance(cfg, Config) else None
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


def launch_local(plans: list, runs_root: str, parallel: int, make_job, show=None,
                 shortest_first: bool = False) -> dict[str, str]:
    """Run every plan as a local submitit job (``make_job(plan)``), ``parallel`` at a time, longest first;
    block until all end; {signature: finished | failed: why | preempted: ... | killed: ...}.

    Longest-first (by `fvq.vq.flops.train_step_flops` x steps; Graham's LPT rule) keeps a long run from being
    the lone last job while other slots idle. ``shortest_first`` reverses it: the most runs done by a deadline.
    The rFID reference is extracted once before any run starts (`warm_fid_references`).
    ``job.json`` names the launcher while a run waits in its queue, then the job's own process: a relaunch
    judges a submitted run by the job, so a killed launcher never gets a running point trained twice."""
    folder = os.path.join(runs_root, ".submitit")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + env_path if env_path else "")  # jobs import sweeps.*
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=24 * 60, gpus_per_node=0, tasks_per_node=1)
    queue = sorted(plans, key=lambda p: est_cost(getattr(p, "cfg", None)), reverse=not shortest_first)
    me = {"launcher": "local", "launcher_pid": os.getpid(), "launcher_start": proc_start(os.getpid())}
    running, results = {}, {}
    for p in plans:  # queued here first, so a relaunch meanwhile skips them
        os.makedirs(p.run_dir, exist_ok=True)
        write_json(os.path.join(p.run_dir, "job.json"), me)
    warm_fid_references(plans, parallel)
    while queue or running:
        while queue and len(running) < parallel:
            p = queue.pop(0)
            job = executor.submit(make_job(p))
            write_json(os.path.join(p.run_dir, "job.json"),
                       {**me, "job_pid": str(job.job_id), "job_start": proc_start(int(job.job_id))})
            running[p.sig] = (p, job)
        for sig, (p, job) in list(running.items()):
            if job.done():
                del running[sig]
                results[sig] = _outcome(p, job)
        if show is not None:
            show(results, running, queue)
        time.sleep(1.0)
    return results


def _outcome(p, job) -> str:
    """What became of a local job, in the summary's words; the run's own status.json holds the reason."""
    try:
        job.result()
        return "finished"
    except Exception as e:
        status = read_status(p.run_dir)
        if status.get("state") == "PREEMPTED":  # SIGTERM: stopped at a checkpoint, a relaunch resumes it
            return f"preempted: checkpoint at step {status.get('step')}"
        if status.get("state") == "RUNNING":  # nothing recorded its end: killed from outside
            return f"killed: no exit recorded (kill -9 or out of memory?) at step {status.get('step')}"
        tail = job.stderr() or ""
        print(f"[fvq] run {p.sig} failed; last log lines:\n" + "\n".join(tail.splitlines()[-5:]),
              file=sys.stderr, flush=True)
        return f"failed: {status.get('reason') or str(e).splitlines()[-1]}"


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


def launch_slurm(plans: list, runs_root: str, spec, commit: str, make_job, dirty: bool = False,
                 after=None) -> dict[str, str]:
    """Submit ``make_job(plan)`` for every plan from a pinned copy of the code; {signature: job id}.

    Plans without a dependency go out as ONE job array; a plan for which ``after(plan)`` names a job is its
    own job with ``--dependency=afterok:<job>`` (a dependency once set on an executor cannot be unset, so
    each gets a fresh executor)."""
    code, label = pin_code(commit, runs_root, dirty)
    waits = {p.sig: (after(p) if after else "") or "" for p in plans}
    ids: dict[str, str] = {}
    try:
        free = [p for p in plans if not waits[p.sig]]
        if free:
            executor = slurm_executor(spec, code, runs_root)
            with executor.batch():
                jobs = [executor.submit(make_job(p)) for p in free]
            ids.update({p.sig: str(j.job_id) for p, j in zip(free, jobs)})
        for p in plans:
            if waits[p.sig]:
                executor = slurm_executor(spec, code, runs_root)
                executor.update_parameters(slurm_dependency=f"afterok:{waits[p.sig]}")
                ids[p.sig] = str(executor.submit(make_job(p)).job_id)
    except Exception as e:
        raise LaunchError(f"sbatch refused the jobs: {str(e).strip().splitlines()[-1][:300]}") from None
    for p in plans:
        os.makedirs(p.run_dir, exist_ok=True)
        write_json(os.path.join(p.run_dir, "job.json"), {"launcher": "slurm", "job_id": ids[p.sig], "commit": label,
                                                         "code": code, "after": waits[p.sig]})
    return ids
