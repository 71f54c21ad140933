"""One module per paper ablation; each exposes ``points()`` -> iterable of paper-terms override dicts.

`load(name)` returns the module; unknown names are a one-line error listing the valid ones.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from fvq.config import ConfigError


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
    if name not in names():
        raise ConfigError(f"unknown grid {name!r} (valid grids: {', '.join(names())})")
    return importlib.import_module(f"{__name__}.{name}")
