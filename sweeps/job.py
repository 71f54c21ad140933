"""What runs inside a Slurm (or local) job: the dino-style submitit wrapper around `fvq.train.train`.

Only the run dir and tracking settings are pickled; the config is re-read from ``run_dir/config.json``
written by the launcher, so the job trains exactly what the launcher resolved and checked.

Requeues: a preempted or ``scontrol requeue``d job gets SIGTERM; `fvq.train` finishes the step, writes a
checkpoint and stops; Slurm starts the job again and it resumes from that checkpoint in the same MLflow
run. On a time limit submitit calls `checkpoint()` (SIGUSR2) and resubmits this same callable. Requeues
are bounded: past ``max_requeues`` restarts the run is marked FAILED instead of looping forever.
"""
from __future__ import annotations

import json
import os
import socket
import time

import submitit

from fvq.config import from_flat_dict
from fvq.train import Preempted, read_status, train, write_json


class TrainJob(submitit.helpers.Checkpointable):
    def __init__(self, run_dir: str, tracking_uri: str, experiment: str, max_requeues: int = 3):
        self.run_dir = run_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.max_requeues = max_requeues

    def __call__(self) -> dict:
        from sweeps.tracking import MLflowSink, open_run  # mlflow is imported by the job, never by fvq/

        with open(os.path.join(self.run_dir, "config.json")) as f:
            cfg = from_flat_dict(json.load(f))
        attempts = self._count_attempt()
        if attempts > self.max_requeues + 1:
            reason = f"gave up after {attempts - 1} starts (max_requeues={self.max_requeues})"
            write_json(os.path.join(self.run_dir, "status.json"),
                       {"state": "FAILED", "reason": reason, "step": read_status(self.run_dir).get("step")})
            raise RuntimeError(reason)
        tags = self._tags()
        env = submitit.JobEnvironment() if "SUBMITIT_EXECUTOR" in os.environ else None
        if env is not None:
            tags.update({"job_id": str(env.job_id), "host": socket.gethostname()})
        run_id = open_run(self.tracking_uri, self.experiment, self.run_dir, tags.get("signature", "run"), tags)
        print(f"[fvq] run {self.run_dir} attempt {attempts} -> MLflow run {run_id}", flush=True)
        from sweeps.search import pruning_callback

        try:
            return train(cfg, self.run_dir, MLflowSink(self.tracking_uri, run_id),
                         on_eval=pruning_callback(self.run_dir))
        except Preempted as e:
            print(f"[fvq] {e}; waiting to be requeued", flush=True)
            raise

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # fvq.train checkpoints every log.ckpt_every steps and on SIGTERM; resubmitting the same callable
        # resumes from the newest ckpt.pt.
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir, self.tracking_uri, self.experiment,
                                                           self.max_requeues))

    def _count_attempt(self) -> int:
        path = os.path.join(self.run_dir, "attempts.json")
        starts = []
        if os.path.exists(path):
            with open(path) as f:
                starts = json.load(f)
        starts.append(time.time())
        write_json(path, starts)
        return len(starts)

    def _tags(self) -> dict[str, str]:
        path = os.path.join(self.run_dir, "tags.json")
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return {k: str(v) for k, v in json.load(f).items()}
