"""Typed overrides, validation, and the scale presets (fvq/core/config.py)."""
import re

import pytest

from fvq.core.config import (Config, ConfigError, all_keys, apply_overrides, base_config, diff, from_flat_dict,
                             to_flat_dict)


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["quant.group=16", "optim.base_lr=2e-4", "eval.fid=false",
                                     "quant.codebook_size=16_384"])
    assert cfg.quant.group == 16 and cfg.optim.base_lr == 2e-4 and cfg.eval.fid is False
    assert cfg.quant.codebook_size == 16384
    assert apply_overrides(Config(), {"optim.base_lr": 1}).optim.base_lr == 1.0  # int -> float is fine


@pytest.mark.parametrize("bad, words", [
    (["quant.grop=3"], "unknown config key 'quant.grop' (did you mean quant.group"),
    (["quant.group=abc"], "quant.group='abc': expected int"),
    (["eval.fid=maybe"], "expected bool"),
    (["quant.projector=foo"], "quant.projector='foo' is not one of none, linear, mlp, vqbridge"),
    (["quant"], "not key=value"),
    (["quant.group=0"], "quant.group=0 must be > 0"),
    (["sched.warmup=1.5"], "must be in [0, 1]"),
    (["data.source=imagefolder"], "needs data.path"),
    (["eval.images=2000"], "exceeds data.val_size"),
])
def test_bad_overrides_are_one_line_errors(bad, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), bad)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_grid_dict_values_are_type_checked():
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(Config(), {"quant.group": 2.5})
    with pytest.raises(ConfigError, match="expected bool"):
        apply_overrides(Config(), {"eval.fid": 1})


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_flat_round_trip(scale):
    cfg = base_config(scale)
    assert from_flat_dict(to_flat_dict(cfg)) == cfg
    assert set(to_flat_dict(cfg)) == set(all_keys())


def test_paper_preset_matches_table6():
    p = base_config("paper")
    assert p.optim.base_lr == 1e-4 and p.optim.batch == 128 and p.lr == 1e-4
    assert (p.optim.beta1, p.optim.beta2) == (0.9, 0.95)
    assert p.quant.beta == 0.25 and p.loss.perceptual_weight == 1.0 and p.loss.disc_weight == 0.5
    assert (p.sched.warmup, p.sched.warmup_start, p.sched.constant, p.sched.final) == (0.1, 0.005, 0.3, 0.01)
    assert p.quant.codebook_size == 16384 and p.quant.group == 16 and p.model.channel == 256
    assert p.optim.steps == 40 * 1_281_167 // 128
    assert set(diff(Config(), p)) >= {"model.arch", "quant.codebook_size"}


def test_unknown_scale():
    with pytest.raises(ConfigError, match="scale='huge' is not one of cpu, paper"):
        base_config("huge")


def test_frozen():
    with pytest.raises(Exception):
        Config().seed = 3


def test_every_command_line_parses_key_value_through_one_parser(capsys):
    """Harness options, the generator's ar. keys and the analysis CLIs: typed by their dataclass fields, one
    truthy rule, unknown keys with the closest valid ones (fvq/core/keyvalue.py)."""
    from dataclasses import dataclass

    from analysis import build, calibration
    from fvq.core.keyvalue import split, typed
    from fvq.generation.ar import ar_overrides
    from sweeps.options import parse

    @dataclass(frozen=True)
    class A:
        n: int = 1
        on: bool = False

    assert typed(A, split(["n=1_000", "on=yes", "n=3"])) == A(3, True)  # last one wins
    for bad, words in [(["n=x"], "n='x': expected int"), (["m=1"], "unknown key 'm' (valid: n, on)"),
                       (["n"], "is not key=value")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            typed(A, split(bad))
    assert parse(["grid=depth", "dry=on"])[0].dry is True
    with pytest.raises(ConfigError, match="unknown AR override 'stps'"):
        ar_overrides(["stps=3"])
    assert build.main(["tabels=x"]) == 2 and "did you mean tables" in capsys.readouterr().err
    assert calibration.main(["comit=abc"]) == 2 and "did you mean commit" in capsys.readouterr().err
