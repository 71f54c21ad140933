"""Progress of a training run: a bar on an interactive terminal, flushed log lines under Slurm or a pipe."""
from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, mode: str, start: int, total: int, log, enabled: bool = True):
        """``mode``: auto | bar | lines | off (``log.progress``); auto = bar on a tty outside Slurm."""
        mode = mode if enabled else "off"
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() and "SLURM_JOB_ID" not in os.environ else "lines"
        self.mode, self.total, self.log, self.bar = mode, total, log, None
        self.last_line = time.monotonic()
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)

    def update(self, step: int, m: dict[str, float]) -> None:
        short = {"loss": m.get("train/total", float("nan")), "usage": m["train/usage"], "lr": m["train/lr"],
                 "img/s": m["train/img_per_s"]}
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in short.items()}, refresh=True)
        elif self.mode == "lines" and (time.monotonic() - self.last_line > 10 or step == self.total):
            self.last_line = time.monotonic()
            body = " ".join(f"{k}={v:.4g}" for k, v in short.items())
            self.log(f"[fvq] step {step}/{self.total} {body}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
