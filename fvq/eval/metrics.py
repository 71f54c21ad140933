"""Codebook usage metrics (definitions used everywhere in fvq).

- usage: fraction of the K codes selected at least once over a whole evaluation pass (Tables 1, 3, 7).
  It depends on how many tokens were counted: read it with ``tokens_per_code`` (tokens / K) beside it;
  with few tokens per code it reads low even for a healthy codebook.
- perplexity: exp(entropy) of the code frequencies, between 1 (one code) and K (uniform).
- dead codes: K - number of used codes.
- windowed usage (training curves, Fig. 3): fraction of codes selected at least once within the last
  ``window`` training steps. Cheap: one scatter per step into a last-seen-step array.
- official training usage (logged beside ours as ``train/usage_official``): unique codes among the last
  max(65,536, K + 1) assignments of one rank, over K; a window of tokens, not of steps (``OfficialUsage``).
- data-parallel: ``UsageCounter.all_reduce()`` sums the per-code counts over ranks, so usage is the union
  of the codes used on all ranks (the official code reports one rank's usage); ``WindowedUsage.all_reduce()``
  takes each code's latest step over ranks, so the training curve also counts every rank's tokens.
  ``OfficialUsage.all_reduce()`` merges the ranks' codes in the 1-process order (the official one is per
  rank: see the class).
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


class OfficialUsage:
    """The official code's training usage: a buffer of the last ``max(65536, K + 1)`` code assignments
    (official tokenizer/tokenizer_image/vq_model_qbridge.py:236-240), usage = unique codes in it / K
    (:272-276, logged at vq_train_qbridge_lr.py:338). It spans a fixed number of tokens, so how many steps it
    covers depends on the batch: 65,536 tokens are 16 steps of 16 images x 256 tokens.

    As the official one: the buffer starts as zeros, so code 0 counts as used until ``size`` assignments have
    arrived (at most 1/K too high, early in a run only). A ring with a write position stands in for the
    official shift-and-append (the same entries, so the same count); a step with more assignments than the
    buffer keeps its last ``size`` (the official assignment would fail on the shape).

    Data-parallel, not as the official one. Theirs is per rank: the buffer is a module buffer of the DDP model
    (vq_train_qbridge_lr.py:272, default broadcast_buffers: rank 0's copy wins before each forward) and only
    rank 0 logs (:58-66), so it counts rank 0's last ``size`` codes, drawn over world x as many steps.
    ``all_reduce()`` here merges every rank's codes since the last call into one buffer in the order one
    process sees the global batch (each rank holds a contiguous slice of it, fvq/core/loader.py), so the value
    is the 1-process run's exactly, whatever the number of ranks: the official number of a 1-GPU run at the
    same global batch, and usage stays independent of the process count as every other metric here
    (tests/test_ddp.py). Both count ``size`` tokens; they differ only in which steps those come from.
    ``usage()`` without ``all_reduce()`` counts this rank's own codes, the official per-rank value."""

    def __init__(self, num_codes: int):
        if num_codes <= 0:
            raise ValueError(f"num_codes={num_codes} must be > 0")
        self.num_codes = num_codes
        self.size = max(65536, num_codes + 1)  # the official buffer's length: never shorter than K + 1
        self.buffer = torch.zeros(self.size, dtype=torch.long)
        self.pos = 0  # the next slot to write, i.e. the oldest entry
        self.pending: list[torch.Tensor] = []  # this rank's codes per step since the last merge
        self.pending_n = 0  # codes in pending

    def update(self, indices: torch.Tensor) -> None:
        self.pending.append(indices.reshape(-1).cpu())
        self.pending_n += self.pending[-1].numel()
        # a step behind ``size`` of this rank's newer codes cannot reach the buffer; every rank drops alike
        while self.pending_n - self.pending[0].numel() >= self.size:
            self.pending_n -= self.pending.pop(0).numel()

    def all_reduce(self) -> "OfficialUsage":
        """Append every rank's pending codes in the 1-process order: step by step, rank 0's slice first. All
        ranks call it at the same steps (they hold the same number of equally long steps)."""
        from fvq.core.dist import all_gather_cat, world

        if self.pending:
            lens, w = [p.numel() for p in self.pending], world()
            ranks = all_gather_cat(torch.cat(self.pending)).reshape(w, -1).split(lens, dim=1)  # per step (w, n)
            self.pending, self.pending_n = [], 0
            self._write(torch.cat([step.reshape(-1) for step in ranks]))
        return self

    def usage(self) -> float:
        self._flush()
        return int((torch.bincount(self.buffer, minlength=self.num_codes) > 0).sum()) / self.num_codes

    def state_dict(self) -> dict:
        self._flush()
        return {"buffer": self.buffer.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        if state["buffer"].numel() != self.size:
            raise ValueError(f"usage buffer of {state['buffer'].numel()} entries, expected {self.size}")
        self.buffer, self.pos, self.pending, self.pending_n = state["buffer"].clone(), int(state["pos"]), [], 0

    def _flush(self) -> None:
        """Codes not merged over ranks go in as this rank's own (with one process: what all_reduce does)."""
        if self.pending:
            self._write(torch.cat(self.pending))
            self.pending, self.pending_n = [], 0

    def _write(self, idx: torch.Tensor) -> None:
        idx = idx[-self.size:]
        end = self.pos + idx.numel()
        if end <= self.size:
            self.buffer[self.pos:end] = idx
        else:  # wrap: the head of idx fills the tail of the ring, the rest restarts at slot 0
            self.buffer[self.pos:] = idx[: self.size - self.pos]
            self.buffer[: end - self.size] = idx[self.size - self.pos:]
        self.pos = end % self.size


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
