"""Optuna searches: one module per search, each with ``base`` (a paper-terms grid point), ``space(trial)``
(returns paper-terms overrides) and ``objective`` (the final metric to minimise)."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from fvq.core.config import ConfigError


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
    if name not in names():
        raise ConfigError(f"unknown search {name!r} (valid searches: {', '.join(names())})")
    return importlib.import_module(f"{__name__}.{name}")
