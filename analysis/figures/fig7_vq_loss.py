"""Fig. 7 (Appendix C): VQ loss during training for several codebook sizes.

Reads results/codebook_size.csv and results/codebook_size_curves.csv (``train/vq``: the codebook +
commitment loss of eq. 5 as logged by fvq/train.py). Paper: the loss settles lower as K grows, after an
early drop while only a few codes are active. The paper's figure has no transcribed numbers.

    python -m analysis.figures.fig7_vq_loss [--results results --out results/figures]
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from analysis.aggregate import band, by_point
from analysis.cells import no_run, ours
from analysis.cli import main
from analysis.rows import curves, results as read
from analysis.style import no_runs, style
from analysis.writers import save_figure


def make(results: Path):
    style()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    runs, hist, gaps = read(results, "codebook_size"), curves(results, "codebook_size"), []
    if runs is None or hist is None:
        no_runs(ax, no_run("codebook_size"))
        gaps.append(no_run("codebook_size"))
    else:
        for _, run in by_point(runs).iterrows():  # mean over seeds, band = +-1 sd
            k = json.loads(run["point"]).get("quant.codebook_size", 16384)
            vq = band(hist, run["signature"], "train/vq")
            if vq.empty:
                gaps.append(f"K={k:,}: no train/vq curve (run {run['signature']} {run['status']})")
                continue
            line, = ax.plot(vq["step"], vq["mean"],
                            label=f"K = {k:,} (ran {int(run['quant.codebook_size']):,}, n={vq['n'].max()})")
            ax.fill_between(vq["step"], vq["mean"] - vq["sd"].fillna(0), vq["mean"] + vq["sd"].fillna(0),
                            color=line.get_color(), alpha=0.2, lw=0)
        if ax.lines:
            ax.legend(title=ours(runs["scale"].iloc[0]), fontsize=7, title_fontsize=7)
        else:
            no_runs(ax, "no train/vq curves in results/codebook_size_curves.csv")
    ax.set(xlabel="training step", ylabel="VQ loss (codebook + commitment, eq. 5)",
           title="Fig. 7: effect of codebook size on the VQ loss")
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig7_vq_loss")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig7_vq_loss", "figures"))
