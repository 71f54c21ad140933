"""Data-parallel plumbing for `fvq.train`: one process per GPU (or per CPU slot), torchrun-style environment.

A run is data-parallel when it is started with several tasks. fvq reads only the variables torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); under Slurm, sweeps/job.py
exports the same ones from submitit's job environment, so fvq never imports submitit. NCCL on GPUs, gloo
on CPU. Without those variables (or with ``WORLD_SIZE=1``) every helper here is the identity / a no-op and
training is the plain single-process loop.

The paper's batch is global (Table 6: lr = base_lr x batch / 128 with batch the total over GPUs): each
rank trains on a contiguous slice of every global batch, DDP averages the gradients, so a step is the
1-process step up to float summation order. Metrics that describe the whole batch or the whole val set
(loss values, code usage, PSNR/SSIM/LPIPS means, rFID) are reduced over ranks here before anyone reads
them; only rank 0 writes files (`is_main`).
"""
from __future__ import annotations

import contextlib
import datetime
import importlib
import os
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """Rank 0: the only process that writes checkpoints, status.json and metrics."""
    return rank() == 0


def env_rank() -> int:
    """This process's rank from the environment (usable before / after the process group exists)."""
    return int(os.environ.get("RANK", "0"))


def local_device(device: torch.device) -> torch.device:
    """One GPU per rank: cuda:LOCAL_RANK (modulo the visible count, in case the launcher already narrowed
    CUDA_VISIBLE_DEVICES to this rank's GPU)."""
    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))


def init_from_env(device: torch.device, timeout_min: float = 30.0) -> tuple[torch.device, bool]:
    """Join the process group the environment describes; return (this rank's device, created here).

    Idempotent: when a group exists already (sweeps/job.py creates it to agree on the attempt count), it is
    used as it is and the caller must not destroy it.
    """
    device = local_device(device)
    if is_dist():
        return device, False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch "
                           f"with torchrun or through sweeps/run.py launcher=slurm")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # torch._dynamo imported after the group exists (torchvision, hence LPIPS and torch-fidelity, import it)
    # keeps a reference to the group: destroy_process_group then leaves gloo's worker threads running into
    # interpreter shutdown, where one that frees a finished collective's tensor must take the GIL, is stopped
    # by Python and std::terminate()s the process (SIGABRT after all work was written, 1 run in 4). Imported
    # first, the group dies with destroy_process_group and its threads are joined.
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min),
                            device_id=device if device.type == "cuda" else None)
    return device, True


@contextlib.contextmanager
def joined(device: torch.device, timeout_min: float = 30.0) -> Iterator[torch.device]:
    """``init_from_env`` for the block; the group it created is destroyed on the way out, whatever happens."""
    device, own = init_from_env(device, timeout_min)
    try:
        yield device
    finally:
        if own:
            dist.destroy_process_group()


def wrap(module: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """DDP around ``module`` when data-parallel, else ``module`` itself.

    ``sync_bn``: BatchNorm (the PatchGAN's) normalises with per-rank batch statistics unless converted to
    SyncBatchNorm, which PyTorch supports on GPUs only; on CPU the discriminator's BN stays per-rank (the one
    place where a data-parallel CPU run is not the 1-process run).
    """
    if world() == 1:
        return module
    if sync_bn and device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None)


def shard(n: int) -> range:
    """This rank's contiguous slice of range(n) (sizes differ by at most one; rank order = index order)."""
    r, w = rank(), world()
    return range(r * n // w, (r + 1) * n // w)


# ---- collectives (identity with one process) -----------------------------------------------------------
def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A reduced copy of ``t`` (``op``: sum | max | mean) on ``t``'s device."""
    if world() == 1:
        return t
    c = t.detach().to(_comm_device()).clone()
    dist.all_reduce(c, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        c = c / world()
    return c.to(t.device)


def any_true(flag: bool) -> bool:
    """True on every rank when it is True on any: keeps all ranks on the same branch (stop, re-compute)."""
    if world() == 1:
        return bool(flag)
    return bool(all_reduce(torch.tensor([int(bool(flag))]), "max").item())


def mean_terms(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Loss terms averaged over ranks (detached): the global-batch values a 1-process run computes, since
    every term is a mean over equally sized slices. One small all-reduce."""
    if world() == 1 or not terms:
        return terms
    keys = sorted(terms)
    vals = all_reduce(torch.stack([terms[k].detach().float().reshape(()) for k in keys]), "mean")
    return dict(zip(keys, vals.unbind()))


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``t`` along dim 0 in rank order (first dims may differ); a CPU tensor.

    With `shard`'s contiguous slices the result is in the 1-process order, e.g. Inception features for rFID.
    """
    if world() == 1:
        return t.cpu()
    dev = _comm_device()
    n = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world())]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    pad = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=dev)
    pad[: t.shape[0]] = t.to(dev)
    out = [torch.empty_like(pad) for _ in sizes]
    dist.all_gather(out, pad)
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).cpu()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def on_main(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on rank 0 only and hand its result - or its exception - to every rank, so a failure seen
    by rank 0 (unwritable run dir, another config there) stops all ranks instead of leaving them waiting."""
    if world() == 1:
        return fn(*args)
    out: tuple[Any, BaseException | None] = (None, None)
    if is_main():
        try:
            out = (fn(*args), None)
        except Exception as e:
            out = (None, e)
    result, err = broadcast_object(out)
    if err is not None:
        raise err
    return result
