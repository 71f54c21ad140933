"""Generator calibration (cpu, not a figure of the paper): held-out AR loss against steps and GPT size.

Reads results/generation_calibration.csv (``python -m analysis.collect grid=generation calibration=true``): one
line per (tokenizer, GPT size) run, the held-out loss solid and the training loss dashed, the cpu benchmark's
step count (sweeps/generation.py ``CPU_AR``) marked. It is the evidence the generator of claim 11 is sized by:
a generator that still gains much after the benchmark's steps on one side's tokens would favour the other side.

    python -m analysis.figures.gen_calibration [--results results --out results/figures]
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from analysis.cli import main
from analysis.rows import read_csv
from analysis.style import no_runs, style
from analysis.writers import save_figure

COLUMNS = ("tokenizer", "ar_model", "ar_params", "step", "train_loss", "val_loss", "signature")


def make(results: Path):
    from sweeps.generation import CPU_AR

    style()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    path, gaps = Path(results) / "generation_calibration.csv", []
    if not path.exists():
        why = "no calibration runs: `python -m analysis.collect grid=generation calibration=true`"
        no_runs(ax, why)
        return fig, [why]
    df = read_csv(path, COLUMNS, ("signature", "step"))
    for (tok, model, sig), run in df.sort_values("step").groupby(["tokenizer", "ar_model", "signature"], sort=True):
        label = f"{tok} tokens, GPT-{model} ({int(run['ar_params'].iloc[0]) / 1e6:.2f}M)"
        line, = ax.plot(run["step"], run["val_loss"], marker="o", ms=3, label=label)
        ax.plot(run["step"], run["train_loss"], ls="--", lw=0.8, color=line.get_color())
        if run["step"].min() > run["step"].diff().median():  # rows lost before the record was kept
            gaps.append(f"{sig}: curve starts at step {int(run['step'].min())}")
    ax.axvline(CPU_AR["steps"], color="0.5", lw=0.8, ls=":")
    ax.text(CPU_AR["steps"], ax.get_ylim()[0], f"benchmark: GPT-{CPU_AR['model']}, {CPU_AR['steps']:,} steps ",
            fontsize=6, va="bottom", ha="right", color="0.4")
    ax.legend(fontsize=6, title="held-out (solid), train (dashed)", title_fontsize=6)
    ax.set(xlabel="generator step (batch 64)", ylabel="AR cross-entropy (nats / token)",
           title="Generator calibration (cpu): loss vs steps and size")
    return fig, gaps


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "gen_calibration")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "gen_calibration", "figures"))
