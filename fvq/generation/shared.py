"""Generators that share their training: score a trained generator again without training it again.

Two generator configs that differ only in what happens after the last step (sampling, CFG and its interval,
gFID's sample count and real side) or in what only watches training (the held-out loss, logging, where it
runs) train the same weights. A run of the second takes the first's final checkpoint and curve
(``ARConfig.init_from``) and goes straight to its evaluation: the calibration's generator is scored at the
benchmark's CFG sweep, and a new guidance scale costs its samples, not a generator (Tables 2 / 11 sweep CFG
on one trained model as LlamaGen does).

Why the weights are the same: the batch order and label dropout are drawn from the run's own generator
seeded by ``seed`` and dropout from the global RNG seeded by ``seed``; the held-out loss runs in eval mode
(no dropout, so no draw) and sampling starts after the last step. On the same machine and kernels these are
the weights a fresh run would train, bit for bit (tests/test_ar.py trains both); on another CPU they agree
only statistically, as any rerun does (docs/reproducibility.md).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any

from fvq.core.checkpoint import load_checkpoint, save_checkpoint
from fvq.core.errors import SetupError
from fvq.core.rundir import read_json
from fvq.core.track import read_jsonl

# ARConfig keys that change nothing before the last training step
AFTER_TRAINING = frozenset({"samples", "cfg_scale", "cfg_sweep", "cfg_interval", "temperature", "top_k", "top_p",
                            "ref_stats", "val_images", "log_every", "ckpt_every", "threads", "init_from"})


class SharedTrainingError(SetupError, ValueError):
    pass


def _name(path: str) -> str:
    return os.path.basename(os.path.normpath(path or ""))


def training_differs(there: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Keys on which two flat generator configs train differently. The tokenizer is compared by its run's
    name (its signature), so a store that moved still matches; a key ``there`` lacks is not compared (a field
    added later keeps its old-behaviour default)."""
    bad = ["tokenizer"] if _name(there.get("tokenizer", "")) != _name(here["tokenizer"]) else []
    return bad + [k for k in sorted(here) if k not in AFTER_TRAINING and k != "tokenizer" and k in there
                  and there[k] != here[k]]


def find_trained(runs_dir: str, here: dict[str, Any]) -> str:
    """A finished generator run in ``runs_dir`` whose final checkpoint holds what ``here`` would train: its
    run dir, or "" when there is none."""
    for d in sorted(glob.glob(os.path.join(runs_dir, "gen-*"))):
        final = read_json(os.path.join(d, "final.json"))
        if (final.get("metrics") is not None and final.get("step") == here["steps"]
                and os.path.exists(os.path.join(d, "ckpt.pt"))
                and not training_differs(final.get("config") or {}, here)):
            return d
    return ""


def check_trained(src: str, here: dict[str, Any]) -> None:
    """One line if ``src`` is not a finished generator run that trained what ``here`` would."""
    final = read_json(os.path.join(src, "final.json"))
    if final.get("metrics") is None or not os.path.exists(os.path.join(src, "ckpt.pt")):
        raise SharedTrainingError(f"ar.init_from={src}: not a finished generator run (no final.json metrics or "
                                  f"no ckpt.pt there)")
    there = final.get("config") or {}
    bad = training_differs(there, here) or (["steps"] if final.get("step") != here["steps"] else [])
    if bad:
        k = bad[0]
        raise SharedTrainingError(f"ar.init_from={src}: it trained another generator ({k}={there.get(k)!r} there, "
                                  f"{here[k]!r} here; {len(bad)} keys differ)")


def take_trained(run_dir: str, here: dict[str, Any]) -> None:
    """``run_dir`` gets ``here['init_from']``'s final checkpoint, under its own config, and its training curve
    (the rows before the evaluation): the run then resumes at its last step and only evaluates."""
    src = here["init_from"]
    check_trained(src, here)
    state = load_checkpoint(os.path.join(src, "ckpt.pt"))
    if training_differs(state.get("config") or {}, here) or int(state["step"]) != here["steps"]:
        raise SharedTrainingError(f"ar.init_from={src}: its ckpt.pt is not the final checkpoint of the run "
                                  f"its final.json describes")
    rows = [r for r in read_jsonl(os.path.join(src, "metrics.jsonl")) if not any(k.startswith("gen/") for k in r)]
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, ".metrics.jsonl.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, os.path.join(run_dir, "metrics.jsonl"))
    # the training's time stays the source run's: this run's own training took none
    save_checkpoint(os.path.join(run_dir, "ckpt.pt"), {**state, "config": here,
                                                       "time": {"train_s": 0.0, "train_cpu_s": 0.0}})
