"""The single-node dev cluster (slurm/dev-cluster/*.sh) from Python: start, stop, its client env, sacct reads,
and waits on the scheduler's own view of a job.

    cluster = DevCluster()
    print(cluster.start())              # "slurm dev cluster up: partition a100, node vm, 2 cpus, 2 fake a100"
    os.environ.update(cluster.env)      # SLURM_CONF for sbatch/sacct/submitit in this process and its jobs
    d = cluster.delays()                # the running controller's KillWait, cred_expire, scheduler intervals
    cluster.wait_job(job_id, lambda j: j["JobState"] == "RUNNING", d.start_s, "job to start")
    ...
    cluster.stop()

Every call that reaches Slurm has a timeout: sinfo/sacct hang ~30 s when a daemon is down.
Standard library only (tests and demos import it; jobs do not).
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

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


DBD_RETRY_S = 10  # slurmctld's accounting agent waits this long after a failed send to slurmdbd (fixed in Slurm)
# A job in one of these states will not run again by itself: waiting longer for it to change is pointless.
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED")


@dataclass(frozen=True)
class Delays:
    """The delays Slurm waits by design, as the running controller has them (`scontrol show config`). Deadlines
    on scheduler events are sums of these, so a configuration change moves the deadlines with it."""
    kill_wait: float        # a job being stopped gets SIGTERM, then SIGKILL this much later
    cred_expire: float      # a requeued job may start again cred_expire + 1 s after its last run ended
    sched_interval: float   # the main scheduler looks at pending jobs at least this often
    bf_interval: float      # the backfill scheduler, likewise
    message_timeout: float  # one RPC (client -> slurmctld -> slurmd -> slurmstepd) is answered or fails by then
    unkillable_step: float = 60.0  # a step whose processes outlive SIGKILL is given up on (and the job ended) then

    @property
    def start_s(self) -> float:
        """Eligible -> RUNNING: a job still stopping on the node frees it (KillWait), the next scheduling pass
        picks the job, and the launch reaches slurmd."""
        return self.kill_wait + max(self.sched_interval, self.bf_interval) + self.message_timeout

    @property
    def stop_s(self) -> float:
        """A stopped run leaves COMPLETING: SIGTERM, SIGKILL after KillWait, processes that take long to die
        (a loaded machine) given up on after UnkillableStepTimeout, the step's end reported to slurmctld."""
        return self.kill_wait + self.unkillable_step + 2 * self.message_timeout

    @property
    def requeue_s(self) -> float:
        """Requeued -> RUNNING again: the requeued run stops, the BeginTime hold (cred_expire + 1: the node must
        forget the old run's credential), then a start."""
        return self.cred_expire + 1 + self.start_s

    @property
    def accounting_s(self) -> float:
        """A job's change reaches sacct: slurmctld's accounting agent sends it to slurmdbd at once, and after a
        failed send (bounded by MessageTimeout) waits DBD_RETRY_S before sending again."""
        return 2 * self.message_timeout + DBD_RETRY_S

    @property
    def signal_s(self) -> float:
        """A signal sent with scancel reaches the job's processes: scancel -> slurmctld -> slurmd -> slurmstepd,
        then the job's own reply to slurmctld (a checkpointing job runs `scontrol requeue`)."""
        return 3 * self.message_timeout


def parse_delays(config: str) -> Delays:
    """`scontrol show config` text -> Delays; Slurm's own default for any value not set."""
    values = dict(re.findall(r"^(\w+)\s+=\s+(.*?)\s*$", config, re.M))

    def seconds(key: str, default: float) -> float:  # "5 sec" -> 5.0
        m = re.match(r"\d+", values.get(key, ""))
        return float(m.group()) if m else default

    def option(key: str, name: str, default: float) -> float:  # "bf_interval=1,sched_interval=2" -> 2.0
        m = re.search(rf"(?:^|,){name}=(\d+)", values.get(key, ""))
        return float(m.group(1)) if m else default

    return Delays(kill_wait=seconds("KillWait", 30), cred_expire=option("AuthInfo", "cred_expire", 120),
                  sched_interval=option("SchedulerParameters", "sched_interval", 60),
                  bf_interval=option("SchedulerParameters", "bf_interval", 30),
                  message_timeout=seconds("MessageTimeout", 10),
                  unkillable_step=seconds("UnkillableStepTimeout", 60))


