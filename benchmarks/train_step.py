"""Training-step speed and memory: img/s and peak memory per step, with and without VQBridge, and the
share of step time spent in tracking - measured side by side in one run.

    python benchmarks/train_step.py                 # cpu preset (batch 32, 32x32) and VQ-16 (batch 2, 256x256)
    python benchmarks/train_step.py --quick         # fewer steps
    python benchmarks/train_step.py --device cuda   # on a GPU machine (bf16 autocast, as in training)

Peak memory: on CUDA torch.cuda.max_memory_allocated; on CPU the growth of the process's peak RSS
(ru_maxrss) over the measured steps of each case, measured in a fresh subprocess per case, so one
case's allocations cannot hide another's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = {  # name: overrides (paper terms already resolved)
    "cpu-4 K=1024 vqbridge": ["quant.projector=vqbridge"],
    "cpu-4 K=1024 none": ["quant.projector=none"],
    "vq-16 K=16384 vqbridge-L/16 b2": ["model.arch=vq-16", "data.image_size=256", "optim.batch=2",
                                       "quant.codebook_size=16384", "quant.group=16"],
    "vq-16 K=16384 none b2": ["model.arch=vq-16", "data.image_size=256", "optim.batch=2",
                              "quant.codebook_size=16384", "quant.projector=none"],
}


def one_case(overrides: list[str], steps: int, device: str) -> dict:
    import torch

    from fvq.build import build_parts
    from fvq.core.config import Config, apply_overrides
    from fvq.core.track import BufferedTracker
    from fvq.train import train_step

    cfg = apply_overrides(Config(), overrides + [f"device={device}"])
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    dev = torch.device(device)
    parts = build_parts(cfg, dev)
    model = parts.model
    x = torch.rand(cfg.optim.batch, 3, cfg.data.image_size, cfg.data.image_size, device=dev) * 2 - 1
    tracker = BufferedTracker(None, tempfile.mkdtemp(), flush_s=5, log=lambda *a, **k: None)

    def step(i: int) -> dict:
        return train_step(parts, x, i, cfg.lr)[0]  # the training loop's own step (clipping included)

    step(0)  # warm-up (allocator, lazy init)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_track, t0 = 0.0, time.perf_counter()
    for i in range(1, steps + 1):
        terms = step(i)
        t1 = time.perf_counter()
        tracker.log_metrics({f"train/{k}": float(v.detach()) for k, v in terms.items()}, i)  # every step
        t_track += time.perf_counter() - t1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tracker.close("FINISHED")
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return {"step_s": dt / steps, "img_s": steps * cfg.optim.batch / dt, "peak_mib": peak,
            "track_share": t_track / dt, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0)
    a = ap.parse_args()
    if a.case:  # child process: one case, JSON on stdout
        print(json.dumps(one_case(CASES[a.case], a.steps, a.device)))
        return
    rows = []
    for name in CASES:
        steps = a.steps or ((3 if "vq-16" in name else 10) if a.quick else (5 if "vq-16" in name else 30))
        out = subprocess.run([sys.executable, __file__, "--case", name, "--steps", str(steps), "--device", a.device],
                             capture_output=True, text=True)
        if out.returncode != 0:
            rows.append((name, None, out.stderr.strip().splitlines()[-1]))
            continue
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1]), ""))
    print(f"device={a.device} threads={os.environ.get('BENCH_THREADS', '1')}")
    print(f"{'case':<34} {'params':>8} {'step s':>8} {'img/s':>8} {'peak MiB':>9} {'tracking':>9}")
    for name, r, err in rows:
        if r is None:
            print(f"{name:<34} failed: {err}")
            continue
        print(f"{name:<34} {r['params_m']:>7.1f}M {r['step_s']:>8.3f} {r['img_s']:>8.1f} {r['peak_mib']:>9.0f} "
              f"{100 * r['track_share']:>8.2f}%")
    by = {n: r for n, r, _ in rows if r}
    for a_, b_ in (("cpu-4 K=1024 vqbridge", "cpu-4 K=1024 none"),
                   ("vq-16 K=16384 vqbridge-L/16 b2", "vq-16 K=16384 none b2")):
        if a_ in by and b_ in by:
            print(f"VQBridge / none step time ({a_.split()[0]}): {by[a_]['step_s'] / by[b_]['step_s']:.2f}x")


if __name__ == "__main__":
    main()
