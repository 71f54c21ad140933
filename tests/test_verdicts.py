"""analysis/verdicts.py on constructed data whose answer is known: pairing, Welch fallback, Holm, TOST,
non-inferiority, one-sample usage claims, and the seeds a claim needs."""
import math

import numpy as np
import pytest

from analysis.verdicts import Side, compare, holm, power, seeds_needed, signflip_p, verdict


def side(values, seeds=None):
    return Side(tuple(seeds if seeds is not None else range(len(values))), tuple(values))


def test_pairing_cancels_noise_shared_by_seed():
    # a seed effect of +-1 dB shared by both sides, a true gain of 0.3 dB with 0.02 dB of own noise
    seed_effect = np.array([1.0, -1.0, 0.5, -0.5, 0.0])
    own = np.array([0.01, -0.02, 0.0, 0.02, -0.01])
    a, b = side(list(27 + seed_effect + 0.3 + own)), side(list(27 + seed_effect))
    paired = compare(a, b, "better")
    assert paired.design == "paired" and paired.n == 5
    assert paired.p_t < 1e-4 and paired.ci[0] > 0.25  # the gain is resolved
    unpaired = compare(a, side(b.values, seeds=range(10, 15)), "better")  # no shared seed
    assert unpaired.design == "welch" and "share 0 seed" in unpaired.note
    assert unpaired.p_t > 0.5  # the seed noise hides it


def test_mismatched_seeds_pair_what_matches_and_fall_back_to_welch_below_three():
    a, b = side([1.0, 2.0, 3.0, 4.0], seeds=[0, 1, 2, 3]), side([0.5, 1.4, 2.6], seeds=[0, 1, 2])
    t = compare(a, b, "better")
    assert t.design == "paired" and t.n == 3 and "1 run(s) without a partner" in t.note
    t = compare(a, side([0.5, 1.4, 2.6], seeds=[0, 1, 7]), "better")
    assert t.design == "welch" and "share 2 seed" in t.note


def test_signflip_is_exact():
    assert signflip_p(np.array([1.0, 2.0, 3.0])) == 0.25  # only all-plus and all-minus reach the mean
    assert signflip_p(np.array([1.0, -1.0, 0.5, 0.2])) == 1.0 or signflip_p(np.array([1.0, -1.0, 0.5, 0.2])) > 0.5


def test_holm_adjusts_in_order_and_flips_a_marginal_claim():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, float("nan")])[1])
    marginal = compare(side([1.2, 1.3, 1.1, 1.25]), side([1.0, 1.0, 1.0, 1.0]), "better")
    assert marginal.p_decision < 0.05  # alone: reproduced
    assert verdict(marginal, holm([marginal.p_decision])[0], 4, 4) == "reproduced"
    family = holm([marginal.p_decision] + [0.5] * 9)[0]  # nine more claims tested beside it
    assert verdict(marginal, family, 4, 4) == "inconclusive"


def test_tost_accepts_a_tight_null_and_refuses_a_wide_one():
    base = [27.0, 26.2, 27.5, 26.8, 27.1]
    tight = compare(side([v + d for v, d in zip(base, [0.02, -0.03, 0.01, 0.0, -0.01])]), side(base), "same", 0.3)
    assert verdict(tight, tight.p_decision, 5, 5) == "reproduced"
    wide = compare(side([v + d for v, d in zip(base, [0.9, -0.8, 0.6, -0.7, 0.1])]), side(base), "same", 0.3)
    assert verdict(wide, wide.p_decision, 5, 5) == "inconclusive"  # no difference seen is not "no effect"
    far = compare(side([v + 1.0 + d for v, d in zip(base, [0.02, -0.03, 0.01, 0.0, -0.01])]), side(base), "same", 0.3)
    assert verdict(far, far.p_decision, 5, 5) == "not reproduced"


def test_no_worse_and_lower_is_better():
    b = [27.0, 26.2, 27.5, 26.8]
    slightly_worse = compare(side([v - 0.05 for v in b]), side(b), "no_worse", 0.3)
    assert verdict(slightly_worse, slightly_worse.p_decision, 4, 4) == "reproduced"
    much_worse = compare(side([v - 1.0 + 0.01 * i for i, v in enumerate(b)]), side(b), "no_worse", 0.3)
    assert verdict(much_worse, much_worse.p_decision, 4, 4) == "not reproduced"
    gfid = compare(side([300.0, 301.0, 302.5]), side([310.0, 311.5, 312.0]), "better", lower=True)
    assert gfid.p_for < gfid.p_against  # a lower gFID is the better side


def test_usage_held_to_its_ceiling():
    full = compare(side([0.995, 0.998, 0.997]), None, "at_least", 0.02, target=1.0)
    assert full.design == "one-sample" and verdict(full, full.p_decision, 3, None) == "reproduced"
    low = compare(side([0.70, 0.72, 0.69]), None, "at_least", 0.02, target=1.0)
    assert verdict(low, low.p_decision, 3, None) == "not reproduced"
    assert verdict(None, float("nan"), 2, None) == "inconclusive (n = 2 < 3)"
    assert verdict(None, float("nan"), 0, 3) == "not yet run"


def test_seeds_needed_follow_the_measured_noise():
    a, b = side([27.3, 26.5, 27.9]), side([27.0, 26.0, 27.8])  # +0.3 dB, paired sd ~0.2
    t = compare(a, b, "better")
    n = seeds_needed(t, 0.05, "better", 0.0)
    assert n is not None and 3 < n <= 20
    assert power(n, t.diff, t.sd, 0.05, "paired", "better", 0.0) >= 0.8
    assert power(n - 1, t.diff, t.sd, 0.05, "paired", "better", 0.0) < 0.8
    noisy = compare(side([27.3, 25.5, 28.9]), side([27.0, 26.9, 27.1]), "better")  # effect << sd
    assert seeds_needed(noisy, 0.05, "better", 0.0) is None
    with pytest.raises(ValueError, match="unknown kind"):
        compare(a, b, "bigger")
