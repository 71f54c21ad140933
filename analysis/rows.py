"""Where results live and how a table or figure gets its rows: the checked read of a results CSV (type,
range, required columns, one row per run; `ResultsError` names the file and the row otherwise), the
transcribed paper tables of analysis/paper/, and the lookup of our runs of a paper-terms grid point across
every collected grid, finished runs and seeds picked out.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fvq.core.environment import COLUMNS as ENV
from fvq.core.errors import SetupError

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
PAPER = Path(__file__).resolve().parent / "paper"

# Final evaluation metrics (fvq/eval/evaluate.py, logged as eval/<name>) and training curves (train/<name>).
METRICS = ("rfid", "psnr", "ssim", "lpips", "usage", "perplexity", "dead_codes", "tokens_per_code", "rec_l2")
CURVES = ("train/usage", "train/usage_official", "train/vq", "train/rec", "train/total", "train/lr")
SWEPT = ("quant.codebook_size", "quant.group", "quant.projector", "quant.latent_dim", "quant.depth",
         "quant.l2_norm", "model.channel", "model.arch", "sched.kind", "sched.warmup", "optim.steps",
         "data.image_size", "quant.kind", "quant.depth_codes", "quant.scales", "quant.shared", "quant.phi")
IDS = {"signature": str, "paper_signature": str, "run_id": str, "commit": str, "grid": str,
       "tokenizer_signature": str, "trained_in": str, "trained_commit": str,  # generation CSVs
       **{c: str for c in ENV}}  # environment fields are text ("1" threads, not 1.0 beside an empty cell)


def paper(stem: str) -> pd.DataFrame:
    """A transcribed paper table, every cell as the text printed in the paper ("" = not reported)."""
    return pd.read_csv(PAPER / f"{stem}.csv", dtype=str, keep_default_na=False)


# Allowed ranges of the numeric columns (usage is a fraction, fvq/eval/metrics.py); a value outside is a broken CSV,
# never a result to plot.
RANGES = {"rfid": (0, math.inf), "psnr": (-math.inf, math.inf), "ssim": (-1, 1), "lpips": (0, math.inf),
          "usage": (0, 1), "perplexity": (0, math.inf), "dead_codes": (0, math.inf),
          "tokens_per_code": (0, math.inf), "rec_l2": (0, math.inf), "step": (0, math.inf),
          "value": (-math.inf, math.inf)}


class ResultsError(SetupError, ValueError):
    """A results CSV that cannot be trusted; the message names the file and the row (1 = the header)."""


def read_csv(path: Path, required: tuple[str, ...] = (), key: tuple[str, ...] = ()) -> pd.DataFrame:
    """A results CSV with its numeric columns checked for type and range (empty cells are missing values),
    every ``required`` column present and each ``key`` (a run's identity) on one row only: a duplicated run
    would otherwise count as one more seed, and a missing column end a figure in a bare KeyError."""
    try:
        df = pd.read_csv(path, dtype=IDS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"{path}: unreadable CSV: {' '.join(str(e).split())}") from None
    absent = [c for c in required if c not in df]
    if absent:
        raise ResultsError(f"{path}: row 1: no column {', '.join(absent)} (analysis/collect.py writes it; "
                           f"recollect the grid)")
    later = df.duplicated(list(key)) if key else pd.Series(False, index=df.index)
    if later.any():
        j = int(later.to_numpy().nonzero()[0][0])
        i = int((df[list(key)] == df[list(key)].iloc[j]).all(axis=1).to_numpy().nonzero()[0][0])
        what = ", ".join(f"{k}={df[k].iloc[j]}" for k in key)
        raise ResultsError(f"{path}: row {j + 2}: {what} is already on row {i + 2} (one row per run: a "
                           f"duplicate would count as another seed)")
    for col, (lo, hi) in RANGES.items():
        if col not in df:
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = (num.isna() & df[col].notna()) | (num < lo) | (num > hi)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            v = df[col].iloc[i]
            shown = repr(v) if isinstance(v, str) else f"{v:g}"
            raise ResultsError(f"{path}: row {i + 2}: column {col}={shown} is not a number "
                               f"in [{lo}, {hi}]")
        df[col] = num
    return df


# What analysis/collect.py writes for every tokenizer grid, and what identifies one row (the signature holds
# the seed): checked on read, so a cut or hand-merged CSV is refused by name, never plotted.
RUN_COLUMNS, RUN_KEY = ("signature", "status", "scale", "paper_signature", *METRICS), ("signature",)
CURVE_COLUMNS, CURVE_KEY = ("signature", "step", "metric", "value"), ("signature", "metric", "step")


def results(results_dir: Path, grid: str) -> pd.DataFrame | None:
    """results/<grid>.csv (one row per run), or None when the grid was never collected. Other CSVs read
    through here (calibration, generation) have their own columns: only a tokenizer grid's are required."""
    from sweeps import grids

    path = Path(results_dir) / f"{grid}.csv"
    if not path.exists():
        return None
    return read_csv(path, RUN_COLUMNS, RUN_KEY) if grid in grids.names() else read_csv(path)


def curves(results_dir: Path, grid: str) -> pd.DataFrame | None:
    path = Path(results_dir) / f"{grid}_curves.csv"
    return read_csv(path, CURVE_COLUMNS, CURVE_KEY) if path.exists() else None


def point_signature(point: dict) -> str:
    """A grid point's identity in paper terms: the same for the cpu and paper runs of one table row."""
    from sweeps.identity import signature
    from sweeps.scale import resolve

    return signature(resolve(point, "paper"))


def all_runs(results_dir: Path) -> pd.DataFrame:
    """Every run of every collected tokenizer grid (results/<grid>.csv), each run once (grids share runs)."""
    grids = [p.stem for p in sorted(Path(results_dir).glob("*.csv"))
             if not p.stem.endswith("_curves") and not p.stem.startswith("toy_")]
    found = [df for g in grids if "paper_signature" in (df := results(results_dir, g))]
    return pd.concat(found).drop_duplicates("signature").reset_index(drop=True) if found else pd.DataFrame()


def lookup(results_dir: Path | pd.DataFrame, point: dict) -> pd.DataFrame:
    """Our runs of a paper-terms grid point, from any results/<grid>.csv, or from `all_runs` read once."""
    runs = all_runs(results_dir) if isinstance(results_dir, (str, Path)) else results_dir
    if runs.empty:
        return pd.DataFrame()
    df = runs[runs["paper_signature"] == point_signature(point)]
    return df.sort_values("scale", kind="stable").reset_index(drop=True)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs (a results CSV written without a status column holds finished runs only)."""
    return runs[runs["status"] == "FINISHED"] if "status" in runs else runs


def finished_values(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The finished runs that have a number for ``metric``."""
    if runs.empty or metric not in runs:
        return runs.iloc[0:0]
    done = finished(runs)
    return done[pd.to_numeric(done[metric], errors="coerce").notna()]


def seeds_of(df: pd.DataFrame) -> pd.Series:
    """The seed of each row (results written before the seed axis have no column: seed 0, the default)."""
    return df["seed"].fillna(0).astype(int) if "seed" in df else pd.Series(0, index=df.index)
