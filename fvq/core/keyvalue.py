"""The one ``key=value`` parser of the project's command lines.

Every surface (config overrides, sweeps/run.py's harness options, the generator's ``ar.`` keys, the analysis
CLIs) turns its arguments into a frozen dataclass here: each value typed by its field with one rule
(`fvq.core.config.parse_value`: ``true/false/1/0/yes/no/on/off`` for bools) or by the parser an
``Annotated[T, parser]`` field names, an unknown key one line with
the closest valid keys, the last of a repeated key winning (as for config overrides).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable, TypeVar

from fvq.core.config import ConfigError, parse_value
from fvq.core.errors import shorten

T = TypeVar("T")


def split(argv: Iterable[str], usage: str = "") -> list[tuple[str, str]]:
    """``["a=1", "b=x=y"]`` -> ``[("a", "1"), ("b", "x=y")]``; an argument without ``=`` is a ConfigError."""
    out = []
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or not key:
            raise ConfigError(f"argument {shorten(repr(a))} is not key=value" + (f" ({usage})" if usage else ""))
        out.append((key.strip(), value))
    return out


def unknown(key: str, known: Iterable[str], what: str = "key") -> ConfigError:
    """The one-line error for a key no field has: the closest valid keys, or all of them when none is close."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(known)}"
    return ConfigError(f"unknown {what} {shorten(repr(key))} ({hint})")


def fields_of(cls: type) -> dict[str, Any]:
    """Field name -> type of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def typed(cls: type[T], items: Iterable[tuple[str, str]], base: T | None = None, what: str = "key") -> T:
    """An instance of dataclass ``cls`` (``base`` or its defaults) with ``items`` set, each value parsed by
    its field's type; an unknown key or a bad value is a ConfigError naming it."""
    types, values = fields_of(cls), {}
    for key, raw in items:
        if key not in types:
            raise unknown(key, types, what)
        tp = types[key]
        # Annotated[T, parse]: a field whose text has its own grammar (seeds=3 means 0,1,2), parsed once here
        values[key] = tp.__metadata__[0](raw) if typing.get_origin(tp) is typing.Annotated else parse_value(key, raw, tp)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)
