"""The DiT-style VQBridge (quant.bridge=dit, the official scripts' qbridge.py) beside the ViT one (eq. 8-11):
zero start, patch layout, export, gradients, preset sizes, FLOPs, bad input, signatures."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fvq.core.config import ConfigError, apply_overrides, base_config
from fvq.vq.flops import projector_flops, projector_params
from fvq.vq.projectors import PRESETS, DiTBridge, build_projector, from_preset, sincos_2d
from fvq.vq.quantize import VectorQuantizer


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight away from its init (adaLN-Zero and the zero last layer make a fresh DiT trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def test_zero_init_projects_every_code_to_exactly_zero():
    """qbridge.py zeroes every adaLN Linear and the last Linear: f(C) starts at exactly 0, whatever C."""
    b = build_projector("vqbridge", 1024, 32, group=4, bridge="dit", init="zero")
    assert isinstance(b, DiTBridge)
    assert torch.equal(b(torch.randn(1024, 32)), torch.zeros(1024, 32))
    for blk in b.blocks:  # adaLN-Zero: every block starts as the identity
        assert blk.ada[-1].weight.abs().sum() == 0 and blk.ada[-1].bias.abs().sum() == 0
    assert b.ada_out[-1].weight.abs().sum() == 0


@pytest.mark.parametrize("init, distinct", [("zero", False), ("small", True)])
def test_projected_codebook_at_step_0_from_a_config(init, distinct):
    from fvq.build import build_quantizer

    torch.manual_seed(0)
    cfg = apply_overrides(base_config("cpu"), {"quant.bridge": "dit", "quant.init": init})
    q = build_quantizer(cfg)
    assert isinstance(q.projector, DiTBridge)
    with torch.no_grad():
        c = q.codebook()
    if distinct:
        assert torch.unique(c, dim=0).shape[0] == cfg.quant.codebook_size
    else:
        assert torch.equal(c, torch.zeros_like(c))


def test_a_code_changes_only_the_token_of_its_patch():
    """The codebook is a sqrt(K) x sqrt(K) grid, code n at (n // sqrt K, n % sqrt K); a token is a P x P patch
    (P runs of P codes), unlike eq. 8's p contiguous codes."""
    k, d, side, patch = 64, 4, 8, 2  # 4 x 4 tokens of 2 x 2 codes
    b = DiTBridge(k, d, latent_dim=8, group=patch * patch, heads=2, init="default")
    c = torch.randn(k, d)
    base = b.embed(c)
    for n in range(k):
        c2 = c.clone()
        c2[n] += 1.0
        changed = ((b.embed(c2) - base).abs().sum(-1) > 0)[0]
        token = (n // side // patch) * (side // patch) + (n % side) // patch
        assert changed.nonzero().flatten().tolist() == [token], n


def test_unpatchify_returns_each_token_to_its_own_patch():
    """At init the blocks are the identity (adaLN-Zero), so a code moves only the codes of its own patch."""
    k, d, side, patch = 256, 4, 16, 4
    b = DiTBridge(k, d, latent_dim=16, group=patch * patch, heads=4, init="default")
    c = torch.randn(k, d)
    n = 5 * side + 9  # row 5, column 9: the patch of rows 4-7, columns 8-11
    c2 = c.clone()
    c2[n] += 1.0
    moved = ((b(c2) - b(c)).abs().sum(1) > 0).reshape(side, side)
    want = torch.zeros(side, side, dtype=torch.bool)
    want[4:8, 8:12] = True
    assert torch.equal(moved, want)


def test_position_embedding_is_the_fixed_2d_sincos_table():
    width, side = 16, 3
    pos = sincos_2d(width, side)
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 4)
    for r in range(side):
        for col in range(side):
            a, b = col * omega, r * omega  # first half the column, second half the row (qbridge.py:283-297)
            want = torch.cat([a.sin(), a.cos(), b.sin(), b.cos()]).float()
            assert torch.allclose(pos[r * side + col], want, atol=1e-7)
    b = DiTBridge(64, 8, latent_dim=16, group=4)
    assert "pos" not in dict(b.named_parameters()) and torch.equal(b.pos[0], sincos_2d(16, 4))


@pytest.mark.parametrize("bridge", ["vit", "dit"])
@pytest.mark.parametrize("l2", [False, True])
def test_export_equals_forward(bridge, l2):
    """Section 3.2: the baked codebook is f(C); without the projector the quantizer gives the same outputs."""
    torch.manual_seed(1)
    q = VectorQuantizer(64, 16, randomised(build_projector("vqbridge", 64, 16, group=4, bridge=bridge)), l2_norm=l2)
    plain = q.export()
    assert plain.projector is None
    assert torch.equal(plain.embedding.detach(), q.codebook().detach())
    z = torch.randn(3, 16, 4, 4)
    a, b = q(z), plain(z)
    assert torch.equal(a.indices, b.indices)
    assert torch.allclose(a.z_q, b.z_q, atol=1e-6)
    assert torch.allclose(q.decode_indices(a.indices), plain.decode_indices(a.indices), atol=1e-6)


def test_gradients_flow_from_the_zero_start_to_every_parameter_and_code():
    """At step 0 only the last Linear can learn (every other path is multiplied by a zero); a few steps later
    every parameter and every raw code, picked or not, gets gradient through the shared bridge."""
    torch.manual_seed(0)
    q = VectorQuantizer(64, 16, build_projector("vqbridge", 64, 16, group=4, bridge="dit", init="zero"))
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    z = torch.randn(32, 16)
    for step in range(4):
        opt.zero_grad()
        q(z).loss.backward()
        grads = {n: p.grad is not None and p.grad.abs().sum() > 0 for n, p in q.named_parameters()}
        if step == 0:
            assert {n for n, g in grads.items() if g} == {"projector.expand.weight", "projector.expand.bias"}
        opt.step()
    assert all(grads.values()), [n for n, g in grads.items() if not g]
    assert (q.embedding.grad.abs().sum(1) > 0).all()


def preset_kw(name: str) -> dict:
    return {k: v for k, v in PRESETS[name].items() if k != "kind"}


WIDTH = {"XS": 32, "S": 64, "B": 128, "L": 256, "XL": 512}  # 4 heads x 8 / 16 / 32 / 64 / 128 (qbridge.py:170)


def dit_params_by_hand(name: str, d: int) -> int:
    """qbridge-<W>/<P>[-d<N>]: patch embedding, class embedding, N adaLN-Zero blocks, final layer."""
    size, rest = name.removeprefix("qbridge-").split("/")
    p, _, n = rest.partition("-d")
    w, p, n, r = WIDTH[size], int(p), int(n or 2), 2
    patch_embed = d * p * p * w + w
    block = (3 * w * w + 3 * w) + (w * w + w) + (w * r * w + r * w) + (r * w * w + w) + (w * 6 * w + 6 * w)
    final = (w * 2 * w + 2 * w) + (w * p * p * d + p * p * d)
    return patch_embed + w + n * block + final


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.startswith("qbridge-")))
def test_qbridge_preset_parameters_by_hand(name):
    k, d = 16384, 256
    assert projector_params("vqbridge", k, d, **preset_kw(name)) == dit_params_by_hand(name, d)