def parse_job(line: str) -> dict[str, str]:
    """One line of `scontrol show job -o` -> {"JobState": "PENDING", "Reason": "BeginTime", "Restarts": "1", ...}."""
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def describe(job: dict[str, str]) -> str:
    """The scheduler's view of a job in a few words: 'PENDING (BeginTime), restarts 1'."""
    if not job:
        return "unknown to slurmctld"
    reason = job.get("Reason", "None")
    return (f"{job.get('JobState', '?')}{f' ({reason})' if reason not in ('None', '') else ''}, "
            f"restarts {job.get('Restarts', '?')}")


def running_again(job: dict[str, str]) -> bool:
    """slurmctld's record says the job started after a requeue (COMPLETING with a restart counted is the old run
    still stopping; COMPLETED with one is a short job that already ran again)."""
    return int(job.get("Restarts", 0)) >= 1 and job.get("JobState") in ("RUNNING", "COMPLETED")


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
        """Stop the daemons, once no job is COMPLETING: a step still ending when slurmd stops cannot report its
        end, and slurmctld keeps it and the node COMPLETING until UnkillableStepTimeout, so the next job
        (the next test's) waits behind it."""
        if self.is_up():
            try:
                wait_until(lambda: not self._completing(), self.delays().stop_s, "COMPLETING jobs to end")
            except TimeoutError:
                pass  # stopped anyway: slurmctld ends such a job itself after UnkillableStepTimeout
        self._script("stop.sh", timeout)

    def _jobs(self, states: str) -> list[str]:
        """Ids of the jobs in ``states`` (squeue -t); [] when squeue does not answer."""
        try:
            return self.run("squeue", "-h", "-t", states, "-o", "%i").split()
        except (RuntimeError, subprocess.SubprocessError):
            return []

    def _completing(self) -> list[str]:
        return self._jobs("CG")

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

    def delays(self) -> Delays:
        """The running controller's delays (not the file's: a stale controller keeps its old values)."""
        return parse_delays(self.run("scontrol", "show", "config"))

    def job(self, job_id: str) -> dict[str, str]:
        """slurmctld's record of ``job_id`` (an array task as ``123_4``); {} once it has forgotten the job."""
        try:
            return parse_job(self.run("scontrol", "show", "job", "-o", str(job_id)))
        except RuntimeError as e:
            if "Invalid job id" in str(e):
                return {}
            raise

    def others_hold_the_node(self, job_id: str) -> bool:
        """Another job (not ``job_id`` nor a task of it) is running or completing: a pending job waits behind
        it, which is the other job's time, not this one's."""
        mine = str(job_id).split("_")[0]  # no answer from squeue: the time counts (the deadline stays a bound)
        return any(j.split("_")[0] != mine for j in self._jobs("R,CG"))

    def wait_job(self, job_id: str, until: Callable[[dict[str, str]], bool], timeout: float, what: str,
                 interval: float = 0.5, behind_cap: float = 600.0) -> dict[str, str]:
        """Poll slurmctld's record of the job until ``until(record)``; return the record. TimeoutError naming
        ``what`` and the job's last state, reason and restart count; at once if the job ended without it.
        Time the job spends PENDING while other jobs hold the node (another test's, another user's) does not
        count against ``timeout`` (up to ``behind_cap`` seconds of it): the deadline measures this job's own
        scheduling, not the queue in front of it."""
        deadline, behind, last = time.monotonic() + timeout, 0.0, time.monotonic()
        while True:
            try:
                job = self.job(job_id)
                seen = describe(job)
            except (RuntimeError, subprocess.SubprocessError) as e:  # a busy controller: ask again next time
                job, seen = {}, f"no answer from scontrol ({str(e).strip()[:200]})"
            if job and until(job):
                return job
            if job.get("JobState") in ENDED:
                raise TimeoutError(f"{what}: job {job_id} ended {seen}")
            now = time.monotonic()
            if job.get("JobState") == "PENDING" and behind < behind_cap and self.others_hold_the_node(job_id):
                deadline, behind = deadline + (now - last), behind + (now - last)
            last = now
            if now > deadline:
                waited = f", {behind:.0f}s more behind other jobs" if behind else ""
                raise TimeoutError(f"{what}: not within {timeout:.0f}s{waited} (job {job_id} {seen})")
            time.sleep(interval)


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
