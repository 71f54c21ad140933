"""A grid point's seeds as one row: the mean of each metric over its finished runs with its sample sd and
count (`aggregate`), one such row per paper point of a results CSV (`by_point`) or per scale of one paper
row (`harness`), and a training curve's mean +- sd band over the seeds (`band`). How these numbers are
printed is analysis/cells.py.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.rows import METRICS, finished, lookup, seeds_of


def harness(results_dir: Path, point: dict) -> list[pd.Series | None]:
    """Our rows for one paper row: one per scale, aggregated over its seeds (`aggregate`), or [None]."""
    df = lookup(results_dir, point)
    return [aggregate(sub) for _, sub in df.groupby("scale", sort=True)] if len(df) else [None]


def aggregate(runs: pd.DataFrame) -> pd.Series:
    """The seeds of one point as one row: each metric's mean over the finished runs that have it, with
    ``<metric>_sd`` (sample sd, ddof 1; NaN for one run) and ``<metric>_n``; ``signature`` / ``run_id`` list
    every run (seed order). A point without a finished run is its first row (its status says why)."""
    runs = runs.assign(seed=seeds_of(runs)).sort_values("seed")
    done = finished(runs)
    if done.empty:
        return runs.iloc[0]
    row = done.iloc[0].copy()
    for m in [*METRICS, *(c for c in done.columns if c.startswith("coco/"))]:
        if m in done:
            values = pd.to_numeric(done[m], errors="coerce").dropna()
            row[m] = values.mean() if len(values) else None
            row[f"{m}_sd"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{m}_n"] = len(values)
    row["n"] = len(done)
    row["seeds"] = ",".join(str(s) for s in done["seed"])
    for key in ("signature", "run_id"):
        row[key] = ",".join(str(v) for v in done[key])
    return row


def by_point(runs: pd.DataFrame) -> pd.DataFrame:
    """One aggregated row per paper point (``paper_signature``) of a results CSV, in first-seen order."""
    return pd.DataFrame([aggregate(sub) for _, sub in runs.groupby("paper_signature", sort=False)])


def band(hist: pd.DataFrame, signatures: str, metric: str) -> pd.DataFrame:
    """A training curve over the seeds of one point: ``step, mean, sd, n`` (sd NaN where one seed)."""
    sub = hist[hist["signature"].isin(str(signatures).split(",")) & (hist["metric"] == metric)]
    out = sub.groupby("step")["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n"})
