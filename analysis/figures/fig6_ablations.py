"""Fig. 6: VQBridge design ablations - latent dimension d', ViT depth N, patch size p x codebook size K.

Reads results/latent_dim.csv, depth.csv and patch_size.csv. Each point is the mean over its seeds with a
+-1 sd error bar (n on the legend). At scale=paper the y metric is rFID; at scale=cpu (where rFID over 64
images is noise, analysis/cells.py RFID_INDICATIVE) and in any panel whose runs lack rFID it is the
validation L2 reconstruction error, said on the axis. A run the grid expects but that has no result is marked "no run" at its x position. The paper's
figure has no transcribed numbers; its findings: best at d' = d, N = 2, and p growing with K (p = 4 at
K = 4k, p = 16 at K = 16k).

The lower row reads the optima from what the data resolve: each point's PSNR minus that of its series'
reference point (the paper's choice: d' = d, N = 2, p = 16 at 16k and p = 4 at 4k), paired by seed, with
the 95% confidence interval of the paired difference (analysis/verdicts.py); an interval that crosses zero
does not tell the two apart.

    python -m analysis.figures.fig6_ablations [--results results --out results/figures]
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.aggregate import by_point
from analysis.cells import missing_reason, no_run, ours
from analysis.cli import main
from analysis.rows import finished_values, results as read
from analysis.style import no_runs, style
from analysis.writers import save_figure
from analysis.verdicts import Side, compare

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
    df = runs.assign(x=points.map(lambda p: p.get(key)), K=points.map(lambda p: p.get("quant.codebook_size", 16384)),
                     d=points.map(lambda p: p.get("model.channel", 256)))
    sd, n = (df[f"{column}_sd"], df[f"{column}_n"]) if f"{column}_sd" in df else (None, pd.Series(1, df.index))
    for (k, d), sub in df.groupby(["K", "d"]):
        sub = sub.sort_values("x")
        seeds = sorted({int(v) for v in n[sub.index].fillna(0)})
        ax.errorbar(sub["x"], sub[column], yerr=None if sd is None else sd[sub.index], marker="o", capsize=3,
                    label=f"K = {k:,}{f', d = {d}' if d != 256 else ''} (ran {int(sub['quant.codebook_size'].iloc[0]):,}; "
                          f"n={'/'.join(map(str, seeds))} seeds, ±1 sd)")
        for _, r in sub[sub[column].isna()].iterrows():
            ax.annotate("no run" if r["status"] != "FINISHED" else "no value", (r["x"], 0),
                        xycoords=("data", "axes fraction"), ha="center", va="bottom", color="crimson", fontsize=7)
            gaps.append(f"{title} {key}={r['x']}: {missing_reason(r, column)}")
    ax.set_xscale("log", base=2)
    ran = df.groupby("x")[key].first()  # at scale=cpu, p is shrunk with K (sweeps/scale.py): show both
    ax.set_xticks(ran.index, [f"{x}" if int(r) in (x, 0) else f"{x}\n(ran {int(r)})" for x, r in ran.items()])
    ax.set(ylabel=f"{ylabel} (lower is better)")
    ax.legend(fontsize=7, title=ours(runs["scale"].iloc[0]), title_fontsize=7)


def reference(key: str, k: int, d: int):
    """The paper's choice in a series: d' = d, N = 2, p = 16 at K = 16k and p = 4 at K = 4k (section 4.2)."""
    return {"quant.latent_dim": d, "quant.depth": 2}.get(key, 16 if k >= 16384 else 4)


def paired_panel(ax, runs: pd.DataFrame, key: str) -> None:
    """PSNR of each point minus its series' reference, paired by seed, with the 95% CI."""
    done = finished_values(runs, "psnr")
    points = done["point"].map(json.loads)
    done = done.assign(x=points.map(lambda p: p.get(key)), d=points.map(lambda p: p.get("model.channel", 256)),
                       K=points.map(lambda p: p.get("quant.codebook_size", 16384)))
    for i, ((k, d), sub) in enumerate(done.groupby(["K", "d"])):
        ref = sub[sub["x"] == reference(key, k, d)]
        if len(ref) < 2:
            continue
        base = Side(tuple(ref["seed"].astype(int)), tuple(ref["psnr"].astype(float)))
        xs, ys, lo, hi = [], [], [], []
        for x, pts in sub.groupby("x"):
            if x == reference(key, k, d) or len(pts) < 2:
                continue
            t = compare(Side(tuple(pts["seed"].astype(int)), tuple(pts["psnr"].astype(float))), base, "better")
            xs.append(x * (1.04 ** i))  # series side by side, not on top of each other
            ys.append(t.diff), lo.append(t.diff - t.ci[0]), hi.append(t.ci[1] - t.diff)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3,
                    label=f"K = {k:,}{f', d = {d}' if d != 256 else ''} vs {key.split('.')[-1]} = "
                          f"{reference(key, k, d)}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(done["x"].unique()), [str(x) for x in sorted(done["x"].unique())])
    ax.set(ylabel="PSNR - reference (dB), 95% CI", xlabel="paired by seed (higher is better)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:  # a difference needs two seeds on both sides: say so rather than show an empty axis
        no_runs(ax, "no paired differences: fewer than 2 seeds per point")


def make(results: Path):
    style()
    fig, grid_axes = plt.subplots(2, 3, figsize=(12, 6.6))
    gaps: list[str] = []
    for ax, low, (grid, key, title) in zip(grid_axes[0], grid_axes[1], PANELS):
        ax.set(title=title, xlabel=title)
        runs = read(results, grid)
        if runs is None:
            for a in (ax, low):
                no_runs(a, no_run(grid))
            gaps.append(f"{title}: {no_run(grid)}")
        else:
            panel(ax, runs, key, title, gaps)
            paired_panel(low, runs, key)
    fig.suptitle("Fig. 6: VQBridge design ablations")
    fig.tight_layout()
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig6_ablations")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig6_ablations", "figures"))
