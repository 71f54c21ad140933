"""Verdicts on the paper's claims from seeded runs: the statistics behind results/tables/claims.md.

A claim compares side A (what the paper says is better, or equal) with side B on one metric, or holds
side A against a fixed target (usage of about 100%). Each side is a list of (seed, value) of finished runs.

Rules (every number in the claims table follows from these):

1. **Pairing.** Runs with the same seed share the initial weights, the data order and the held-out crops,
   so the two sides are compared seed by seed: the test is on the per-seed differences A - B over the
   seeds both sides have (paired t-test, with an exact sign-flip permutation test beside it). Only when
   fewer than 3 seeds are shared is the comparison unpaired (Welch's t-test over all runs), and the row
   says so. One-sample claims (``at_least``) test side A's values against the target.
2. **Kinds of claim**, each with the hypothesis the paper states (``gain`` is A - B, sign-flipped for a
   metric where lower is better; ``margin`` is written in the claim):
   - ``better``: gain > 0. For it: one-sided p of gain <= 0; against it: one-sided p of gain >= 0.
   - ``same`` (no effect; TOST): |gain| < margin. For it: the larger of the two one-sided p of
     gain <= -margin and gain >= +margin; against it: the smaller of the one-sided p of gain in
     [-margin, +margin] from either side (the difference lies outside the margin).
   - ``no_worse`` (non-inferiority: "a larger setting brings nothing" read as "A is at least as good"):
     gain > -margin. For it: one-sided p of gain <= -margin; against it: one-sided p of gain >= -margin.
   - ``at_least`` (one sample): mean(A) > target - margin. For and against as for ``no_worse``.
3. **Decision p** = min(1, 2 x min(p for, p against)): a two-sided decision between the claim and its
   opposite (for ``better`` it is the usual two-sided p). It enters the family.
4. **Family**: Holm-Bonferroni over every claim of the table that has a test (raw and adjusted p shown).
   Verdict at family-wise alpha = 0.05: *reproduced* when the adjusted decision p < alpha and the evidence
   is for the claim, *not reproduced* when it is against it, else *inconclusive*; *not yet run* when a
   side has no finished run; *inconclusive (n < 3)* when a side has fewer than 3 runs (never a verdict).
5. **Seeds needed** (for an inconclusive claim): the smallest n of paired seeds (or runs per side when
   unpaired) at which the test reaches 80% power, with the measured sd of the differences and the measured
   effect taken as true, at the level Holm would test it (alpha / the number of undecided claims), up to
   n = 20; beyond that "not reachable with n <= 20". The cost of the missing runs is the caller's.
The 95% confidence interval of the mean difference (t, paired or Welch) is shown beside every row.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 20
KINDS = ("better", "same", "no_worse", "at_least")


@dataclass(frozen=True)
class Test:
    """The outcome of one claim's test (before the family correction)."""
    design: str                 # paired | welch | one-sample
    n: int                      # pairs (paired), runs of A (one-sample) or min(n_a, n_b) (welch)
    diff: float                 # mean A - B (or mean A - target), in the metric's units
    ci: tuple[float, float]     # 95% CI of ``diff``
    sd: float                   # sd of the per-seed differences (paired), of A (one-sample), pooled (welch)
    p_t: float                  # two-sided p of diff == 0 (t-test), reported beside
    p_signflip: float           # exact sign-flip p of the paired differences (nan when not paired)
    p_for: float
    p_against: float
    note: str = ""

    @property
    def p_decision(self) -> float:
        return min(1.0, 2 * min(self.p_for, self.p_against))


@dataclass(frozen=True)
class Side:
    """Finished runs of one side: seeds and values, in the same order."""
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    runs: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.values)

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values))


