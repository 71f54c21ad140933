"""The seed axis of a grid launch (sweeps/options.py parse_seeds, sweeps/plan.py plan_grids)."""
import pytest

from fvq.core.config import ConfigError
from sweeps.options import parse, parse_seeds
from sweeps.plan import plan_grids


def test_seed_counts_and_lists():
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("1") == (0,)
    assert parse_seeds("0,4,7") == (0, 4, 7)


@pytest.mark.parametrize("argv, words", [
    (["grid=depth", "seeds=0"], "seeds=0: the number of seeds must be >= 1"),
    (["grid=depth", "seeds=abc"], "seeds='abc': expected a count N >= 1"),
    (["grid=depth", "seeds=-1"], "expected a count N >= 1"),
    (["grid=depth", "seeds=1,1"], "seeds=1,1: a seed is given twice"),
    (["grid=depth", "seeds=3", "seed=1"], "seed given twice: seeds=3 and seed=1"),
    (["search=vqbridge_lr", "seeds=3"], "a seed axis is for grid launches"),
])
def test_bad_seeds_are_one_line_errors(argv, words):
    with pytest.raises(ConfigError) as e:
        parse([*argv, "launcher=local"])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_seed_is_part_of_the_identity_and_seed_0_keeps_the_signature(tmp_path):
    root = str(tmp_path / "runs")
    plain = plan_grids("annealing", "cpu", {}, root)
    seeded = plan_grids("annealing", "cpu", {}, root, seeds=(0, 1, 2))
    assert len(seeded) == 3 * len(plain) and len({p.sig for p in seeded}) == len(seeded)
    assert {p.sig for p in plain} <= {p.sig for p in seeded}  # seed 0 = today's runs
    assert all(p.name.endswith(f"seed={p.cfg.seed}") for p in seeded)
    assert {p.cfg.seed for p in seeded} == {0, 1, 2}
