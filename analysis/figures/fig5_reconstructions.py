"""Fig. 5 (left): reconstructions of FVQ against the baseline tokenizer, on the same validation images.

Each panel is one run's recon.png (fvq/train.py: inputs on the top row, reconstructions below), copied by
analysis/collect.py to results/recon/<signature>.png. The runs are the Table 1 / Table 3 points: the LlamaGen
VQGAN baseline at d = 8 and d = 256, and FVQ at d = 256 (K = 16,384 in paper terms). Generation samples
(Fig. 5 right) are analysis/figures/fig5_samples.py.

    python -m analysis.figures.fig5_reconstructions [--results results --out results/figures]
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from analysis.aggregate import harness
from analysis.cells import Notes, metric, no_run, ours
from analysis.cli import main
from analysis.style import no_runs, style
from analysis.writers import save_figure


def panels() -> dict[str, dict]:
    from sweeps.grids._fragments import k16, vqbridge, vqgan

    return {"LlamaGen VQGAN, d = 8": {**vqgan, **k16, "model.channel": 8},
            "LlamaGen VQGAN, d = 256": {**vqgan, **k16, "model.channel": 256},
            "FVQ (VQBridge + annealing), d = 256": {**vqbridge, **k16}}


def make(results: Path):
    style()
    fig, axes = plt.subplots(3, 1, figsize=(8, 6.5))
    gaps: list[str] = []
    for ax, (name, point) in zip(axes, panels().items()):
        ax.set_xticks([])
        ax.set_yticks([])
        run = harness(results, point)[0]
        first = str(run["signature"]).split(",")[0] if run is not None else ""  # seed 0's (or the first seed's)
        image = Path(results) / "recon" / f"{first}.png" if run is not None else None
        if image is None or not image.exists():
            why = no_run("scaling") if run is None else f"no results/recon/{first}.png (run {run['status']})"
            no_runs(ax, why)
            ax.set_title(name, fontsize=9)
            gaps.append(f"{name}: {why}")
            continue
        notes = Notes()
        ax.imshow(plt.imread(image))
        ax.grid(False)
        ax.set_title(f"{name} - rFID {metric(run, 'rfid', notes)}, PSNR {metric(run, 'psnr', notes)} - "
                     f"{ours(run['scale'])}, run {first}", fontsize=8)
    axes[0].set_ylabel("top: input\nbottom: recon.", fontsize=7)
    fig.suptitle("Fig. 5 (left): reconstructions, inputs (top row) and reconstructions (bottom row)")
    fig.tight_layout()
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig5_reconstructions")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig5_reconstructions", "figures"))
