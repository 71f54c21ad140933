"""Seeds decided by the measured noise: which runs each undecided claim still needs, and what they cost.

For a claim the claims table calls inconclusive (analysis/verdicts.py, rule 5 gives the paired seeds n that
reach 80% power; a side with fewer than 3 finished runs needs 3), both sides need seeds 0 .. n-1, so that
every new run has a partner; the runs missing from the committed results CSVs are the plan. Claims are taken
cheapest first until ``budget`` CPU-hours are spent; a claim that needs more than that, or more than 20
seeds, is listed and left out. `sweeps/run.py claims=...` launches the plan through the one launch path, so
a relaunch skips what finished and more seeds only add runs.

Cost of one cpu run on this project's 2-core VM, measured: 800-step runs at K <= 4,096 took 171 CPU-s each
on average (42 runs of five grids in 60 min, two at a time), i.e. ~0.2 CPU-s per step with its evaluation;
the 2,400-step runs at K = 16,384 of Table 3 row 12 took ~0.5 CPU-s per step (two at a time). A step costs
more with K (the nearest-code search and the bridge over K codes): ``0.2 + 0.3 * K / 16,384`` CPU-s, plus
30 s of start-up and evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BASE_S_PER_STEP, K_S_PER_STEP, OVERHEAD_S = 0.2, 0.3, 30.0


@dataclass(frozen=True)
class Needed:
    claim: str
    n_now: int
    n: int
    runs: tuple[tuple[str, tuple, int], ...]   # (grid, point items, seed) still missing
    cpu_h: float


def run_cpu_hours(point: dict, seed: int = 0) -> float:
    """CPU-hours of one cpu-scale run of ``point`` (the module docstring's measured cost)."""
    from sweeps.scale import resolve

    return cfg_cpu_hours(resolve(point, "cpu", {"seed": seed}))


def cfg_cpu_hours(cfg) -> float:
    """CPU-hours of one cpu-scale tokenizer run of config ``cfg``."""
    per_step = BASE_S_PER_STEP + K_S_PER_STEP * cfg.quant.codebook_size / 16384
    return (cfg.optim.steps * per_step + OVERHEAD_S) / 3600


def needed(row: dict) -> Needed | None:
    """The missing runs of one evaluated claim row (analysis/tables/claims.py evaluate); None when the claim
    is decided, cannot be helped by seeds, or is not a tokenizer claim."""
    c = row["claim"]
    if "tokenizer" in c.a or not (row["verdict"].startswith("inconclusive") or row["verdict"] == "not yet run"):
        return None
    sides = [(c.a, row["a"])] + ([(c.b, row["b"])] if c.b is not None else [])
    n_now = min(len(s) for _, s in sides)
    n = row.get("needed") or (3 if n_now < 3 else None)
    if n is None:
        return None
    runs = tuple((c.grids.split(",")[0], tuple(sorted(p.items())), s)
                 for p, side in sides for s in range(n) if s not in side.seeds)
    return Needed(c.key, n_now, n, runs, sum(run_cpu_hours(dict(p), s) for _, p, s in runs))


def missing_cost(row: dict) -> float | None:
    """CPU-hours of what a claim row still needs (the claims table's "Seeds needed" cell)."""
    need = needed(row)
    return need.cpu_h if need else None


def plan(results: Path, which: str, budget: float = 0.0) -> tuple[list[Needed], list[str]]:
    """The claims to add seeds to (``undecided`` or a comma list of claim keys), cheapest first within
    ``budget`` CPU-hours (0: no cap), and one line per claim saying what it gets and why."""
    from analysis.tables.claims import claims, evaluate

    keys = [c.key for c in claims()]
    asked = None if which == "undecided" else [k.strip() for k in which.split(",") if k.strip()]
    for k in asked or ():
        if k not in keys:
            raise ValueError(f"claims={which}: unknown claim {k!r} (claims: undecided or {', '.join(keys)})")
    rows = [r for r in evaluate(results) if asked is None or r["claim"].key in asked]
    lines, chosen, spent, seen = [], [], 0.0, set()
    candidates = []
    for r in rows:
        need = needed(r)
        if need is None:
            if "tokenizer" in r["claim"].a:
                lines.append(f"claim {r['claim'].key}: nothing to add here (a generation claim: its tokenizers "
                             "come from `sweeps/run.py grid=generation`)")
            elif asked is not None or r["verdict"].startswith("inconclusive"):
                why = ("decided: " + r["verdict"] if not r["verdict"].startswith("inconclusive") else
                       "not reachable with n <= 20 at the measured effect and sd")
                lines.append(f"claim {r['claim'].key}: nothing to add ({why})")
            continue
        candidates.append(need)
    for need in sorted(candidates, key=lambda n: n.cpu_h):
        new = [run for run in need.runs if run not in seen]
        cost = sum(run_cpu_hours(dict(p), s) for _, p, s in new)
        if budget and spent + cost > budget:
            lines.append(f"claim {need.claim}: n {need.n_now} -> {need.n}: {len(new)} runs, {cost:.2f} CPU-h: "
                         f"over the budget ({spent:.2f} of {budget:g} CPU-h spent), left out")
            continue
        seen.update(new)
        spent += cost
        chosen.append(Needed(need.claim, need.n_now, need.n, tuple(new), cost))
        lines.append(f"claim {need.claim}: n {need.n_now} -> {need.n} paired seeds: {len(new)} new runs, "
                     f"{cost:.2f} CPU-h")
    return chosen, lines
