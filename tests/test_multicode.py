"""Multi-code quantizers (section 4.4, Table 4): RQ-VAE residual stacks and VAR multi-scale maps with FVQ
projectors; decode-from-indices round trips, residual error, gradients, bad input, the multicode grid and
its Table 4 script."""
import os
import subprocess
import sys

import pytest
import torch

from fvq.core.config import Config, ConfigError, apply_overrides
from fvq.vq.multicode import MultiScaleQuantizer, ResidualQuantizer
from fvq.vq.projectors import build_projector
from fvq.vq.quantize import QuantOut, VectorQuantizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, D = 64, 16


def factory(kind):
    if kind == "none":
        return None
    return lambda: build_projector(kind, K, D, group=4, init="small", mlp_layers=3)


def make(kind, projector="vqbridge", **kw):
    kw.setdefault("projector", factory(projector))
    if kind == "rq":
        return ResidualQuantizer(K, D, kw.pop("depth", 4), **kw)
    return MultiScaleQuantizer(K, D, kw.pop("scales", (1, 2, 3, 4, 6)), **kw)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("projector", ["none", "linear", "mlp", "vqbridge"])
@pytest.mark.parametrize("kind", ["rq", "msvq"])
def test_decode_from_indices_equals_forward(kind, projector, l2, shared):
    torch.manual_seed(0)
    q = make(kind, projector, l2_norm=l2, shared=shared, **({"phi": 2} if kind == "msvq" else {}))
    z = torch.randn(3, D, 6, 6)
    out = q(z)
    assert isinstance(out, QuantOut) and out.z_q.shape == z.shape
    if kind == "rq":
        assert out.indices.shape == (3, 6, 6, 4)  # the (H, W, D) index map of Table 4's 8x8x4
    else:
        assert out.indices.shape == (3, 1 + 4 + 9 + 16 + 36)  # VAR's idx_Bl, all steps concatenated
        maps = q.split(out.indices)
        assert [m.shape[-1] for m in maps] == [1, 2, 3, 4, 6]
        assert torch.allclose(q.decode_indices(maps), out.z_q, atol=1e-5)  # VAR's list form
    assert out.indices.max() < K and out.indices.min() >= 0
    assert torch.allclose(q.decode_indices(out.indices), out.z_q, atol=1e-5)
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commit_loss)
    plain = q.export()  # baked codebooks, no projector: same decoding (section 3.2)
    assert all(b.projector is None for b in plain.books)
    assert torch.allclose(plain.decode_indices(out.indices), out.z_q, atol=1e-5)
    assert torch.equal(plain(z).indices, out.indices)
    assert plain.codebook().shape == ((K, D) if shared else (q.levels, K, D))


def test_depth_one_is_the_plain_vq_layer():
    torch.manual_seed(0)
    rq = ResidualQuantizer(K, D, 1)
    vq = VectorQuantizer(K, D)
    vq.embedding.data.copy_(rq.books[0].embedding.data)
    z = torch.randn(2, D, 4, 4)
    a, b = rq(z), vq(z)
    assert torch.equal(a.indices[..., 0], b.indices)
    assert torch.allclose(a.z_q, b.z_q) and torch.allclose(a.loss, b.loss)


def test_residual_error_decreases_with_depth():
    torch.manual_seed(0)
    q = ResidualQuantizer(256, D, 6, shared=True)
    # codes at many magnitudes (as a trained RQ codebook has): a small residual finds a small code
    q.books[0].embedding.data = torch.randn(256, D) * torch.logspace(-2, 0.3, 256)[:, None]
    z = torch.randn(512, D)
    idx = q(z).indices
    books = q.codebooks()
    partial = torch.cumsum(torch.stack([books[i][idx[:, i]] for i in range(6)]), 0)
    err = [float((z - p).detach().pow(2).mean()) for p in partial]
    assert all(b < a for a, b in zip(err, err[1:])), err
    assert err[-1] < 0.5 * err[0]


