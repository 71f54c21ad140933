"""The command line every table and figure script shares. Each exposes ``build(results, out) -> list[str]``
(the gaps, empty when complete) and runs as ``python -m analysis.tables.tab3_scaling [--results DIR]
[--out DIR]``; `main` prints one status line (`status_line`: built, or built with its gaps), and on a
`ResultsError` removes that artefact's stale files, prints why it was not built and exits 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from analysis.rows import RESULTS, ResultsError
from analysis.writers import remove_artefacts


def main(build: Callable[..., list[str]], stem: str, kind: str, flags: tuple[str, ...] = ()) -> int:
    """Command line of one artefact script: ``--results DIR --out DIR [--flag]``; prints one status line."""
    import matplotlib

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser(description=f"build results/{kind}/{stem}.* from results/*.csv")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=RESULTS / kind)
    for flag in flags:
        ap.add_argument(f"--{flag}", action="store_true")
    args = ap.parse_args()
    try:
        gaps = build(args.results, args.out, **{f: getattr(args, f) for f in flags})
    except ResultsError as e:
        remove_artefacts(args.out, stem)
        print(f"{stem}: not built: {e}")
        return 2
    print(status_line(stem, gaps))
    return 0


def status_line(stem: str, gaps: list[str]) -> str:
    return f"{stem}: built" + (f" with gaps: {'; '.join(gaps)}" if gaps else "")
