"""The paper's claims, each stated as the paper states it and tested on our seeded runs: results/tables/claims.*

A claim names its table/figure and rows, the side the paper says is better (A) and the other (B), one metric
and its kind (analysis/verdicts.py: better, same, no_worse, at_least). Every rule of the test - pairing by
seed, Welch where seeds do not match, TOST and non-inferiority margins, Holm over the whole table, the seeds
a claim needs - is in analysis/verdicts.py; this module only gathers the runs and prints the rows.

Margins (written in each claim and shown in the table): 0.3 dB PSNR for "no effect" and "brings nothing"
(about half the seed sd of the reference point, 0.57 dB, and below any gap the paper reads as an effect);
2 points of usage for "100% usage", against the usage a uniform use of the codebook can show with the tokens
per code the estimate counts (1 - e^-t for t tokens per code: 98.2% at 4, 99.8% at 6.25, 100% at 64).

Checks beyond the paper (``family="check"``) are comparisons the harness owes its users that the paper does
not make: which of the two official bridge variants (analysis of Table 10) reconstructs better. They are a
family of their own: Holm runs within each family, so adding a check never weakens a verdict on the paper.

PSNR (dB, higher is better) and usage are the cpu-scale metrics; rFID over 64 images at 32x32 is noise
(results/README.md) and decides nothing. The generation claim's unit is the tokenizer (each tokenizer's gFID
is the mean over its generator seeds): generator seeds on one tokenizer do not replicate the claim.

    python -m analysis.tables.claims [--results results --out results/tables]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from analysis.cells import values_mean_sd
from analysis.cli import main
from analysis.rows import ResultsError, all_runs, finished_values, lookup, read_csv
from analysis.writers import Table, write_tables
from analysis.verdicts import ALPHA, MAX_SEEDS, Side, compare, holm, seeds_needed, verdict

SCALE = "cpu"
PSNR_MARGIN, USAGE_MARGIN = 0.3, 0.02
COLUMNS = ["#", "Claim (paper)", "Paper", "Metric", "Kind", "A", "B", "Test", "A - B [95% CI]", "p (t)",
           "p (sign-flip)", "p (Holm)", "Verdict", "Seeds needed", "Runs (A; B)"]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str
    a: dict               # the side the paper says is better (or equal); for at_least: a side held to 100%
    b: dict | None        # None: a one-sample claim on A alone
    metric: str           # a results column: psnr, usage (held-out), train_usage (last training window), gfid
    grids: str            # the grid(s) whose runs the sides are
    kind: str = "better"  # analysis/verdicts.py KINDS
    margin: float = 0.0
    lower: bool = False   # the metric is better when lower (gFID)
    family: str = "paper"  # paper: a claim of the paper; check: a comparison beyond it (own Holm family)


def claims() -> list[Claim]:
    from sweeps.grids._fragments import (cosine, k16, k65, k262, linear, mlp5, no_anneal, no_warmup, plain, rq,
                                         var, vqbridge, vqgan)

    k4 = {"quant.codebook_size": 4096}
    rq10 = {**plain, **no_anneal, **rq, **k16, "epochs": 10}
    d128 = {**vqbridge, "model.channel": 128}
    title = []
    for name, k in (("16k", k16), ("65k", k65), ("262k", k262)):
        row = {"16k": "6", "65k": "8", "262k": "11"}[name]
        title += [Claim(f"T{name}", f"FVQ uses 100% of a {name} codebook (title; Table 3 row {row}, Table 5)",
                        "100%", {**vqbridge, **k}, None, "usage", "scaling", "at_least", USAGE_MARGIN),
                  Claim(f"T{name}w", f"... in the training window (Fig. 3: usage during training), {name}",
                        "100%", {**vqbridge, **k}, None, "train_usage", "scaling", "at_least", USAGE_MARGIN)]
    return [
        *title,
        Claim("1", "Plain VQ (VQGAN, d = 256) leaves most codes unused; FVQ uses them (Table 3 rows 2 vs 6)",
              "usage 0.29% vs 100%", vqbridge, vqgan, "usage", "scaling"),
        Claim("3", "FVQ reconstructs better than VQGAN at d = 256 (Table 3 rows 2 vs 6)", "rFID 9.21 vs 1.30",
              vqbridge, vqgan, "psnr", "scaling"),
        Claim("4a", "Learning annealing improves VQBridge (Table 3 rows 3 vs 6, Observation 2)",
              "rFID 2.61 -> 1.30", vqbridge, {**vqbridge, **no_anneal}, "psnr", "annealing"),
        Claim("4b", "VQBridge keeps 100% usage with and without annealing (Table 5, 16k; both sides held)",
              "usage 100% both", vqbridge, {**vqbridge, **no_anneal}, "usage", "annealing", "at_least",
              USAGE_MARGIN),
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
        Claim("8c", "Cosine decay is no better or worse than linear (Table 9: 'negligible impact')",
              "rFID 1.32 vs 1.30", {**vqbridge, **cosine}, vqbridge, "psnr", "schedule", "same", PSNR_MARGIN),
        Claim("9a", "A larger codebook reconstructs better (Table 3 rows 6 vs 8, 16k -> 65k)", "rFID 1.30 -> 1.14",
              {**vqbridge, **k65}, {**vqbridge, **k16}, "psnr", "codebook_size"),
        Claim("9c", "... and 16k -> 262k (Table 3 rows 6 vs 11)", "rFID 1.30 -> 0.95",
              {**vqbridge, **k262}, {**vqbridge, **k16}, "psnr", "scaling"),
        Claim("9b", "Longer training reconstructs better (Table 3 rows 6 vs 7, 40 -> 120 epochs)",
              "rFID 1.30 -> 1.17", {**vqbridge, "epochs": 120}, vqbridge, "psnr", "scaling"),
        Claim("9d", "... at 65k, d = 512 (Table 3 rows 9 vs 10)", "rFID 1.09 -> 1.00",
              {**vqbridge, **k65, "model.channel": 512, "epochs": 120}, {**vqbridge, **k65, "model.channel": 512},
              "psnr", "scaling"),
        Claim("9e", "... at 262k (Table 3 rows 11 vs 12)", "rFID 0.95 -> 0.88",
              {**vqbridge, **k262, "epochs": 120}, {**vqbridge, **k262}, "psnr", "scaling"),
        Claim("10a", "FVQ improves RQ-VAE (Table 4, 10 epochs)", "rFID 4.73 -> 2.98",
              {**vqbridge, **rq, **k16, "epochs": 10}, rq10, "psnr", "multicode"),
        Claim("10c", "FVQ (RQ-VAE) at 10 epochs beats RQ-VAE at 50 (Table 4, highlighted)", "rFID 2.98 vs 3.20",
              {**vqbridge, **rq, **k16, "epochs": 10}, {**rq10, "epochs": 50}, "psnr", "multicode"),
        Claim("10b", "FVQ improves VAR (Table 4)", "rFID 1.00 -> 0.80", {**vqbridge, **var, **k16},
              {**plain, **no_anneal, **var, "quant.codebook_size": 4096, "model.channel": 32}, "psnr", "multicode"),
        Claim("10d", "FVQ (VAR) keeps its codebook in use (abstract: 100% usage in every configuration)",
              "not reported", {**vqbridge, **var, **k16}, None, "usage", "multicode", "at_least", USAGE_MARGIN),
        Claim("12a", "d' = d (256) reconstructs better than d' = 64 (Fig. 6 left)", "rFID falls 64 -> 256",
              vqbridge, {**vqbridge, "quant.latent_dim": 64}, "psnr", "latent_dim"),
        Claim("12b", "d' = 512 brings nothing over d' = d (Fig. 6 left)", "no gain, may degrade", vqbridge,
              {**vqbridge, "quant.latent_dim": 512}, "psnr", "latent_dim", "no_worse", PSNR_MARGIN),
        Claim("12c", "At d = 128, d' = d beats d' = 256 (Fig. 6 left: best where d' matches d)",
              "best at d' = d", {**d128, "quant.latent_dim": 128}, {**d128, "quant.latent_dim": 256}, "psnr",
              "latent_dim"),
        Claim("13a", "N = 2 ViT blocks beat N = 1 (Fig. 6 middle)", "N = 1 suboptimal", vqbridge,
              {**vqbridge, "quant.depth": 1}, "psnr", "depth"),
        Claim("13b", "N = 4 brings nothing over N = 2 (Fig. 6 middle)", "N = 4 degrades", vqbridge,
              {**vqbridge, "quant.depth": 4}, "psnr", "depth", "no_worse", PSNR_MARGIN),
        Claim("14a", "At K = 4k the best patch size is p = 4, not 16 (Fig. 6 right)", "p = 4 best at 4k",
              {**vqbridge, **k4, "quant.group": 4}, {**vqbridge, **k4, "quant.group": 16}, "psnr", "patch_size"),
        Claim("14b", "At K = 16k the best patch size is p = 16, not 4 (Fig. 6 right)", "p = 16 best at 16k",
              {**vqbridge, **k16}, {**vqbridge, **k16, "quant.group": 4}, "psnr", "patch_size"),
        *checks(k262),
        Claim("11", "FVQ tokens give a better generator than plain-VQ tokens (Table 2, LlamaGen-L); unit: "
              "the tokenizer", "gFID 2.39 vs 3.81", {"tokenizer": "fvq"}, {"tokenizer": "vq"}, "gfid",
              "generation", lower=True),
    ]


def checks(k262: dict) -> list[Claim]:
    """The bridge variants (sweeps/grids/bridge.py): equivalent reconstruction at the reference K and at the
    largest, and the DiT bridge's usage where a bridge has the most codes to keep alive."""
    from sweeps.grids._fragments import vqbridge

    dit = {**vqbridge, "quant.bridge": "dit"}
    why = "not stated (official README: the ViT one is the paper's)"
    return [
        Claim("B16k", "Not a claim of the paper: the DiT bridge of the official scripts (qbridge.py) reconstructs "
              "as the ViT bridge of the text (eq. 8-11), 16k", why, dit, vqbridge, "psnr", "bridge", "same",
              PSNR_MARGIN, family="check"),
        Claim("B262k", "... at 262k", why, {**dit, **k262}, {**vqbridge, **k262}, "psnr", "bridge", "same",
              PSNR_MARGIN, family="check"),
        Claim("B262ku", "... and the DiT bridge keeps 100% of a 262k codebook in use", "not reported",
              {**dit, **k262}, None, "usage", "bridge", "at_least", USAGE_MARGIN, family="check"),
    ]