def signflip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip p: the share of the 2^n sign patterns whose |mean| reaches the observed."""
    obs = abs(d.mean())
    means = [abs((d * s).mean()) for s in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean([m >= obs - 1e-12 for m in means]))


def _one_sided(mean: float, se: float, df: float, null: float) -> tuple[float, float]:
    """(p of H0: mu <= null, p of H0: mu >= null) for a t statistic."""
    if se == 0 or not np.isfinite(se):
        return (0.0, 1.0) if mean > null else (1.0, 0.0) if mean < null else (1.0, 1.0)
    t = (mean - null) / se
    return float(stats.t.sf(t, df)), float(stats.t.cdf(t, df))


def compare(a: Side, b: Side | None, kind: str, margin: float = 0.0, lower: bool = False,
            target: float = 1.0) -> Test:
    """Test one claim (module docstring, rules 1-3). ``b`` is None for ``at_least``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of claim {kind!r} (one of {', '.join(KINDS)})")
    sign = -1.0 if lower else 1.0
    note = ""
    if kind == "at_least":
        x = np.asarray(a.values, float)
        design, n, diff, sd = "one-sample", len(x), float(x.mean() - target), float(x.std(ddof=1))
        se, df, p_sf = sd / math.sqrt(n), n - 1, float("nan")
    else:
        common = sorted(set(a.seeds) & set(b.seeds))
        if len(common) >= 3:
            da, db = a.by_seed(), b.by_seed()
            d = np.array([da[s] - db[s] for s in common])
            design, n, diff, sd = "paired", len(d), float(d.mean()), float(d.std(ddof=1))
            se, df, p_sf = sd / math.sqrt(n), n - 1, signflip_p(d)
            dropped = len(a) + len(b) - 2 * n
            note = f"{dropped} run(s) without a partner seed left out" if dropped else ""
        else:
            x, y = np.asarray(a.values, float), np.asarray(b.values, float)
            va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
            design, n, diff = "welch", min(len(x), len(y)), float(x.mean() - y.mean())
            se = math.sqrt(va + vb)
            df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)) if se > 0 else len(x) + len(y) - 2
            sd, p_sf = math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2), float("nan")
            note = f"unpaired (Welch): the sides share {len(common)} seed(s)"
    half = stats.t.ppf(1 - ALPHA / 2, df) * se if se > 0 else 0.0
    p_t = float(2 * stats.t.sf(abs(diff) / se, df)) if se > 0 else (0.0 if diff else 1.0)
    gain = sign * diff
    if kind == "better":
        p_for, p_against = _one_sided(gain, se, df, 0.0)
    elif kind == "same":
        lo_for, _ = _one_sided(gain, se, df, -margin)    # H0: gain <= -margin
        _, hi_for = _one_sided(gain, se, df, margin)     # H0: gain >= +margin
        _, lo_against = _one_sided(gain, se, df, -margin)
        hi_against, _ = _one_sided(gain, se, df, margin)
        p_for, p_against = max(lo_for, hi_for), min(lo_against, hi_against)
    else:  # no_worse, at_least: gain (or mean - target) > -margin
        p_for, p_against = _one_sided(gain, se, df, -margin)
    return Test(design, n, diff, (diff - half, diff + half), sd, p_t, p_sf, p_for, p_against, note)


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(ps) if not math.isnan(p)]
    m, out, running = len(idx), [float("nan")] * len(ps), 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: ps[i])):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def verdict(test: Test | None, p_holm: float, n_a: int, n_b: int | None) -> str:
    """Rule 4 of the module docstring."""
    if n_a == 0 or n_b == 0:
        return "not yet run"
    if min(n_a, n_b if n_b is not None else n_a) < 3:
        return f"inconclusive (n = {min(n_a, n_b if n_b is not None else n_a)} < 3)"
    if test is None or math.isnan(p_holm) or p_holm >= ALPHA:
        return "inconclusive"
    return "reproduced" if test.p_for < test.p_against else "not reproduced"


def power(n: int, effect: float, sd: float, alpha: float, design: str, kind: str, margin: float) -> float:
    """Power of the claim's decision at ``n`` pairs (or runs per side), the effect and sd taken as true."""
    if n < 2 or sd <= 0:
        return 0.0
    se = sd / math.sqrt(n) if design != "welch" else sd * math.sqrt(2 / n)
    df = n - 1 if design != "welch" else 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, df)  # the decision is two-sided (rule 3)
    if kind == "same":  # TOST: both bounds rejected (a conservative lower bound of the power)
        lo = stats.nct.sf(crit, df, (effect + margin) / se)
        hi = stats.nct.cdf(-crit, df, (effect - margin) / se)
        return max(0.0, float(lo + hi - 1))
    shift = margin if kind in ("no_worse", "at_least") else 0.0
    ncp = abs(effect + shift) / se  # decided either way: the side the measured effect lies on
    return float(stats.nct.sf(crit, df, ncp))


def seeds_needed(test: Test, alpha: float, kind: str, margin: float, lower: bool = False) -> int | None:
    """Rule 5: the smallest n <= MAX_SEEDS with 80% power, or None (not reachable)."""
    effect = -test.diff if lower else test.diff
    for n in range(3, MAX_SEEDS + 1):
        if power(n, effect, test.sd, alpha, test.design, kind, margin) >= POWER:
            return n
    return None
