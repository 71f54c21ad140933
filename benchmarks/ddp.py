"""Data-parallel step time and throughput: 1 vs 2 processes at the same global batch, side by side in one run.

    python benchmarks/ddp.py                    # CPU, gloo: cpu-4 preset, global batch 32, 1 thread per process
    python benchmarks/ddp.py --quick            # fewer steps
    python benchmarks/ddp.py --device cuda      # GPUs, NCCL, bf16 autocast: 1 GPU vs all visible GPUs

Each row is a fresh set of processes (one per rank, torchrun-style variables, fvq.core.dist.init_from_env) running
`fvq.train.train_step` itself: DDP forward, loss (eq. 35 terms), the per-step loss all-reduce, backward
(gradient all-reduce), clipping, Adam. ``step s`` is wall time per step on rank 0 between two barriers;
img/s counts the global batch. A "1 proc x 2 threads" row shows what the same two cores give without DDP.
Layouts are measured in alternation, ``--repeats`` rounds, keeping each one's fastest round, so load from
other processes on a shared machine biases no layout more than another.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = {  # name: overrides
    "cpu-4 K=1024 vqbridge b32": ["quant.projector=vqbridge"],
    "vq-16 K=16384 vqbridge-L/16 b16": ["model.arch=vq-16", "data.image_size=256", "optim.batch=16",
                                        "quant.codebook_size=16384", "quant.group=16"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, case: str, steps: int, device: str, threads: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import warnings

    import torch

    from fvq.core import dist

    # DDP notes once that a 1x1 conv's weight gradient is not laid out like its bucket (a copy, not an error)
    warnings.filterwarnings("ignore", message="Grad strides do not match")
    from fvq.build import build_parts
    from fvq.core.config import Config, apply_overrides
    from fvq.train import train_step

    torch.set_num_threads(threads)
    cfg = apply_overrides(Config(), CASES[case] + [f"device={device}"])
    with dist.joined(torch.device(device)) as dev:
        torch.manual_seed(0)
        parts = build_parts(cfg, dev)  # DDP-wrapped: the process group is up
        per = cfg.optim.batch // world
        x = torch.rand(per, 3, cfg.data.image_size, cfg.data.image_size, device=dev) * 2 - 1

        def step(i: int) -> None:
            train_step(parts, x, i, cfg.lr)  # the training loop's own step (loss all-reduce, clipping)
            dist.any_true(False)  # the stop-flag all-reduce of train.py

        step(0)  # warm-up (allocator, DDP buckets)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        dt = time.perf_counter() - t0
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"step_s": dt / steps, "img_s": steps * cfg.optim.batch / dt, "per_rank": per}, f)


def run(case: str, world: int, steps: int, device: str, threads: int) -> dict:
    import torch.multiprocessing as mp

    out = os.path.join(tempfile.mkdtemp(), "r.json")
    mp.spawn(_rank, args=(world, _free_port(), case, steps, device, threads, out), nprocs=world)
    with open(out) as f:
        return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=0)
    a = ap.parse_args()
    import torch

    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device visible")
        n = torch.cuda.device_count()
        layouts = [(1, 1)] + ([(n, 1)] if n > 1 else [])
        cases = list(CASES)
    else:
        layouts = [(1, 1), (2, 1), (1, 2)]  # (processes, threads each): 2 cores either way in the last two
        cases = [c for c in CASES if c.startswith("cpu")]
    rows = []
    steps, repeats = a.steps or (5 if a.quick else 15), a.repeats or (1 if a.quick else 3)
    for case in cases:
        best: dict = {}
        for _ in range(repeats):
            for lay in layouts:
                r = run(case, lay[0], steps, a.device, lay[1])
                if lay not in best or r["step_s"] < best[lay]["step_s"]:
                    best[lay] = r
        for lay in layouts:
            rows.append((case, *lay, best[lay], best[layouts[0]]["step_s"] / best[lay]["step_s"]))
    print(f"device={a.device} torch={torch.__version__} backend={'nccl' if a.device == 'cuda' else 'gloo'} "
          f"cpus={os.cpu_count()} steps={steps} repeats={repeats} (fastest kept)")
    print(f"{'case':<34} {'procs':>5} {'threads':>7} {'batch/rank':>10} {'step s':>8} {'img/s':>8} {'speedup':>8}")
    for case, world, threads, r, speedup in rows:
        print(f"{case:<34} {world:>5} {threads:>7} {r['per_rank']:>10} {r['step_s']:>8.3f} {r['img_s']:>8.1f} "
              f"{speedup:>7.2f}x")
    if a.device != "cuda":
        print("GPU numbers (NCCL, bf16) need a lent GPU machine: python benchmarks/ddp.py --device cuda")


if __name__ == "__main__":
    main()