def check_seeds(results: Path) -> None:
    """Pairing needs each run's seed: a tokenizer results CSV without a seed column is refused."""
    for path in sorted(Path(results).glob("*.csv")):
        if path.stem.endswith("_curves") or path.stem.startswith(("toy_", "calibration", "generation")):
            continue
        if "paper_signature" in (cols := pd.read_csv(path, nrows=0).columns) and "seed" not in cols:
            raise ResultsError(f"{path}: no seed column: runs cannot be paired by seed (re-collect it)")


def side(tokenizers: pd.DataFrame, generators: pd.DataFrame, point: dict, metric: str) -> tuple[Side, float]:
    """The finished runs of a point (this scale) as a `Side`, and the tokens per code its metric counts."""
    if "tokenizer" in point:  # one value per tokenizer (the mean over its generator seeds), keyed by its seed
        df = generators[generators["tokenizer"] == point["tokenizer"]] if len(generators) else generators
        df = finished_values(df, metric)
        if df.empty:
            return Side((), ()), float("nan")
        if "tokenizer_seed" not in df:  # rows collected before the tokenizer was the replicate: not paired
            df = df.assign(tokenizer_seed=df["tokenizer_signature"].rank(method="dense").astype(int) - 1)
        per = df.groupby("tokenizer_signature", sort=True).agg(seed=("tokenizer_seed", "first"),
                                                               value=(metric, lambda s: pd.to_numeric(s).mean()))
        per = per.sort_values("seed")
        return Side(tuple(per["seed"].astype(int)), tuple(per["value"]), tuple(per.index)), float("nan")
    df = lookup(tokenizers, point)
    df = finished_values(df[df["scale"] == SCALE] if len(df) else df, metric)
    if df.empty:
        return Side((), ()), float("nan")
    df = df[df["signature"] == df["seed"].astype(int).map(lambda s: current_signature(point, s))]
    if df.empty:  # only runs of a superseded protocol: the point and seed now resolve to other runs
        return Side((), ()), float("nan")
    seeds = df["seed"].astype(int)  # one run per seed: the signature is a function of point and seed
    tpc = {"usage": "tokens_per_code", "train_usage": "train_tokens_per_code"}.get(metric)
    per_code = float(pd.to_numeric(df[tpc]).mean()) if tpc in df else float("nan")
    return Side(tuple(seeds), tuple(pd.to_numeric(df[metric])), tuple(df["signature"])), per_code


