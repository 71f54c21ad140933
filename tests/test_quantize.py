"""The VQ layer: chunked search == brute force (ties included), STE, dense vs sparse codebook gradients,
export round trip, the bf16 search of the official runs."""
import pytest
import torch

from fvq.core.config import Config, ConfigError, apply_overrides
from fvq.vq.projectors import build_projector
from fvq.vq.quantize import QuantOut, VectorQuantizer, nearest_code


def brute(z, cb):
    return torch.cdist(z.double(), cb.double()).pow(2).argmin(1)


@pytest.mark.parametrize("budget", [64, 1000, 256 * 2**20])  # bytes: many chunks ... one chunk
@pytest.mark.parametrize("case", ["random", "duplicates", "identical", "boundary_ties"])
def test_chunked_search_equals_brute_force(case, budget):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 8, generator=g)
    cb = torch.randn(37, 8, generator=g)
    if case == "duplicates":
        cb[20:] = cb[:17]  # every later code repeats an earlier one
    elif case == "identical":
        cb[:] = cb[0]  # zero-initialised projector: every code the same -> index 0 everywhere
    elif case == "boundary_ties":
        cb = torch.randint(-1, 2, (37, 8), generator=g).float()  # integer grid: exact float ties
        z = torch.randint(-1, 2, (50, 8), generator=g).float()
    got = nearest_code(z, cb, budget)
    if case == "identical":
        assert (got == 0).all()
    # exact ties: the lowest index wins, as argmin on the full matrix
    d = (z[:, None] - cb[None]).pow(2).sum(-1)
    assert torch.equal(got, d.argmin(1)) or case == "random" and torch.equal(got, brute(z, cb))


def test_search_is_fp32_under_autocast_and_builds_no_graph():
    z = torch.randn(64, 16, requires_grad=True)
    cb = torch.randn(100, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx = nearest_code(z, cb)
    assert torch.equal(idx, brute(z.detach(), cb.detach()))
    assert not idx.requires_grad


@pytest.mark.parametrize("projector", ["none", "linear", "mlp", "vqbridge"])
@pytest.mark.parametrize("shape", [(2, 16, 4, 4), (30, 16)])
@pytest.mark.parametrize("l2", [False, True])
def test_shapes_and_losses(projector, shape, l2):
    proj = None if projector == "none" else build_projector(projector, 64, 16, group=4, init="small")
    q = VectorQuantizer(64, 16, proj, l2_norm=l2)
    z = torch.randn(*shape)
    out = q(z)
    assert isinstance(out, QuantOut) and out.z_q.shape == z.shape
    assert out.indices.shape == (shape[0], *shape[2:]) if len(shape) == 4 else out.indices.shape == (30,)
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commit_loss)
    if len(shape) == 4:
        assert torch.allclose(q.decode_indices(out.indices), out.z_q, atol=1e-6)


