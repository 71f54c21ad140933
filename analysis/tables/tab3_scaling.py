"""Table 3: scaling in codebook size, vector channel, training epochs and ratio; paper and this harness.

Each paper row is followed by our run(s) of the same grid point (sweeps/grids/scaling.py ROWS), found by
the point's paper-terms signature in any results/<grid>.csv, so the reference run shared with other grids
counts here too. rFID_COCO is the run's ``coco/rfid`` (``eval.extra=coco:PATH``, on by default at
scale=paper); a run without it shows "—" with the reason. At scale=cpu the sizes are shrunk by the fixed
rule of sweeps/scale.py (K/16, 40 epochs -> 300 steps, vq-16 -> cpu-4): the "ran" column says what ran.

    python -m analysis.tables.tab3_scaling [--results results --out results/tables]
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.aggregate import harness
from analysis.cells import Notes, cited, gaps, metric, run_id, source
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Source", "Row", "Model", "Epoch", "Ratio", "Codebook Size", "Vector Channel", "rFID (IN1K)",
           "rFID (COCO)", "Usage", "PSNR", "Ran", "Run"]


def ran(row) -> str:
    return (f"K={int(row['quant.codebook_size']):,} p={int(row['quant.group'])} {row['model.arch']} "
            f"{int(row['optim.steps']):,} steps")


def coco(row, notes: Notes) -> str:
    """rFID on COCO 2017 val (eval/coco/rfid) when the run evaluated it (eval.extra=coco:PATH)."""
    if (row is not None and row.get("status", "FINISHED") == "FINISHED" and pd.isna(row.get("coco/rfid"))
            and "coco/rfid: " not in str(row.get("missing", ""))):
        return notes.dash("run not evaluated on COCO 2017 val: launch with eval.extra=coco:PATH "
                          "(the scale=paper default)")
    return metric(row, "coco/rfid", notes, "scaling")


def build(results: Path, out: Path) -> list[str]:
    from sweeps.grids.scaling import ROWS

    notes = Notes()
    rows = []
    for (number, point), ref in zip(ROWS, paper("tab3_scaling").itertuples()):
        if int(ref.row) != number:
            raise ValueError(f"Table 3 row {ref.row}: analysis/paper/tab3_scaling.csv and "
                             f"sweeps/grids/scaling.py disagree")
        spec = [ref.row, ref.model, ref.epochs, ref.ratio, ref.codebook_size, ref.vector_channel]
        rows.append(["paper", *spec, cited(ref.rfid_in1k, notes), cited(ref.rfid_coco, notes),
                     cited(ref.usage_pct, notes, pct=True), cited("", notes), "", ""])
        for r in harness(results, point):
            rows.append([source(r), *spec, metric(r, "rfid", notes, "scaling"), coco(r, notes),
                         metric(r, "usage", notes, "scaling"), metric(r, "psnr", notes, "scaling"),
                         ran(r) if r is not None else "",
                         run_id(r, "scaling", notes)])
    table = Table("Table 3: Results of scalability from codebook size, vector channel and training epoch.",
                  COLUMNS, rows, notes,
                  ["Our rFID is measured on each run's own validation images (scale=cpu: built-in photos at "
                   "32x32), so its value is comparable between our rows, not with ImageNet numbers. Our cells are mean ± sd "
                   "over seeds (n = number of seeds)."])
    write_tables(out, "tab3_scaling", [table])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab3_scaling", "tables"))
