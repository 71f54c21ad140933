"""One base class for the errors a user fixes by changing an input, not the code.

Every entry point (``python -m fvq.train``, ``sweeps/run.py``, ``analysis``) prints such an error as one
line, ``error: <message>``, and exits 2; anything else is a bug and keeps its traceback. Subclasses say
where the input was wrong (config, checkpoint, weights, run dir, launch, tracking) so tests can tell them
apart, but callers catch the base.
"""
from __future__ import annotations

import errno
import re

# Write failures a user fixes by freeing or remounting a disk, named by their errno: a status.json reason or
# an MLflow failure tag then says what happened, not how the writer noticed (torch.save reports a full
# disk as "inline_container.cc: unexpected pos", the OSError only in its context).
DISK = {errno.ENOSPC: "disk full (ENOSPC)", errno.EDQUOT: "disk quota exceeded (EDQUOT)",
        errno.EROFS: "read-only file system (EROFS)"}


class SetupError(Exception):
    """Bad input found before (or instead of) training; the message is one line naming what to change."""


class ConfigError(SetupError, ValueError):
    """Bad configuration input; the message is one line naming the key. Here, not in config.py, so that the
    checks of validation.py (below config.py) raise it too; ``fvq.core.config.ConfigError`` is this class."""


def disk_error(e: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT / EROFS error behind ``e``: itself, or what it was raised from or while handling."""
    for _ in range(8):  # a chain is short; the bound only guards against a cycle
        if e is None or isinstance(e, OSError) and e.errno in DISK:
            return e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none; a full or read-only
    disk named as such (a SetupError's own message already says what to change). A token of 200 characters
    or more (a pasted value) is cut, so the line stays one a terminal shows."""
    disk = None if isinstance(e, SetupError) else disk_error(e)
    if disk is not None:
        return DISK[disk.errno] + (f" writing {disk.filename}" if disk.filename else "")
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return re.sub(r"\S{200,}", lambda m: shorten(m.group()), line)


def shorten(text: object, n: int = 80) -> str:
    """``text`` cut to ``n`` characters, "..." marking the cut: what an error echoes of a value."""
    text = str(text)
    return text if len(text) <= n else text[:n - 3] + "..."