@pytest.mark.parametrize("projector", ["linear", "vqbridge"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("kind", ["rq", "msvq"])
def test_gradient_reaches_every_level_codebook_through_the_projector(kind, shared, projector):
    """Challenge 3 (section 2) per level: one step through each book's projector moves EVERY projected code."""
    torch.manual_seed(0)
    q = make(kind, projector, shared=shared, **({"phi": 2} if kind == "msvq" else {}))
    before = [b.codebook().detach().clone() for b in q.books]
    z = torch.randn(2, D, 6, 6, requires_grad=True)
    out = q(z)
    (out.loss + out.z_q.square().mean()).backward()
    assert len(q.books) == (1 if shared else q.levels)
    for book in q.books:
        assert book.embedding.grad.abs().sum() > 0
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in book.projector.parameters())
        if projector == "vqbridge":  # attention mixes groups: even the raw codes all get gradient
            assert (book.embedding.grad.abs().sum(1) > 0).all()
    assert z.grad.abs().sum() > 0  # straight-through to the encoder (eq. 4) plus the commitment term
    if kind == "msvq":
        assert all(p.grad.abs().sum() > 0 for p in q.phis.parameters())
    torch.optim.SGD(q.parameters(), lr=0.1).step()
    for book, old in zip(q.books, before):
        assert ((book.codebook().detach() - old).abs().sum(1) > 0).all()


def test_level_usage_counts_each_depth_and_scale():
    q = make("rq", "none", depth=2)
    idx = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    idx[..., 1] = torch.arange(4).reshape(1, 2, 2)
    assert q.level_usage(q.level_counts(idx)) == {"usage_l0": 1 / K, "usage_l1": 4 / K}
    m = make("msvq", "none", scales=(1, 2), shared=False)
    counts = m.level_counts(torch.tensor([[5, 0, 1, 2, 2]])) + m.level_counts([torch.tensor([[[7]]]),
                                                                                 torch.zeros(1, 2, 2).long()])
    assert counts.shape == (2, K) and counts.sum() == 10 and counts[0, 5] == counts[0, 7] == 1
    u = m.level_usage(counts)  # counts summed over batches (and ranks) first, then the fractions
    assert u == {"usage_l0": 2 / K, "usage_l1": 3 / K, "usage_books": 2.5 / K}


def test_bf16_autocast_keeps_the_residuals_fp32():
    torch.manual_seed(0)
    for kind in ("rq", "msvq"):
        q = make(kind, "linear")
        z = torch.randn(2, D, 6, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = q(z)
        assert out.z_q.dtype == torch.float32
        assert torch.allclose(q.decode_indices(out.indices), out.z_q, atol=1e-5)


@pytest.mark.parametrize("build, words", [
    (lambda: ResidualQuantizer(K, D, 0), "depth_codes=0 must be an int >= 1"),
    (lambda: MultiScaleQuantizer(K, D, (1, 4, 2)), "scales=1,4,2 must be strictly increasing"),
    (lambda: MultiScaleQuantizer(K, D, (1, 2, 2)), "strictly increasing"),
    (lambda: MultiScaleQuantizer(K, D, ()), "non-empty"),
    (lambda: MultiScaleQuantizer(K, D, (1, 2, 16), latent_size=8), "last side 16 exceeds the latent size 8"),
    (lambda: MultiScaleQuantizer(K, D, (1, 2), phi=-1), "phi=-1"),
    (lambda: MultiScaleQuantizer(K, D, (1, 2), phi=4), "phi=4: 2 scales use only 2 of the refiners (use phi <= 2)"),
    (lambda: ResidualQuantizer(K, D, 2, projector=lambda: build_projector("vqbridge", K, D, group=5)),
     "group=5 must divide num_codes=64"),
    (lambda: ResidualQuantizer(K, D, 2, projector=lambda: build_projector("vqbridge", K, D, group=4, heads=3)),
     "latent_dim=16 must be divisible by heads=3"),
])
def test_bad_construction_is_a_one_line_error(build, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        build()
    assert "\n" not in str(e.value)


def test_bad_input_at_forward():
    with pytest.raises(ValueError, match="latent has 8 channels, quantizer dim=16"):
        make("rq", "none")(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="scales end at 6, larger than the 4x4 latent"):
        make("msvq", "none")(torch.randn(1, D, 4, 4))
    with pytest.raises(ValueError, match="index map has 3 codes per position, quantizer depth=4"):
        make("rq", "none").decode_indices(torch.zeros(1, 2, 2, 3, dtype=torch.long))


@pytest.mark.parametrize("overrides, words", [
    (["quant.kind=rq", "quant.depth_codes=0"], "quant.depth_codes=0 must be > 0"),
    (["quant.depth_codes=4"], "quant.depth_codes=4 needs quant.kind=rq"),
    (["quant.shared=false"], "quant.shared=false (one codebook per level) needs quant.kind=rq or msvq"),
    (["quant.kind=msvq"], "quant.kind=msvq needs quant.scales"),
    (["quant.kind=msvq", "quant.scales=1,3,2"], "quant.scales='1,3,2': sides must be >= 1 and strictly"),
    (["quant.kind=msvq", "quant.scales=1, 2"], "quant.scales='1, 2': expected comma-separated"),
    (["quant.kind=msvq", "quant.scales=0,2"], "sides must be >= 1"),
    (["quant.kind=rq", "quant.scales=1,2"], "quant.scales='1,2' needs quant.kind=msvq"),
    (["quant.kind=rq", "quant.phi=4"], "quant.phi=4 needs quant.kind=msvq"),
    (["quant.kind=msvq", "quant.scales=1,2", "quant.phi=-1"], "quant.phi=-1 must be >= 0"),
    (["quant.kind=rvq"], "quant.kind='rvq' is not one of vq, rq, msvq"),
])
def test_bad_config_is_a_one_line_config_error(overrides, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), overrides)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_build_rejects_scales_larger_than_the_latent():
    from fvq.build import build_model, build_quantizer

    cfg = apply_overrides(Config(), ["quant.kind=msvq", "quant.scales=1,2,4,16"])  # cpu-4 at 32x32: 8x8
    with pytest.raises(ConfigError, match="quant.scales=1,2,4,16 ends at 16, larger than the 8x8 latent of "
                                          "model.arch=cpu-4 at data.image_size=32"):
        build_quantizer(cfg)
    ok = apply_overrides(Config(), ["quant.kind=msvq", "quant.scales=1,2,4,8", "quant.phi=4", "quant.shared=false"])
    with torch.device("meta"):
        model = build_model(ok)
    assert isinstance(model.quantizer, MultiScaleQuantizer) and len(model.quantizer.books) == 4
    assert len(model.quantizer.phis) == 4 and model.quantizer.latent_size == 8


def test_projector_flops_per_step_counts_each_book_once():
    from fvq.vq.flops import projector_flops, projector_flops_per_step

    one = projector_flops("vqbridge", 16384, 256, group=16)
    assert projector_flops_per_step("vqbridge", 16384, 256, group=16) == one  # shared: once for all D levels
    assert projector_flops_per_step("vqbridge", 16384, 256, group=16, codebooks=4) == 4 * one
    assert projector_flops_per_step("none", 16384, 256, codebooks=4) == 0
    with pytest.raises(ValueError, match="codebooks=0"):
        projector_flops_per_step("linear", 16, 4, codebooks=0)


# ---- the multicode grid (Table 4) ------------------------------------------------------------------------

def test_grid_rows_follow_table4_at_both_scales():
    from sweeps.grids.multicode import ROWS
    from sweeps.scale import resolve, shrink_scales

    paper = [resolve(p, "paper") for _, p in ROWS]
    assert [c.quant.kind for c in paper] == ["rq", "rq", "rq", "msvq", "msvq"]
    assert [c.optim.steps for c in paper] == [e * 1_281_167 // 128 for e in (10, 50, 10, 40, 40)]
    assert [(c.quant.codebook_size, c.model.channel) for c in paper] == [(16384, 256)] * 3 + [(4096, 32), (16384, 256)]
    assert [c.quant.projector for c in paper] == ["none", "none", "vqbridge", "none", "vqbridge"]
    assert all(c.model.arch == "vq-32" and c.quant.depth_codes == 4 for c in paper[:3])  # 256/32 = 8: 8x8x4
    assert all(c.quant.scales == "1,2,3,4,5,6,8,10,13,16" and c.model.arch == "vq-16" for c in paper[3:])
    assert sum(int(s) ** 2 for s in paper[3].quant.scales.split(",")) == 680
    cpu = [resolve(p, "cpu") for _, p in ROWS]
    assert [c.model.arch for c in cpu] == ["cpu-8"] * 3 + ["cpu-4"] * 2
    assert all(c.quant.scales == "1,2,3,4,5,6,8" for c in cpu[3:])
    from sweeps.scale import CPU_STEPS_PER_40_EPOCHS as S40

    assert [c.optim.steps for c in cpu] == [round(S40 * e / 40) for e in (10, 50, 10, 40, 40)]
    assert [c.quant.codebook_size for c in cpu] == [1024, 1024, 1024, 256, 1024]
    assert shrink_scales("1,2,4,16", 8) == "1,2,4,8" and shrink_scales("1,2,8", 8) == "1,2,8"


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_dry_run_lists_the_rows(tmp_path, scale):
    # paper scale is planned for the cluster (its data paths are the cluster's): launcher=slurm
    launcher = "launcher=slurm" if scale == "paper" else "launcher=local"
    r = subprocess.run([sys.executable, os.path.join(REPO, "sweeps", "run.py"), "grid=multicode", f"scale={scale}",
                        "dry=true", launcher, f"runs_dir={tmp_path / 'runs'}", f"tracking_uri=sqlite:///{tmp_path}/m.db"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr
    assert f"grid=multicode scale={scale}" in r.stdout and "(5 points)" in r.stdout
    from sweeps.grids.multicode import points
    from sweeps.identity import signature
    from sweeps.scale import resolve

    for p in points():
        assert f"{signature(resolve(p, scale))}  missing" in r.stdout
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")  # dry: nothing written


TINY = {"optim.steps": 4, "log.every": 2, "log.ckpt_every": 4, "data.train_size": 16, "data.val_size": 4,
        "eval.images": 4, "eval.batch": 4, "optim.batch": 4, "eval.fid": False, "log.progress": "off"}


@pytest.mark.slow
@pytest.mark.parametrize("row", range(5))
def test_smoke_every_row_at_cpu_scale(tmp_path, row):
    """A few steps of each Table 4 row at scale=cpu: the training loop, loss and evaluation run unchanged."""
    from fvq.train import train
    from sweeps.grids.multicode import ROWS
    from sweeps.scale import resolve

    cfg = resolve(ROWS[row][1], "cpu", TINY)
    out = train(cfg, str(tmp_path / "run"), log=lambda *a, **k: None)
    assert 0 < out["metrics"]["usage"] <= 1 and out["metrics"]["psnr"] > 0
    assert (tmp_path / "run" / "codebook.pt").exists()
    levels = cfg.quant.depth_codes if cfg.quant.kind == "rq" else len(cfg.quant.scales.split(","))
    assert [f"usage_l{i}" in out["metrics"] for i in range(levels + 1)] == [True] * levels + [False]


def test_table4_shows_paper_and_harness_rows(tmp_path):
    from analysis.tables import tab4_multicode

    fixtures = os.path.join(REPO, "tests", "fixtures", "results")
    gaps = tab4_multicode.build(__import__("pathlib").Path(fixtures), tmp_path)
    md = (tmp_path / "tab4_multicode.md").read_text()
    assert "| paper | FVQ (RQ-VAE) | 10 | 8x8x4 | 16,384 | 256 | 2.98 |" in md
    assert "| this harness (scale=cpu) | FVQ (VAR) | 40 | 680 10step |" in md
    assert "155_7step cpu-4" in md and "4x4x4 cpu-8" in md and "`cb607fc58b`" in md
    assert "5/41/77/100%" in md  # per-level usage, first depth to last
    assert gaps == [tab4_multicode.LEVELS_MISSING]  # the fixture's 50-epoch run has no per-level usage
