"""Learning annealing (Observation 2, Appendix E; Table 6 and Table 9).

Table 6 writes the reconstruction schedule as ``warmup(0.1) [baselr(0.3)-linear(0.7)]``: the first 10% of
training warms up linearly from 0.005 x lr to lr; the remaining 90% is split 30% held at lr and 70%
linear decay from lr to 0.01 x lr ("represents the remaining 90%", Appendix G). Why annealing matters:
the one-step-behind term of eq. 20 scales with eta^2, so a small final learning rate makes the
commitment update track the *current* encoder output (eq. 7) instead of the previous one (eq. 6).

Variants: ``constant`` (no annealing: Table 3 row 3, Table 5 "linear" / "VQBridge" rows),
``warmup=0`` (Table 9 "w/o warmup"), ``cosine`` (Table 9 "w/ cosine": same warmup and hold, cosine
decay to the same final factor). The discriminator follows the same schedule.
"""
from __future__ import annotations

import math

from fvq.core.config import SchedCfg


def phases(total: int, cfg: SchedCfg) -> tuple[int, int]:
    """(end of warmup, end of constant phase) in steps."""
    warm = int(round(cfg.warmup * total))
    hold = warm + int(round(cfg.constant * (total - warm)))
    return warm, hold


def lr_factor(step: int, total: int, cfg: SchedCfg) -> float:
    """Multiplier of the peak lr at optimisation step ``step`` (0-based) of ``total``."""
    if cfg.kind == "constant":
        return 1.0
    warm, hold = phases(total, cfg)
    if step < warm:
        # linear from warmup_start at step 0 to 1.0 at step `warm`
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / warm
    if step < hold:
        return 1.0
    span = max(total - 1 - hold, 1)
    t = min((step - hold) / span, 1.0)  # 0 at the start of the decay, 1 at the last step
    if cfg.kind == "cosine":
        return cfg.final + (1.0 - cfg.final) * 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0 + (cfg.final - 1.0) * t  # linear to `final` (Table 6 "1 to 0.01")
