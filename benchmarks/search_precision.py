"""How often the bf16 nearest-code search (``quant.search_dtype=bf16``: the official runs' distance, computed
inside their bf16 autocast) picks another code than the fp32 one (the default), and how far off it is.

    python benchmarks/search_precision.py                          # random latents and codebooks only
    python benchmarks/search_precision.py --runs RUN_DIR [RUN_DIR ...] [--images 256]

Cases (every search chunked by fvq.vq.quantize.nearest_code within its default 256 MiB budget):
- random: latents and codes ~ N(0, I), N = 4,096, K = 16,384 and 262,144, at d = 8 (LlamaGen's code width)
  and d = 256 (the paper's vector channel, section 4.1);
- trained: the latents quant_conv(encoder(x)) of the first ``--images`` held-out images of each finished run
  dir (read only: its config.json and ckpt.pt), searched in its projected codebook.
Each case runs twice: inputs as they are (fp32), and inputs rounded to bf16 first, as the search sees them
under autocast, where the latent and the projected codebook both leave bf16 layers. That second row isolates
the distance precision, the one difference ``quant.search_dtype`` switches.

Per case: ``agree`` (bf16 argmin == fp32 argmin), each one's agreement with an fp64 brute force
(``fp32_exact``, ``bf16_exact``), the fp64 distance of the bf16 pick over the best one, minus 1, among the
rows where bf16 misses the best code (``excess_median``, ``excess_max``), the distinct codes each picks, and
the scale that decides it: the median squared norm of the latents (the size of z.c, whose bf16 rounding is
relative) beside the median fp64 distance to the best code. Writes results/search_precision.json with its
provenance.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fvq.vq.quantize import nearest_code  # noqa: E402


@torch.no_grad()
def exact(z: torch.Tensor, cb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 argmin over the codebook in chunks of codes (128 MiB tiles), and its squared distance."""
    z, cb = z.double(), cb.double()
    chunk = max(256, 2**24 // z.shape[0])
    best_val = torch.full((z.shape[0],), float("inf"), dtype=torch.float64)
    best_idx = torch.zeros(z.shape[0], dtype=torch.long)
    z_sq = (z * z).sum(1, keepdim=True)
    for s in range(0, cb.shape[0], chunk):
        c = cb[s:s + chunk]
        d = z_sq + (c * c).sum(1) - 2 * z @ c.t()
        val, idx = d.min(1)
        better = val < best_val
        best_val, best_idx = torch.where(better, val, best_val), torch.where(better, idx + s, best_idx)
    return best_idx, best_val


def compare(name: str, z: torch.Tensor, cb: torch.Tensor) -> list[dict]:
    rows = []
    for inputs in ("fp32", "bf16"):
        zi, ci = (z, cb) if inputs == "fp32" else (z.bfloat16().float(), cb.bfloat16().float())
        t0 = time.perf_counter()
        a = nearest_code(zi, ci)
        t1 = time.perf_counter()
        b = nearest_code(zi, ci, dtype="bf16")
        t2 = time.perf_counter()
        ref, ref_d = exact(zi, ci)
        off, miss = a != b, b != ref
        pick_d = (zi[miss].double() - ci[b[miss]].double()).pow(2).sum(1)  # fp64 distance of the bf16 pick
        excess = (pick_d / ref_d[miss].clamp_min(1e-30) - 1).sort().values
        rows.append({
            "case": name, "inputs": inputs, "n": z.shape[0], "k": cb.shape[0], "d": z.shape[1],
            "agree": float((~off).float().mean()), "fp32_exact": float((a == ref).float().mean()),
            "bf16_exact": float((b == ref).float().mean()),
            "excess_median": float(excess[len(excess) // 2]) if len(excess) else 0.0,
            "excess_max": float(excess[-1]) if len(excess) else 0.0,
            "codes_fp32": int(a.unique().numel()), "codes_bf16": int(b.unique().numel()),
            "z_sq_median": float(zi.double().pow(2).sum(1).median()), "best_d_median": float(ref_d.median()),
            "s_fp32": round(t1 - t0, 3), "s_bf16": round(t2 - t1, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def random_cases(n: int) -> list[dict]:
    rows = []
    for d in (8, 256):
        for k in (16384, 262144):
            g = torch.Generator().manual_seed(0)
            rows += compare("random", torch.randn(n, d, generator=g), torch.randn(k, d, generator=g))
    return rows


@torch.no_grad()
def trained_case(run_dir: str, images: int) -> list[dict]:
    """Latents and projected codebook of a finished run (read only)."""
    from fvq.build import build_model, build_val_dataset
    from fvq.core.checkpoint import load_checkpoint
    from fvq.core.config import from_flat_dict
    from fvq.core.rundir import read_json

    cfg = from_flat_dict(read_json(os.path.join(run_dir, "config.json")), strict=False)
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(os.path.join(run_dir, "ckpt.pt"))["model"])
    model.eval()
    val = build_val_dataset(cfg)
    x = torch.stack([val[i] for i in range(min(images, len(val)))])
    z = torch.cat([model.quant_conv(model.encoder(xb)) for xb in x.split(64)])
    z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    cb = model.quantizer.codebook().float()
    name = f"trained {os.path.basename(os.path.normpath(run_dir))} ({cfg.quant.projector}, {cfg.optim.steps} steps)"
    return compare(name, z.float(), cb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="*", default=[], help="finished run dirs (read only)")
    ap.add_argument("--images", type=int, default=256, help="held-out images per run")
    ap.add_argument("--n", type=int, default=4096, help="random latents per case")
    ap.add_argument("--out", default=os.path.join(REPO, "results", "search_precision.json"))
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    rows = random_cases(a.n)
    for run in a.runs:
        rows += trained_case(run, a.images)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    out = {"command": " ".join(["python benchmarks/search_precision.py", *sys.argv[1:]]),
           "commit": commit.stdout.strip() + ("+dirty" if dirty.strip() else ""),
           "date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
