"""How one table cell shows a value or its absence: our metric as ``mean ± sd (n=seeds)``, a paper cell as
printed, and every missing value as "—" with a numbered footnote saying why (`Notes`: no run yet, the run's
status or its own ``missing`` record, the paper's blank). `gaps` turns a built artefact's footnotes into the
list of what it lacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

NO_RUNS = "no runs yet"
PAPER_BLANK = "not reported in the paper"
# rFID over the 64 images a cpu run evaluates is noise next to the differences between grid points (its rank
# correlation with PSNR over comparable runs was negative): an indicative column; PSNR and usage are primary.
RFID_INDICATIVE = ("indicative only: at scale=cpu rFID is computed over 64 images (eval.fid_images) and is "
                   "dominated by sampling noise; compare PSNR / rec_l2 and usage")
DIGITS = {"rfid": 2, "psnr": 2, "ssim": 3, "lpips": 3, "rec_l2": 4, "perplexity": 1}


@dataclass
class Notes:
    """Numbered footnotes: one number per distinct reason, so a table says why each "—" is there."""
    reasons: list[str] = field(default_factory=list)

    def dash(self, reason: str) -> str:
        return f"—{self.mark(reason)}"

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"


def gaps(notes: Notes) -> list[str]:
    """What a built artefact lacks: every footnote reason except the paper's own blanks."""
    return [r for r in notes.reasons if r not in (PAPER_BLANK, RFID_INDICATIVE)]


def ours(scale: str) -> str:
    return f"this harness (scale={scale})"


def no_run(grid: str) -> str:
    return (f"{NO_RUNS}: `python sweeps/run.py grid={grid} seeds=3` then "
            f"`python -m analysis.collect grid={grid} seeds=3`")


def source(row: pd.Series | None) -> str:
    return ours(row["scale"]) if row is not None else ours("cpu")


def run_id(row: pd.Series | None, grid: str, notes: Notes) -> str:
    """The run signature column of our rows (the run dirs and the MLflow tag ``signature``, one per seed)."""
    if row is None:
        return notes.dash(no_run(grid))
    return ", ".join(f"`{s}`" for s in str(row["signature"]).split(","))


def tokens(row: pd.Series) -> str:
    """Latent grid of our run: image size over the encoder's downsampling ratio (vq-16 -> 16, cpu-4 -> 4)."""
    from fvq.vq.models import get_arch

    side = int(row["data.image_size"]) // get_arch(str(row["model.arch"])).ratio
    return f"{side}x{side}"


def missing_reason(row: pd.Series, metric: str) -> str:
    """Why ``metric`` is empty in a results row: the run's status, or its own ``missing`` record."""
    if row.get("status", "FINISHED") != "FINISHED":
        return f"run {row['signature']} is {str(row['status']).lower()} (collected with allow_partial)"
    for part in str(row.get("missing", "") or "").split("; "):
        if part.startswith(f"{metric}: "):
            return f"{metric} not computed: {part.split(': ', 1)[1]}"
    return f"{metric} not reported by the run"


def metric(row: pd.Series | None, name: str, notes: Notes, grid: str = "") -> str:
    """Our point's metric as ``mean ± sd (n=seeds)`` (analysis/aggregate.py), or "—[n]" with the reason.
    Usage is a fraction, shown in %."""
    if row is None:
        return notes.dash(no_run(grid))
    value = row.get(name)
    if value is None or pd.isna(value) or value == "":
        return notes.dash(missing_reason(row, name))
    n = int(row.get(f"{name}_n", 1) if not pd.isna(row.get(f"{name}_n", 1)) else 1)
    text = mean_sd(float(value), row.get(f"{name}_sd", float("nan")), n, name)
    return text + notes.mark(RFID_INDICATIVE) if name == "rfid" and row.get("scale") == "cpu" else text


def mean_sd(mean: float, sd: float, n: int, name: str) -> str:
    """``mean ± sd (n=N)`` as every table, claim and summary line prints it; usage (a fraction) in %."""
    scale, unit, digits = (100, "%", 1) if name.endswith("usage") else (1, "", DIGITS.get(name, 2))
    text = f"{scale * float(mean):.{digits}f}"
    if n > 1 and not pd.isna(sd):
        text += f" ± {scale * float(sd):.{digits}f}"
    return f"{text}{unit} (n={n})"


def values_mean_sd(values: pd.Series, name: str) -> str:
    """`mean_sd` of raw per-seed values (sample sd, ddof 1), or "—" when there are none."""
    return mean_sd(values.mean(), values.std(ddof=1), len(values), name) if len(values) else "—"


def cited(text: str, notes: Notes, pct: bool = False) -> str:
    """A paper cell as printed; an empty one is "—" (the paper did not report it)."""
    if text == "":
        return notes.dash(PAPER_BLANK)
    return f"{text}%" if pct else text
