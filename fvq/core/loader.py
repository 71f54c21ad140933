"""The order in which training sees its images: a pure function of (seed, epoch, step), so a resumed run,
any number of DataLoader workers and any number of data-parallel ranks see exactly the 1-process batches.
"""
from __future__ import annotations

import torch

from fvq.core.data import epoch_permutation
from fvq.core.errors import SetupError


class _Epoched(torch.utils.data.Dataset):
    """Dataset adaptor whose items are addressed by (epoch, index), so workers need no shared state."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        epoch, i = key
        self.ds.set_epoch(epoch)
        return self.ds[i]


def batch_plan(n: int, batch: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
    """Index lists for steps start..total-1: each epoch a seeded permutation, last partial batch dropped.

    Data-parallel: ``batch`` is the global batch and rank r gets the r-th contiguous slice of each one, so
    the ranks' micro-batches of a step together are exactly the 1-process batch."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise SetupError(f"dataset has {n} training images, fewer than one batch of {batch}")
    perm_epoch, perm = -1, None
    for step in range(start, total):
        epoch, k = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm_epoch, perm = epoch, epoch_permutation(n, seed, epoch)
        per = batch // world
        lo = k * batch + rank * per
        yield [(epoch, int(i)) for i in perm[lo:lo + per]]


def train_loader(ds, batch: int, seed: int, start: int, total: int, *, rank: int = 0, world: int = 1,
                 workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Batches of steps ``start..total-1`` for this rank (see `batch_plan`)."""
    return torch.utils.data.DataLoader(_Epoched(ds), batch_sampler=batch_plan(len(ds), batch, seed, start, total,
                                                                              rank, world),
                                       num_workers=workers, pin_memory=pin_memory)
