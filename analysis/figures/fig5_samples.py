"""Fig. 5 (right): class-conditional samples of the generator on plain-VQ tokens vs FVQ tokens.

Each panel is one generator run's samples.png (fvq/generation/ar.py: one sample per class, classes in order), copied to
results/samples/<run>.png by `analysis.collect grid=generation`; the runs are the rows of results/generation_cpu.csv
(seed 0 of each tokenizer). At cpu scale the classes are Fashion-MNIST's 10 garments (the cpu benchmark's data,
sweeps/generation.py), so a good sample looks like a 32x32 garment of its class; the paper's panel shows ImageNet
256x256 samples.

    python -m analysis.figures.fig5_samples [--results results --out results/figures]
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.cells import ours
from analysis.cli import main
from analysis.style import no_runs, style
from analysis.writers import save_figure
from analysis.tables.tab2_generation import TOKENIZERS

NOT_YET = ("no generation runs collected yet (results/generation_cpu.csv): "
           "`python sweeps/run.py grid=generation seeds=3`, then `python -m analysis.collect grid=generation seeds=3`")


def make(results: Path):
    style()
    fig, axes = plt.subplots(len(TOKENIZERS), 1, figsize=(8, 3.2))
    path = Path(results) / "generation_cpu.csv"
    df = pd.read_csv(path, keep_default_na=False) if path.exists() else None
    gaps: list[str] = []
    for ax, (tok, label) in zip(axes, TOKENIZERS.items()):
        ax.set_xticks([])
        ax.set_yticks([])
        rows = None if df is None else df[(df["tokenizer"] == tok)].sort_values("ar_seed")
        image = None if rows is None or rows.empty else Path(results) / "samples" / f"{Path(rows['run_dir'].iloc[0]).name}.png"
        if image is None or not image.exists():
            why = NOT_YET if image is None else f"no results/samples/{image.name}"
            no_runs(ax, why)
            ax.set_title(label, fontsize=9)
            gaps.append(f"{label}: {why}")
            continue
        r = rows.iloc[0]
        ax.imshow(plt.imread(image))
        ax.grid(False)
        ax.set_title(f"{label} (tokenizer {r['tokenizer_signature']}) + GPT-{r['ar_model']}, seed {r['ar_seed']}, "
                     f"cfg {r['cfg_scale']}: gFID {float(r['gfid']):.1f} - {ours('cpu')}", fontsize=8)
    fig.suptitle("Fig. 5 (right): generated samples, one per class (classes in label order)")
    fig.tight_layout()
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig5_samples")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig5_samples", "figures"))
