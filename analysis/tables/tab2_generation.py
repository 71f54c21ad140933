"""Table 2: class-conditional ImageNet 256x256 generation (LlamaGen on FVQ tokens vs other generators).

The paper's rows (reference, ImageNet 256x256, 50k samples), then the rows measured here from
results/generation_cpu.csv (fvq/generation/ar.py at cpu scale: a tiny LlamaGen-style GPT on the tokens of a plain-VQ
and of an FVQ tokenizer, 22 photo classes, gFID against real crops; mean +- sd over AR seeds). The two
scales are not comparable in value: only the ordering of the measured rows answers Table 2's question.

    python -m analysis.tables.tab2_generation [--out results/tables]
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.cells import Notes, cited, gaps, ours
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Source", "Type", "Model", "#Para", "FID", "IS", "Pre", "Rec"]
NOT_HERE = ("no generation runs collected yet (results/generation_cpu.csv): "
            "`python sweeps/run.py grid=generation seeds=3`, then `python -m analysis.collect grid=generation seeds=3`")
TOKENIZERS = {"vq": "plain-VQ tokens", "fvq": "FVQ tokens"}


def _ms(v: pd.Series, digits: int = 2) -> str:
    v = v.dropna().astype(float)
    if v.empty:
        return ""
    sd = f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else ""
    return f"{v.mean():.{digits}f}{sd} (n={len(v)})"


def _params(model: str) -> str:
    """The generator's size at the cpu preset: K = 1,024 codes, 22 photo classes, 8x8 tokens."""
    from fvq.generation.gpt import GPT, spec

    n = sum(p.numel() for p in GPT(spec(model, vocab=1024, classes=22, tokens=64)).parameters())
    return f"{n / 1e6:.2f}M"


def measured(results: Path, notes: Notes) -> list[list[str]]:
    """One row per tokenizer of results/generation_cpu.csv, labelled as measured at cpu scale."""
    path = Path(results) / "generation_cpu.csv"
    if not path.exists():
        return [[ours("cpu"), "AR", "FVQ tokens + LlamaGen", *[notes.dash(NOT_HERE)] * 5]]
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows = []
    for tok, g in df.groupby("tokenizer", sort=False):
        n = int(g["samples"].iloc[0])
        noise = f"{float(g['noise_gfid'].iloc[0]):.2f}"  # one real set per data: the same for every row
        name = (f"{TOKENIZERS.get(tok, tok)} {g['tokenizer_signature'].iloc[0]} + GPT-{g['ar_model'].iloc[0]} "
                f"(measured, cpu scale, {n} samples; real-vs-real noise {noise})")
        is_reason = str(g["is_missing"].iloc[0]) or "IS not computed"
        rows.append([ours("cpu"), "AR", name, _params(g["ar_model"].iloc[0]), _ms(g["gfid"]) or notes.dash("gFID not computed"),
                     notes.dash(is_reason), _ms(g["precision"], 3), _ms(g["recall"], 3)])
    return rows


def table(stem: str, caption: str, results: Path | None = None) -> Table:
    notes, rows = Notes(), []
    for ref in paper(stem).itertuples():
        name = f"{ref.model} ({ref.ref})" if ref.ref else ref.model
        rows.append(["paper", ref.type, name, cited(ref.params, notes),
                     *(cited(v, notes) for v in (ref.fid, ref.inception_score, ref.precision, ref.recall))])
    rows += measured(results if results is not None else Path("/nonexistent"), notes)
    return Table(caption, COLUMNS, rows, notes)


def build(results: Path, out: Path) -> list[str]:
    t = table("tab2_generation", "Table 2: Generative model comparison on class-conditional ImageNet 256x256 "
              "(paper rows: reference; last rows: measured here at cpu scale).", results)
    write_tables(out, "tab2_generation", [t])
    return gaps(t.notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab2_generation", "tables"))
