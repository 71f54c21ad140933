"""Cost of a launch before it is submitted: steps, GPU-hours and wall time per point and for the grid.

``estimate(cfg, gpus, gpu_type, timeout_min, max_requeues) -> Estimate``. The speed is img/s per GPU:
- measured, when results/gpu/*.json (benchmarks/gpu_check.py) holds a training case at the run's
  codebook size (else the nearest measured one, by log K) with the paper's 8 images per GPU; measured on
  another GPU type it is scaled by the ratio of the two types' dense bf16 peaks (``PEAK_BF16``), which
  is crude and said so. A report whose timed step lacked the LPIPS term (``img_s_includes_lpips`` false,
  or absent: written before gpu_check timed it) is used as it is but called optimistic in ``source``
  for a run that trains with the term; among equally near reports one that timed the term is preferred;
- else from FLOPs: per image 3 x (encoder + decoder) + the LPIPS VGG (2 forwards + a backward) + the PatchGAN
  (discriminator step and generator term) + the nearest-code search (2 N K d), and per micro-step of each
  GPU 3 x the projector over the whole codebook (every rank projects it, eq. 3), at ``ASSUMED_MFU`` of
  the type's dense bf16 peak.
Data-parallel scaling is taken as linear (no communication cost); evaluation time is not included.
A job that cannot finish within timeout x (max_requeues + 1) gets a warning: raise the spec's
``timeout_min`` or ``max_requeues`` (slurm/README.md), or expect the run to end FAILED.
"""
from __future__ import annotations

import functools
import glob
import json
import math
import os
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_RESULTS = os.path.join(REPO, "results", "gpu")
PEAK_BF16 = {"a100": 312e12, "h100": 989e12, "h200": 989e12}  # dense bf16 tensor-core FLOP/s (SXM)
ASSUMED_MFU = 0.3  # share of the peak a conv autoencoder with GroupNorm reaches: an assumption, not measured
MEASURED_BATCH = 8  # images per GPU of the measured cases (the paper's 2 x 8 layout of batch 128)


@dataclass(frozen=True)
class Estimate:
    steps: int
    images: int            # steps x global batch
    img_s_per_gpu: float
    gpus: int
    gpu_hours: float
    wall_hours: float
    source: str            # "measured on ..." or "FLOPs: ..."
    warning: str = ""      # non-empty when the job cannot finish within timeout x (requeues + 1)