def current_signature(point: dict, seed: int) -> str:
    """The run a point and seed resolve to now: rows made under a protocol since changed are not counted."""
    from sweeps.identity import signature
    from sweeps.scale import resolve

    return signature(resolve(point, SCALE, {"seed": seed}))


def ceiling(tokens_per_code: float) -> float:
    """The usage a uniform use of K codes shows when t = tokens / K are counted: 1 - e^-t (Poisson)."""
    return 1.0 if math.isnan(tokens_per_code) else 1 - math.exp(-tokens_per_code)


def evaluate(results: Path) -> list[dict]:
    """Every claim's sides, test, Holm-adjusted p, verdict and seeds needed (one dict per claim)."""
    check_seeds(results)
    tokenizers, gen = all_runs(results), Path(results) / "generation_cpu.csv"
    generators = read_csv(gen) if gen.exists() else pd.DataFrame()
    rows = []
    for c in claims():
        (a, ta) = side(tokenizers, generators, c.a, c.metric)
        (b, tb) = side(tokenizers, generators, c.b, c.metric) if c.b is not None else (None, float("nan"))
        test = None
        if len(a) >= 3 and (b is None or len(b) >= 3):
            if c.kind == "at_least":  # each side held to the ceiling; the claim is their conjunction
                tests = [compare(s, None, "at_least", c.margin, target=ceiling(t))
                         for s, t in ((a, ta), (b, tb)) if s is not None]
                worst = max(tests, key=lambda t: t.p_for)
                test = replace(worst, p_against=min(t.p_against for t in tests))
            else:
                test = compare(a, b, c.kind, c.margin, c.lower)
        rows.append({"claim": c, "a": a, "b": b, "tokens": (ta, tb), "test": test})
    for family in dict.fromkeys(r["claim"].family for r in rows):  # Holm within each family
        mine = [r for r in rows if r["claim"].family == family]
        adjusted = holm([r["test"].p_decision if r["test"] else float("nan") for r in mine])
        for r, p in zip(mine, adjusted):
            n_b = None if r["b"] is None else len(r["b"])
            r["p_holm"], r["verdict"] = p, verdict(r["test"], p, len(r["a"]), n_b)
        undecided = sum(r["verdict"] == "inconclusive" for r in mine)
        for r in mine:
            c, t = r["claim"], r["test"]
            r["needed"] = (seeds_needed(t, ALPHA / max(1, undecided), c.kind, c.margin, c.lower)
                           if r["verdict"] == "inconclusive" else None)
    return rows


