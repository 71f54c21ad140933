"""Fig. 2: the dynamic VQ toy (fvq/toy.py). Left: trajectories of one z_e and its z_q, plain STE vs
VQBridge. Right: t-SNE of encoder outputs and codes (used / unused) for plain VQ, linear and VQBridge.

The toy runs in seconds, but like every figure this one reads results/ only: ``--recompute`` runs the toy
(seeded, CPU) and the t-SNE and caches them in results/toy_trajectories.csv and results/toy_tsne.csv, which
are committed with their provenance (results/README.md). Without the CSVs the panels say "no runs yet".

    python -m analysis.figures.fig2_toy --recompute     # run the toy, write the CSVs, draw
    python -m analysis.figures.fig2_toy                  # draw from results/toy_*.csv
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.cli import main
from analysis.style import no_runs, style
from analysis.writers import save_figure

TITLES = {"none": "plain VQ (STE only)", "linear": "linear projector", "vqbridge": "VQBridge"}
HINT = "python -m analysis.figures.fig2_toy --recompute"
SEED = 0


def run_and_cache(results: Path) -> None:
    """Run the toy for each projector; write the trajectory (2-D) and t-SNE (16-D, K = 256) tables."""
    from sklearn.manifold import TSNE

    from fvq.toy import TRAJECTORY_VARIANT, TSNE_VARIANT, run_toy

    traj, tsne = [], []
    for kind in TITLES:
        r = run_toy(kind, seed=SEED, **TRAJECTORY_VARIANT)
        traj.append(pd.DataFrame({"projector": kind, "seed": SEED, "step": np.arange(len(r.z_e)),
                                  "ze_x": r.z_e[:, 0], "ze_y": r.z_e[:, 1], "zq_x": r.z_q[:, 0], "zq_y": r.z_q[:, 1],
                                  "target_x": r.target[0], "target_y": r.target[1], "mean_distance": r.distance}))
        r = run_toy(kind, seed=SEED, **TSNE_VARIANT)
        xy = TSNE(n_components=2, perplexity=30, init="pca", random_state=SEED).fit_transform(
            np.concatenate([r.encoder_out, r.codes]))
        n = len(r.encoder_out)
        tsne.append(pd.DataFrame({"projector": kind, "seed": SEED, "kind": ["encoder"] * n + ["code"] * len(r.codes),
                                  "x": xy[:, 0], "y": xy[:, 1], "used": [True] * n + list(r.used),
                                  "usage": r.usage, "final_distance": r.final_distance}))
    results.mkdir(parents=True, exist_ok=True)
    pd.concat(traj).to_csv(results / "toy_trajectories.csv", index=False, float_format="%.6g")
    pd.concat(tsne).to_csv(results / "toy_tsne.csv", index=False, float_format="%.6g")


def trajectory(ax, df: pd.DataFrame, kind: str) -> None:
    d = df[df["projector"] == kind]
    ax.plot(d["ze_x"], d["ze_y"], lw=1.2, label="$z_e$")
    ax.plot(d["zq_x"], d["zq_y"], ".-", ms=2.5, lw=0.5, alpha=0.8, label="$z_q$")
    ax.plot(d["target_x"].iloc[0], d["target_y"].iloc[0], "k*", ms=10, label="target")
    ax.plot(d["ze_x"].iloc[0], d["ze_y"].iloc[0], "ko", ms=4, label="start")
    early = d["mean_distance"].iloc[: len(d) // 8].mean()
    ax.set_title(f"{TITLES[kind]}\nmean |z_q - z_e| over the first 1/8 of steps: {early:.3f}", fontsize=8)
    ax.legend(fontsize=7)


def scatter(ax, df: pd.DataFrame, kind: str) -> None:
    d = df[df["projector"] == kind]
    enc, code = d[d["kind"] == "encoder"], d[d["kind"] == "code"]
    ax.scatter(enc["x"], enc["y"], s=4, c="#9da5ad", label="encoder output")
    ax.scatter(code[~code["used"]]["x"], code[~code["used"]]["y"], s=10, marker="x", c="crimson", label="unused code")
    ax.scatter(code[code["used"]]["x"], code[code["used"]]["y"], s=10, c="#0072b2", label="used code")
    ax.set_title(f"{TITLES[kind]}: usage {100 * d['usage'].iloc[0]:.0f}%", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def make(results: Path):
    style()
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8), gridspec_kw={"width_ratios": [1.2, 1.2, 1, 1, 1]})
    gaps = []
    for path, kinds, draw, ax_row in ((results / "toy_trajectories.csv", ("none", "vqbridge"), trajectory, axes[:2]),
                                      (results / "toy_tsne.csv", ("none", "linear", "vqbridge"), scatter, axes[2:])):
        if not path.exists():
            for ax, kind in zip(ax_row, kinds):
                ax.set_title(TITLES[kind], fontsize=8)
                no_runs(ax, f"{path.name} absent: {HINT}")
            gaps.append(f"{path.name} absent ({HINT})")
            continue
        df = pd.read_csv(path)
        for ax, kind in zip(ax_row, kinds):
            draw(ax, df, kind)
    if axes[2].collections:
        axes[2].legend(fontsize=7, loc="lower left")
    fig.suptitle("Fig. 2: toy experiment (fvq/toy.py). Left: z_e / z_q trajectories (2-D, SGD). "
                 "Right: t-SNE of encoder outputs and codes (16-D, K = 256)", fontsize=10)
    fig.tight_layout()
    return fig, gaps


def build(results: Path, out: Path, recompute: bool = False) -> list[str]:
    if recompute:
        run_and_cache(results)
    fig, gaps = make(results)
    save_figure(fig, out, "fig2_toy")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig2_toy", "figures", flags=("recompute",)))