def test_the_scripts_bridge_sizes():
    """QBridge-L/4 at K=16,384 (FVQ-16384.sh:12) and L/8 at 262,144 (FVQ-262144.sh:12): d' = 256, N = 2, and
    the same p as the ViT bridge's official group sizes (16, 64)."""
    assert PRESETS["qbridge-L/4"] == dict(kind="vqbridge", bridge="dit", latent_dim=256, depth=2, group=16, heads=4)
    assert PRESETS["qbridge-L/8"]["group"] == PRESETS["vqbridge-L/64"]["group"] == 64
    # d = 256: patch embedding 4,096 x 256, 2 blocks of 14 d'^2 + 13 d', final 2 d'^2 + 2 d' + d' x 4,096
    assert projector_params("vqbridge", 16384, 256, **preset_kw("qbridge-L/4")) == 4_075_008
    w, p, d = 256, 16, 256  # the ViT bridge at the same size: compress, 2 blocks of 8 d'^2 + 7 d', expand
    vit = (p * d * w + w) + 2 * (8 * w * w + 7 * w) + (w * p * d + p * d)
    assert projector_params("vqbridge", 16384, 256, group=16) == vit == 3_153_664


@pytest.mark.parametrize("name", ["qbridge-S/2", "qbridge-B/4-d1"])
def test_meta_count_equals_the_built_module(name):
    b = from_preset(name, 256, 8)
    assert projector_params("vqbridge", 256, 8, **preset_kw(name)) == sum(p.numel() for p in b.parameters())


def test_flops_dit_is_vit_plus_the_adaln_of_one_vector():
    k, d, p, n = 16384, 256, 16, 2
    vit = projector_flops("vqbridge", k, d, group=p, depth=n)
    dit = projector_flops("vqbridge", k, d, group=p, depth=n, bridge="dit")
    assert dit - vit == (6 * n + 2) * d * d
    # Table 10's VQBridge column was counted (fvcore) on this bridge; our matrix products round to its 4.30G
    assert vit == 2**32 and dit == 4_295_884_800 and round(dit / 1e9, 2) == 4.30
    assert projector_flops("vqbridge", 262144, d, group=64, bridge="dit") == pytest.approx(55.89e9, rel=1e-3)


