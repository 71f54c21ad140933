"""slurm/devcluster.py without a cluster: the delays read from `scontrol show config`, and waits on a job's state."""
import pytest

from slurm.devcluster import DevCluster, parse_delays, parse_job, running_again

# as `scontrol show config` prints it (Slurm 22.05), a few lines of ~200
CONFIG = """Configuration data as of 2026-12-05T11:40:00
AuthInfo                = cred_expire=10
KillWait                = 5 sec
MessageTimeout          = 10 sec
SchedulerParameters     = bf_interval=1,sched_interval=2
SchedulerType           = sched/backfill
UnkillableStepTimeout   = 60 sec
"""


def test_delays_come_from_the_running_config():
    d = parse_delays(CONFIG)
    assert (d.kill_wait, d.cred_expire, d.sched_interval, d.bf_interval, d.message_timeout) == (5, 10, 2, 1, 10)
    assert d.start_s == 5 + 2 + 10 and d.requeue_s == 10 + 1 + d.start_s  # KillWait, BeginTime hold, a pass, a hop
    assert d.accounting_s == 30 and d.signal_s == 30
    assert d.stop_s == 5 + 60 + 2 * 10  # KillWait, processes given up on, the end reported


def test_unset_delays_are_slurms_defaults():
    d = parse_delays("KillWait = 30 sec\nSchedulerParameters = (null)\nAuthInfo = (null)\n")
    assert (d.kill_wait, d.cred_expire, d.sched_interval, d.bf_interval, d.message_timeout) == (30, 120, 60, 30, 10)
    assert d.unkillable_step == 60


def test_job_record_and_running_again():
    job = parse_job("JobId=7 JobName=x JobState=PENDING Reason=BeginTime Dependency=(null) Requeue=1 Restarts=1\n")
    assert job["JobState"] == "PENDING" and job["Reason"] == "BeginTime" and job["Restarts"] == "1"
    assert not running_again(job)
    assert not running_again({**job, "JobState": "COMPLETING"})  # the old run still stopping
    assert running_again({**job, "JobState": "RUNNING"})
    assert not running_again({**job, "JobState": "RUNNING", "Restarts": "0"})  # never requeued


class Scripted(DevCluster):
    """A DevCluster whose slurmctld answers from a list (the last answer repeats)."""

    def __init__(self, *records):
        super().__init__("/nonexistent")
        self.records = list(records)

    def run(self, *args):
        return ""  # squeue: no other job holds the node

    def job(self, job_id):
        record = self.records.pop(0) if len(self.records) > 1 else self.records[0]
        if isinstance(record, Exception):
            raise record
        return record


def test_wait_job_returns_the_record_that_satisfies():
    c = Scripted({"JobState": "PENDING", "Reason": "BeginTime", "Restarts": "1"},
                 RuntimeError("scontrol show job -o 7 exited 1: Socket timed out on send/recv operation"),
                 {"JobState": "RUNNING", "Reason": "None", "Restarts": "1"})
    assert c.wait_job("7", running_again, 5, "run again", interval=0.01)["JobState"] == "RUNNING"


def test_wait_job_fails_at_once_when_the_job_ended_without_it():
    c = Scripted({"JobState": "RUNNING", "Reason": "None", "Restarts": "0"},
                 {"JobState": "FAILED", "Reason": "NonZeroExitCode", "Restarts": "0"})
    with pytest.raises(TimeoutError, match=r"requeue: job 7 ended FAILED \(NonZeroExitCode\), restarts 0"):
        c.wait_job("7", lambda j: int(j["Restarts"]) >= 1, 60, "requeue", interval=0.01)


class Queued(Scripted):
    """slurmctld answers PENDING (Priority) while squeue lists another job running, ``busy`` polls long."""

    def __init__(self, busy: int, *records):
        super().__init__(*records)
        self.busy = busy

    def run(self, *args):
        assert args[0] == "squeue"
        self.busy -= 1
        return "12\n7_1\n" if self.busy > 0 else "7_1\n"  # job 12 is another's; 7_1 a task of ours


def test_wait_job_does_not_count_the_time_behind_other_jobs():
    pending, running = {"JobState": "PENDING", "Reason": "Priority", "Restarts": "0"}, {"JobState": "RUNNING"}
    c = Queued(30, *[pending] * 30, running)  # 30 polls behind job 12, then it starts
    assert c.wait_job("7", lambda j: j["JobState"] == "RUNNING", 0.05, "start", interval=0.01)
    with pytest.raises(TimeoutError, match=r"start: not within 0s, 0s more behind other jobs \(job 7 PENDING"):
        Queued(10**6, pending).wait_job("7", running_again, 0.05, "start", interval=0.01, behind_cap=0.1)
    with pytest.raises(TimeoutError, match=r"start: not within 0s \(job 7 PENDING"):  # only ours: no pause
        Queued(0, pending).wait_job("7", running_again, 0.05, "start", interval=0.01)


def test_wait_job_timeout_names_the_last_state():
    c = Scripted({"JobState": "PENDING", "Reason": "launch_failed_requeued_held", "Restarts": "1"})
    with pytest.raises(TimeoutError, match=r"run again: not within 0s \(job 7 PENDING "
                                           r"\(launch_failed_requeued_held\), restarts 1\)"):
        c.wait_job("7", running_again, 0.05, "run again", interval=0.01)
    with pytest.raises(TimeoutError, match=r"job 8 unknown to slurmctld"):
        Scripted({}).wait_job("8", running_again, 0.05, "start", interval=0.01)
    with pytest.raises(TimeoutError, match=r"job 9 no answer from scontrol \(scontrol .* Socket timed out"):
        Scripted(RuntimeError("scontrol show job -o 9 exited 1: Socket timed out")).wait_job(
            "9", running_again, 0.05, "start", interval=0.01)
