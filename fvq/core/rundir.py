"""The run dir: the files that record one run, read and written by training and by the launchers alike.

A run dir (``<runs>/<signature>``) holds
- ``config.json``  the full resolved config (written once; another config there is refused);
- ``status.json``  ``{"state": RUNNING | FINISHED | PRUNED | PREEMPTED | FAILED, "step", "reason", "pid"}``;
- ``tags.json``    what the launcher knows (signature, commit, grids, run name) and hands to the tracker;
- ``job.json``     who runs it (local launcher pid / Slurm job id), ``mlflow.json`` (its MLflow run id);
- ``claim``        held by the one launch that is submitting the run (exclusive create), so two launches of
                   one grid never train a point twice;
- ``ckpt.pt``, ``metrics.jsonl``, ``final.json``, ``recon.png``, ``codebook.pt`` (fvq/train.py).
Every write is atomic (temporary file + rename), so a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Any

from fvq.core.config import Config, science_mismatch, to_flat_dict, to_json
from fvq.core.errors import SetupError

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
        with open(path) as f:
            stored = json.load(f)
        flat = to_flat_dict(cfg)
        bad = science_mismatch(stored, flat)
        if bad:
            raise RunDirError(f"run dir {run_dir} holds a run with another config ({bad[0]}={stored[bad[0]]!r} "
                              f"there, {flat[bad[0]]!r} now); use a fresh run dir")
    else:
        with open(path + ".tmp", "w") as f:
            f.write(to_json(cfg))
        os.replace(path + ".tmp", path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True


def claim(run_dir: str) -> str:
    """Take the run dir for this process (exclusive create of ``claim``): "" when taken, else who holds it
    ("pid 123 on host"). A claim whose process is gone (same host) is stale and taken over."""
    os.makedirs(run_dir, exist_ok=True)
    path, me = os.path.join(run_dir, "claim"), {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_json(path)
            if owner.get("host") == me["host"] and owner.get("pid") and not _alive(int(owner["pid"])):
                os.unlink(path)  # its launcher died: stale
                continue
            return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return ""
    return "another launch (the claim changed hands while it was read)"


def release(run_dir: str) -> None:
    """Drop this process's claim (job.json / status.json now say who runs the run)."""
    path = os.path.join(run_dir, "claim")
    if read_json(path).get("pid") == os.getpid():
        os.unlink(path)
