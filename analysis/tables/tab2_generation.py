"""Table 2: class-conditional ImageNet 256x256 generation (LlamaGen on FVQ tokens vs other generators).

Reference rows only: the generation stage (training LlamaGen on the tokenizer's codes, FID / IS / precision /
recall over 50k samples) is not part of this harness yet, so there is no "this harness" row to show.

    python -m analysis.tables.tab2_generation [--out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.common import Notes, Table, cited, gaps, main, ours, paper, write_tables

COLUMNS = ["Source", "Type", "Model", "#Para", "FID", "IS", "Pre", "Rec"]
NOT_HERE = "the generation stage (LlamaGen on FVQ tokens) is not part of this harness yet"


def table(stem: str, caption: str) -> Table:
    notes, rows = Notes(), []
    for ref in paper(stem).itertuples():
        name = f"{ref.model} ({ref.ref})" if ref.ref else ref.model
        rows.append(["paper", ref.type, name, cited(ref.params, notes),
                     *(cited(v, notes) for v in (ref.fid, ref.inception_score, ref.precision, ref.recall))])
    rows.append([ours("cpu"), "AR", "FVQ tokens + LlamaGen", *[notes.dash(NOT_HERE)] * 5])
    return Table(caption, COLUMNS, rows, notes)


def build(results: Path, out: Path) -> list[str]:
    t = table("tab2_generation", "Table 2: Generative model comparison on class-conditional ImageNet 256x256.")
    write_tables(out, "tab2_generation", [t])
    return gaps(t.notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab2_generation", "tables"))
