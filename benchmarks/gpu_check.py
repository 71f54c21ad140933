"""The prepared GPU check: what a paper-scale launch needs to know, measured on one GPU in <= 8 minutes.

    python benchmarks/gpu_check.py                  # one CUDA GPU: writes results/gpu/<device>.json
    python benchmarks/gpu_check.py --tiny --out x.json   # CPU, tiny sizes, seconds (the test suite runs this)
    make gpu-check

One JSON with provenance (commit, device, torch/CUDA versions, command, date) and four sections:
- ``train``: bf16-autocast training steps (``fvq.train.train_step``, the loop's own: generator with its LPIPS
  term + PatchGAN discriminator, grad clip, Adam) of VQ-16 + VQBridge at K=16,384 p=16 and K=262,144 p=64,
  8 images per GPU (the paper's 2 x 8 layout of global batch 128), plus K=16,384 at batch 128 on one GPU
  (does the a100x1 layout fit?): img/s, peak memory allocated (what tensors held) and reserved (what the
  caching allocator took from the card). The sweep estimates (sweeps/estimate.py) read ``img_s_per_gpu``
  from here, and ``img_s_includes_lpips`` to know whether the step they time is the whole one. Without the
  LPIPS VGG weights on the machine the term runs on a random-init VGG16 of the trained one's shape (same
  FLOPs, a meaningless value), and each case's ``lpips`` says so.
- ``search``: the fp32 nearest-code search (fvq.vq.quantize.nearest_code) beside the bare GEMM of the same
  shape (N = 8 x 16 x 16 tokens, d = 256), and the peak memory of the official full N x K distance
  matrix (|z|^2 + |e|^2 - 2 z e^T, then argmin) beside the chunked search's.
- ``convergence``: a few hundred steps of VQ-16 + VQBridge at 256x256 on the built-in photos (L2 + VQ
  loss, the paper's recipe otherwise) at the peak lr of batch 128 (``--lr-scale``; the lr rule's 6.25e-6 at
  batch 8 is too small for 300 steps to say much): mean loss over the first and the last 20 steps, and
  whether it fell by at least ``MIN_REL_DECREASE``.
Sections past ``--budget-s`` are skipped and say so (never invented). Each case's failure (e.g. out of
memory) is recorded with its one-line reason and the check goes on. A figure that cannot be measured
(peak memory on CPU) is None, its reason under the case's ``missing``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, overrides on the paper preset); per-GPU batch 8 = 128 / 16 GPUs (scripts of the official code)
GPU_CASES = [
    ("vq16-K16384-p16-b8", ["quant.codebook_size=16384", "quant.group=16", "optim.batch=8"]),
    ("vq16-K262144-p64-b8", ["quant.codebook_size=262144", "quant.group=64", "optim.batch=8"]),
    ("vq16-K16384-p16-b128", ["quant.codebook_size=16384", "quant.group=16", "optim.batch=128"]),
]
TINY_CASES = [  # the same code at cpu-4 / 32x32 sizes
    ("tiny-K1024-p4-b2", ["quant.codebook_size=1024", "quant.group=4", "optim.batch=2"]),
    ("tiny-K4096-p16-b2", ["quant.codebook_size=4096", "quant.group=16", "optim.batch=2"]),
]
TINY = ["model.arch=cpu-4", "data.image_size=32", "device=cpu"]
NET_NAMES = {"vgg": "VGG16", "alex": "AlexNet"}
NO_CUDA_MEMORY = "not measured on CPU: torch.cuda's peak memory statistics exist for CUDA devices only"
# The convergence verdict: the mean loss of the last steps at most 80% of the first steps'. A loss that
# merely drifts down by noise (or by the warmup's first steps alone) should not pass as "it trains".
MIN_REL_DECREASE = 0.2


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(dev) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None


def _peak_reserved_mib(dev) -> float | None:
    import torch

    return torch.cuda.max_memory_reserved() / 2**20 if dev.type == "cuda" else None


def _random_lpips(net: str):
    """The `lpips` package's module (its slices of torchvision's backbone, its own linear heads) on a randomly
    initialised backbone: the same layers and shapes as the trained one, so the same FLOPs and memory."""
    import warnings

    import lpips

    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=False`
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # pnet_rand: no download
    return model.eval().requires_grad_(False)  # frozen as load_lpips leaves the trained one


def _setup(overrides: list[str], dev):
    """(the training loop's parts (fvq.build.build_parts) on the paper preset, what its LPIPS term runs on).

    Without the LPIPS backbone weights on the machine the term still runs, on a random-init backbone: left
    out, the timed step would be lighter than a run's (the VGG's two forwards and a backward are some 10%
    of its FLOPs at 256x256 by sweeps/estimate.py's count) and the GPU-hour estimates fed from it optimistic."""
    import dataclasses

    import torch

    from fvq.build import build_parts
    from fvq.core.config import apply_overrides, base_config
    from fvq.vq.losses import LPIPSWeightsMissing

    cfg = apply_overrides(base_config("paper"), overrides + ["loss.disc_start=0"])
    if cfg.loss.perceptual_weight == 0:
        torch.manual_seed(0)
        return build_parts(cfg, dev), "absent (loss.perceptual_weight=0)"
    torch.manual_seed(0)
    try:
        return build_parts(cfg, dev), "included"
    except LPIPSWeightsMissing:
        pass
    torch.manual_seed(0)  # the same model and discriminator weights as with the trained backbone
    parts = build_parts(apply_overrides(cfg, ["loss.perceptual_weight=0"]), dev)
    net = _random_lpips(cfg.loss.lpips_net).to(dev)
    # VQLoss adds the term when it holds a module and a weight > 0 (fvq/vq/losses.py); build_loss would
    # refuse a random backbone, so it is put in place here, for timing only.
    parts.vqloss.lpips, parts.vqloss.perceptual_weight = net, cfg.loss.perceptual_weight
    name = NET_NAMES.get(cfg.loss.lpips_net, cfg.loss.lpips_net)
    return dataclasses.replace(parts, cfg=cfg, lpips=net), \
        f"random-init {name} of the trained one's shape (timing only)"


def _step(parts, x, step: int) -> dict:
    """fvq.train.train_step, the loop's own step: bf16 autocast on CUDA, generator then discriminator."""
    from fvq.train import train_step

    return {k: float(v.detach()) for k, v in train_step(parts, x, step, parts.cfg.lr)[0].items()}


def train_case(name: str, overrides: list[str], dev, steps: int, warmup: int) -> dict:
    import torch

    out = {"case": name}
    try:
        parts, note = _setup(overrides, dev)
        cfg, model = parts.cfg, parts.model
        out.update({"codebook_size": cfg.quant.codebook_size, "group": cfg.quant.group, "batch": cfg.optim.batch,
                    "image_size": cfg.data.image_size, "arch": cfg.model.arch, "lpips": note,
                    "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)})
        g = torch.Generator().manual_seed(0)
        s = cfg.data.image_size
        x = (torch.rand(cfg.optim.batch, 3, s, s, generator=g) * 2 - 1).to(dev)
        _peak_reset(dev)
        for i in range(warmup):
            _step(parts, x, i)
        _sync(dev)
        t0 = time.perf_counter()
        for i in range(steps):
            terms = _step(parts, x, warmup + i)
        _sync(dev)
        dt = time.perf_counter() - t0
        out.update({"steps": steps, "step_s": dt / steps, "img_s": steps * cfg.optim.batch / dt,
                    "peak_mib": _peak_mib(dev), "peak_reserved_mib": _peak_reserved_mib(dev),
                    "final_terms": terms})
        if dev.type != "cuda":
            out["missing"] = {"peak_mib": NO_CUDA_MEMORY, "peak_reserved_mib": NO_CUDA_MEMORY}
    except Exception as e:  # out of memory among others: recorded, the check goes on
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def search_case(n: int, d: int, k: int, dev, reps: int) -> dict:
    """fp32 chunked search vs the bare GEMM (N,d)@(d,K) vs the official full distance matrix."""
    import torch

    from fvq.vq.quantize import nearest_code

    g = torch.Generator().manual_seed(0)
    z, cb = torch.randn(n, d, generator=g).to(dev), torch.randn(k, d, generator=g).to(dev)
    out = {"n": n, "d": d, "k": k, "full_matrix_mib": n * k * 4 / 2**20}
    if dev.type != "cuda":
        out["missing"] = {f"{what}_{m}": NO_CUDA_MEMORY for what in ("gemm", "search", "official")
                          for m in ("extra_mib", "extra_reserved_mib")}

    def official():  # vq_model_qbridge.py: the whole N x K matrix, then argmin
        dist = (z ** 2).sum(1, keepdim=True) + (cb ** 2).sum(1) - 2 * torch.einsum("bd,dn->bn", z, cb.t())
        return dist.argmin(1)

    gemm_out = torch.empty(n, k, device=dev)
    cases = {"gemm": lambda: torch.mm(z, cb.t(), out=gemm_out), "search": lambda: nearest_code(z, cb),
             "official": official}
    for what, fn in cases.items():
        try:
            _peak_reset(dev)
            cuda = dev.type == "cuda"
            held = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
            held_reserved = torch.cuda.memory_reserved() / 2**20 if cuda else 0.0
            fn()
            _sync(dev)
            peak, reserved = _peak_mib(dev), _peak_reserved_mib(dev)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(dev)
            out[f"{what}_s"] = (time.perf_counter() - t0) / reps
            if peak is not None:  # above what is already held (inputs, the GEMM's preallocated output)
                out[f"{what}_extra_mib"] = peak - held
                out[f"{what}_extra_reserved_mib"] = reserved - held_reserved
        except Exception as e:
            out[f"{what}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if "gemm_s" in out and "search_s" in out:
        out["search_over_gemm"] = out["search_s"] / out["gemm_s"]
    same = bool(torch.equal(nearest_code(z, cb), official())) if "official_s" in out else None
    out["same_indices_as_official"] = same  # ties aside, the chunked search must pick the same codes
    return out


def convergence(dev, steps: int, size: int, arch: str, k: int, p: int, batch: int, lr_scale: float = 0.0) -> dict:
    """L2 + VQ loss over a few hundred steps on a fixed pool of built-in photo crops (real images).

    ``lr_scale`` multiplies the lr rule's base_lr x batch / 128; 0 takes 128 / batch, the peak lr of the
    paper's batch 128 (base_lr). At batch 8 the rule alone gives 6.25e-6, at which a few hundred steps
    barely move the weights, so a fall of the loss would say little about the step."""
    import torch

    from fvq.core.data import build_dataset

    ov = [f"model.arch={arch}", f"data.image_size={size}", f"quant.codebook_size={k}", f"quant.group={p}",
          f"optim.batch={batch}", "loss.perceptual_weight=0", "loss.disc_weight=0", f"optim.steps={steps}"]
    parts, _ = _setup(ov, dev)
    cfg = parts.cfg
    if lr_scale <= 0:
        lr_scale = cfg.optim.base_batch / batch
    lr = cfg.optim.base_lr * batch / cfg.optim.base_batch * lr_scale
    from fvq.core.schedule import lr_factor
    from fvq.train import train_step

    pool = build_dataset("photos", "train", size, n=max(64, 4 * batch), seed=0)
    loader = torch.utils.data.DataLoader(pool, batch_size=len(pool), num_workers=min(8, os.cpu_count() or 1))
    data = next(iter(loader)).to(dev)  # one pass: a fixed pool of random crops, reused every epoch
    losses, rec = [], []
    t0 = time.perf_counter()
    for i in range(steps):
        idx = torch.arange(i * batch, (i + 1) * batch) % len(data)
        terms = train_step(parts, data[idx], i, lr * lr_factor(i, steps, cfg.sched))[0]
        losses.append(float(terms["total"].detach()))
        rec.append(float(terms["rec"].detach()))
    _sync(dev)
    w = max(1, min(20, steps // 5))
    first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
    rel = 1 - last / first if first > 0 else float("nan")
    return {"steps": steps, "image_size": size, "arch": arch, "codebook_size": k, "group": p, "batch": batch,
            "lr": lr, "lr_scale": lr_scale, "lr_of_the_rule": cfg.optim.base_lr * batch / cfg.optim.base_batch,
            "pool_images": len(data), "loss_first": first, "loss_last": last,
            "rec_first": sum(rec[:w]) / w, "rec_last": sum(rec[-w:]) / w, "rel_decrease": rel,
            "min_rel_decrease": MIN_REL_DECREASE, "decreased": bool(rel >= MIN_REL_DECREASE),
            "finite": all(math.isfinite(v) for v in losses), "seconds": time.perf_counter() - t0,
            "curve_every_10": losses[::10]}


def provenance(argv: list[str], dev) -> dict:
    import torch

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or "cpu")
    return {"device": name, "device_type": dev.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "command": " ".join(["python", "benchmarks/gpu_check.py", *argv]), "host": platform.node(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "threads": torch.get_num_threads()}


def slug(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"


def main(argv: list[str] | None = None) -> int:
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, tiny sizes: the test-suite mode")
    ap.add_argument("--out", default="", help="JSON path (default results/gpu/<device>.json)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip sections that start after this")
    ap.add_argument("--lr-scale", type=float, default=0.0,
                    help="convergence lr = base_lr x batch / 128 x this; 0 (default): the lr of batch 128")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    if a.tiny:
        dev = torch.device("cpu")
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("error: no CUDA device visible (use --tiny for the CPU mode)", file=sys.stderr)
        return 2
    else:
        dev = torch.device("cuda")
    report = {"mode": "tiny" if a.tiny else "gpu", "provenance": provenance(argv, dev), "skipped": {}}

    def budget_left(section: str) -> bool:
        spent = time.perf_counter() - t_start
        if spent > a.budget_s:
            report["skipped"][section] = f"time budget of {a.budget_s:.0f}s spent ({spent:.0f}s)"
            return False
        return True

    cases = [(n, TINY + ov) for n, ov in TINY_CASES] if a.tiny else GPU_CASES
    report["train"] = []
    for name, ov in cases:
        if budget_left(f"train/{name}"):
            r = train_case(name, ov, dev, steps=2 if a.tiny else 20, warmup=1 if a.tiny else 3)
            report["train"].append(r)
            memory = "peak memory not measured on CPU" if r.get("peak_mib") is None else \
                f"peak {r['peak_mib']:.0f} MiB allocated, {r['peak_reserved_mib']:.0f} MiB reserved"
            print(f"[gpu-check] train {name}: " + (r.get("error") or
                  f"{r['img_s']:.1f} img/s, {memory}; LPIPS {r['lpips']}"), flush=True)
    # img/s per GPU at the paper's per-GPU batch: what sweeps/estimate.py reads, with whether those steps
    # held the LPIPS term (a report without the field predates it: its img/s is of a lighter step)
    fed = [r for r in report["train"] if "img_s" in r and r["batch"] == (2 if a.tiny else 8)]
    report["img_s_per_gpu"] = {str(r["codebook_size"]): r["img_s"] for r in fed}
    report["img_s_includes_lpips"] = bool(fed) and all("perceptual" in r["final_terms"] for r in fed)
    report["img_s_lpips"] = sorted({r["lpips"] for r in fed})
    report["search"] = []
    for k in ((1024, 4096) if a.tiny else (16384, 262144)):
        if budget_left(f"search/K={k}"):
            r = search_case(64 if a.tiny else 8 * 16 * 16, 64 if a.tiny else 256, k, dev, reps=2 if a.tiny else 10)
            report["search"].append(r)
            print(f"[gpu-check] search K={k}: search/gemm {r.get('search_over_gemm', float('nan')):.2f}, "
                  f"full matrix {r['full_matrix_mib']:.0f} MiB", flush=True)
    if budget_left("convergence"):
        kw = dict(steps=30, size=32, arch="cpu-4", k=256, p=4, batch=4) if a.tiny else \
            dict(steps=300, size=256, arch="vq-16", k=16384, p=16, batch=8)
        try:
            report["convergence"] = convergence(dev, **kw, lr_scale=a.lr_scale)
            c = report["convergence"]
            verdict = "fell" if c["decreased"] else f"did NOT fall by {MIN_REL_DECREASE:.0%}"
            print(f"[gpu-check] convergence at lr {c['lr']:.3g}: loss {c['loss_first']:.4f} -> "
                  f"{c['loss_last']:.4f} ({c['rel_decrease']:.0%} lower: {verdict})", flush=True)
        except Exception as e:
            report["convergence"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    report["seconds"] = time.perf_counter() - t_start
    out = a.out or os.path.join(REPO, "results", "gpu", f"{slug(report['provenance']['device'])}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    os.replace(out + ".tmp", out)
    print(f"[gpu-check] wrote {out} in {report['seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
