"""Fig. 3: codebook usage during training - linear, linear + annealing, MLP-5, VQBridge, small and large K.

Reads results/projector.csv (which run is which) and results/projector_curves.csv (``train/usage``: the
windowed usage over recent training tokens, fvq.eval.metrics.WindowedUsage; dotted where the runs also
logged ``train/usage_official``, the official code's estimator, the one its TensorBoard plots: distinct codes
among the last max(65,536, K + 1) assignments, fvq.eval.metrics.OfficialUsage). The paper's figure has no
transcribed numbers; its end-of-training usage from Table 5 is marked at the right edge of each panel.

    python -m analysis.figures.fig3_usage_curves [--results results --out results/figures]
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from analysis.aggregate import band, by_point
from analysis.cells import no_run, ours
from analysis.cli import main
from analysis.rows import curves, paper, results as read
from analysis.style import no_runs, style
from analysis.writers import save_figure

NAMES = {"linear": "linear", "mlp": "MLP-5", "vqbridge": "VQBridge", "none": "plain VQ"}
SIZES = {16384: "16k", 262144: "262k"}  # the two panels of Fig. 3 (paper terms)


def label(point: dict) -> str:
    """Table 5's row name of a projector-grid point: no annealing unless "+Annealing"."""
    name = NAMES[point.get("quant.projector", "vqbridge")]
    return name if point.get("sched.kind") == "constant" else f"{name}+Annealing"


def make(results: Path):
    style()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    runs, hist, gaps = read(results, "projector"), curves(results, "projector"), []
    ref = paper("tab5_projector")
    for ax, (size, name) in zip(axes, SIZES.items()):
        ax.set(title=f"K = {size:,} (paper terms)", xlabel="training step", ylim=(-3, 105))
        if runs is None or hist is None:
            no_runs(ax, no_run("projector"))
            gaps.append(f"K={name}: {no_run('projector')}")
            continue
        agg = by_point(runs)  # one row per point; its signatures are those of every seed
        points = agg["point"].map(json.loads)
        panel = agg[points.map(lambda p: p.get("quant.codebook_size") == size)]
        for (_, run), point in zip(panel.iterrows(), points[panel.index]):
            u = band(hist, run["signature"], "train/usage")
            if u.empty:
                gaps.append(f"{label(point)} K={name}: no usage curve (run {run['signature']} {run['status']})")
                continue
            ran = int(run["quant.codebook_size"])
            line, = ax.plot(u["step"], 100 * u["mean"], label=f"{label(point)} (ran K={ran:,}, n={u['n'].max()})")
            ax.fill_between(u["step"], 100 * (u["mean"] - u["sd"].fillna(0)), 100 * (u["mean"] + u["sd"].fillna(0)),
                            color=line.get_color(), alpha=0.2, lw=0)
            off = band(hist, run["signature"], "train/usage_official")
            if not off.empty:
                ax.plot(off["step"], 100 * off["mean"], ls=":", color=line.get_color())
            final = ref[(ref["method"] == label(point)) & (ref["codebook_size"] == name)]["usage_pct"]
            if len(final) and final.iloc[0]:
                ax.plot([u["step"].max()], [float(final.iloc[0])], marker="x", ms=8, color=line.get_color())
        if ax.lines:
            ax.legend(fontsize=7, loc="lower right", title=f"{ours(panel['scale'].iloc[0])}; x = paper (Table 5)",
                      title_fontsize=7)
        else:
            no_runs(ax, f"no usage curves for K={name}")
    axes[0].set_ylabel("codebook usage during training (%)")
    fig.suptitle("Fig. 3: codebook usage during training")
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig3_usage_curves")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig3_usage_curves", "figures"))
