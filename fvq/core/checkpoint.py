"""Checkpoints: atomic writes, full RNG state, ``weights_only=True`` loads.

A checkpoint holds everything needed for a resumed run to be bit-identical to an uninterrupted one on
CPU: model / discriminator / optimiser states, the step, torch's CPU (and CUDA) RNG states, and the
training-curve state (windowed usage). Data order needs no saved state: it is a pure function of
(seed, epoch, index) (fvq/core/data.py). Python's and NumPy's RNGs are not used by training.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the old file, so a
kill -9 at any moment leaves either the old or the new checkpoint, never a torn one.

A scheduler's stop (SIGTERM: Slurm preemption, requeue, scancel; SIGUSR1: a time-limit warning) is noted,
not obeyed at once: the training loop (tokenizer and generator alike) finishes its step, writes a checkpoint
and raises ``Preempted``, so a requeued job loses no step however far apart its periodic checkpoints are.
"""
from __future__ import annotations

import contextlib
import glob
import os
import signal
import tempfile
from typing import Any, Callable

import torch

from fvq.core.config import science_mismatch
from fvq.core.errors import SetupError, disk_error, one_line


class CheckpointError(SetupError, RuntimeError):
    """A checkpoint that cannot be used; the message is one line."""


class Preempted(RuntimeError):
    """SIGTERM / SIGUSR1 arrived: a checkpoint was written, the job can be requeued."""


def note_stop_signals(noted: list[int]) -> Callable[[], None]:
    """Append each SIGTERM / SIGUSR1 to ``noted`` instead of dying (the loop checks it after each step);
    returns what puts the previous handlers back (called once training is over: a signal during the final
    evaluation stops the process as usual, there is nothing left to checkpoint)."""
    old = {s: signal.signal(s, lambda n, f: noted.append(n)) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)
    return restore


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Write ``state`` atomically; a full or read-only disk is raised as that OSError, naming ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        disk = disk_error(e)  # torch.save keeps the OSError only as the context of its own RuntimeError
        if disk is not None:
            raise OSError(disk.errno, disk.strerror, path) from None
        raise


def remove_partial(run_dir: str) -> int:
    """Delete the temporary files of checkpoint writes cut short by a kill (``.ckpt-*.tmp``); called as a run
    starts, by its one writer, so none is being written. Returns how many were removed."""
    stale = glob.glob(os.path.join(glob.escape(run_dir), ".ckpt-*.tmp"))
    for tmp in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return len(stale)


def load_checkpoint(path: str, expect_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load with ``weights_only=True``; refuse a checkpoint written for another config."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
                              f"{one_line(e)[:120]})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not an fvq training checkpoint")
    if expect_config is not None and state.get("config") is not None:
        stored = state["config"]
        # a resumed run may change where it runs and how it logs (NON_SCIENCE_KEYS), not what it computes
        bad = science_mismatch(stored, expect_config)
        if bad:
            k = bad[0]
            raise CheckpointError(f"checkpoint {path} was written for another config: {k}={stored[k]!r} "
                                  f"there, {expect_config[k]!r} now ({len(bad)} keys differ)")
    return state


def rng_state() -> dict[str, Any]:
    s = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
