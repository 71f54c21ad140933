"""Fig. 1 (left): reconstruction (rFID) and generation (FID) across methods; paper data and ours.

Panels (a) and (b) are the paper's own numbers (Tables 1 and 2, analysis/paper/). Panel (c) is this harness:
the LlamaGen VQGAN baseline and FVQ at the same grid points (sweeps/grids/scaling.py rows 1, 2, 6), at the
scale they ran. Our rFID is on the run's own validation images, so (c) compares methods with each other,
never with (a). Panel (d) is this harness's generation (results/generation_cpu.csv, fvq/generation/ar.py): gFID of the
same GPT on plain-VQ vs FVQ tokens at cpu scale, mean +- sd over tokenizer seeds (one generator each; the
seeds as dots), with the real-vs-real FID of the same number of images dashed (the floor no generator goes
below); compare it only with itself.

    python -m analysis.figures.fig1_comparison [--results results --out results/figures]
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.aggregate import harness
from analysis.cells import no_run, ours
from analysis.cli import main
from analysis.rows import paper
from analysis.style import no_runs, style
from analysis.writers import save_figure

HIGHLIGHT, OTHER = "#d55e00", "#9da5ad"


def bars(ax, names: list[str], values: list[float], title: str, xlabel: str, errors: list[float] | None = None) -> None:
    """Horizontal bars; ``errors`` (+-1 sd over seeds) drawn as error bars where given."""
    colors = [HIGHLIGHT if n.startswith("FVQ") else OTHER for n in names]
    ax.barh(names, values, color=colors, xerr=errors, capsize=3 if errors else 0)
    for y, v in enumerate(values):  # the value past the error bar, where it can be read
        ax.text(v + (errors[y] if errors else 0), y, f" {v:.2f}", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set(title=title, xlabel=xlabel)
    ax.tick_params(axis="y", labelsize=7)


def make(results: Path):
    style()
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1, 1]})
    t1 = paper("tab1_reconstruction")
    t1 = t1[t1["rfid"] != ""]
    names = [f"{m} (K={int(k):,}, d={d})" for m, k, d in zip(t1["method"], t1["codebook_size"], t1["vector_channel"])]
    bars(axes[0], names, pd.to_numeric(t1["rfid"]).tolist(), "(a) reconstruction, paper (Table 1)",
         "rFID (lower is better)")
    t2 = paper("tab2_generation")
    bars(axes[1], t2["model"].tolist(), pd.to_numeric(t2["fid"]).tolist(), "(b) generation, paper (Table 2)",
         "FID (lower is better)")

    from sweeps.grids._fragments import k16, vqbridge, vqgan

    mine = {"LlamaGen VQGAN (d=8)": {**vqgan, **k16, "model.channel": 8},
            "LlamaGen VQGAN (d=256)": {**vqgan, **k16, "model.channel": 256}, "FVQ (d=256)": {**vqbridge, **k16}}
    found = {name: harness(results, point)[0] for name, point in mine.items()}
    have = {n: r for n, r in found.items() if r is not None and pd.notna(r.get("rfid"))}
    gaps = [f"{n}: {no_run('scaling') if r is None else 'no rFID (run ' + r['signature'] + ')'}"
            for n, r in found.items() if n not in have]
    if have:
        bars(axes[2], [f"{n} (n={int(r.get('rfid_n', 1))})" for n, r in have.items()],
             [float(r["rfid"]) for r in have.values()],
             f"(c) {ours(next(iter(have.values()))['scale'])}", "rFID on the run's validation images (mean ± sd)",
             [0.0 if pd.isna(r.get("rfid_sd", float("nan"))) else float(r["rfid_sd"]) for r in have.values()])
    else:
        axes[2].set(title=f"(c) {ours('cpu')}")
        no_runs(axes[2], no_run("scaling"))
    gaps += generation(axes[3], results)
    fig.suptitle("Fig. 1 (left): performance comparison")
    fig.tight_layout()
    return fig, gaps


def generation(ax, results: Path) -> list[str]:
    """(d): measured gFID per tokenizer, mean with sd error bars and the seeds as dots."""
    from analysis.tables.tab2_generation import NOT_HERE, TOKENIZERS

    path = Path(results) / "generation_cpu.csv"
    ax.set(title=f"(d) generation, {ours('cpu')}")
    if not path.exists():
        no_runs(ax, NOT_HERE)
        return [NOT_HERE]
    df = pd.read_csv(path)
    names, means = [], []
    for y, (tok, g) in enumerate(df.groupby("tokenizer", sort=False)):
        v = g["gfid"].astype(float)
        names.append(f"{TOKENIZERS.get(tok, tok)} (n={len(v)})")
        means.append(v.mean())
        ax.barh(y, v.mean(), xerr=v.std(ddof=1) if len(v) > 1 else 0,
                color=HIGHLIGHT if tok == "fvq" else OTHER, capsize=3)
        ax.plot(v, [y] * len(v), "k.", ms=4)
        ax.text(v.mean() + (v.std(ddof=1) if len(v) > 1 else 0), y, f" {v.mean():.1f}", va="bottom", fontsize=7)
    noise = df["noise_gfid"].dropna().astype(float) if "noise_gfid" in df else pd.Series(dtype=float)
    if len(noise):  # one real set: the same floor on every row
        ax.axvline(noise.iloc[0], color="k", ls="--", lw=0.8)
        ax.text(noise.iloc[0], len(names) - 0.5, f" real vs real {noise.iloc[0]:.1f}", fontsize=6, va="bottom")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    models = "/".join(f"GPT-{m}" for m in df["ar_model"].dropna().unique())
    cfg = "/".join(f"{c:g}" for c in df["cfg_scale"].dropna().unique())
    ax.set(xlabel=f"gFID, {models}, cfg {cfg}, {int(df['samples'].iloc[0])} samples (lower is better)")
    return []


def build(results: Path, out: Path) -> list[str]:
    fig, gaps = make(results)
    save_figure(fig, out, "fig1_comparison")
    return gaps


if __name__ == "__main__":
    raise SystemExit(main(build, "fig1_comparison", "figures"))
