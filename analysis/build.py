"""Rebuild every table and figure from results/*.csv: what `make figures` runs.

    python -m analysis.build                                   # results/*.csv -> results/tables, results/figures
    python -m analysis.build from=mlflow [scale=cpu tracking_uri=...]   # collect every grid first (allow_partial)
    python -m analysis.build results=DIR tables=DIR figures=DIR

No server, no cluster, no GPU: only results/ is read (plus analysis/paper/ and the code's presets), in
seconds. One line per artefact: "built", or "built with gaps: <reasons>" when a cell or panel has no data
(those show "—" with a footnote, or a "no runs yet" mark). A results CSV with a non-numeric or out-of-range
value fails its artefacts in one line naming the file and row, and removes their old files. The exit status
is 0 unless a script failed.
"""
from __future__ import annotations

import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from analysis.cli import status_line
from analysis.rows import RESULTS, ResultsError
from analysis.writers import remove_artefacts
from fvq.core.config import ConfigError
from fvq.core.keyvalue import split, typed

TABLES = ("tab1_reconstruction", "tab2_generation", "tab3_scaling", "tab4_multicode", "tab5_projector",
          "tab6_config", "tab7_metrics", "tab9_schedule", "tab10_flops", "tab11_generation", "claims")
FIGURES = ("fig1_comparison", "fig2_toy", "fig3_usage_curves", "fig5_reconstructions", "fig5_samples",
           "fig6_ablations",
           "fig7_vq_loss", "gen_calibration")


def build_all(results: Path, tables: Path, figures: Path, log=print) -> dict[str, list[str]]:
    """Build every artefact; returns {stem: gaps}. A crashing script is reported and the rest still built."""
    import matplotlib

    matplotlib.use("Agg")
    report: dict[str, list[str]] = {}
    for kind, stems, out in (("tables", TABLES, tables), ("figures", FIGURES, figures)):
        for stem in stems:
            try:
                report[stem] = importlib.import_module(f"analysis.{kind}.{stem}").build(results, out)
                log(status_line(stem, report[stem]), flush=True)
            except ResultsError as e:  # bad input: one line naming file and row, no stale artefact left
                remove_artefacts(out, stem)
                report[stem] = [f"FAILED: {e}"]
                log(f"{stem}: FAILED ({e})", flush=True)
            except Exception as e:  # one broken script must not hide the others' state
                report[stem] = [f"FAILED: {type(e).__name__}: {e}"]
                remove_artefacts(out, stem)
                log(f"{stem}: FAILED ({type(e).__name__}: {e})", flush=True)
                traceback.print_exc(file=sys.stderr)
    return report


@dataclass(frozen=True)
class Args:
    source: str = "results"      # results (the committed CSVs) | mlflow (collect every grid first)
    results: str = str(RESULTS)
    tables: str = ""             # "" = <results>/tables
    figures: str = ""            # "" = <results>/figures
    scale: str = "cpu"           # source=mlflow: passed on to analysis.collect
    tracking_uri: str = ""
    runs_dir: str = ""
    experiment: str = ""


def main(argv: list[str]) -> int:
    try:  # `from=` is the historical spelling of source= (a Python keyword cannot be a field)
        opts = typed(Args, [("source" if k == "from" else k, v) for k, v in split(argv)])
        if opts.source not in ("results", "mlflow"):
            raise ConfigError(f"source={opts.source!r} is not one of results, mlflow")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = Path(opts.results)
    if opts.source == "mlflow":
        from analysis.collect import main as collect

        keys = ("scale", "tracking_uri", "runs_dir", "experiment")
        collect(["grid=all", "allow_partial=true", f"results={results}",
                 *(f"{k}={getattr(opts, k)}" for k in keys if getattr(opts, k))])
    start = time.perf_counter()
    tables, figures = Path(opts.tables or results / "tables"), Path(opts.figures or results / "figures")
    report = build_all(results, tables, figures)
    failed = [s for s, g in report.items() if g and g[0].startswith("FAILED")]
    with_gaps = sum(bool(g) for g in report.values()) - len(failed)
    print(f"built {len(report) - len(failed)} artefacts ({with_gaps} with gaps, {len(failed)} failed) "
          f"in {time.perf_counter() - start:.1f}s from {results}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