def _cell(values: Side | None, metric: str, tokens: float) -> str:
    if values is None:
        return "(one-sample)"
    text = values_mean_sd(pd.Series(values.values, dtype=float), metric)
    return text + (f"; {tokens:.3g} tokens/code, ceiling {100 * ceiling(tokens):.1f}%"
                   if metric.endswith("usage") and not math.isnan(tokens) else "")


def _num(x: float, metric: str) -> str:
    k = 100 if metric.endswith("usage") else 1
    return "—" if x is None or math.isnan(x) else f"{k * x:+.{1 if k == 100 else 2}f}"


def _p(x: float) -> str:
    return "—" if x is None or math.isnan(x) else (f"{x:.2g}" if x >= 1e-4 else "<1e-4")


def needed_cell(r: dict, cost_of=None) -> str:
    """"n = X (Y CPU-h)" for an undecided comparison (3 per side first where a side has fewer); why not where
    there is no number."""
    short = r["verdict"] == "not yet run" or r["verdict"].startswith("inconclusive (n =")
    if not short and (r["verdict"] != "inconclusive" or r["needed"] is None):
        return "—" if r["verdict"] != "inconclusive" else \
            f"not reachable with n <= {MAX_SEEDS} at the measured effect and sd"
    cost = cost_of(r) if cost_of else None
    return f"n = {3 if short else r['needed']}" + (f" ({cost:.1f} CPU-h)" if cost is not None else "")


