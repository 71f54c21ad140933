"""The run dir: the files that record one run, read and written by training and by the launchers alike.

A run dir (``<runs>/<signature>``) holds
- ``config.json``  the full resolved config (written once; another config there is refused);
- ``status.json``  ``{"state": RUNNING | FINISHED | PRUNED | PREEMPTED | FAILED, "step", "reason", "pid"}``;
- ``tags.json``    what the launcher knows (signature, commit, grids, run name) and hands to the tracker;
- ``job.json``     who runs it: the local launcher while queued, then the job's pid (each with its process
                   start time) or its Slurm job id (sweeps/state.py judges liveness from it);
- ``mlflow.json``  its MLflow run id; ``tracked.json`` what was sent or is owed to it (params, tags,
                   artifacts, end status), ``synced.json`` the last comparison that found nothing missing,
                   ``track.lock`` held by the live tracker (fvq/core/track.py);
- ``claim``        held by the one launch that is submitting the run (exclusive create), so two launches of
                   one grid never train a point twice;
- ``attempts.json`` the job's starts (sweeps/job.py bounds requeues by it); ``environment.json`` what each
                   attempt ran on (fvq/core/environment.py);
- ``ckpt.pt``, ``metrics.jsonl``, ``final.json``, ``recon.png``, ``codebook.pt`` (fvq/train.py).
Every write is atomic (temporary file + rename), so a reader never sees half a file.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

from fvq.core.config import Config, science_mismatch, to_flat_dict, to_json
from fvq.core.errors import SetupError, one_line

# States a launcher never restarts: the run ended by itself (PRUNED = stopped early by an Optuna pruner).
DONE = ("FINISHED", "PRUNED")


class RunDirError(SetupError):
    """A run dir that cannot be used (not writable, or holding another config)."""


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: str) -> dict:
    """The object in ``path``; {} when the file is missing or unreadable (a reader never blocks a launch)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # missing, not a folder, torn or garbled JSON
        return {}


def read_status(run_dir: str) -> dict[str, Any]:
    return read_json(os.path.join(run_dir, "status.json"))


def write_status(run_dir: str, state: str, **fields: Any) -> None:
    write_json(os.path.join(run_dir, "status.json"), {"state": state, **fields})


# Files only a run dir holds: a folder with other files and none of these is someone else's.
RUN_FILES = ("config.json", "status.json", "ckpt.pt", "metrics.jsonl")


def check_new_or_run(path: str) -> None:
    """``path`` may take a run: missing, empty, or a run dir already (resumed). Any other folder (``python -m
    fvq.train out=/etc``) is refused, never written into."""
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # created by prepare_run_dir, or refused there as not a folder
    if names and not any(n in names for n in RUN_FILES):
        raise RunDirError(f"{path} is a non-empty folder that is not a run dir (no {', '.join(RUN_FILES)}): "
                          f"give a new or empty folder, or a run dir to resume")


def prepare_run_dir(cfg: Config, run_dir: str) -> None:
    """Create the run dir and write config.json; refuse a run dir that holds another config."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"run dir {run_dir} is not writable ({e.strerror})") from None
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        bad = stored_mismatch(cfg, run_dir)
        if bad:
            key, there, now = bad[0]
            raise RunDirError(f"run dir {run_dir} holds a run with another config ({key}={there!r} "
                              f"there, {now!r} now); use a fresh run dir")
    else:
        with open(path + ".tmp", "w") as f:
            f.write(to_json(cfg))
        os.replace(path + ".tmp", path)


def stored_mismatch(cfg: Config, run_dir: str) -> list[tuple[str, Any, Any]]:
    """(key, stored, now) for each science key where ``run_dir/config.json`` differs from ``cfg``; [] when
    it agrees or holds nothing. The one comparison of a stored run with a resolved config (the run dir,
    sweeps/identity.py and analysis/collect.py through `science_mismatch`)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        stored = json.load(f)
    flat = to_flat_dict(cfg)
    return [(k, stored[k], flat[k]) for k in science_mismatch(stored, flat)]


def proc_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22); "" where unknown.
    Stored beside a pid, it tells the process from a later one that got the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def alive(pid: Any, start: Any = None) -> bool:
    """Whether process ``pid`` (on this host) still runs: not gone, not a zombie, and, when ``start`` was
    recorded, the very process that was recorded (not a recycled pid)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    except (ValueError, OverflowError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # exited, not yet reaped by its parent
            return False
        return not start or fields[19] == str(start)
    except (OSError, IndexError):  # no /proc here: the signal test is all there is
        return True


def claim(run_dir: str) -> str:
    """Take the run dir for this process (exclusive create of ``claim``): "" when taken, else who holds it
    ("pid 123 on host"). A claim whose process is gone (same host) is stale and taken over."""
    os.makedirs(run_dir, exist_ok=True)
    path, me = os.path.join(run_dir, "claim"), {"pid": os.getpid(), "host": socket.gethostname(),
                                                "start": proc_start(os.getpid())}
    for _ in range(2):
        try:
            _create_whole(path, me)
        except FileExistsError:
            owner = read_json(path)
            if not owner:  # empty or garbled: a claim made whole never is, so no live launch wrote it
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            if owner.get("host") == me["host"] and owner.get("pid") and not alive(owner["pid"], owner.get("start")):
                os.unlink(path)  # its launcher died: stale
                continue
            return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
        return ""
    return "another launch (the claim changed hands while it was read)"


def _create_whole(path: str, obj: dict) -> None:
    """Create ``path`` holding ``obj``, all or nothing; FileExistsError when it exists. The content is written
    to a private file, then hard-linked into place (atomic and exclusive): a full disk leaves no claim, and
    no reader ever sees an empty one (an exclusive create then a write would leave one that blocks forever)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f)
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        raise RunDirError(f"cannot claim {os.path.dirname(path)}: {one_line(e)}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def release(run_dir: str) -> None:
    """Drop this process's claim (job.json / status.json now say who runs the run)."""
    path = os.path.join(run_dir, "claim")
    if read_json(path).get("pid") == os.getpid():
        os.unlink(path)
