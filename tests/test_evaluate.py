import os
from typing import NamedTuple

import pytest
import torch

import fvq.eval.evaluate as ev
import fvq.eval.inception as inc
from fvq.eval.evaluate import evaluate
from fvq.eval.inception import find_fid_weights

HAVE_WEIGHTS = find_fid_weights()[0] is not None if not os.environ.get("FVQ_FID_WEIGHTS") else \
    os.path.isfile(os.environ["FVQ_FID_WEIGHTS"])
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="no FID Inception weights (run `make weights`)")


class QOut(NamedTuple):
    indices: torch.Tensor


class _Q:
    num_codes = 16


class StandIn(torch.nn.Module):
    """Identity (plus optional fixed noise) autoencoder; indices from the mean intensity of 4x4 patches."""

    def __init__(self, noise: float = 0.0):
        super().__init__()
        self.noise, self.quantizer = noise, _Q()

    def forward(self, x):
        p = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4)
        idx = ((p + 1) / 2 * 15.999).long().clamp(0, 15).flatten(1)
        g = torch.Generator().manual_seed(0)
        return x + self.noise * torch.randn(x.shape, generator=g), QOut(idx)


class ListDS(torch.utils.data.Dataset):
    def __init__(self, xs, key):
        self.xs, self.cache_key = xs, key

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        return self.xs[i]


def _images(n=16, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1  # smooth-ish images
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear").clamp(-1, 1)


def test_identity_metrics_no_fid():
    ds = ListDS(_images(8), "ident")
    r = evaluate(StandIn(), ds, batch_size=3, fid=False)
    m = r.metrics
    assert m["psnr"] == pytest.approx(ev.PSNR_CAP)  # exact reconstruction: capped, not inf
    assert m["ssim"] == pytest.approx(1.0)
    assert m["rec_l2"] == 0.0
    assert m["eval_images"] == 8
    assert 0 < m["usage"] <= 1 and m["dead_codes"] == 16 - round(m["usage"] * 16)
    assert m["tokens_per_code"] == pytest.approx(8 * 64 / 16)
    assert 1 <= m["perplexity"] <= 16
    assert "lpips" in r.missing and "rfid" not in m


def test_known_noise_psnr():
    x = torch.zeros(4, 3, 32, 32)
    sigma = 0.1  # in [-1,1] space -> 0.05 in [0,1] space: PSNR = 20*log10(1/0.05) = 26.02 dB
    r = evaluate(StandIn(noise=sigma), ListDS(x, "zeros"), fid=False, max_images=4)
    assert r.metrics["psnr"] == pytest.approx(26.02, abs=0.2)
    assert r.metrics["rec_l2"] == pytest.approx(sigma ** 2, rel=0.05)
    assert r.metrics["ssim"] < 0.9


def test_lpips_module_used():
    r = evaluate(StandIn(noise=0.1), ListDS(_images(4), "l"), fid=False,
                 lpips_module=lambda a, b: (a - b).abs().mean((1, 2, 3)))
    assert r.metrics["lpips"] > 0 and "lpips" not in r.missing


def test_fid_missing_with_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("FVQ_FID_WEIGHTS", str(tmp_path / "empty" / "default_1.pt"))
    r = evaluate(StandIn(), ListDS(_images(4), "m"), cache_dir=str(tmp_path))
    assert "rfid" not in r.metrics
    assert "make weights" in r.missing["rfid"] and str(tmp_path / "empty") in r.missing["rfid"]
    assert "psnr" in r.metrics


@needs_weights
def test_fid_identical_zero_and_cache(tmp_path):
    ds = ListDS(_images(8), "fid-a")
    before = inc.stats_computed
    r1 = evaluate(StandIn(), ds, batch_size=8, cache_dir=str(tmp_path))
    assert abs(r1.metrics["rfid"]) < 0.5
    assert inc.stats_computed == before + 1
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    r2 = evaluate(StandIn(noise=0.3), ds, batch_size=8, cache_dir=str(tmp_path))  # cache hit
    assert inc.stats_computed == before + 1 and files[0].stat().st_mtime_ns == mtime
    assert r2.metrics["rfid"] > 1.0


@needs_weights
def test_fid_different_sets_positive(tmp_path):
    a = _images(8, seed=1)
    ds = ListDS(a, "fid-b")

    class Swap(StandIn):
        def forward(self, x):
            y, q = super().forward(x)
            return -y.flip(-1), q  # inverted, mirrored images: clearly a different distribution

    r = evaluate(Swap(), ds, batch_size=8, cache_dir=str(tmp_path))
    assert r.metrics["rfid"] > 5.0


@needs_weights
def test_fid_images_subset_counts_and_cache_key(tmp_path):
    """eval.fid_images: rFID over the first N images only (split across batches), reported, own cache entry."""
    ds = ListDS(_images(8, seed=2), "fid-c")
    r = evaluate(StandIn(), ds, batch_size=3, cache_dir=str(tmp_path), fid_images=5)
    assert r.metrics["fid_images"] == 5 and r.metrics["eval_images"] == 8 and abs(r.metrics["rfid"]) < 0.5
    full = evaluate(StandIn(), ds, batch_size=3, cache_dir=str(tmp_path))
    assert full.metrics["fid_images"] == 8 and len(list(tmp_path.glob("*.npz"))) == 2
    one = evaluate(StandIn(), ds, cache_dir=str(tmp_path), fid_images=1)
    assert "rfid" not in one.metrics and "at least 2" in one.missing["rfid"]


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_low_rank_frechet_equals_torch_fidelity(shift):
    """The span-basis reduction (fewer images than dimensions) gives torch-fidelity's full-dimension FID."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(3)
    real = torch.randn(40, 512, generator=g, dtype=torch.float64)
    fake = 0.8 * real + 0.3 * torch.randn(40, 512, generator=g, dtype=torch.float64) + shift
    full = fid_statistics_to_metric(fid_features_to_statistics(real), fid_features_to_statistics(fake),
                                    verbose=False)["frechet_inception_distance"]
    assert inc.frechet_distance({"feats": real}, fake) == pytest.approx(full, rel=1e-6)
    assert inc.frechet_distance(fid_features_to_statistics(real), fake) == pytest.approx(full, rel=1e-9)
    assert inc.frechet_distance({"feats": real}, real) == pytest.approx(0.0, abs=1e-6)


@needs_weights
def test_warm_reference_fills_the_cache_evaluate_reads(tmp_path):
    ds = ListDS(_images(6, seed=4), "fid-w")
    assert "computed" in ev.warm_reference(ds, cache_dir=str(tmp_path), batch_size=4)
    assert "already cached" in ev.warm_reference(ds, cache_dir=str(tmp_path), batch_size=4)
    before = inc.stats_computed
    r = evaluate(StandIn(), ds, batch_size=4, cache_dir=str(tmp_path))
    assert inc.stats_computed == before and abs(r.metrics["rfid"]) < 0.5
