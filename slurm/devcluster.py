"""The single-node dev cluster (slurm/dev-cluster/*.sh) from Python: start, stop, its client env, sacct reads.

    cluster = DevCluster()
    print(cluster.start())              # "slurm dev cluster up: partition a100, node vm, 2 cpus, 2 fake a100"
    os.environ.update(cluster.env)      # SLURM_CONF for sbatch/sacct/submitit in this process and its jobs
    ...
    cluster.stop()

Every call that reaches Slurm has a timeout: sinfo/sacct hang ~30 s when a daemon is down.
Standard library only (tests and demos import it; jobs do not).
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dev-cluster")
CANNOT_INSTALL = 3  # start.sh's exit status when it cannot install (not root, no apt-get, apt failed)


class DevClusterError(RuntimeError):
    """start.sh/stop.sh failed; the message is the script's one-line reason."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode

    @property
    def cannot_install(self) -> bool:
        return self.returncode == CANNOT_INSTALL


class DevCluster:
    def __init__(self, state_dir: str | None = None):
        self.state_dir = state_dir or os.environ.get("FVQ_SLURM_DIR") or "/tmp/fvq-slurm"

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client needs (the same as `source slurm/dev-cluster/env.sh`)."""
        return {"FVQ_SLURM_DIR": self.state_dir, "SLURM_CONF": os.path.join(self.state_dir, "etc", "slurm.conf")}

    def _script(self, name: str, timeout: float) -> str:
        try:
            r = subprocess.run(["bash", os.path.join(SCRIPTS, name)], capture_output=True, text=True,
                               timeout=timeout, env={**os.environ, **self.env})
        except subprocess.TimeoutExpired:
            raise DevClusterError(f"{name} did not finish within {timeout:.0f}s (logs in {self.state_dir}/log)",
                                  124) from None
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            raise DevClusterError(lines[-1] if lines else f"{name} exited {r.returncode}", r.returncode)
        return r.stdout.strip()

    def start(self, timeout: float = 300) -> str:
        """Install if missing and start what is not running (idempotent); return start.sh's status line."""
        return self._script("start.sh", timeout)

    def stop(self, timeout: float = 120) -> None:
        self._script("stop.sh", timeout)

    def is_up(self) -> bool:
        """Whether the controller answers and partition a100 has a node that takes jobs."""
        try:  # a dead slurmctld makes sinfo hang for its timeout: look at the PID file first
            with open(os.path.join(self.state_dir, "run", "slurmctld.pid")) as f:
                pid = f.read().strip()
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "slurmctld":
                    return False
        except OSError:
            return False
        try:
            r = subprocess.run(["sinfo", "-h", "-p", "a100", "-o", "%T"], capture_output=True, text=True,
                               timeout=5, env={**os.environ, **self.env})
        except (subprocess.TimeoutExpired, FileNotFoundError):
            return False
        return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mixed", "allocated", "completing"))

    def run(self, *args: str, timeout: float = 10) -> str:
        """A Slurm client command against this cluster (``cluster.run("squeue", "-h")``); raises on failure."""
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env})
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def sacct(self, job_id: str, fields: tuple[str, ...] = ("JobID", "State")) -> list[dict[str, str]]:
        """One dict per allocation (-X) of ``job_id`` (an array job id lists every task)."""
        out = self.run("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", ",".join(fields))
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
