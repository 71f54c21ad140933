"""Projectors: VQBridge structure (eq. 8-11), presets, bad input, Table 10 FLOPs."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fvq.vq.flops import projector_flops, projector_params
from fvq.vq.projectors import PRESETS, VQBridge, build_projector, from_preset


@pytest.mark.parametrize("kind, bridge", [("identity", "vit"), ("linear", "vit"), ("mlp", "vit"), ("vqbridge", "vit"),
                                          ("vqbridge", "dit")])
@pytest.mark.parametrize("init", ["zero", "small", "default"])
def test_maps_k_by_d_to_k_by_d(kind, bridge, init):
    p = build_projector(kind, 64, 16, group=4, latent_dim=32, init=init, bridge=bridge)
    assert p(torch.randn(64, 16)).shape == (64, 16)


def test_vqbridge_facts():
    b = VQBridge(64, 16, group=4)
    assert len(b.blocks) == 2 and b.blocks[0].attn.num_heads == 4
    assert b.compress.in_features == 4 * 16 and b.expand.out_features == 4 * 16
    assert not any(p.numel() for n, p in b.named_parameters() if "norm" in n)  # LayerNorms without affine
    assert b.expand.weight.abs().sum() == 0 and b.expand.bias.abs().sum() == 0  # official zero init
    assert b.blocks[0].mlp[0].out_features == 2 * 16  # MLP ratio 2


def test_groups_are_contiguous_codes():
    """Changing one code only changes the token of its own group before the ViT (eq. 8)."""
    b = VQBridge(16, 4, group=4, init="default")
    c = torch.randn(16, 4)
    c2 = c.clone()
    c2[5] += 1.0  # group 1 = codes 4..7
    h = b.norm_in(b.compress(c.reshape(4, 16)))
    h2 = b.norm_in(b.compress(c2.reshape(4, 16)))
    changed = (h - h2).abs().sum(1) > 0
    assert changed.tolist() == [False, True, False, False]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name):
    k = 1024
    assert from_preset(name, k, 32)(torch.randn(k, 32)).shape == (k, 32)


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="vqbridge", num_codes=100, dim=16, group=16), "group=16 must divide num_codes=100"),
    (dict(kind="vqbridge", num_codes=64, dim=16, latent_dim=30), "latent_dim=30 must be divisible by heads=4"),
    (dict(kind="transformer", num_codes=64, dim=16), "is not one of identity, none, linear, mlp, vqbridge"),
    (dict(kind="vqbridge", num_codes=64, dim=16, init="he"), "init='he' is not one of zero, small, default"),
    (dict(kind="vqbridge", num_codes=64, dim=16, depth=0), "depth=0 must be a positive int"),
    (dict(kind="linear", num_codes=0, dim=16), "num_codes=0"),
    (dict(kind="vqbridge", num_codes=64, dim=16, bridge="unet"), "bridge='unet' is not one of vit, dit"),
    (dict(kind="vqbridge", num_codes=60, dim=16, group=4, bridge="dit"), "num_codes=60 must be a perfect square"),
])
def test_bad_input(kwargs, words):
    with pytest.raises(ValueError) as e:
        build_projector(kwargs.pop("kind"), **kwargs)
    assert words in str(e.value)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown projector preset 'big'"):
        from_preset("big", 64, 16)


@pytest.mark.parametrize("kind, k, group, paper", [
    ("linear", 16384, 16, 1.07e9), ("linear", 262144, 64, 17.18e9),
    ("mlp", 16384, 16, 5.37e9), ("mlp", 262144, 64, 85.90e9),
    ("vqbridge", 16384, 16, 4.30e9), ("vqbridge", 262144, 64, 55.89e9),
])
def test_table10_within_one_percent(kind, k, group, paper):
    assert projector_flops(kind, k, 256, group=group) == pytest.approx(paper, rel=0.01)


@pytest.mark.parametrize("kind", ["linear", "mlp", "vqbridge"])
def test_flop_count_matches_measurement(kind):
    """FlopCounterMode counts 2 FLOPs per multiply-add on the real module."""
    p = build_projector(kind, 256, 32, group=4)
    with FlopCounterMode(display=False) as fc:
        p(torch.randn(256, 32))
    want = projector_flops(kind, 256, 32, group=4)
    if kind == "vqbridge":  # the CPU fused attention kernel is not counted by FlopCounterMode: add QK^T, AV
        tokens = 256 // 4
        measured_attn = 2 * 2 * tokens * tokens * 32  # depth 2 x (QK^T + AV) x T^2 d'
        want -= measured_attn
    assert fc.get_total_flops() / 2 == pytest.approx(want, rel=0.01)
    assert projector_params(kind, 256, 32, group=4) == sum(x.numel() for x in p.parameters())


# What the official code's projectors do at step 0 (tokenizer/tokenizer_image/qbridge_ViT.py): the bridge's
# last Linear starts at exactly zero (every code identical); SimVQ and MLP-5 keep PyTorch's default init and
# map the raw codebook (uniform in +-1/K) to distinct codes. "small" is the cpu preset's bridge.
@pytest.mark.parametrize("projector,init,distinct", [
    ("none", "small", True), ("linear", "default", True), ("mlp", "default", True),
    ("vqbridge", "zero", False), ("vqbridge", "small", True),
])
def test_projected_codebook_at_step_0_from_a_config(projector, init, distinct):
    from fvq.build import build_quantizer
    from fvq.core.config import apply_overrides, base_config

    torch.manual_seed(0)
    cfg = apply_overrides(base_config("cpu"), {"quant.projector": projector, "quant.init": init})
    q = build_quantizer(cfg)
    with torch.no_grad():
        c = (q.embedding if q.projector is None else q.projector(q.embedding)).detach()
    spread = float((c - c.mean(0)).norm(dim=1).mean())
    n_distinct = torch.unique(c, dim=0).shape[0]
    if distinct:
        assert spread > 0 and n_distinct == cfg.quant.codebook_size
    else:
        assert spread == 0 and n_distinct == 1


def test_baselines_are_built_as_the_official_ones():
    """SimVQ / MLP-5 keep PyTorch's init except the last layer's ``init``; MLP-5 has ReLU; the bridge's ViT
    has LayerNorm eps 1e-6 and tanh-GELU (official qbridge_ViT.py)."""
    mlp = build_projector("mlp", 64, 16, mlp_layers=5, init="zero")
    assert [type(m).__name__ for m in mlp.net] == ["Linear", "ReLU"] * 4 + ["Linear"]
    assert mlp.net[-1].weight.abs().sum() == 0 and mlp.net[0].bias.abs().sum() > 0  # init only on the last
    lin = build_projector("linear", 64, 16, init="default")
    assert lin.proj.bias.abs().sum() > 0  # PyTorch's default (no init call in the official baseline)
    b = VQBridge(64, 16, group=4)
    assert b.norm_in.eps == b.blocks[0].norm1.eps == b.norm_out.eps == 1e-6
    assert b.blocks[0].mlp[1].approximate == "tanh"
