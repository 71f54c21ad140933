"""Shared helpers of the table and figure scripts: where results live, how a paper row finds our run,
how a missing value is shown ("—" plus a footnote with the reason), and the Markdown / LaTeX writers.

Every artefact script exposes ``build(results, out) -> list[str]`` (the gaps, empty when complete) and runs
as ``python -m analysis.tables.tab3_scaling [--results DIR] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from fvq.core.environment import COLUMNS as ENV
from fvq.core.errors import SetupError

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
PAPER = Path(__file__).resolve().parent / "paper"

# Final evaluation metrics (fvq/eval/evaluate.py, logged as eval/<name>) and training curves (train/<name>).
METRICS = ("rfid", "psnr", "ssim", "lpips", "usage", "perplexity", "dead_codes", "tokens_per_code", "rec_l2")
CURVES = ("train/usage", "train/vq", "train/rec", "train/total", "train/lr")
SWEPT = ("quant.codebook_size", "quant.group", "quant.projector", "quant.latent_dim", "quant.depth",
         "quant.l2_norm", "model.channel", "model.arch", "sched.kind", "sched.warmup", "optim.steps",
         "data.image_size", "quant.kind", "quant.depth_codes", "quant.scales", "quant.shared", "quant.phi")
IDS = {"signature": str, "paper_signature": str, "run_id": str, "commit": str, "grid": str,
       **{c: str for c in ENV}}  # environment fields are text ("1" threads, not 1.0 beside an empty cell)
NO_RUNS = "no runs yet"
PAPER_BLANK = "not reported in the paper"
# rFID over the 64 images a cpu run evaluates is noise next to the differences between grid points (its rank
# correlation with PSNR over comparable runs was negative): an indicative column; PSNR and usage are primary.
RFID_INDICATIVE = ("indicative only: at scale=cpu rFID is computed over 64 images (eval.fid_images) and is "
                   "dominated by sampling noise; compare PSNR / rec_l2 and usage")
DIGITS = {"rfid": 2, "psnr": 2, "ssim": 3, "lpips": 3, "rec_l2": 4, "perplexity": 1}


def ours(scale: str) -> str:
    return f"this harness (scale={scale})"


def paper(stem: str) -> pd.DataFrame:
    """A transcribed paper table, every cell as the text printed in the paper ("" = not reported)."""
    return pd.read_csv(PAPER / f"{stem}.csv", dtype=str, keep_default_na=False)


# Allowed ranges of the numeric columns (usage is a fraction, fvq/eval/metrics.py); a value outside is a broken CSV,
# never a result to plot.
RANGES = {"rfid": (0, math.inf), "psnr": (-math.inf, math.inf), "ssim": (-1, 1), "lpips": (0, math.inf),
          "usage": (0, 1), "perplexity": (0, math.inf), "dead_codes": (0, math.inf),
          "tokens_per_code": (0, math.inf), "rec_l2": (0, math.inf), "step": (0, math.inf),
          "value": (-math.inf, math.inf)}


class ResultsError(SetupError, ValueError):
    """A results CSV that cannot be trusted; the message names the file and the row (1 = the header)."""


def read_csv(path: Path, required: tuple[str, ...] = (), key: tuple[str, ...] = ()) -> pd.DataFrame:
    """A results CSV with its numeric columns checked for type and range (empty cells are missing values),
    every ``required`` column present and each ``key`` (a run's identity) on one row only: a duplicated run
    would otherwise count as one more seed, and a missing column end a figure in a bare KeyError."""
    try:
        df = pd.read_csv(path, dtype=IDS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"{path}: unreadable CSV: {' '.join(str(e).split())}") from None
    absent = [c for c in required if c not in df]
    if absent:
        raise ResultsError(f"{path}: row 1: no column {', '.join(absent)} (analysis/collect.py writes it; "
                           f"recollect the grid)")
    later = df.duplicated(list(key)) if key else pd.Series(False, index=df.index)
    if later.any():
        j = int(later.to_numpy().nonzero()[0][0])
        i = int((df[list(key)] == df[list(key)].iloc[j]).all(axis=1).to_numpy().nonzero()[0][0])
        what = ", ".join(f"{k}={df[k].iloc[j]}" for k in key)
        raise ResultsError(f"{path}: row {j + 2}: {what} is already on row {i + 2} (one row per run: a "
                           f"duplicate would count as another seed)")
    for col, (lo, hi) in RANGES.items():
        if col not in df:
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        bad = (num.isna() & df[col].notna()) | (num < lo) | (num > hi)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            v = df[col].iloc[i]
            shown = repr(v) if isinstance(v, str) else f"{v:g}"
            raise ResultsError(f"{path}: row {i + 2}: column {col}={shown} is not a number "
                               f"in [{lo}, {hi}]")
        df[col] = num
    return df


# What analysis/collect.py writes for every tokenizer grid, and what identifies one row (the signature holds
# the seed): checked on read, so a cut or hand-merged CSV is refused by name, never plotted.
RUN_COLUMNS, RUN_KEY = ("signature", "status", "scale", "paper_signature", *METRICS), ("signature",)
CURVE_COLUMNS, CURVE_KEY = ("signature", "step", "metric", "value"), ("signature", "metric", "step")


def results(results_dir: Path, grid: str) -> pd.DataFrame | None:
    """results/<grid>.csv (one row per run), or None when the grid was never collected. Other CSVs read
    through here (calibration, generation) have their own columns: only a tokenizer grid's are required."""
    from sweeps import grids

    path = Path(results_dir) / f"{grid}.csv"
    if not path.exists():
        return None
    return read_csv(path, RUN_COLUMNS, RUN_KEY) if grid in grids.names() else read_csv(path)


def curves(results_dir: Path, grid: str) -> pd.DataFrame | None:
    path = Path(results_dir) / f"{grid}_curves.csv"
    return read_csv(path, CURVE_COLUMNS, CURVE_KEY) if path.exists() else None


def point_signature(point: dict) -> str:
    """A grid point's identity in paper terms: the same for the cpu and paper runs of one table row."""
    from sweeps.identity import signature
    from sweeps.scale import resolve

    return signature(resolve(point, "paper"))


def all_runs(results_dir: Path) -> pd.DataFrame:
    """Every run of every collected tokenizer grid (results/<grid>.csv), each run once (grids share runs)."""
    grids = [p.stem for p in sorted(Path(results_dir).glob("*.csv"))
             if not p.stem.endswith("_curves") and not p.stem.startswith("toy_")]
    found = [df for g in grids if "paper_signature" in (df := results(results_dir, g))]
    return pd.concat(found).drop_duplicates("signature").reset_index(drop=True) if found else pd.DataFrame()


def lookup(results_dir: Path | pd.DataFrame, point: dict) -> pd.DataFrame:
    """Our runs of a paper-terms grid point, from any results/<grid>.csv, or from `all_runs` read once."""
    runs = all_runs(results_dir) if isinstance(results_dir, (str, Path)) else results_dir
    if runs.empty:
        return pd.DataFrame()
    df = runs[runs["paper_signature"] == point_signature(point)]
    return df.sort_values("scale", kind="stable").reset_index(drop=True)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs (a results CSV written without a status column holds finished runs only)."""
    return runs[runs["status"] == "FINISHED"] if "status" in runs else runs


def finished_values(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The finished runs that have a number for ``metric``."""
    if runs.empty or metric not in runs:
        return runs.iloc[0:0]
    done = finished(runs)
    return done[pd.to_numeric(done[metric], errors="coerce").notna()]


def harness(results_dir: Path, point: dict) -> list[pd.Series | None]:
    """Our rows for one paper row: one per scale, aggregated over its seeds (`aggregate`), or [None]."""
    df = lookup(results_dir, point)
    return [aggregate(sub) for _, sub in df.groupby("scale", sort=True)] if len(df) else [None]


def seeds_of(df: pd.DataFrame) -> pd.Series:
    """The seed of each row (results written before the seed axis have no column: seed 0, the default)."""
    return df["seed"].fillna(0).astype(int) if "seed" in df else pd.Series(0, index=df.index)


def aggregate(runs: pd.DataFrame) -> pd.Series:
    """The seeds of one point as one row: each metric's mean over the finished runs that have it, with
    ``<metric>_sd`` (sample sd, ddof 1; NaN for one run) and ``<metric>_n``; ``signature`` / ``run_id`` list
    every run (seed order). A point without a finished run is its first row (its status says why)."""
    runs = runs.assign(seed=seeds_of(runs)).sort_values("seed")
    done = finished(runs)
    if done.empty:
        return runs.iloc[0]
    row = done.iloc[0].copy()
    for m in [*METRICS, *(c for c in done.columns if c.startswith("coco/"))]:
        if m in done:
            values = pd.to_numeric(done[m], errors="coerce").dropna()
            row[m] = values.mean() if len(values) else None
            row[f"{m}_sd"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{m}_n"] = len(values)
    row["n"] = len(done)
    row["seeds"] = ",".join(str(s) for s in done["seed"])
    for key in ("signature", "run_id"):
        row[key] = ",".join(str(v) for v in done[key])
    return row


def by_point(runs: pd.DataFrame) -> pd.DataFrame:
    """One aggregated row per paper point (``paper_signature``) of a results CSV, in first-seen order."""
    return pd.DataFrame([aggregate(sub) for _, sub in runs.groupby("paper_signature", sort=False)])


def band(hist: pd.DataFrame, signatures: str, metric: str) -> pd.DataFrame:
    """A training curve over the seeds of one point: ``step, mean, sd, n`` (sd NaN where one seed)."""
    sub = hist[hist["signature"].isin(str(signatures).split(",")) & (hist["metric"] == metric)]
    out = sub.groupby("step")["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n"})


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


def gaps(notes: Notes) -> list[str]:
    """What a built artefact lacks: every footnote reason except the paper's own blanks."""
    return [r for r in notes.reasons if r not in (PAPER_BLANK, RFID_INDICATIVE)]


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


def missing_reason(row: pd.Series, metric: str) -> str:
    """Why ``metric`` is empty in a results row: the run's status, or its own ``missing`` record."""
    if row.get("status", "FINISHED") != "FINISHED":
        return f"run {row['signature']} is {str(row['status']).lower()} (collected with allow_partial)"
    for part in str(row.get("missing", "") or "").split("; "):
        if part.startswith(f"{metric}: "):
            return f"{metric} not computed: {part.split(': ', 1)[1]}"
    return f"{metric} not reported by the run"


def metric(row: pd.Series | None, name: str, notes: Notes, grid: str = "") -> str:
    """Our point's metric as ``mean ± sd (n=seeds)`` (`aggregate`), or "—[n]" with the reason. Usage is a
    fraction, shown in %."""
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


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    notes: Notes = field(default_factory=Notes)
    remarks: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"**{self.caption}**", "", "| " + " | ".join(self.columns) + " |",
               "|" + "---|" * len(self.columns)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        out += [""] + [f"[{i}] {r}  " for i, r in enumerate(self.notes.reasons, 1)]
        out += [md_text(r) + "  " for r in self.remarks]
        return "\n".join(out).rstrip() + "\n"

    def latex(self) -> str:
        out = ["\\begin{table}[t]\\centering\\small", f"\\caption{{{tex(self.caption)}}}",
               "\\begin{tabular}{" + "l" * len(self.columns) + "}", "\\toprule",
               " & ".join(tex(c) for c in self.columns) + " \\\\", "\\midrule"]
        out += [" & ".join(tex(c) for c in row) + " \\\\" for row in self.rows]
        out += ["\\bottomrule", "\\end{tabular}"]
        out += [f"\\par\\footnotesize [{i}] {tex(r)}" for i, r in enumerate(self.notes.reasons, 1)]
        out += [f"\\par\\footnotesize {tex(r)}" for r in self.remarks]
        return "\n".join(out + ["\\end{table}"]) + "\n"


def md_text(text: str) -> str:
    return text.replace("*", "\\*")  # "* trained on OpenImages" is a footnote, not a bullet


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "‡": r"$^\ddagger$", "†": r"$^\dagger$",
        "◇": r"$^\diamond$", "×": r"$\times$", "β": r"$\beta$", "λ": r"$\lambda$", "–": "--", "≠": r"$\neq$",
        "✓": "yes", "’": "'", "`": ""}


