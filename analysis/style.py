"""How every figure looks: one seaborn theme (paper context, white grid, colour-blind palette) and the
visible "no runs yet" mark of a panel without data, so an empty axis never looks like a result. Writing a
figure to disk is analysis/writers.py `save_figure`.
"""
from __future__ import annotations

from analysis.cells import NO_RUNS


def style() -> None:
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")


def no_runs(ax, reason: str) -> None:
    """The visible mark of a panel without data: never an empty axis that looks like a result."""
    import textwrap

    reason = textwrap.fill(reason.removeprefix(f"{NO_RUNS}: "), 34)
    ax.text(0.5, 0.5, f"{NO_RUNS}\n{reason}", transform=ax.transAxes, ha="center", va="center",
            color="crimson", fontsize=7, bbox=dict(boxstyle="round", fc="mistyrose", ec="crimson"))
