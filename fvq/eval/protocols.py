"""Evaluation protocols: how a val image is cropped, how a reconstruction becomes an image, how PSNR, SSIM
and the rFID inputs are computed. ``get_protocol(name, **overrides) -> Protocol``; the pieces are pure
functions pinned by tests/test_protocols.py on known images.

Three protocols (``eval.protocol``):
- ``fvq`` (the cpu-scale default, this harness's own): val images are short-side resized (bicubic) and
  centre cropped; the reconstruction is clamped to [-1, 1] and kept as float; PSNR on RGB, SSIM with
  skimage's 7x7 uniform window and data_range=1; rFID on the float images quantised to uint8, no JPEG.
- ``llamagen`` (LlamaGen's tokenizer evaluation, ``tokenizer/tokenizer_image/reconstruction_vq_ddp.py``):
  ADM centre crop (BOX halving while the short side >= 2 x size, BICUBIC to size, centre crop with floor
  offsets); the reconstruction becomes uint8 by ``clamp(127.5 x + 128, 0, 255)`` then a truncating cast;
  PSNR on RGB (skimage, data_range 1 on [0,1]); SSIM with skimage's 7x7 uniform window and
  ``data_range=2.0`` on [0,1] images; rFID on PNGs (lossless), i.e. no JPEG.
- ``official`` (the FVQ authors' ``eval_fid_usage_lpips.py``, the one behind the paper's Tables 1, 3, 7, 8):
  torchvision ``CenterCrop(256)`` with no resize (offsets ``round((H - 256) / 2)``, zero padding when an
  image is smaller); the reconstruction becomes uint8 by ``round(255 (x + 1) / 2)``; PSNR on the BT.601
  luma Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 with data_range 1 and mse + 1e-8 (pyiqa's
  ``psnr(test_y_channel=True, color_space='ycbcr')``); SSIM with piq's 11x11 Gaussian window
  (sigma 1.5, population covariance) and ``data_range=2.0`` on [0,1] images, mean over RGB channels;
  rFID: both the real crops and the reconstructions are saved as JPEG (PIL's default quality 75) and read
  back before torch-fidelity's Inception. LPIPS (AlexNet) and PSNR/SSIM see the uint8 images, not the JPEGs.

Every difference from the official code that this module does not reproduce is listed in
docs/evaluation.md (with the file and line of the official code).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
import torch

PROTOCOLS = ("fvq", "llamagen", "official")
PSNR_CHANNELS = ("rgb", "y")
SSIM_WINDOWS = ("uniform7", "gaussian11")
PSNR_CAP = 100.0  # dB for an exact reconstruction under the fvq / llamagen protocols (MSE 0)


@dataclass(frozen=True)
class Protocol:
    name: str
    crop: str            # resize (short side, then centre) | adm | center (no resize)
    to_uint8: str        # none (float) | trunc (LlamaGen's clamp(127.5x+128) cast) | round (official)
    fid_jpeg: int        # JPEG quality of the round trip before Inception; 0 = none
    psnr_channel: str    # rgb | y (BT.601 luma)
    psnr_eps: float      # added to the MSE (official: pyiqa's 1e-8); 0 = capped at PSNR_CAP instead
    ssim_range: float    # skimage / piq data_range argument (images are always in [0, 1])
    ssim_window: str     # uniform7 (skimage default) | gaussian11 (piq / Wang et al.)


PRESETS = {
    "fvq": Protocol("fvq", "resize", "none", 0, "rgb", 0.0, 1.0, "uniform7"),
    "llamagen": Protocol("llamagen", "adm", "trunc", 0, "rgb", 0.0, 2.0, "uniform7"),
    "official": Protocol("official", "center", "round", 75, "y", 1e-8, 2.0, "gaussian11"),
}


def get_protocol(name: str, psnr_channel: str = "auto", ssim_range: float = 0.0,
                 ssim_window: str = "auto") -> Protocol:
    """The named protocol; ``auto`` / 0.0 keep its own PSNR channel, SSIM data_range and window."""
    if name not in PRESETS:
        raise ValueError(f"eval.protocol={name!r} is not one of {', '.join(PROTOCOLS)}")
    p = PRESETS[name]
    if psnr_channel != "auto":
        if psnr_channel not in PSNR_CHANNELS:
            raise ValueError(f"eval.psnr_channel={psnr_channel!r} is not one of auto, {', '.join(PSNR_CHANNELS)}")
        p = replace(p, psnr_channel=psnr_channel)
    if ssim_range:
        if ssim_range < 0:
            raise ValueError(f"eval.ssim_range={ssim_range} must be > 0 (0 = the protocol's)")
        p = replace(p, ssim_range=float(ssim_range))
    if ssim_window != "auto":
        if ssim_window not in SSIM_WINDOWS:
            raise ValueError(f"eval.ssim_window={ssim_window!r} is not one of auto, {', '.join(SSIM_WINDOWS)}")
        p = replace(p, ssim_window=ssim_window)
    return p


EXTRA_SETS = ("coco",)


def extra_sets(text: str) -> list[tuple[str, str]]:
    """``eval.extra``: "coco:/data/val2017" -> [("coco", "/data/val2017")]; "" -> []. A ValueError naming the
    key otherwise; the folders are checked where the data lives (sweeps/plan.py, fvq/build.py)."""
    out = []
    for part in filter(None, text.split(",")):
        name, sep, path = part.partition(":")
        if not sep or name not in EXTRA_SETS or not path:
            raise ValueError(f"eval.extra={text!r}: expected NAME:PATH with NAME one of {', '.join(EXTRA_SETS)} "
                             f"(e.g. eval.extra=coco:/datasets/coco/val2017)")
        out.append((name, path))
    return out


# ---- crops of a PIL image (imagefolder val sets) -> uint8 HxWx3 ------------------------------------------
def crop_box(width: int, height: int, size: int, crop: str) -> tuple[int, int]:
    """(top, left) of the size x size window on an image already at the protocol's scale.

    center: torchvision's CenterCrop offsets, int(round((H - size) / 2)) (Python rounds halves to even);
    resize / adm: floor((H - size) / 2)."""
    if crop == "center":
        return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return (height - size) // 2, (width - size) // 2


def val_crop(img, size: int, crop: str) -> np.ndarray:
    """A PIL RGB image -> uint8 (size, size, 3) as the protocol's val transform gives it."""
    from PIL import Image

    if crop == "center":  # no resize; zero padding when smaller, as torchvision's CenterCrop
        import torchvision.transforms.functional as TF

        return np.array(TF.center_crop(img, [size, size]))
    if crop == "adm":
        while min(*img.size) >= 2 * size:
            img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
        scale = size / min(*img.size)
        img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    elif crop == "resize":
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                         resample=Image.BICUBIC)
    else:
        raise ValueError(f"unknown crop {crop!r} (resize, adm, center)")
    top, left = crop_box(img.width, img.height, size, crop)
    return np.array(img)[top:top + size, left:left + size]


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
