"""Run identity: config -> signature -> run dir (the dora habit).

A run's signature is a short hash of how its fully resolved config differs from the code's defaults
(`fvq.core.config.Config()`), leaving out keys that do not change the science (`NON_SCIENCE_KEYS`: device,
threads, logging intervals, ...). So:
- relaunching a grid finds the runs it already made and submits only what is missing;
- a run shared by two grids (e.g. the reference point of `depth` and of `latent_dim`) trains once;
- the same overrides at another scale are another run (``scale`` differs, so the signature does).

The trap this guards: if a default changes, an old run keeps its signature while its stored full config
no longer matches what the same overrides resolve to now. `check_stored` stops with an error naming the
keys instead of silently mixing two sciences under one name. Golden signatures are pinned in tests.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from fvq.core.config import NON_SCIENCE_KEYS, Config, to_flat_dict
from fvq.core.errors import SetupError
from fvq.core.rundir import stored_mismatch


class IdentityError(SetupError):
    """A stored run disagrees with the freshly resolved config under the same signature."""


def science_delta(cfg: Config) -> dict[str, Any]:
    """Keys whose value differs from the code defaults, minus the non-science keys (sorted)."""
    ref = to_flat_dict(Config())
    flat = to_flat_dict(cfg)
    return {k: flat[k] for k in sorted(flat) if flat[k] != ref[k] and k not in NON_SCIENCE_KEYS}


def signature(cfg: Config) -> str:
    """10 hex chars of sha1 over the science delta; the name of the run and of its run dir."""
    blob = json.dumps(science_delta(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_dir(root: str, sig: str) -> str:
    return os.path.join(root, sig)


def check_stored(cfg: Config, directory: str) -> None:
    """Raise IdentityError if ``directory/config.json`` holds another science than ``cfg``."""
    bad = stored_mismatch(cfg, directory)
    if bad:
        keys = ", ".join(f"{k} (stored {there!r}, now {now!r})" for k, there, now in bad[:4])
        raise IdentityError(f"run {os.path.basename(directory)}: stored config disagrees with the resolved one "
                            f"under the same signature: {keys} - a default was changed; restore it, or give "
                            f"the new value explicitly so the run gets a new signature")