def gpu_kind(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' / 'a100' -> 'h100' / 'a100'; '' when unknown."""
    low = name.lower()
    return next((k for k in PEAK_BF16 if k in low), "")


def load_measured(folder: str = GPU_RESULTS) -> list[dict]:
    """Every GPU-mode report of benchmarks/gpu_check.py in ``folder`` (tiny CPU reports are ignored)."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if r.get("mode") == "gpu" and r.get("img_s_per_gpu"):
            out.append({**r, "path": os.path.relpath(path, REPO)})
    return out


def _measured_speed(cfg, gpu_type: str, reports: list[dict]) -> tuple[float, str] | None:
    if cfg.model.arch != "vq-16" or cfg.data.image_size != 256 or not reports:
        return None  # measured cases are VQ-16 at 256x256 only
    k = cfg.quant.codebook_size
    best = None
    for r in reports:
        for size, ips in r["img_s_per_gpu"].items():
            key = (abs(math.log(int(size) / k)), not r.get("img_s_includes_lpips", False))
            if best is None or key < best[0]:
                best = (key, r, int(size), float(ips))
    _, r, size, ips = best
    have = gpu_kind(r["provenance"]["device"])
    want = gpu_type.lower() or have
    scale = PEAK_BF16[want] / PEAK_BF16[have] if have and want in PEAK_BF16 and want != have else 1.0
    where = f"measured on {r['provenance']['device']} ({r['path']}, K={size:,})"
    if scale != 1.0:
        where += f" x {scale:.2f} ({want} / {have} bf16 peak)"
    if cfg.loss.perceptual_weight > 0 and not r.get("img_s_includes_lpips", False):
        why = "a report from before gpu_check timed it" if "img_s_includes_lpips" not in r else \
            "; ".join(r.get("img_s_lpips") or ["its backbone was not built"])
        where += f"; optimistic: timed without the LPIPS term ({why})"
    return ips * scale, where


@functools.lru_cache(maxsize=8)
def _vgg_flops(size: int) -> int:
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = torchvision.models.vgg16().features
        with FlopCounterMode(display=False) as fc:
            net(torch.empty(1, 3, size, size))
    return int(fc.get_total_flops())


@functools.lru_cache(maxsize=8)
def _disc_flops(size: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fvq.vq.losses import PatchGAN

    with torch.device("meta"):
        net = PatchGAN()
        with FlopCounterMode(display=False) as fc:
            net(torch.empty(1, 3, size, size))
    return int(fc.get_total_flops())


def flops_per_gpu_step(cfg, gpus: int, accum: int = 1) -> tuple[float, float]:
    """(FLOPs one GPU spends per optimisation step, FLOPs per image of it) under data parallelism."""
    from fvq.vq.flops import _autoencoder_flops, projector_flops

    q, d, s = cfg.quant, cfg.model.channel, cfg.data.image_size
    conv, ratio = _autoencoder_flops(cfg.model.arch, d, 1, s)
    per_image = 3 * conv + 2 * (s // ratio) ** 2 * q.codebook_size * d
    if cfg.loss.perceptual_weight > 0:
        per_image += 4 * _vgg_flops(s)  # VGG on x and x_hat, backward through x_hat
    if cfg.loss.disc_weight > 0:
        per_image += 9 * _disc_flops(s)  # D step: 2 forwards + backward; G term: forward + backward to x_hat
    proj = 0 if q.projector == "none" else 2 * projector_flops(
        q.projector, q.codebook_size, d, latent_dim=q.latent_dim, depth=q.depth, group=q.group, heads=q.heads,
        mlp_ratio=q.mlp_ratio, mlp_layers=q.mlp_layers)
    per_gpu = cfg.optim.batch / gpus
    return per_gpu * per_image + accum * 3 * proj, per_image


def estimate(cfg, gpus: int, gpu_type: str = "a100", timeout_min: int = 0, max_requeues: int = 0,
             accum: int = 1, reports: list[dict] | None = None) -> Estimate:
    """Steps, GPU-hours and wall time of one run of ``cfg`` on ``gpus`` GPUs of ``gpu_type``."""
    steps, batch = cfg.optim.steps, cfg.optim.batch
    measured = _measured_speed(cfg, gpu_type, load_measured() if reports is None else reports)
    if measured is not None:
        ips, source = measured
    else:
        peak = PEAK_BF16.get(gpu_kind(gpu_type) or "a100")
        step_flops, per_image = flops_per_gpu_step(cfg, gpus, accum)
        ips = (batch / gpus) / (step_flops / (peak * ASSUMED_MFU))
        source = (f"FLOPs: {per_image / 1e12:.2f} TFLOP/img, {ASSUMED_MFU:.0%} of "
                  f"{gpu_kind(gpu_type) or 'a100'} {peak / 1e12:.0f} TFLOP/s bf16 (assumed)")
    gpu_hours = steps * batch / ips / 3600
    wall = gpu_hours / gpus
    warning = ""
    if timeout_min and wall * 60 > timeout_min * (max_requeues + 1):
        jobs = math.ceil(wall * 60 / timeout_min)
        warning = (f"needs ~{jobs} jobs of {timeout_min / 60:.0f} h but the spec allows {max_requeues + 1} "
                   f"(max_requeues={max_requeues}): raise timeout_min or max_requeues")
    return Estimate(steps, steps * batch, ips, gpus, gpu_hours, wall, source, warning)


def fmt_hours(h: float) -> str:
    return f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} d"


# ---- a launch: every point on one Slurm spec -------------------------------------------------------------
def ranks(spec) -> int:
    """Data-parallel ranks of one run on ``spec`` (one task per GPU)."""
    return spec.nodes * spec.tasks_per_node


def check_layout(cfg, spec) -> None:
    """The spec's ranks (and optim.accum) must divide the global batch: else a one-line ConfigError."""
    from fvq.core.config import ConfigError

    n, b, a = ranks(spec), cfg.optim.batch, cfg.optim.accum
    if b % n:
        raise ConfigError(f"slurm={spec.name}: {n} GPUs (ranks) do not divide optim.batch={b} (the global batch); "
                          f"pick a spec whose GPU count divides it")
    if (b // n) % a:
        raise ConfigError(f"optim.accum={a} does not divide the {b // n} images per GPU of optim.batch={b} on "
                          f"slurm={spec.name} ({n} GPUs)")


def makespan(hours: list[float], slots: int) -> float:
    """Wall time of runs started longest first on ``slots`` parallel slots (the array's parallelism)."""
    free = [0.0] * max(1, slots)
    for h in sorted(hours, reverse=True):
        i = free.index(min(free))
        free[i] += h
    return max(free) if hours else 0.0


def cost_report(plans, spec, reports: list[dict] | None = None) -> str:
    """Per point and for the whole launch: steps, GPU-hours, wall time on ``spec``, the speed's source,
    and a warning for every run that cannot finish within timeout x (max_requeues + 1)."""
    reports = load_measured() if reports is None else reports
    n = ranks(spec)
    ests = []
    for p in plans:
        check_layout(p.cfg, spec)
        ests.append((p, estimate(p.cfg, n, spec.gpu_type or "a100", spec.timeout_min, spec.max_requeues,
                                 p.cfg.optim.accum, reports)))
    per_gpu = {p.cfg.optim.batch // n // p.cfg.optim.accum for p, _ in ests}
    lines = [f"estimate on slurm={spec.name}: {spec.nodes} x {spec.tasks_per_node} {spec.gpu_type or 'GPU'} = {n} GPUs "
             f"per run, {'/'.join(map(str, sorted(per_gpu)))} images per GPU per forward, --time "
             f"{spec.timeout_min / 60:g} h x {spec.max_requeues + 1} jobs (max_requeues={spec.max_requeues}), "
             f"{spec.array_parallelism} runs at once",
             f"{'signature':<11} {'state':<9} {'steps':>11} {'GPU-hours':>10} {'wall':>9} {'img/s/GPU':>10}  speed"]
    sources: dict[str, int] = {}
    for p, e in ests:
        ref = sources.setdefault(e.source, len(sources) + 1)
        lines.append(f"{p.sig:<11} {p.state[:9]:<9} {e.steps:>11,} {e.gpu_hours:>10,.1f} {fmt_hours(e.wall_hours):>9} "
                     f"{e.img_s_per_gpu:>10.1f}  [{ref}]")
    todo = [e for p, e in ests if p.state in ("missing", "stalled")]
    for label, group in (("whole grid", [e for _, e in ests]), ("missing or stalled", todo)):
        lines.append(f"total ({label}, {len(group)} runs): {sum(e.gpu_hours for e in group):,.1f} GPU-hours, "
                     f"wall {fmt_hours(makespan([e.wall_hours for e in group], spec.array_parallelism))} "
                     f"with {spec.array_parallelism} runs at once")
    lines += [f"[{i}] {s}" for s, i in sources.items()]
    lines += [f"warning: {p.sig}: {e.warning}" for p, e in ests if e.warning]
    return "\n".join(lines)