def test_flop_count_matches_measurement():
    """FlopCounterMode counts 2 FLOPs per multiply-add (the conv patch embedding included)."""
    b = build_projector("vqbridge", 256, 32, group=4, bridge="dit")
    with FlopCounterMode(display=False) as fc:
        b(torch.randn(256, 32))
    tokens = 256 // 4  # the CPU fused attention kernel is not counted by FlopCounterMode: take QK^T, AV out
    want = projector_flops("vqbridge", 256, 32, group=4, bridge="dit") - 2 * 2 * tokens * tokens * 32
    assert fc.get_total_flops() / 2 == want


def test_train_step_flops_sees_the_bridge():
    from fvq.vq.flops import train_step_flops

    vit = base_config("cpu")
    dit = apply_overrides(vit, {"quant.bridge": "dit"})
    d = vit.model.channel
    assert train_step_flops(dit) - train_step_flops(vit) == 3 * 2 * (6 * vit.quant.depth + 2) * d * d


@pytest.mark.parametrize("kwargs, words", [
    (dict(num_codes=1000, dim=16), "num_codes=1000 must be a perfect square for bridge=dit"),
    (dict(num_codes=1024, dim=16, group=8), "group=8 must be P*P with P dividing sqrt(num_codes)=32"),
    (dict(num_codes=144, dim=16, group=25), "group=25 must be P*P with P dividing sqrt(num_codes)=12"),
    (dict(num_codes=64, dim=16, latent_dim=30), "latent_dim=30 must be divisible by heads=4"),
    (dict(num_codes=64, dim=16, latent_dim=6, heads=2, group=4), "latent_dim=6 must be divisible by 4"),
    (dict(num_codes=64, dim=16, group=4, depth=0), "depth=0 must be a positive int"),
])
def test_bad_input(kwargs, words):
    with pytest.raises(ValueError) as e:
        build_projector("vqbridge", bridge="dit", **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind, bridge, words", [
    ("vqbridge", "unet", "bridge='unet' is not one of vit, dit"),
    ("linear", "dit", "bridge='dit' needs kind=vqbridge (got kind='linear')"),
])
def test_bad_bridge(kind, bridge, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        build_projector(kind, 64, 16, bridge=bridge)


@pytest.mark.parametrize("overrides, words", [
    (["quant.bridge=unet"], "quant.bridge='unet' is not one of vit, dit"),
    (["quant.latent_dim=30"], "quant.latent_dim=30: the bridge width 30 must be divisible by quant.heads=4"),
    (["model.channel=30"], "quant.latent_dim=0 -> model.channel=30: the bridge width 30 must be divisible by "
                           "quant.heads=4"),
    (["quant.bridge=dit", "quant.latent_dim=30", "quant.heads=3"], "quant.latent_dim=30: the bridge width 30 "
                                                                    "must be divisible by 4 with quant.bridge=dit"),
    (["quant.bridge=dit", "quant.codebook_size=1000"], "quant.codebook_size=1000 must be a perfect square"),
    (["quant.bridge=dit", "quant.group=8"], "quant.group=8 must be P*P with P dividing "
                                            "sqrt(quant.codebook_size)=32"),
    (["quant.bridge=dit", "quant.projector=linear"], "quant.bridge=dit needs quant.projector=vqbridge"),
])
def test_bad_config_is_one_line_naming_the_key(overrides, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(base_config("cpu"), overrides)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_heads_need_not_divide_the_width_of_a_projector_without_attention():
    cfg = apply_overrides(base_config("cpu"), ["quant.projector=mlp", "quant.latent_dim=30"])
    assert cfg.quant.latent_dim == 30


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_dit_builds_at_both_scales_and_has_its_own_signature(scale):
    from fvq.build import build_quantizer
    from sweeps.identity import signature
    from sweeps.scale import resolve

    ref = resolve({}, scale)
    assert signature(resolve({"quant.bridge": "vit"}, scale)) == signature(ref)  # the default: same run
    dit = resolve({"quant.bridge": "dit"}, scale)
    assert signature(dit) != signature(ref)
    with torch.device("meta"):
        q = build_quantizer(dit)
    side = math.isqrt(dit.quant.codebook_size)
    assert isinstance(q.projector, DiTBridge) and q.projector.side == side
    assert q.projector.patch ** 2 == dit.quant.group
