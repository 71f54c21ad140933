"""One base class for the errors a user fixes by changing an input, not the code.

Every entry point (``python -m fvq.train``, ``sweeps/run.py``, ``analysis``) prints such an error as one
line, ``error: <message>``, and exits 2; anything else is a bug and keeps its traceback. Subclasses say
where the input was wrong (config, checkpoint, weights, run dir, launch, tracking) so tests can tell them
apart, but callers catch the base.
"""
from __future__ import annotations


class SetupError(Exception):
    """Bad input found before (or instead of) training; the message is one line naming what to change."""


class ConfigError(SetupError, ValueError):
    """Bad configuration input; the message is one line naming the key. Here, not in config.py, so that the
    checks of validation.py (below config.py) raise it too; ``fvq.core.config.ConfigError`` is this class."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
