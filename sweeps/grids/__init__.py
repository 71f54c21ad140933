"""One module per paper ablation; each exposes ``points()`` -> iterable of paper-terms override dicts.

`load(name)` returns the module; unknown names are a one-line error listing the valid ones.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from fvq.core.config import ConfigError


# Grids whose points name a tokenizer point plus generator settings (sweeps/generation.py), not a config:
# launched only by name (never by grid=all), collected by `analysis.collect grid=generation`.
GENERATION = ("generation",)


def names() -> list[str]:
    """The tokenizer grids (what grid=all launches)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in GENERATION)


def load(name: str) -> ModuleType:
    if name not in names() and name not in GENERATION:
        raise ConfigError(f"unknown grid {name!r} (valid grids: {', '.join(sorted([*names(), *GENERATION]))})")
    return importlib.import_module(f"{__name__}.{name}")
