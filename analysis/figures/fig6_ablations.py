"""Fig. 6: VQBridge design ablations - latent dimension d', ViT depth N, patch size p x codebook size K.

Reads results/latent_dim.csv, depth.csv and patch_size.csv. Each point is the mean over its seeds with a
+-1 sd error bar (n on the legend). At scale=paper the y metric is rFID; at scale=cpu (where rFID over 64
images is noise, analysis/common.py RFID_INDICATIVE) and in any panel whose runs lack rFID it is the
validation L2 reconstruction error, said on the axis. A run the grid expects but that has no result is marked "no run" at its x position. The paper's
figure has no transcribed numbers; its findings: best at d' = d, N = 2, and p growing with K (p = 4 at
K = 4k, p = 16 at K = 16k).

    python -m analysis.figures.fig6_ablations [--results results --out results/figures]
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.common import (by_point, main, missing_reason, no_run, no_runs, ours, results as read, save_figure,
                             style)

PANELS = [("latent_dim", "quant.latent_dim", "latent dimension d'"), ("depth", "quant.depth", "ViT depth N"),
          ("patch_size", "quant.group", "patch size p (paper terms)")]


def choose_metric(runs: pd.DataFrame) -> tuple[str, str, str]:
    """(column, axis label, gap) - rFID at paper scale when every finished run has it, else the L2 error."""
    done = runs[runs["status"] == "FINISHED"]
    if len(done) and (done["scale"] == "cpu").all():
        return "rec_l2", "validation L2 error", ""
    if len(done) and done["rfid"].notna().all():
        return "rfid", "rFID", ""
    why = missing_reason(done.iloc[0], "rfid") if len(done) else "no finished run"
    return "rec_l2", "validation L2 error (rFID missing)", f"rFID missing, plotted rec_l2 ({why})"


def panel(ax, runs: pd.DataFrame, key: str, title: str, gaps: list[str]) -> None:
    column, ylabel, why = choose_metric(runs)
    if why:
        gaps.append(f"{title}: {why}")
    runs = by_point(runs)  # one row per point: mean, <metric>_sd, <metric>_n over its seeds
    points = runs["point"].map(json.loads)
    df = runs.assign(x=points.map(lambda p: p.get(key)), K=points.map(lambda p: p.get("quant.codebook_size", 16384)))
    sd, n = (df[f"{column}_sd"], df[f"{column}_n"]) if f"{column}_sd" in df else (None, pd.Series(1, df.index))
    for k, sub in df.groupby("K"):
        sub = sub.sort_values("x")
        seeds = sorted({int(v) for v in n[sub.index].fillna(0)})
        ax.errorbar(sub["x"], sub[column], yerr=None if sd is None else sd[sub.index], marker="o", capsize=3,
                    label=f"K = {k:,} (ran {int(sub['quant.codebook_size'].iloc[0]):,}; "
                          f"n={'/'.join(map(str, seeds))} seeds, ±1 sd)")
        for _, r in sub[sub[column].isna()].iterrows():
            ax.annotate("no run" if r["status"] != "FINISHED" else "no value", (r["x"], 0),
                        xycoords=("data", "axes fraction"), ha="center", va="bottom", color="crimson", fontsize=7)
            gaps.append(f"{title} {key}={r['x']}: {missing_reason(r, column)}")
    ax.set_xscale("log", base=2)
    ran = df.groupby("x")[key].first()  # at scale=cpu, p is shrunk with K (sweeps/scale.py): show both
    ax.set_xticks(ran.index, [f"{x}" if int(r) == x else f"{x}\n(ran {int(r)})" for x, r in ran.items()])
    ax.set(ylabel=f"{ylabel} (lower is better)")
    ax.legend(fontsize=7, title=ours(runs["scale"].iloc[0]), title_fontsize=7)


def make(results: Path):
    style()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    gaps: list[str] = []
    for ax, (grid, key, title) in zip(axes, PANELS):
        ax.set(title=title, xlabel=title)
        runs = read(results, grid)
        if runs is None:
            no_runs(ax, no_run(grid))
            gaps.append(f"{title}: {no_run(grid)}")
        else:
            panel(ax, runs, key, title, gaps)
    fig.suptitle("Fig. 6: VQBridge design ablations")
    fig.tight_layout()
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig6_ablations")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig6_ablations", "figures"))
