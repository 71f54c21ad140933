"""Table 4: multi-code representation VQ (RQ-VAE, VAR) with and without FVQ.

The harness has no multi-code quantizer and no `multicode` grid yet: the paper rows are shown, and our rows
appear once results/multicode.csv exists (one row per run, labelled by its grid point).

    python -m analysis.tables.tab4_multicode [--results results --out results/tables]
"""
from __future__ import annotations

import json
from pathlib import Path

from analysis.common import (Notes, Table, cited, gaps, main, metric, no_run, ours, paper, results as read,
                             write_tables)

COLUMNS = ["Source", "Method", "Training Epoch", "Token Map", "Codebook Size", "Vector Channel", "rFID", "Run"]


def build(results: Path, out: Path) -> list[str]:
    notes, rows = Notes(), []
    for ref in paper("tab4_multicode").itertuples():
        name = f"{ref.method} ({ref.ref})" if ref.ref else ref.method
        rows.append(["paper", name, ref.epochs, ref.token_map.replace("_", " "), f"{int(ref.codebook_size):,}",
                     ref.vector_channel, cited(ref.rfid, notes), ""])
    df = read(results, "multicode")
    if df is None:
        rows.append([ours("cpu"), *[notes.dash(no_run("multicode") + " (no multi-code grid exists yet)")] * 7])
    else:
        for _, r in df.iterrows():
            label = " ".join(f"{k.split('.')[-1]}={v}" for k, v in json.loads(r["point"]).items())
            rows.append([ours(r["scale"]), label, f"{int(r['optim.steps']):,} steps", "",
                         f"{int(r['quant.codebook_size']):,}", str(r["model.channel"]),
                         metric(r, "rfid", notes), f"`{r['signature']}`"])
    table = Table("Table 4: Multi-Code Representation VQ.", COLUMNS, rows, notes,
                  ["680 10step: a code map built by 10 sequential quantization steps with step sizes "
                   "1, 2, 3, 4, 5, 6, 8, 10, 13, 16 (680 = sum of squares)."])
    write_tables(out, "tab4_multicode", [table])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab4_multicode", "tables"))
