"""Run dirs of the cpu-protocol calibration sweep -> results/calibration.csv (sweeps/scale.py says what it chose).

    python -m analysis.calibration runs=runs/calib commit=f92cb6b [out=results/calibration.csv]

The calibration runs are single ``python -m fvq.train`` runs (one thread, one at a time), not a grid: this
reads their run dirs (config.json, metrics.jsonl, final.json) and writes one row per finished run with the
settings that were varied, the final validation metrics, the training-window and held-out usage with the
tokens per code each counts, and the measured seconds of training and of the final evaluation (wall time on a
shared machine: comparable only between rows of one sweep). ``commit`` is the commit the runs were started
from (a clean tree; fvq.train alone does not record it).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.rows import RESULTS
from fvq.core.config import ConfigError
from fvq.core.keyvalue import split, typed

VARIED = ("quant.projector", "quant.codebook_size", "sched.kind", "optim.batch", "optim.steps", "optim.lr_scale",
          "data.val_size", "eval.images", "log.usage_window")
FINAL = ("psnr", "rec_l2", "ssim", "usage", "perplexity", "dead_codes", "tokens_per_code", "rfid", "fid_images")


def row(run: Path, commit: str) -> dict | None:
    final = json.loads((run / "final.json").read_text()) if (run / "final.json").exists() else None
    if final is None:
        return None
    from fvq.core.config import from_flat_dict
    from fvq.vq.models import get_arch

    flat = json.loads((run / "config.json").read_text())
    cfg = from_flat_dict(flat)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in log if m["key"] == "train/total"]
    evals = [m for m in log if m["key"].startswith("eval/")]
    usage = [m for m in log if m["key"] == "train/usage"]
    side = cfg.data.image_size // get_arch(cfg.model.arch).ratio
    window_tokens = cfg.log.usage_window * cfg.optim.batch * side * side
    out = {"run_dir": run.name, "commit": commit, **{k: flat[k] for k in VARIED}, "lr": cfg.lr,
           **{k: final["metrics"].get(k) for k in FINAL},
           "train_usage": usage[-1]["value"] if usage else None,
           "train_tokens_per_code": window_tokens / cfg.quant.codebook_size,
           "train_s": round(train[-1]["time"] - train[0]["time"]) if len(train) > 1 else None,
           "eval_s": round(evals[-1]["time"] - train[-1]["time"]) if evals and train else None}
    out["held_out_usage"] = out.pop("usage")
    out["held_out_tokens_per_code"] = out.pop("tokens_per_code")
    return out


@dataclass(frozen=True)
class Args:
    runs: str = "runs/calib"     # the calibration runs' runs dir
    commit: str = ""             # the commit they ran at (required: a row without provenance is not written)
    out: str = str(RESULTS / "calibration.csv")


def main(argv: list[str]) -> int:
    try:
        opts = typed(Args, split(argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = sorted(p for p in Path(opts.runs).iterdir() if (p / "config.json").exists()) \
        if Path(opts.runs).is_dir() else []
    rows = [r for r in (row(p, opts.commit) for p in runs) if r is not None]
    if not rows or not opts.commit:
        print(f"error: no finished run under {opts.runs} or no commit= given", file=sys.stderr)
        return 2
    pd.DataFrame(rows).to_csv(opts.out, index=False)
    print(f"{len(rows)} calibration runs -> {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
