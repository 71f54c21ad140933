"""How each evaluation protocol (its settings: fvq/core/protocol_presets.py) turns a reconstruction into an
image and computes PSNR, SSIM and the rFID inputs; pure functions pinned by tests/test_protocols.py on known
images. The protocols themselves (fvq, llamagen, official) and every difference from the official code that
is not reproduced: fvq/core/protocol_presets.py and docs/evaluation.md.
"""
from __future__ import annotations

import io

import numpy as np
import torch

from fvq.core.protocol_presets import Protocol

PSNR_CAP = 100.0  # dB for an exact reconstruction under the fvq / llamagen protocols (MSE 0)


# ---- reconstructions and metrics on (N, 3, H, W) tensors in [0, 1] --------------------------------------
def to_image(x: torch.Tensor, how: str) -> torch.Tensor:
    """A tensor in [-1, 1] (any values) -> float [0, 1], on the uint8 grid unless ``how`` is none."""
    x = x.float()
    if how == "none":
        return x.clamp(-1, 1).add(1).div(2)
    if how == "round":  # official: add(1).mul(127.5).round(), NaN -> 128, clamp to [0, 255]
        return x.add(1).mul(127.5).round().nan_to_num(128, 0, 255).clamp(0, 255).div(255)
    if how == "trunc":  # LlamaGen: clamp(127.5 x + 128, 0, 255) then a uint8 cast (truncation)
        return x.mul(127.5).add(128).clamp(0, 255).floor().div(255)
    raise ValueError(f"unknown to_uint8 {how!r} (none, round, trunc)")


def luma(x01: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-swing Y of RGB in [0, 1], in [16/255, 235/255]: (N, 1, H, W)."""
    w = torch.tensor([65.481, 128.553, 24.966], dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 * w).sum(1, keepdim=True).add(16.0).div(255.0)


def psnr(a01: torch.Tensor, b01: torch.Tensor, p: Protocol) -> torch.Tensor:
    """Per-image PSNR (dB, float64) with data_range 1 on RGB or on Y."""
    a, b = a01, b01
    if p.psnr_channel == "y":
        a, b = luma(a.double()), luma(b.double())
    mse = (a - b).pow(2).flatten(1).mean(1).double()
    if p.psnr_eps:
        return 10 * torch.log10(1.0 / (mse + p.psnr_eps))
    return 10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP / 10)))


def ssim(a: np.ndarray, b: np.ndarray, p: Protocol) -> float:
    """SSIM of two HxWx3 float images in [0, 1], mean over channels; NaN when the image is too small.

    gaussian11 = piq.ssim (11x11 Gaussian, sigma 1.5, population covariance, 'valid' windows): skimage with
    gaussian_weights computes the same windows and crops the same 5-pixel border."""
    from skimage.metrics import structural_similarity

    side = min(a.shape[0], a.shape[1])
    if p.ssim_window == "gaussian11":
        if side < 11:
            return float("nan")
        return float(structural_similarity(a, b, channel_axis=-1, data_range=p.ssim_range, gaussian_weights=True,
                                           sigma=1.5, use_sample_covariance=False))
    win = 7 if side >= 7 else (side if side % 2 else side - 1)
    if win < 3:
        return float("nan")
    return float(structural_similarity(a, b, channel_axis=-1, data_range=p.ssim_range, win_size=win))


def jpeg_roundtrip(x01: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image quantised to uint8, saved as JPEG (PIL, ``quality``, its default 4:2:0) and decoded."""
    from PIL import Image

    u8 = x01.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(torch.from_numpy(np.array(im.convert("RGB"))))
    return torch.stack(out).permute(0, 3, 1, 2).float().div(255).to(x01.device)


def fid_input(x01: torch.Tensor, p: Protocol) -> torch.Tensor:
    """What the Inception network sees (after its own uint8 quantisation): the image, or its JPEG."""
    return jpeg_roundtrip(x01, p.fid_jpeg) if p.fid_jpeg else x01
