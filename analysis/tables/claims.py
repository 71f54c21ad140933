"""The paper's claims, each tested on our seeded runs: results/tables/claims.{md,tex}.

A claim compares two grid points (paper terms, found in any results/<grid>.csv by their paper signature) on
one metric, at one scale. Each side is mean ± sd over its finished seeds (n). The verdict rule:

- *reproduced*: both sides have n >= 3 and the difference in the paper's direction exceeds twice the larger
  sd (the measured seed noise of that metric at that point);
- *not reproduced*: the same margin, the opposite direction;
- *inconclusive*: within that margin, or n < 3 on either side;
- for a claim of *no* effect (cosine vs linear decay): *reproduced* when the difference is within the margin,
  *not reproduced* when it exceeds it;
- for a claim that A is *no worse* than B (a larger setting brings nothing, Fig. 6): *reproduced* unless B is
  better by more than the margin;
- *not yet run*: a side has no finished run (the cell names the command that makes it).

PSNR (dB, higher is better) and held-out usage are the cpu-scale metrics; rFID over 64 images at 32x32 is
noise (results/README.md) and is not used for verdicts. The generation claim compares gFID (lower is better)
of the same tiny generator on two tokenizers' tokens, over the generator's seeds (results/generation_cpu.csv).

    python -m analysis.tables.claims [--results results --out results/tables]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.common import (Table, all_runs, finished_values, lookup, main, read_csv, values_mean_sd,
                             write_tables)

SCALE = "cpu"
COLUMNS = ["#", "Claim (paper)", "Paper", "Metric", "A", "B", "A - B", "Margin (2 sd)", "Verdict", "Runs (A; B)"]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    a: dict          # the side the paper says is better (or equal, when ``same``)
    b: dict
    metric: str      # a results column: psnr, usage (held-out), train_usage (last training window)
    grids: str       # the command's grids for a side with no run
    same: bool = False
    lower: bool = False  # the metric is better when lower (gFID)
    no_worse: bool = False  # A is at least as good as B (a larger setting "brings nothing")


def claims() -> list[Claim]:
    from sweeps.grids._fragments import (cosine, k16, k65, k262, linear, mlp5, no_anneal, no_warmup, plain, rq,
                                         var, vqbridge, vqgan)

    k4 = {"quant.codebook_size": 4096}

    return [
        Claim("1", "Plain VQ (VQGAN, d = 256) leaves most codes unused; FVQ uses them (Table 3 rows 2 vs 6)",
              "usage 0.29% vs 100%", vqbridge, vqgan, "usage", "scaling"),
        Claim("3", "FVQ reconstructs better than VQGAN at d = 256 (Table 3 rows 2 vs 6)", "rFID 9.21 vs 1.30",
              vqbridge, vqgan, "psnr", "scaling"),
        Claim("4a", "Learning annealing improves VQBridge (Table 3 rows 3 vs 6, Observation 2)",
              "rFID 2.61 -> 1.30", vqbridge, {**vqbridge, **no_anneal}, "psnr", "annealing"),
        Claim("4b", "... and keeps the whole codebook in use (Table 5)", "usage 100% both",
              vqbridge, {**vqbridge, **no_anneal}, "usage", "annealing"),
        Claim("5", "Linear (SimVQ) uses more codes without annealing than with it (Table 5)", "100% vs 53%",
              {**linear, **k16, **no_anneal}, {**linear, **k16}, "usage", "projector"),
        Claim("6", "VQBridge beats MLP-5 at large K (Table 5, 262k, annealing)", "usage 100% vs 22%",
              {**vqbridge, **k262}, {**mlp5, **k262}, "usage", "projector"),
        Claim("6b", "VQBridge beats linear at 16k with annealing (Table 5)", "usage 100% vs 53%",
              {**vqbridge, **k16}, {**linear, **k16}, "usage", "projector"),
        Claim("8a", "Warmup matters (Table 9)", "rFID 1.30 vs 1.70 without", vqbridge, {**vqbridge, **no_warmup},
              "psnr", "schedule"),
        Claim("8b", "... seen in usage (Table 9 reports rFID only)", "not reported", vqbridge,
              {**vqbridge, **no_warmup}, "usage", "schedule"),
        Claim("8c", "Cosine decay is no better or worse than linear (Table 9)", "rFID 1.32 vs 1.30",
              {**vqbridge, **cosine}, vqbridge, "psnr", "schedule", same=True),
        Claim("9a", "A larger codebook reconstructs better (Table 3 rows 6 vs 8)", "rFID 1.30 -> 1.14",
              {**vqbridge, **k65}, {**vqbridge, **k16}, "psnr", "codebook_size"),
        Claim("9b", "Longer training reconstructs better (Table 3, 40 -> 120 epochs)", "rFID 1.30 -> 1.17",
              {**vqbridge, "epochs": 120}, vqbridge, "psnr", "scaling"),
        Claim("10a", "FVQ improves RQ-VAE (Table 4, 10 epochs)", "rFID 4.73 -> 2.98",
              {**vqbridge, **rq, **k16, "epochs": 10}, {**plain, **no_anneal, **rq, **k16, "epochs": 10}, "psnr",
              "multicode"),
        Claim("10b", "FVQ improves VAR (Table 4)", "rFID 1.00 -> 0.80", {**vqbridge, **var, **k16},
              {**plain, **no_anneal, **var, "quant.codebook_size": 4096, "model.channel": 32}, "psnr", "multicode"),
        Claim("12a", "d' = d (256) reconstructs better than d' = 64 (Fig. 6 left)", "rFID falls 64 -> 256",
              vqbridge, {**vqbridge, "quant.latent_dim": 64}, "psnr", "latent_dim"),
        Claim("12b", "d' = 512 brings nothing over d' = d (Fig. 6 left)", "no gain, may degrade", vqbridge,
              {**vqbridge, "quant.latent_dim": 512}, "psnr", "latent_dim", no_worse=True),
        Claim("13a", "N = 2 ViT blocks beat N = 1 (Fig. 6 middle)", "N = 1 suboptimal", vqbridge,
              {**vqbridge, "quant.depth": 1}, "psnr", "depth"),
        Claim("13b", "N = 4 brings nothing over N = 2 (Fig. 6 middle)", "N = 4 degrades", vqbridge,
              {**vqbridge, "quant.depth": 4}, "psnr", "depth", no_worse=True),
        Claim("14a", "At K = 4k the best patch size is p = 4, not 16 (Fig. 6 right)", "p = 4 best at 4k",
              {**vqbridge, **k4, "quant.group": 4}, {**vqbridge, **k4, "quant.group": 16}, "psnr", "patch_size"),
        Claim("14b", "At K = 16k the best patch size is p = 16, not 4 (Fig. 6 right)", "p = 16 best at 16k",
              {**vqbridge, **k16}, {**vqbridge, **k16, "quant.group": 4}, "psnr", "patch_size"),
        # generator runs: a side is a tokenizer of sweeps/grids/generation.py, its seeds the generator's
        Claim("11", "FVQ tokens give a better generator than plain-VQ tokens (Table 2, LlamaGen-L)",
              "gFID 2.39 vs 3.81", {"tokenizer": "fvq"}, {"tokenizer": "vq"}, "gfid", "generation", lower=True),
    ]


def side(tokenizers: pd.DataFrame, generators: pd.DataFrame, point: dict,
         metric: str) -> tuple[pd.Series, list[str]]:
    """The finished seeds' values of ``metric`` at a point (this scale), and their run signatures;
    ``tokenizers`` is `all_runs` of the results dir, ``generators`` its generation_cpu.csv (read once)."""
    if "tokenizer" in point:  # generator runs (results/generation_cpu.csv, cpu scale)
        df = generators[generators["tokenizer"] == point["tokenizer"]] if len(generators) else generators
    else:
        df = lookup(tokenizers, point)
        df = df[df["scale"] == SCALE] if len(df) else df
    df = finished_values(df, metric)
    values = pd.to_numeric(df[metric]) if len(df) else pd.Series(dtype=float)
    return values, [str(s) for s in df.get("signature", [])]


def verdict(a: pd.Series, b: pd.Series, same: bool, lower: bool = False,
            no_worse: bool = False) -> tuple[float, float, str]:
    """(a - b, margin, verdict) by the rule of the module docstring."""
    if a.empty or b.empty:
        return float("nan"), float("nan"), "not yet run"
    diff = a.mean() - b.mean()
    gain = -diff if lower else diff
    sds = [s.std(ddof=1) for s in (a, b) if len(s) > 1]
    margin = 2 * max(sds) if sds else float("nan")
    if min(len(a), len(b)) < 3:
        return diff, margin, f"inconclusive (n = {min(len(a), len(b))} < 3)"
    if same:
        return diff, margin, "reproduced (within the margin)" if abs(diff) <= margin else "not reproduced"
    if no_worse:
        return diff, margin, (("reproduced" if gain > margin else "reproduced (within the margin)")
                              if gain >= -margin else "not reproduced")
    return diff, margin, ("reproduced" if gain > margin else "not reproduced" if gain < -margin
                          else "inconclusive (within the margin)")


def build(results: Path, out: Path) -> list[str]:
    rows, missing = [], []
    tokenizers, gen = all_runs(results), Path(results) / "generation_cpu.csv"
    generators = read_csv(gen) if gen.exists() else pd.DataFrame()
    for c in claims():
        (a, ra), (b, rb) = (side(tokenizers, generators, p, c.metric) for p in (c.a, c.b))
        diff, margin, v = verdict(a, b, c.same, c.lower, c.no_worse)
        k = 100 if "usage" in c.metric else 1
        num = (lambda x: "—" if pd.isna(x) else f"{k * x:+.{1 if k == 100 else 2}f}")
        if v == "not yet run":
            runs = f"`python sweeps/run.py grid={c.grids} seeds=3`"
            missing.append(f"claim {c.key}: no finished {SCALE} runs of grid={c.grids}")
        else:
            runs = ", ".join(ra) + "; " + ", ".join(rb)
        rows.append([c.key, c.text, c.paper, c.metric, values_mean_sd(a, c.metric),
                     values_mean_sd(b, c.metric), num(diff), num(margin).lstrip("+"), v, runs])
    remarks = [f"Scale {SCALE}. A and B: mean ± sd over finished seeds (n); runs are run signatures (run dirs, "
               "MLflow tag `signature`). Usage in points of %. The rule is in analysis/tables/claims.py."]
    write_tables(out, "claims", [Table("The paper's claims at cpu scale, tested on seeded runs.", COLUMNS, rows,
                                       remarks=remarks)])
    return missing


if __name__ == "__main__":
    raise SystemExit(main(build, "claims", "tables"))