def test_ste_gradient_reaches_the_encoder():
    q = VectorQuantizer(32, 8)
    z = torch.randn(4, 8, 3, 3, requires_grad=True)
    out = q(z)
    (out.z_q.sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("projector", ["linear", "mlp", "vqbridge"])
def test_projector_updates_every_code(projector):
    """Section 2, Challenge 3: through a shared projector one step moves EVERY projected code, used or not."""
    torch.manual_seed(0)
    init = "small" if projector == "vqbridge" else "default"
    q = VectorQuantizer(64, 16, build_projector(projector, 64, 16, group=4, init=init))
    before = q.codebook().detach().clone()
    out = q(torch.randn(8, 16))
    assert len(out.indices.unique()) < 64
    out.loss.backward()
    torch.optim.SGD(q.parameters(), lr=0.1).step()
    moved = (q.codebook().detach() - before).abs().sum(1) > 0
    assert moved.all()
    if projector == "vqbridge":  # attention mixes groups: even the raw codes all get gradient
        assert (q.embedding.grad.abs().sum(1) > 0).all()


def test_without_projector_only_selected_codes_move():
    torch.manual_seed(0)
    q = VectorQuantizer(64, 16)
    before = q.codebook().detach().clone()
    out = q(torch.randn(8, 16))
    out.loss.backward()
    torch.optim.SGD(q.parameters(), lr=0.1).step()
    moved = (q.codebook().detach() - before).abs().sum(1) > 0
    used = torch.zeros(64, dtype=torch.bool)
    used[out.indices] = True
    assert torch.equal(moved, used) and used.sum() < 64


def test_zero_init_bridge_starts_with_identical_codes():
    q = VectorQuantizer(64, 16, build_projector("vqbridge", 64, 16, group=4, init="zero"))
    cb = q.codebook()
    assert torch.equal(cb, cb[:1].expand_as(cb))
    assert (q(torch.randn(10, 16)).indices == 0).all()


@pytest.mark.parametrize("projector", ["linear", "vqbridge"])
@pytest.mark.parametrize("l2", [False, True])
def test_export_round_trip(projector, l2):
    """Section 3.2: the baked codebook gives identical indices and outputs without the projector."""
    torch.manual_seed(1)
    q = VectorQuantizer(64, 16, build_projector(projector, 64, 16, group=4, init="default"), l2_norm=l2)
    plain = q.export()
    assert plain.projector is None
    z = torch.randn(3, 16, 4, 4)
    a, b = q(z), plain(z)
    assert torch.equal(a.indices, b.indices)
    assert torch.allclose(a.z_q, b.z_q, atol=1e-6)
    assert torch.allclose(q.decode_indices(a.indices), plain.decode_indices(a.indices), atol=1e-6)


@pytest.mark.parametrize("kw, words", [
    (dict(num_codes=0, dim=4), "num_codes=0"), (dict(num_codes=8, dim=-1), "dim=-1"),
    (dict(num_codes=8, dim=4, beta=-1), "beta=-1"), (dict(num_codes=8, dim=4, search_budget_mb=0), "search_budget_mb"),
])
def test_bad_arguments(kw, words):
    with pytest.raises(ValueError, match=words):
        VectorQuantizer(**kw)


@pytest.mark.parametrize("budget", [1000, 256 * 2**20])  # bytes: many chunks ... one chunk
def test_bf16_search_valid_and_exact_on_well_separated_codes(budget):
    g = torch.Generator().manual_seed(0)
    cb = 4 * torch.randn(256, 8, generator=g)  # nearest pairs ~3 apart: far beyond bf16 rounding
    want = torch.randint(0, 256, (300,), generator=g)
    z = cb[want] + 0.01 * torch.randn(300, 8, generator=g)
    got = nearest_code(z, cb, budget, "bf16")
    assert got.dtype == torch.long and got.shape == (300,) and torch.equal(got, want)
    assert torch.equal(nearest_code(z, cb, budget), want)
    q = VectorQuantizer(256, 8, search_dtype="bf16")
    q.embedding.data.copy_(cb)
    assert torch.equal(q(z).indices, want) and q.export().search_dtype == "bf16"


def test_bf16_search_is_the_official_distance_under_autocast():
    """The distance of the official runs (vq_model_qbridge.py:264-268 inside their bf16 autocast): fp32 norms,
    a bf16 matmul. Near codes swap against the fp32 search; against the official expression they do not."""
    g = torch.Generator().manual_seed(0)
    z, cb = torch.randn(1000, 8, generator=g), torch.randn(16384, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = (z ** 2).sum(1, keepdim=True) + (cb ** 2).sum(1) - 2 * torch.einsum("nd,dk->nk", z, cb.t())
    official, got = d.argmin(1), nearest_code(z, cb, dtype="bf16")
    assert int((got != official).sum()) <= 1  # the same kernel but for its accumulation order
    assert int((got >= 0).sum()) == 1000 and int((got < 16384).sum()) == 1000
    assert int((got != nearest_code(z, cb)).sum()) > 10  # bf16 does change the search at K=16k, d=8
    q = VectorQuantizer(16384, 8, search_dtype="bf16")
    q.embedding.data.copy_(cb)
    assert torch.equal(q(z).indices, got)  # training: the official bf16 search
    assert torch.equal(q.eval()(z).indices, nearest_code(z, cb))  # evaluation: fp32, as the official eval


def test_search_dtype_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^quant\.search_dtype='fp16' is not one of fp32, bf16$"):
        apply_overrides(Config(), ["quant.search_dtype=fp16"])
    with pytest.raises(ConfigError, match="quant.search_dtype=bf16 needs quant.kind=vq"):
        apply_overrides(Config(), ["quant.search_dtype=bf16", "quant.kind=rq", "quant.depth_codes=2"])
    with pytest.raises(ValueError, match="search_dtype='fp16' is not one of fp32, bf16"):
        VectorQuantizer(8, 4, search_dtype="fp16")
    assert apply_overrides(Config(), ["quant.search_dtype=bf16"]).quant.search_dtype == "bf16"
