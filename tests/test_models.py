"""LlamaGen VQGAN encoder/decoder around the VQ layer."""
import pytest
import torch

from fvq.vq.models import ARCHS, VQModel
from fvq.vq.projectors import build_projector
from fvq.vq.quantize import VectorQuantizer


def model(arch="cpu-4", channel=16, k=64):
    return VQModel(arch, channel, VectorQuantizer(k, channel, build_projector("vqbridge", k, channel, group=4,
                                                                              init="small")))


@pytest.mark.parametrize("arch, ratio", [("cpu-4", 4), ("cpu-2", 2), ("cpu-8", 8), ("vq-8", 8), ("vq-16", 16),
                                         ("vq-32", 32)])
def test_ratio(arch, ratio):
    with torch.device("meta"):
        m = model(arch)
    assert m.ratio == ratio and m.latent_size(256) == 256 // ratio


@pytest.mark.parametrize("arch", ["cpu-4", "cpu-2"])
def test_round_trip_and_decode_from_indices(arch):
    torch.manual_seed(0)
    m = model(arch).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat, q = m(x)
    assert x_hat.shape == x.shape and q.indices.shape == (2, 32 // m.ratio, 32 // m.ratio)
    assert torch.allclose(m.decode_indices(q.indices), m.decode(q.z_q), atol=1e-5)


def test_vq16_size_is_llamagens():
    with torch.device("meta"):
        m = model("vq-16", 256, 16384)
    n = sum(p.numel() for n_, p in m.named_parameters() if not n_.startswith("quantizer"))
    assert 65e6 < n < 80e6  # LlamaGen VQ-16 encoder+decoder: ~72M


def test_gradient_reaches_encoder_through_ste():
    m = model()
    x_hat, q = m(torch.rand(2, 3, 32, 32))
    (x_hat.square().mean() + q.loss).backward()
    assert m.encoder.conv_in.weight.grad.abs().sum() > 0


def test_bad_arch_and_image_size():
    with pytest.raises(ValueError, match="model.arch='vq-64' is not one of vq-16, vq-8, vq-32, cpu-4, cpu-2, cpu-8"):
        model("vq-64")
    with pytest.raises(ValueError, match="data.image_size=30 is not divisible by the downsampling ratio 4"):
        model().check_image_size(30)
    assert set(ARCHS) == {"vq-16", "vq-8", "vq-32", "cpu-4", "cpu-2", "cpu-8"}
