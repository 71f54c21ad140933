"""The one submit path. Grids (sweeps/run.py), searches (sweeps/search.py) and generation
(sweeps/generation.py) all launch through `Launching`:

    with Launching(opts, launch, "grid=patch_size scale=cpu", tags) as launching:
        results = launching.submit(Batch(plans, job=..., write=...))

`submit` applies the relaunch rules (sweeps/state.py), claims each run dir (so two launches never train one
point twice), writes the run dir's files, dispatches (local slots, or Slurm: one job array plus afterok
dependencies) and releases the claims. The parent MLflow run of the launch is opened at the first submit that
has work and closed on leaving the block: FINISHED, FAILED (a failed run, an error) or KILLED (Ctrl-C).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from fvq.core.config import Config
from fvq.core.errors import one_line
from fvq.core.rundir import claim, read_status, release
from sweeps.launcher import launch_local, launch_slurm
from sweeps.plan import check_writable, run_bytes
from sweeps.state import TO_SUBMIT, classify, progress


def no_dependency(plan: Any) -> str:
    return ""


def no_files(plan: Any, parent: str) -> None:
    return None


@dataclass
class Batch:
    """Runs that go out together. Every plan has ``sig``, ``run_dir`` and ``state`` (sweeps/state.py)."""
    plans: list
    # (plan, parent run id) -> the submitit callable that runs it; None = a tokenizer run (`Launching.train_job`)
    job: Callable[[Any, str], Any] | None = None
    write: Callable[[Any, str], None] = no_files  # (plan, parent run id): the run dir's files, before submission
    after: Callable[[Any], str] = no_dependency  # plan -> the Slurm job it waits for (afterok), "" for none


def submits(state: str, retry: bool) -> bool:
    """The relaunch rule: missing, stalled and preempted runs go out; failed ones only with retry=true."""
    return state in TO_SUBMIT or (retry and state == "failed")


def to_submit(plans: list, retry: bool) -> list:
    return [p for p in plans if submits(p.state, retry)]


def plan_line(plans: list, retry: bool, what: str = "points") -> str:
    """``3 points, 2 to submit (1 finished)``: what a (re)launch sends and what it leaves, said before it sends."""
    left = sorted({p.state for p in plans if not submits(p.state, retry)})
    kept = ", ".join(f"{sum(p.state == s for p in plans)} {s}" for s in left) or "none skipped"
    return f"{len(plans)} {what}, {len(to_submit(plans, retry))} to submit ({kept})"


class Launching:
    """One launch: its parent MLflow run (opened at the first submit with work, closed on leaving the block)
    and the outcome of every run it submitted, over one or several `submit` calls (a search's batches,
    generation's tokenizers then generators)."""

    def __init__(self, opts, launch, name: str, tags: dict[str, str]):
        self.opts, self.launch, self.name, self.tags = opts, launch, name, tags
        self.parent = ""
        self.results: dict[str, str] = {}
        self.dirs: list[str] = []  # every run dir this launch submitted

    def __enter__(self) -> "Launching":
        return self

    def submit(self, batch: Batch, show=None) -> dict[str, str]:
        """Submit the batch's runs the relaunch rules ask for; {signature: outcome}. Local: blocks until they
        end (finished | failed: ... | preempted: ... | killed: ...). Slurm: returns at once ({sig: job id})."""
        opts = self.opts
        first: dict = {}
        for p in to_submit(batch.plans, opts.retry):  # a run two trials (or grids) share goes out once
            first.setdefault(p.sig, p)
        todo = list(first.values())
        if todo:  # a full or read-only disk is named before anything is claimed or written
            need = sum(run_bytes(p.cfg) for p in todo if isinstance(getattr(p, "cfg", None), Config))
            check_writable(opts.runs_dir, need, len(todo))
        mine: list = []
        try:
            for p in todo:
                holder = claim(p.run_dir)  # a claim that cannot be written raises one line (RunDirError)
                if holder:  # another launch took it between its plan and ours: it trains it, not us
                    print(f"[fvq] {p.sig}: already claimed by {holder}; not submitted", flush=True)
                    continue
                mine.append(p)
                state, detail = classify(p.run_dir)  # judged again under the claim: run by another since the plan?
                if not submits(state, opts.retry):
                    print(f"[fvq] {p.sig}: {state} since this launch planned it ({detail}); not submitted", flush=True)
                    p.state, p.detail = state, detail
            todo = to_submit(mine, opts.retry)
            if not todo:
                return {}
            parent = self._parent()
            for p in todo:
                batch.write(p, parent)
                if opts.retry and os.path.exists(os.path.join(p.run_dir, "attempts.json")):
                    os.unlink(os.path.join(p.run_dir, "attempts.json"))  # a retried run gets its requeue budget back
            job = batch.job or self.train_job
            if opts.launcher == "slurm":
                out = launch_slurm(todo, opts.runs_dir, self.launch.spec, self.launch.commit,
                                   lambda p: job(p, parent), self.launch.dirty, after=batch.after)
            else:
                out = launch_local(todo, opts.runs_dir, opts.parallel, lambda p: job(p, parent), show=show,
                                   shortest_first=opts.order == "shortest")
            self.results.update(out)
            self.dirs += [p.run_dir for p in todo]
            return out
        finally:
            for p in mine:
                release(p.run_dir)

    @property
    def max_requeues(self) -> int:
        """Requeues a run may take (the Slurm spec's; preemptions and node failures), then it is failed."""
        return getattr(self.launch.spec, "max_requeues", 3)

    def train_job(self, p, parent: str):
        """The job of a tokenizer run (grids, search trials, generation's tokenizers)."""
        from sweeps.job import TrainJob

        return TrainJob(p.run_dir, self.opts.tracking_uri, self.opts.experiment, self.max_requeues)

    @property
    def failed(self) -> bool:
        """A run this launch submitted failed or was killed."""
        return failed(self.results)

    def _parent(self) -> str:
        if not self.parent:
            from sweeps.tracking import open_launch

            self.parent = open_launch(self.opts.tracking_uri, self.opts.experiment, self.name, self.tags)
        return self.parent

    def __exit__(self, kind, error, tb) -> None:
        if not self.parent:
            return
        from sweeps.tracking import end_launch

        status = "KILLED" if kind is KeyboardInterrupt else "FAILED" if (error is not None or self.failed) else "FINISHED"
        tags = {"failure": one_line(error)[:250]} if error is not None and kind is not KeyboardInterrupt else {}
        try:  # with the server away the end is kept in the runs dir for `sync=true`
            end_launch(self.opts.tracking_uri, self.parent, status, runs_dir=self.opts.runs_dir, **tags)
        except Exception as e:  # the runs' own records are safe in their run dirs
            print(f"[fvq] {one_line(e)[:300]}", file=sys.stderr, flush=True)
        from sweeps.tracking import behind_note

        note = behind_note(self.dirs)
        if note:
            print(f"[fvq] {note}", flush=True)


def summary(results: dict[str, str]) -> str:
    """``2 finished, 1 preempted, 0 failed``: outcomes by their first word (finished and failed always)."""
    kinds = [r.split(":")[0] for r in results.values()]
    return ", ".join(f"{kinds.count(k)} {k}" for k in ("finished", "preempted", "killed", "failed")
                     if k in kinds or k in ("finished", "failed"))


def failed(results: dict[str, str]) -> bool:
    """A run failed or was killed (outcomes as ``summary`` reads them)."""
    return any(r.startswith(("failed", "killed")) for r in results.values())


def exit_code(results: dict[str, str]) -> int:
    """A local launch's exit status: 1 when a run failed or was killed, 3 when one was preempted (stopped at a
    checkpoint, as ``fvq.train``'s exit 3: a relaunch of the same command resumes it), else 0."""
    if failed(results):
        return 1
    if any(r.startswith("preempted") for r in results.values()):
        print("preempted runs resume from their checkpoints on a relaunch of the same command", flush=True)
        return 3
    return 0


def total_steps(cfg: Any) -> int | None:
    """A run's training steps: a generator's ``steps``, a tokenizer's ``optim.steps``; None when unknown."""
    steps = getattr(cfg, "steps", None) or getattr(getattr(cfg, "optim", None), "steps", None)
    return steps if isinstance(steps, int) else None


def clock(seconds: float) -> str:
    """``1h34m``, ``12m``, ``40s``: a duration as a progress line says it."""
    m = int(seconds // 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m" if m else f"{int(seconds)}s"


class Live:
    """Progress of a blocking local launch (tokenizers and generators alike): one line per change, from each
    running run's status.json (its step of its total, and the phase after training where there is one), with
    the training time a run has left at the pace it has kept since this launch first saw it move (``~1h34m``;
    measured between step changes, so the line changes only when a step does)."""

    def __init__(self):
        self.last = ""
        self.pace: dict[str, list] = {}  # sig -> [first (time, step) after a change, latest (time, step)]

    def show(self, results, running, queue) -> None:
        parts = []
        for sig, (p, _) in running.items():
            status, total = read_status(p.run_dir), total_steps(p.cfg)
            parts.append(f"{sig}:{progress(status, total) or 0}{self._left(sig, status, total)}")
        line = f"[sweep] {len(results)} done, {len(running)} running ({', '.join(parts)}), {len(queue)} queued"
        if line != self.last:
            self.last = line
            print(line, flush=True)

    def _left(self, sig: str, status: dict, total: int | None) -> str:
        step, now = int(status.get("step") or 0), time.monotonic()
        seen = self.pace.get(sig)
        if seen is None or step < seen[1][1]:  # new, or resumed from an earlier checkpoint: measure afresh
            seen = self.pace[sig] = [None, (now, step)]
        elif step > seen[1][1]:  # a step change: the first anchors the pace (a mid-window start would not)
            seen[0], seen[1] = seen[0] or (now, step), (now, step)
        first, (t_last, s_last) = seen
        if not first or s_last <= first[1] or total is None or status.get("phase") or s_last >= total:
            return ""
        return f" ~{clock((total - s_last) * (t_last - first[0]) / (s_last - first[1]))}"
