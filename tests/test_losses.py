"""Loss terms of eq. 35: LPIPS weights handling, PatchGAN hinge, switches."""
import pytest
import torch

from fvq.vq.losses import BACKBONE_FILES, LPIPSWeightsMissing, PatchGAN, VQLoss, hinge_d_loss, load_lpips
from fvq.vq.quantize import VectorQuantizer


def test_lpips_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(LPIPSWeightsMissing) as e:
        load_lpips("vgg")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "loss.lpips_weights=PATH" in msg and "\n" not in msg


def test_lpips_loads_backbone_from_a_file(tmp_path):
    # Stand-in weights: the real VGG backbone cannot be downloaded here, so a randomly initialised
    # torchvision VGG16 state dict of the right shapes proves the loading path.
    import torchvision

    state = torchvision.models.vgg16(weights=None).state_dict()
    path = tmp_path / BACKBONE_FILES["vgg"]
    torch.save(state, path)
    m = load_lpips("vgg", str(path))
    assert torch.equal(m.net.slice1[0].weight, state["features.0.weight"])
    assert not any(p.requires_grad for p in m.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert m(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_hinge_values():
    assert hinge_d_loss(torch.tensor([2.0]), torch.tensor([-2.0])).item() == 0.0
    assert hinge_d_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == 1.0


def test_terms_switch_off_and_disc_start():
    q = VectorQuantizer(16, 4)
    qout = q(torch.randn(8, 4))
    x, x_hat = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32, requires_grad=True)
    plain = VQLoss(perceptual_weight=0, disc_weight=0)
    t = plain.generator_terms(x, x_hat, qout, 0)
    assert set(t) == {"rec", "vq", "commit", "codebook", "total"}
    assert torch.allclose(t["total"], t["rec"] + qout.loss)
    gan = VQLoss(perceptual_weight=0, disc_weight=0.5, disc_start=10, discriminator=PatchGAN(ndf=8))
    assert "adv" not in gan.generator_terms(x, x_hat, qout, 9)
    assert gan.discriminator_terms(x, x_hat, 9) == {}
    t = gan.generator_terms(x, x_hat, qout, 10)
    assert torch.allclose(t["total"], t["rec"] + qout.loss + 0.5 * t["adv"])
    assert gan.discriminator_terms(x, x_hat, 10)["disc"] > 0
