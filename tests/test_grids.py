"""Every grid expands, resolves at both scales and has no duplicate signature; identity rules."""
import json
import os

import pytest

from fvq.core.config import Config, ConfigError, to_flat_dict
from sweeps import grids
from sweeps.identity import IdentityError, check_stored, science_delta, signature
from sweeps.scale import resolve, to_scale

ALL = grids.names()


def test_every_paper_ablation_has_a_grid():
    assert set(ALL) >= {"latent_dim", "depth", "patch_size", "codebook_size", "channel", "annealing",
                        "projector", "schedule", "scaling"}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", ALL)
def test_grid_expands_and_resolves(name, scale):
    mod = grids.load(name)
    assert mod.__doc__ and "python sweeps/run.py grid=" in mod.__doc__  # names its command
    points = list(mod.points())
    assert points, name
    sigs = [signature(resolve(p, scale)) for p in points]
    assert len(set(sigs)) == len(sigs), f"duplicate signatures in grid {name}"
    for p in points:
        cfg = resolve(p, scale)
        assert cfg.scale == scale


def test_unknown_grid_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown grid 'nope' \\(valid grids: annealing,"):
        grids.load("nope")


def test_cpu_shrink_rule_keeps_k_and_p_together():
    pts = [to_scale(p, "cpu") for p in grids.load("patch_size").points()]
    pairs = {(p["quant.codebook_size"], p["quant.group"]) for p in pts}
    assert pairs == {(256, 1), (256, 4), (256, 16), (1024, 1), (1024, 4), (1024, 16)}
    assert all(p["optim.steps"] == 800 for p in pts)
    assert to_scale({"epochs": 120}, "cpu")["optim.steps"] == 2400
    assert to_scale({"model.arch": "vq-8"}, "cpu")["model.arch"] == "cpu-2"
    assert to_scale({"epochs": 40}, "paper")["optim.steps"] == 40 * 1_281_167 // 128


def test_paper_baselines_keep_default_init_and_the_bridge_starts_at_zero():
    inits = {p["quant.projector"]: resolve(p, "paper").quant.init for p in grids.load("projector").points()}
    assert inits == {"linear": "default", "mlp": "default", "vqbridge": "zero"}
    cpu = {p["quant.projector"]: resolve(p, "cpu").quant.init for p in grids.load("projector").points()}
    assert cpu == {"linear": "default", "mlp": "default", "vqbridge": "small"}  # the logged value is what runs


def test_reference_point_is_shared_between_grids():
    ref_depth = {signature(resolve(p, "cpu")) for p in grids.load("depth").points()}
    ref_dim = {signature(resolve(p, "cpu")) for p in grids.load("latent_dim").points()}
    assert ref_depth & ref_dim == {signature(resolve({}, "cpu"))}


def test_signature_ignores_non_science_keys_and_sees_scale():
    a = resolve({}, "cpu")
    b = resolve({}, "cpu", {"threads": 2, "log.every": 5, "eval.batch": 8, "eval.every": 100})
    assert signature(a) == signature(b)
    assert signature(resolve({}, "paper")) != signature(a)
    assert science_delta(Config()) == {}


# Pinned: a change here means every stored run would be orphaned. Change only on purpose.
GOLDEN = {
    "cpu-reference": ({}, "cpu"),
    "cpu-patch-4k-p4": ({"quant.codebook_size": 4096, "quant.group": 4}, "cpu"),
    "paper-reference": ({}, "paper"),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_signatures(name, golden_signatures):
    point, scale = GOLDEN[name]
    assert signature(resolve(point, scale)) == golden_signatures[name]


@pytest.fixture
def golden_signatures():
    return {"cpu-reference": "bf21a9e8fb", "cpu-patch-4k-p4": "153b4b51de", "paper-reference": "da4041c7f3"}


def test_changed_default_is_an_error(tmp_path):
    cfg = resolve({}, "cpu")
    d = tmp_path / signature(cfg)
    d.mkdir()
    stored = to_flat_dict(cfg)
    stored["quant.beta"] = 0.5  # as if the default had been 0.5 when this run was made
    (d / "config.json").write_text(json.dumps(stored))
    with pytest.raises(IdentityError, match=r"quant.beta \(stored 0.5, now 0.25\)"):
        check_stored(cfg, str(d))
    os.unlink(d / "config.json")
    check_stored(cfg, str(d))  # nothing stored: fine


def test_generator_signed_apart_and_its_changed_default_is_an_error(tmp_path):
    """A generator run: salted apart from any tokenizer delta; a stored final.json of another science under
    its signature is refused, its non-science keys (tokenizer path, threads) are not compared."""
    from dataclasses import asdict

    from fvq.generation.ar import ar_overrides
    from sweeps.identity import ar_signature, check_stored_ar, sign

    cfg = ar_overrides({"model": "tiny", "tokenizer": str(tmp_path / "tok")})
    assert ar_signature("bf21a9e8fb", cfg) != sign({"tokenizer": "bf21a9e8fb"})
    d = tmp_path / f"gen-{ar_signature('bf21a9e8fb', cfg)}"
    d.mkdir()
    check_stored_ar(cfg, str(d))  # nothing stored: fine
    stored = {**asdict(cfg), "tokenizer": "/elsewhere", "threads": 4}
    (d / "final.json").write_text(json.dumps({"config": stored}))
    check_stored_ar(cfg, str(d))
    (d / "final.json").write_text(json.dumps({"config": {**stored, "temperature": 0.9}}))
    with pytest.raises(IdentityError, match=r"ar.temperature \(stored 0.9, now 1.0\)"):
        check_stored_ar(cfg, str(d))


def test_local_launcher_orders_longest_first():
    """est_cost (steps x fvq.vq.flops.train_step_flops) ranks the patch-size grid as measured on 2 cores: the
    K=1,024 p=1 bridge (1,024 tokens, ~0.8 s/step) before p=4 (~0.38 s) before K=256 p=16 (~0.28 s)."""
    from sweeps.launcher import est_cost

    cost = {(c.quant.codebook_size, c.quant.group): est_cost(c)
            for c in (resolve(p, "cpu") for p in grids.load("patch_size").points())}
    assert cost[(1024, 1)] > 2 * cost[(1024, 4)] and cost[(1024, 4)] > cost[(256, 16)] > 0
    assert est_cost(resolve({"epochs": 120}, "cpu")) == pytest.approx(3 * est_cost(resolve({}, "cpu")))
    assert est_cost(None) == 0.0


def test_local_launch_order_longest_or_shortest_first(tmp_path, monkeypatch):
    """launch_local submits in est_cost order (longest first by default, shortest first when asked). submitit
    is replaced by a recorder here: only the order is under test (real local launches: tests/test_sweeps.py)."""
    import sweeps.launcher as L
    from sweeps.plan import Planned

    pts = [resolve(p, "cpu") for p in grids.load("patch_size").points()]
    plans = [Planned(str(i), str(tmp_path / str(i)), {}, "missing", "", c) for i, c in enumerate(pts)]
    for p in plans:
        os.makedirs(p.run_dir)
    for shortest in (False, True):
        seen = []

        class Job:
            job_id = "0"

            def done(self):
                return True

            def result(self):
                return None

        class Exec:
            def __init__(self, **kw):
                pass

            def update_parameters(self, **kw):
                pass

            def submit(self, fn):
                seen.append(fn.run_dir)
                return Job()

        monkeypatch.setattr(L.submitit, "AutoExecutor", Exec)
        monkeypatch.setattr(L.time, "sleep", lambda s: None)
        monkeypatch.setattr(L, "warm_fid_references", lambda *a, **k: None)  # no Inception pass here
        L.launch_local(plans, str(tmp_path), 1, lambda p: p, shortest_first=shortest)
        costs = [L.est_cost(pts[int(os.path.basename(d))]) for d in seen]
        assert costs == sorted(costs, reverse=not shortest) and len(seen) == 6
