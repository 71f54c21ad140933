"""Learning annealing values at key steps (Table 6, Table 9)."""
import pytest

from fvq.core.config import SchedCfg
from fvq.core.schedule import lr_factor, phases

T = 1000


def test_table6_phases():
    warm, hold = phases(T, SchedCfg())
    assert warm == 100                     # warmup(0.1)
    assert hold == 100 + 270               # baselr(0.3) of the remaining 90%


@pytest.mark.parametrize("step, want", [
    (0, 0.005), (50, 0.005 + 0.995 * 0.5), (100, 1.0), (369, 1.0), (370, 1.0), (T - 1, 0.01),
])
def test_anneal_values(step, want):
    assert lr_factor(step, T, SchedCfg()) == pytest.approx(want, abs=1e-9)


def test_linear_decay_is_monotone_and_ends_at_one_percent():
    vals = [lr_factor(s, T, SchedCfg()) for s in range(370, T)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert vals[-1] == pytest.approx(0.01)
    mid = lr_factor(370 + (T - 1 - 370) // 2, T, SchedCfg())
    assert mid == pytest.approx(0.505, abs=0.002)


def test_variants():
    assert all(lr_factor(s, T, SchedCfg(kind="constant")) == 1.0 for s in range(0, T, 37))
    no_warm = SchedCfg(warmup=0.0)
    assert lr_factor(0, T, no_warm) == 1.0 and phases(T, no_warm) == (0, 300)
    cos = SchedCfg(kind="cosine")
    assert lr_factor(100, T, cos) == 1.0 and lr_factor(T - 1, T, cos) == pytest.approx(0.01)
    # cosine stays above linear in the first half of the decay
    assert lr_factor(500, T, cos) > lr_factor(500, T, SchedCfg())
