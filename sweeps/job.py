"""What runs inside a Slurm (or local) job: the dino-style submitit wrapper around `fvq.train.train`.

Only the run dir and tracking settings are pickled; the config is re-read from ``run_dir/config.json``
written by the launcher, so the job trains exactly what the launcher resolved and checked.

Requeues: a preempted or ``scontrol requeue``d job gets SIGTERM; `fvq.train` finishes the step, writes a
checkpoint and stops; Slurm starts the job again and it resumes from that checkpoint in the same MLflow
run. On a time limit submitit calls `checkpoint()` (SIGUSR2) and resubmits this same callable. Requeues
are bounded: past ``max_requeues`` restarts the run is marked FAILED instead of looping forever.

Several tasks (``tasks_per_node`` x ``nodes`` > 1, slurm/a100x8.yaml, a100x16.yaml): every task runs this
callable; they form one data-parallel run (fvq/core/dist.py). Only rank 0 counts attempts, opens the MLflow run
and tracks; a requeued job restarts all tasks and every rank resumes from rank 0's checkpoint.
"""
from __future__ import annotations

import json
import os
import socket
import time

import submitit

from fvq.core import dist
from fvq.build import resolve_device
from fvq.core.config import from_flat_dict
from fvq.core.errors import one_line
from fvq.core.rundir import RunDirError, read_json, read_status, write_json, write_status
from fvq.core.checkpoint import Preempted
from fvq.train import train
from sweeps.pruning import pruning_callback


def count_start(run_dir: str, max_requeues: int) -> int:
    """Count one start of the run (``attempts.json``); past ``max_requeues`` restarts the run is FAILED
    instead of looping through requeues forever. Every job kind (tokenizer, generator) counts its starts."""
    path = os.path.join(run_dir, "attempts.json")
    starts = []
    if os.path.exists(path):
        with open(path) as f:
            starts = json.load(f)
    starts.append(time.time())
    write_json(path, starts)
    if len(starts) > max_requeues + 1:
        reason = f"gave up after {len(starts) - 1} starts (max_requeues={max_requeues})"
        write_status(run_dir, "FAILED", reason=reason, step=read_status(run_dir).get("step"))
        raise RunDirError(reason)
    return len(starts)


class TrainJob(submitit.helpers.Checkpointable):
    def __init__(self, run_dir: str, tracking_uri: str, experiment: str, max_requeues: int = 3):
        self.run_dir = run_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.max_requeues = max_requeues

    def __call__(self) -> dict:
        from sweeps.tracking import MLflowSink

        cfg = self._config()
        env = submitit.JobEnvironment() if "SUBMITIT_EXECUTOR" in os.environ else None
        if env is not None and env.num_tasks > 1:
            # Data-parallel (one task per GPU): fvq reads only torchrun-style variables; submitit derives them
            # from this Slurm job (master = first node, a port from the job id, rank = global task rank).
            # CUDA_VISIBLE_DEVICES is left as Slurm set it; fvq picks cuda:LOCAL_RANK among the visible GPUs.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        # Join the process group here already, so that rank 0's verdict on the attempt reaches every rank.
        with dist.joined(resolve_device(cfg)):
            try:
                run_id = dist.on_main(self._start, env)  # raises on every rank when rank 0 gives up
            except Exception as e:  # e.g. the tracking server is down at start: recorded, not left "active"
                if dist.is_main() and read_status(self.run_dir).get("state") != "FAILED":
                    self._fail(f"could not open the MLflow run: {type(e).__name__}: {one_line(e)}")
                raise
            main = dist.is_main()
            sink = MLflowSink(self.tracking_uri, run_id) if main else None  # rank 0 alone tracks the run
            try:
                return train(cfg, self.run_dir, sink, on_eval=pruning_callback(self.run_dir) if main else None)
            except Preempted as e:
                print(f"[fvq] {e}; waiting to be requeued", flush=True)
                raise

    def _config(self):
        """The config the launcher wrote; an unreadable one fails the run with a line naming the file."""
        path = os.path.join(self.run_dir, "config.json")
        try:
            with open(path) as f:
                return from_flat_dict(json.load(f))
        except (OSError, ValueError) as e:  # JSONDecodeError and ConfigError are ValueErrors
            reason = f"{path} is unreadable ({type(e).__name__}: {one_line(e)[:160]})"
            self._fail(reason)
            raise RunDirError(reason) from None

    def _fail(self, reason: str) -> None:
        write_status(self.run_dir, "FAILED", reason=reason[:500], step=read_status(self.run_dir).get("step"))

    def _start(self, env) -> str:
        """Rank 0: count this start (bounded requeues), open or re-open the MLflow run; its run id."""
        from sweeps.tracking import open_run  # mlflow is imported by the job, never by fvq/

        attempts = count_start(self.run_dir, self.max_requeues)
        tags = self._tags()
        if env is not None:
            tags.update({"job_id": str(env.job_id), "host": socket.gethostname()})
            if env.num_tasks > 1:
                tags.update({"world_size": str(env.num_tasks), "nodes": str(env.num_nodes)})
        name = tags.pop("name", "") or tags.get("signature", "run")  # e.g. "patch_size vqbridge K=16k p=16"
        run_id = open_run(self.tracking_uri, self.experiment, self.run_dir, name, tags)
        print(f"[fvq] run {self.run_dir} attempt {attempts} -> MLflow run {run_id}", flush=True)
        return run_id

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # fvq.train checkpoints every log.ckpt_every steps and on SIGTERM; resubmitting the same callable
        # resumes from the newest ckpt.pt.
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir, self.tracking_uri, self.experiment,
                                                           self.max_requeues))

    def _tags(self) -> dict[str, str]:
        return {k: str(v) for k, v in read_json(os.path.join(self.run_dir, "tags.json")).items()}