def tex(text: str) -> str:
    text = "".join(_TEX.get(ch, ch) for ch in str(text))
    return re.sub(r"—\\?\[(\d+)\\?\]", r"---\\textsuperscript{\1}", text).replace("—", "---")


def write_tables(out: Path, stem: str, tables: list[Table]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for ext, text in (("md", "\n".join(t.markdown() for t in tables)), ("tex", "\n".join(t.latex() for t in tables))):
        with _atomic(out / f"{stem}.{ext}") as tmp:
            tmp.write_text(text)


class _atomic:
    """A temporary path beside ``path`` that replaces it only when the block succeeds: a failed build never
    leaves a half-written artefact."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=self.path.suffix)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, kind, *_):
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def remove_artefacts(out: Path, stem: str) -> None:
    """After a failed build, no stale table or figure of that stem may pass for a current one."""
    for ext in ("md", "tex", "png", "pdf"):
        (Path(out) / f"{stem}.{ext}").unlink(missing_ok=True)


def style() -> None:
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")


def no_runs(ax, reason: str) -> None:
    """The visible mark of a panel without data: never an empty axis that looks like a result."""
    import textwrap

    reason = textwrap.fill(reason.removeprefix(f"{NO_RUNS}: "), 34)
    ax.text(0.5, 0.5, f"{NO_RUNS}\n{reason}", transform=ax.transAxes, ha="center", va="center",
            color="crimson", fontsize=7, bbox=dict(boxstyle="round", fc="mistyrose", ec="crimson"))


def save_figure(fig, out: Path, stem: str) -> None:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    try:
        for ext in ("png", "pdf"):
            with _atomic(out / f"{stem}.{ext}") as tmp:
                fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=_metadata(ext))
    finally:
        plt.close(fig)


def _metadata(ext: str) -> dict:
    # No creation dates in the files: rebuilding unchanged data gives identical figures.
    return {"CreationDate": None} if ext == "pdf" else {"Software": None}


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
