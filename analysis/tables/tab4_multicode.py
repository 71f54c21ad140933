"""Table 4: multi-code representation VQ (RQ-VAE, VAR) with and without FVQ; paper and this harness.

Each paper row is followed by our run(s) of the same grid point (sweeps/grids/multicode.py ROWS), found by
the point's paper-terms signature in any results/<grid>.csv. At scale=cpu the sizes are shrunk by the rule
of sweeps/scale.py (K/16, vq-32 -> cpu-8 so 8x8x4 -> 4x4x4, VAR steps that fit the 8x8 latent: 680_10step
-> 155_7step, 10/40/50 epochs -> 150/600/750 steps): the "Ran" column says what actually ran.

    python -m analysis.tables.tab4_multicode [--results results --out results/tables]
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.aggregate import harness
from analysis.cells import Notes, cited, gaps, metric, run_id, source, tokens
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Source", "Method", "Training Epoch", "Token Map", "Codebook Size", "Vector Channel", "rFID", "Usage",
           "Usage per level", "Ran", "Run"]
LEVELS_MISSING = ("usage per depth/scale not logged by this run (fvq/eval/evaluate.py records it through the "
                  "quantizer's level_usage)")


def token_map(row: pd.Series) -> str:
    """8x8x4 (RQ), 680_10step (VAR: sum of squares, number of steps) or 16x16 (VQ), as Table 4 writes them."""
    kind = str(row.get("quant.kind", "vq"))
    if kind == "rq":
        return f"{tokens(row)}x{int(row['quant.depth_codes'])}"
    if kind == "msvq":
        sides = [int(s) for s in str(row["quant.scales"]).split(",")]
        return f"{sum(s * s for s in sides)}_{len(sides)}step"
    return tokens(row)


def ran(row: pd.Series) -> str:
    return (f"K={int(row['quant.codebook_size']):,} {row['quant.projector']} {token_map(row)} {row['model.arch']} "
            f"d={int(row['model.channel'])} {int(row['optim.steps']):,} steps")


def per_level(row: pd.Series | None, notes: Notes) -> str:
    """Usage of each depth/scale, first to last, in % (``usage_l<i>`` columns of results/<grid>.csv)."""
    if row is None:
        return ""
    cols = sorted((c for c in row.index if c.startswith("usage_l") and c[7:].isdigit()), key=lambda c: int(c[7:]))
    values = [row[c] for c in cols if not (isinstance(row[c], float) and math.isnan(row[c]))]
    if not values:
        return notes.dash(LEVELS_MISSING)
    return "/".join(f"{100 * float(v):.0f}" for v in values) + "%"


def build(results: Path, out: Path) -> list[str]:
    from fvq.vq.flops import projector_flops_per_step
    from sweeps.grids.multicode import ROWS

    notes, rows = Notes(), []
    for (method, point), ref in zip(ROWS, paper("tab4_multicode").itertuples(), strict=True):
        if ref.method != method or int(ref.epochs) != int(point.get("epochs", 40)):
            raise ValueError(f"Table 4 row {ref.method} ({ref.epochs} epochs): analysis/paper/tab4_multicode.csv "
                             f"and sweeps/grids/multicode.py disagree")
        name = f"{ref.method} ({ref.ref})" if ref.ref else ref.method
        spec = [name, ref.epochs, ref.token_map.replace("_", " "), f"{int(ref.codebook_size):,}", ref.vector_channel]
        rows.append(["paper", *spec, cited(ref.rfid, notes), cited("", notes), "", "", ""])
        for r in harness(results, point):
            rows.append([source(r), *spec, metric(r, "rfid", notes, "multicode"),
                         metric(r, "usage", notes, "multicode"), per_level(r, notes),
                         ran(r) if r is not None else "", run_id(r, "multicode", notes)])
    cost = projector_flops_per_step("vqbridge", 16384, 256, group=16) / 1e9
    table = Table("Table 4: Multi-Code Representation VQ.", COLUMNS, rows, notes,
                  ["680 10step: a code map built by 10 sequential quantization steps with step sizes "
                   "1, 2, 3, 4, 5, 6, 8, 10, 13, 16 (680 = sum of squares).",
                   f"FVQ rows project their one shared codebook once per training step whatever the number of "
                   f"depths or scales: VQBridge at K=16,384, p=16 costs {cost:.2f}G multiply-adds per step "
                   f"(fvq.vq.flops, as Table 10) and nothing at inference.",
                   "Our rFID is measured on each run's own validation images (scale=cpu: built-in photos at "
                   "32x32), so its value is comparable between our rows, not with ImageNet numbers."])
    write_tables(out, "tab4_multicode", [table])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab4_multicode", "tables"))
