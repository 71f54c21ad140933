"""Table 5 (Appendix C): projector type x learning annealing x codebook size; paper and this harness.

Observation 3: a linear projector loses usage under annealing, MLP-5 cannot hold a 262k codebook, VQBridge
keeps 100% in every row. Our rows come from sweeps/grids/projector.py (the same runs as Fig. 3's curves).
A row without "+Annealing" is the constant schedule (sched.kind=constant).

    python -m analysis.tables.tab5_projector [--results results --out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.aggregate import harness
from analysis.cells import Notes, cited, gaps, metric, run_id, source
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Source", "Method", "Codebook Size", "Usage", "PSNR", "rFID", "Ran K", "Run"]


def point(method: str, size: str) -> dict:
    """Paper row label -> grid point: projector from the name, annealing from "+Annealing"."""
    from sweeps.grids import _fragments as f

    proj = {"linear": f.linear, "VQBridge": f.vqbridge, "MLP-5": f.mlp5}[method.split("+")[0]]
    sched = {} if method.endswith("+Annealing") else f.no_anneal
    return {**proj, **{"16k": f.k16, "262k": f.k262}[size], **sched}


def build(results: Path, out: Path) -> list[str]:
    notes, rows = Notes(), []
    for ref in paper("tab5_projector").itertuples():
        rows.append(["paper", ref.method, ref.codebook_size, cited(ref.usage_pct, notes, pct=True),
                     cited("", notes), cited(ref.rfid, notes), "", ""])
        for r in harness(results, point(ref.method, ref.codebook_size)):
            rows.append([source(r), ref.method, ref.codebook_size, metric(r, "usage", notes, "projector"),
                         metric(r, "psnr", notes, "projector"), metric(r, "rfid", notes, "projector"),
                         f"{int(r['quant.codebook_size']):,}" if r is not None else "",
                         run_id(r, "projector", notes)])
    table = Table("Table 5: Additional observational results.", COLUMNS, rows, notes,
                  ["Our usage is measured on the validation set at the end of training (fvq/eval/evaluate.py); our cells are "
                   "mean ± sd over seeds (n = number of seeds)."])
    write_tables(out, "tab5_projector", [table])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab5_projector", "tables"))
