"""Run identity: config -> signature -> run dir (the dora habit).

A run's signature is a short hash of how its fully resolved config differs from the code's defaults
(`fvq.core.config.Config()`), leaving out keys that do not change the science (`NON_SCIENCE_KEYS`: device,
threads, logging intervals, ...). So:
- relaunching a grid finds the runs it already made and submits only what is missing;
- a run shared by two grids (e.g. the reference point of `depth` and of `latent_dim`) trains once;
- the same overrides at another scale are another run (``scale`` differs, so the signature does).

A generator run (sweeps/generation.py) is signed the same way: its tokenizer's signature plus how its
`fvq.generation.ar.ARConfig` differs from the defaults, under a salt of its own (`ar_signature`).

The trap this guards: if a default changes, an old run keeps its signature while its stored full config
no longer matches what the same overrides resolve to now. `check_stored` stops with an error naming the
keys instead of silently mixing two sciences under one name. Golden signatures are pinned in tests.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from fvq.core.config import NON_SCIENCE_KEYS, Config, to_flat_dict
from fvq.core.errors import SetupError
from fvq.core.rundir import read_json, stored_mismatch


class IdentityError(SetupError):
    """A stored run disagrees with the freshly resolved config under the same signature."""


def science_delta(cfg: Config) -> dict[str, Any]:
    """Keys whose value differs from the code defaults, minus the non-science keys (sorted)."""
    ref = to_flat_dict(Config())
    flat = to_flat_dict(cfg)
    return {k: flat[k] for k in sorted(flat) if flat[k] != ref[k] and k not in NON_SCIENCE_KEYS}


def sign(delta: dict[str, Any], salt: str = "") -> str:
    """10 hex chars of sha1 over a science delta; ``salt`` keeps another kind of run apart (a generator's
    delta could equal a tokenizer's)."""
    blob = json.dumps({"salt": salt, **delta} if salt else delta, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def signature(cfg: Config) -> str:
    """The name of a tokenizer run and of its run dir."""
    return sign(science_delta(cfg))


# A generator's keys that do not change what it computes (the tokenizer enters by its signature, not its path;
# init_from names where the same weights were trained, fvq/generation/shared.py).
AR_NON_SCIENCE = {"tokenizer", "device", "threads", "log_every", "ckpt_every", "init_from"}
# The generator's salt; its version moves when the generator computes something else under the same keys:
# 2 = the class-token prefix enters RoPE with zero rows, as LlamaGen's table (1: identity rows).
AR_SALT = "ar-2"


def ar_delta(cfg) -> dict[str, Any]:
    """A generator config's science keys whose value differs from fvq.generation.ar.ARConfig's defaults."""
    from fvq.generation.ar import ARConfig

    ref = ARConfig()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.name not in AR_NON_SCIENCE and getattr(cfg, f.name) != getattr(ref, f.name)}


def ar_signature(tok_sig: str, cfg) -> str:
    """The name of a generator run (its run dir is ``gen-<signature>``): its tokenizer's signature, its delta."""
    return sign({"tokenizer": tok_sig, **ar_delta(cfg)}, AR_SALT)


def run_dir(root: str, sig: str) -> str:
    return os.path.join(root, sig)


def check_stored_ar(cfg, directory: str) -> None:
    """Raise IdentityError if the generator run in ``directory`` (its final.json) computed another science."""
    stored = read_json(os.path.join(directory, "final.json")).get("config") or {}
    now = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    bad = [k for k in sorted(now) if k not in AR_NON_SCIENCE and k in stored and stored[k] != now[k]]
    if bad:
        keys = ", ".join(f"ar.{k} (stored {stored[k]!r}, now {now[k]!r})" for k in bad[:4])
        raise IdentityError(f"generator run {os.path.basename(directory)}: stored config disagrees with the resolved "
                            f"one under the same signature: {keys} - a default was changed; restore it, or give "
                            f"the new value explicitly so the run gets a new signature")


def check_stored(cfg: Config, directory: str) -> None:
    """Raise IdentityError if ``directory/config.json`` holds another science than ``cfg``."""
    bad = stored_mismatch(cfg, directory)
    if bad:
        keys = ", ".join(f"{k} (stored {there!r}, now {now!r})" for k, there, now in bad[:4])
        raise IdentityError(f"run {os.path.basename(directory)}: stored config disagrees with the resolved one "
                            f"under the same signature: {keys} - a default was changed; restore it, or give "
                            f"the new value explicitly so the run gets a new signature")