def build(results: Path, out: Path) -> list[str]:
    from analysis.seeds import missing_cost

    rows, missing = {"paper": [], "check": []}, []
    for r in evaluate(results):
        c, t, (a, b) = r["claim"], r["test"], (r["a"], r["b"])
        kind = c.kind + (f" ±{_num(c.margin, c.metric).lstrip('+')}" if c.kind != "better" else "")
        if r["verdict"] == "not yet run":
            runs = f"`python sweeps/run.py grid={c.grids} seeds=3`"
            missing.append(f"claim {c.key}: no finished {SCALE} runs of grid={c.grids}")
        else:
            runs = ", ".join(a.runs) + ("; " + ", ".join(b.runs) if b is not None else "")
        test = "—" if t is None else f"{t.design}, n = {t.n}" + (f" ({t.note})" if t.note else "")
        diff = "—" if t is None else (f"{_num(t.diff, c.metric)} [{_num(t.ci[0], c.metric)}, "
                                      f"{_num(t.ci[1], c.metric)}]" + (" vs ceiling" if c.kind == "at_least" else ""))
        rows[c.family].append([c.key, c.text, c.paper, c.metric, kind, _cell(a, c.metric, r["tokens"][0]),
                     _cell(b, c.metric, r["tokens"][1]), test, diff, _p(t.p_t if t else None),
                     _p(t.p_signflip if t else None), _p(r["p_holm"]), r["verdict"],
                     needed_cell(r, missing_cost), runs])
    remarks = [f"Scale {SCALE}. A and B: mean ± sd (n) over finished seeds. Usage in points of %, PSNR in dB. "
               "Paired = per-seed differences A - B over shared seeds; p (t): two-sided t-test of A - B = 0; "
               "p (Holm): the decision p (analysis/verdicts.py, rule 3) adjusted over every tested claim of "
               "this table, family-wise alpha 0.05 (the checks below are a family of their own). Seeds needed: paired seeds per side for 80% power at the "
               "measured effect and sd, with the CPU-hours of the runs still missing (analysis/seeds.py). "
               "Runs are run signatures (run dirs, MLflow tag `signature`)."]
    checks = ["Not claims of the paper: comparisons the harness owes its users (the official code ships two bridge "
              "variants, sweeps/grids/bridge.py). Columns as above; p (Holm) is adjusted within these checks only, "
              "so they do not change a verdict on the paper's claims."]
    write_tables(out, "claims", [Table("The paper's claims at cpu scale, tested on seeded runs.", COLUMNS,
                                       rows["paper"], remarks=remarks),
                                 Table("Checks beyond the paper at cpu scale, tested the same way.", COLUMNS,
                                       rows["check"], remarks=checks)])
    return missing


if __name__ == "__main__":
    raise SystemExit(main(build, "claims", "tables"))
