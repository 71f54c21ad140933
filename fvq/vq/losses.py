"""The tokenizer loss (eq. 35, Table 6): L = L_rec + L_commit + lambda_perc L_LPIPS + lambda_G L_GAN.

- L_rec: L2 (mean squared error) between image and reconstruction.
- L_commit: the quantizer's codebook + beta x commitment loss (eq. 5; beta lives in the quantizer).
- L_LPIPS (weight 1.0 in the paper): the `lpips` package's VGG variant. The package ships only the linear
  heads; the VGG/AlexNet backbone comes from torchvision's weights, which cannot be downloaded here. They
  are loaded when present (torch hub cache or an explicit path) and their absence is a one-line error at
  start-up - never a silently random backbone.
- L_GAN (weight 0.5): PatchGAN discriminator (Isola et al., 2017) with the hinge loss, switched on after
  ``disc_start`` steps. BatchNorm as in LlamaGen's PatchGAN (use SyncBatchNorm under DDP).
A term whose weight is 0 (or whose module is None) is absent from the returned dict.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from fvq.core.errors import SetupError

BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


class LPIPSWeightsMissing(SetupError, RuntimeError):
    """LPIPS backbone weights are not on this machine; one-line message saying how to provide them."""


def lpips_backbone_path(net: str = "vgg", weights_path: str | None = None) -> str:
    if net not in BACKBONE_FILES:
        raise ValueError(f"loss.lpips_net={net!r} is not one of {', '.join(BACKBONE_FILES)}")
    path = weights_path or os.path.join(torch.hub.get_dir(), "checkpoints", BACKBONE_FILES[net])
    if not os.path.isfile(path):
        raise LPIPSWeightsMissing(
            f"LPIPS needs the {net} backbone weights {BACKBONE_FILES[net]}, not found at {path}: copy the file "
            f"there or pass loss.lpips_weights=PATH (or set loss.perceptual_weight=0 / eval.lpips=false)")
    return path


def load_lpips(net: str = "vgg", weights_path: str | None = None) -> nn.Module:
    """A frozen, eval-mode LPIPS module on images in [-1, 1], with real backbone weights or an error.

    ``weights_path``: torchvision's backbone file (the `lpips` package adds its own linear heads), or a
    whole LPIPS state dict (``net.slice*`` and ``lin*`` keys, e.g. pyiqa's ``LPIPS_v0.1_alex`` file)."""
    path = lpips_backbone_path(net, weights_path)
    import lpips

    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # no download: random first
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    if any(k.startswith("net.slice") for k in state):
        needed = [k for k in own if k.startswith(("net.", "lin")) and not k.startswith("lins.")]
        absent = [k for k in needed if k not in state]
        if absent:
            raise LPIPSWeightsMissing(f"{path} is an LPIPS state dict without {absent[0]} (not the {net} net?)")
        model.load_state_dict({k: state[k] for k in needed}, strict=False)
        model.eval().requires_grad_(False)
        return model
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    # lpips splits torchvision's `features` Sequential into slices that keep the original layer indices
    own = model.net.state_dict()
    if not all(f"{key.split('.')[1]}.{key.split('.')[2]}" in features for key in own):
        raise LPIPSWeightsMissing(f"{path} holds neither torchvision's {net} backbone nor an LPIPS state dict")
    mapped = {}
    for key in own:
        _, idx, param = key.split(".")  # slice{n}.{layer}.{weight|bias}
        mapped[key] = features[f"{idx}.{param}"]
    model.net.load_state_dict(mapped)
    model.eval().requires_grad_(False)
    return model


class PatchGAN(nn.Module):
    """N-layer PatchGAN (pix2pix), logits per patch; weights ~ N(0, 0.02) as pix2pix."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


class VQLoss(nn.Module):
    def __init__(self, rec_weight: float = 1.0, perceptual_weight: float = 1.0, disc_weight: float = 0.5,
                 disc_start: int = 0, codebook_weight: float = 1.0, lpips: nn.Module | None = None,
                 discriminator: nn.Module | None = None):
        super().__init__()
        self.rec_weight, self.perceptual_weight, self.disc_weight = rec_weight, perceptual_weight, disc_weight
        self.disc_start, self.codebook_weight = disc_start, codebook_weight
        self.lpips, self.discriminator = lpips, discriminator

    def generator_terms(self, x: torch.Tensor, x_hat: torch.Tensor, q, step: int) -> dict[str, torch.Tensor]:
        x_hat = x_hat.float()
        terms = {"rec": F.mse_loss(x_hat, x.float()), "vq": q.loss,
                 "commit": q.commit_loss.detach(), "codebook": q.codebook_loss.detach()}
        total = self.rec_weight * terms["rec"] + self.codebook_weight * q.loss
        if self.lpips is not None and self.perceptual_weight > 0:
            terms["perceptual"] = self.lpips(x_hat, x.float()).mean()
            total = total + self.perceptual_weight * terms["perceptual"]
        if self.discriminator is not None and self.disc_weight > 0 and step >= self.disc_start:
            terms["adv"] = generator_adv_loss(self.discriminator(x_hat))
            total = total + self.disc_weight * terms["adv"]
        terms["total"] = total
        return terms

    def discriminator_terms(self, x: torch.Tensor, x_hat: torch.Tensor, step: int,
                            disc: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """``disc``: the discriminator to train through (its DDP wrapper when data-parallel)."""
        if self.discriminator is None or step < self.disc_start:
            return {}
        disc = disc or self.discriminator
        logits_real = disc(x.float())
        logits_fake = disc(x_hat.detach().float())
        return {"disc": hinge_d_loss(logits_real, logits_fake),
                "logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}
