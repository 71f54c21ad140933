"""Table 7 (Appendix H): more reconstruction metrics (rFID, PSNR, SSIM, usage); paper and this harness.

The paper's column reads "RSNR"; its values (20-23 dB) are PSNR, which is what fvq/eval/evaluate.py reports.
Usage counted on few tokens per code reads low, so our rows add perplexity and tokens per code beside it.

    python -m analysis.tables.tab7_metrics [--results results --out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.aggregate import harness
from analysis.cells import Notes, cited, gaps, metric, run_id, source
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Source", "Method", "Codebook Size", "rFID", "PSNR", "SSIM", "Usage", "Perplexity", "Tokens/code",
           "Run"]


def counterparts() -> dict[tuple[str, str], dict]:
    from sweeps.grids._fragments import k16, k262, vqbridge, vqgan

    return {("LlamaGen", "16384"): {**vqgan, **k16, "model.channel": 8},
            ("FVQ", "16384"): {**vqbridge, **k16}, ("FVQ‡", "16384"): {**vqbridge, **k16, "epochs": 120},
            ("FVQ", "262144"): {**vqbridge, **k262}, ("FVQ‡", "262144"): {**vqbridge, **k262, "epochs": 120}}


def build(results: Path, out: Path) -> list[str]:
    notes, rows, twins = Notes(), [], counterparts()
    for ref in paper("tab7_metrics").itertuples():
        name = f"{ref.method} ({ref.ref})" if ref.ref else ref.method
        rows.append(["paper", name, f"{int(ref.codebook_size):,}", cited(ref.rfid, notes), cited(ref.psnr, notes),
                     cited(ref.ssim, notes), cited(ref.usage_pct, notes, pct=True), cited("", notes),
                     cited("", notes), ""])
        for r in harness(results, twins[(ref.method, ref.codebook_size)]):
            size = f"{int(r['quant.codebook_size']):,}" if r is not None else f"{int(ref.codebook_size):,}"
            rows.append([source(r), ref.method, size,
                         *(metric(r, m, notes, "scaling") for m in ("rfid", "psnr", "ssim", "usage", "perplexity",
                                                                    "tokens_per_code")),
                         run_id(r, "scaling", notes)])
    table = Table("Table 7: Additional Metrics and Comparisons.", COLUMNS, rows, notes,
                  ["‡ trained for 120 epochs. PSNR is printed \"RSNR\" in the paper's Table 7."])
    write_tables(out, "tab7_metrics", [table])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab7_metrics", "tables"))
