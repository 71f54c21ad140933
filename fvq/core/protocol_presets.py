"""What each evaluation protocol is (``eval.protocol``): its settings, ``get_protocol(name, **overrides) ->
Protocol``, and the val images it sees (the crop of a val image, the extra val sets of ``eval.extra``).

These live in core/, beside the data, because the data (the val crop of each protocol) and the config
checks (protocol names, ``eval.extra``) need them; how a protocol turns reconstructions into PSNR, SSIM and
the rFID inputs is fvq/eval/protocols.py. The pieces are pure functions pinned by tests/test_protocols.py.

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

Every difference from the official code that fvq does not reproduce is listed in docs/evaluation.md (with
the file and line of the official code).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

PROTOCOLS = ("fvq", "llamagen", "official")
PSNR_CHANNELS = ("rgb", "y")
SSIM_WINDOWS = ("uniform7", "gaussian11")


@dataclass(frozen=True)
class Protocol:
    name: str
    crop: str            # resize (short side, then centre) | adm | center (no resize)
    to_uint8: str        # none (float) | trunc (LlamaGen's clamp(127.5x+128) cast) | round (official)
    fid_jpeg: int        # JPEG quality of the round trip before Inception; 0 = none
    psnr_channel: str    # rgb | y (BT.601 luma)
    psnr_eps: float      # added to the MSE (official: pyiqa's 1e-8); 0 = capped at eval/protocols.py's PSNR_CAP
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
