"""Nearest-code search vs the bare matrix product of the same shape, measured side by side in one run.

    python benchmarks/quantizer.py            # N=4096, d=256, K in {16,384; 65,536; 262,144}
    python benchmarks/quantizer.py --quick    # K in {16,384; 65,536}

Target: search time <= 1.2x the matmul (N,d)@(d,K) and <= 1 GiB extra memory at K=262,144.
Memory: each case runs in a fresh subprocess; "extra" is the growth of peak RSS (ru_maxrss) during the
call above what the inputs already hold (CPU), or torch.cuda.max_memory_allocated minus the inputs (CUDA).
The matmul is given a preallocated output, so its row shows compute only.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def case(what: str, n: int, d: int, k: int, device: str, reps: int) -> dict:
    import torch

    from fvq.vq.quantize import nearest_code

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, d, generator=g).to(device)
    cb = torch.randn(k, d, generator=g).to(device)
    out = torch.empty(n, k, device=device) if what == "matmul" else None
    fn = (lambda: torch.mm(z, cb.t(), out=out)) if what == "matmul" else (lambda: nearest_code(z, cb))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # inputs (and matmul output) held
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fn()  # warm-up (counted in the peak: the first call allocates the buffers)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    dt = (time.perf_counter() - t0) / reps
    if device == "cuda":
        extra = torch.cuda.max_memory_allocated() - (z.numel() + cb.numel()) * 4
    else:
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    return {"s": dt, "extra_mib": extra / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        what, n, d, k = a.child
        print(json.dumps(case(what, int(n), int(d), int(k), a.device, 1 if int(k) > 70000 else 3)))
        return
    n, d = 4096, 256
    ks = (16384, 65536) if a.quick else (16384, 65536, 262144)
    print(f"nearest-code search, N={n} d={d}, device={a.device}, threads={os.environ.get('BENCH_THREADS', '2')}")
    print(f"{'K':>8} {'matmul s':>9} {'search s':>9} {'ratio':>6} {'search extra MiB':>17}")
    for k in ks:
        r = {}
        for what in ("matmul", "search"):
            p = subprocess.run([sys.executable, __file__, "--device", a.device, "--child", what, str(n), str(d), str(k)],
                               capture_output=True, text=True, check=True)
            r[what] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{k:>8} {r['matmul']['s']:>9.3f} {r['search']['s']:>9.3f} {r['search']['s'] / r['matmul']['s']:>6.2f} "
              f"{r['search']['extra_mib']:>17.0f}")


if __name__ == "__main__":
    main()
