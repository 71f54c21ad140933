"""The Fig. 2 toy (fvq/toy.py): orderings the paper claims, determinism. No tuned numbers, no timings
(speed belongs in benchmarks/: a wall-clock bound failed here under two test workers)."""
import numpy as np
import pytest

from fvq.toy import TRAJECTORY_VARIANT, TSNE_VARIANT, run_toy


def test_plain_ste_is_deterministic_for_a_seed():
    a, b = run_toy("none", seed=3), run_toy("none", seed=3)
    assert np.array_equal(a.z_e, b.z_e) and np.array_equal(a.z_q, b.z_q) and a.usage == b.usage
    assert not np.array_equal(a.z_e, run_toy("none", seed=4).z_e)
    assert a.z_e.shape == (TRAJECTORY_VARIANT["steps"] + 1, 2) and a.distance.shape == (len(a.z_e),)


def test_unknown_projector_is_a_clear_error():
    with pytest.raises(ValueError, match="projector='ste' is not one of none, linear, mlp, vqbridge"):
        run_toy("ste")


def test_vqbridge_keeps_z_q_closer_and_uses_more_codes_than_plain_ste():
    pytest.importorskip("fvq.vq.projectors")
    plain, bridge = (run_toy(k, seed=0, **TSNE_VARIANT) for k in ("none", "vqbridge"))
    assert bridge.final_distance < plain.final_distance      # Challenge 1: smaller STE error
    assert bridge.usage > plain.usage                         # Challenge 3: sparse codebook gradients
    assert bridge.usage == pytest.approx(bridge.used.mean())


def test_plain_ste_spirals_while_vqbridge_follows_z_e():
    pytest.importorskip("fvq.vq.projectors")
    plain, bridge = (run_toy(k, seed=0, **TRAJECTORY_VARIANT) for k in ("none", "vqbridge"))
    assert plain.turns > bridge.turns                         # Fig. 2 left: spiral vs piecewise-linear path
    early = len(plain.distance) // 8                          # "reducing their distance already early"
    assert bridge.distance[:early].mean() < plain.distance[:early].mean()
    deterministic = run_toy("vqbridge", seed=0, **TRAJECTORY_VARIANT)
    assert np.array_equal(deterministic.z_q, bridge.z_q)
