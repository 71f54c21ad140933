"""Codebook usage metrics (definitions used everywhere in fvq).

- usage: fraction of the K codes selected at least once over a whole evaluation pass (Tables 1, 3, 7).
  It depends on how many tokens were counted: read it with ``tokens_per_code`` (tokens / K) beside it;
  with few tokens per code it reads low even for a healthy codebook.
- perplexity: exp(entropy) of the code frequencies, between 1 (one code) and K (uniform).
- dead codes: K - number of used codes.
- windowed usage (training curves, Fig. 3): fraction of codes selected at least once within the last
  ``window`` training steps. Cheap: one scatter per step into a last-seen-step array.
- data-parallel: ``UsageCounter.all_reduce()`` sums the per-code counts over ranks, so usage is the union
  of the codes used on all ranks (the official code reports one rank's usage); ``WindowedUsage.all_reduce()``
  takes each code's latest step over ranks, so the training curve also counts every rank's tokens.
"""
from __future__ import annotations

import math

import torch


class UsageCounter:
    def __init__(self, num_codes: int):
        self.num_codes = num_codes
        self.counts = torch.zeros(num_codes, dtype=torch.long)

    def update(self, indices: torch.Tensor) -> None:
        self.counts += torch.bincount(indices.reshape(-1).cpu(), minlength=self.num_codes)

    def merge(self, other: "UsageCounter") -> "UsageCounter":
        self.counts += other.counts
        return self

    def all_reduce(self) -> "UsageCounter":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            c = self.counts.to("cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(c)
            self.counts = c.cpu()
        return self

    @property
    def tokens(self) -> int:
        return int(self.counts.sum())

    @property
    def used(self) -> int:
        return int((self.counts > 0).sum())

    @property
    def usage(self) -> float:
        return self.used / self.num_codes

    @property
    def dead_codes(self) -> int:
        return self.num_codes - self.used

    @property
    def tokens_per_code(self) -> float:
        return self.tokens / self.num_codes

    @property
    def perplexity(self) -> float:
        return perplexity(self.counts)

    def histogram(self) -> torch.Tensor:
        """Counts per code, sorted from most to least used (the usage histogram)."""
        return self.counts.sort(descending=True).values


def perplexity(counts: torch.Tensor) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0].double() / total
    return math.exp(float(-(p * p.log()).sum()))


class WindowedUsage:
    """Fraction of codes hit within the last ``window`` steps (a training-time usage curve)."""

    def __init__(self, num_codes: int, window: int):
        self.num_codes, self.window = num_codes, window
        self.last_seen = torch.full((num_codes,), -(2**62), dtype=torch.long)

    def update(self, indices: torch.Tensor, step: int) -> None:
        self.last_seen[indices.reshape(-1).cpu()] = step

    def usage(self, step: int) -> float:
        return float((self.last_seen > step - self.window).sum()) / self.num_codes

    def all_reduce(self) -> "WindowedUsage":
        """Union over data-parallel ranks: a code was last seen at the latest step any rank saw it. Exact, and
        needed only before reading usage or checkpointing (the max of maxima), not every step."""
        from fvq.core.dist import all_reduce

        self.last_seen = all_reduce(self.last_seen, "max")
        return self

    def state_dict(self) -> dict:
        return {"last_seen": self.last_seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.last_seen = state["last_seen"].clone()


def group_collapse_hint(counts: torch.Tensor, group: int) -> str:
    """Flag the VQBridge failure mode where dead codes sit at the same in-group positions.

    All codes at one position inside a group share one slice of the recovering Linear (eq. 10), so they live
    or die together: usage then drops in steps of 1/group (seen with zero last-layer init at small scale).
    """
    if group <= 1 or counts.numel() % group:
        return ""
    used = (counts > 0).reshape(-1, group).float().mean(0)  # usage per in-group position
    dead = [i for i, u in enumerate(used.tolist()) if u == 0.0]
    if dead:
        return f"in-group positions {dead} of {group} are dead in every group (shared W_exp slice collapse)"
    return ""
