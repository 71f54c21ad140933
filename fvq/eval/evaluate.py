"""Reconstruction evaluation: code usage, PSNR, SSIM, rec_l2, LPIPS and rFID over one pass of a val set.

``evaluate(model, dataset, ...) -> EvalResult(metrics, missing)``; a metric that cannot be computed is
left out of ``metrics`` and named in ``missing`` with a one-line reason (never invented).

Metrics (over the first ``max_images`` images of ``dataset``, in order, under ``torch.no_grad``)
- ``usage``, ``perplexity``, ``dead_codes``, ``tokens_per_code``: code frequencies over the whole pass
  (``fvq.eval.metrics.UsageCounter``; tokens_per_code = tokens counted / K).
- ``psnr``: mean over images of 10*log10(1/MSE) on [0,1] images, on RGB or on the BT.601 luma Y
  (``protocol`` / ``psnr_channel``). Under the fvq protocol the reconstruction is clamped to [-1,1] and an
  exact one (MSE 0) is capped at ``PSNR_CAP`` = 100 dB.
- ``ssim``: mean over images of skimage's ``structural_similarity`` on [0,1] HxWx3 float64 arrays, mean
  over channels, with the protocol's window (7x7 uniform, or 11x11 Gaussian as piq) and ``data_range``
  (1 under fvq; 2 under llamagen and official, as their code calls it on [0,1] images).
- ``rec_l2``: mean squared error in [-1,1] space (unclamped reconstruction).
- ``lpips``: mean LPIPS(x, x_hat) in [-1,1] space, only when ``lpips_module`` is given (the run picks it:
  ``eval.lpips_net``, fvq/build.py).
- ``rfid``: Frechet distance (torch-fidelity's ``fid_features_to_statistics`` / ``fid_statistics_to_metric``)
  between 2048-d pool3 Inception features of the real val images and of their reconstructions, over the
  first ``fid_images`` of the evaluated images (all by default). The cpu preset uses 64: on one core the
  Inception pass (299x299) costs ~0.5 s per image, more than the whole 300-step training run for 256
  images. An rFID from 64 images is biased upward; compare it only with rFIDs of the same ``fid_images``.
- ``eval_images`` / ``fid_images``: number of images evaluated / fed to rFID.

Data-parallel (``fvq.core.dist``): each rank evaluates a contiguous slice; usage counts are summed over ranks,
per-image PSNR/SSIM/LPIPS and Inception features are gathered in the 1-process order, so every metric is
the 1-process value up to float error (never one rank's view).

Protocols (``fvq``, ``llamagen``, ``official``: fvq/core/protocol_presets.py, fvq/eval/protocols.py): the val crop
(``evaluate`` switches a dataset that has a ``protocol`` attribute to it), how a reconstruction becomes an image
(float, or uint8 by LlamaGen's truncation or the official rounding: PSNR, SSIM and LPIPS see that image), PSNR
channel, SSIM window and data_range, and the JPEG round trip before rFID. For the built-in sources (photos,
fashion_mnist) every protocol crops the same images; the metrics still follow the protocol.

The FID side (weights, features, the real side's cache, the distance) is fvq/eval/inception.py; the metric
card each rFID carries is fvq/eval/card.py.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from fvq.core.protocol_presets import Protocol, get_protocol
from fvq.eval.card import crop_text, fid_card, reference_name
from fvq.eval.inception import find_fid_weights, frechet_distance, get_extractor, load_ref, ref_key, save_ref
from fvq.eval.protocols import PSNR_CAP  # noqa: F401 (re-exported: the cap of the fvq protocol)
from fvq.eval.protocols import fid_input, psnr, ssim, to_image


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    card: dict = field(default_factory=dict)  # rFID's metric card (module docstring); {} without an rFID



def _counts(dataset, max_images: int | None, fid_images: int | None) -> tuple[int, int]:
    """(images evaluated, images fed to rFID): the first ``max_images``, of which the first ``fid_images``."""
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    return n, (n if not fid_images else min(int(fid_images), n))


def _fid_setup(dataset, n_fid: int, protocol: str, device, cache_dir: str | None):
    """(extractor, ref_path, cached ref or None, missing reason or "")."""
    kind, wpath, reason = find_fid_weights()
    if kind is None:
        return None, None, None, reason
    if n_fid < 2:
        return None, None, None, f"rFID needs at least 2 images (got {n_fid})"
    try:
        extractor = get_extractor(kind, wpath, device)
    except Exception as e:  # corrupt file etc.: say so, never invent
        return None, None, None, f"could not load FID weights {wpath}: {type(e).__name__}: {e}"[:300]
    cdir = cache_dir or os.path.expanduser("~/.cache/fvq/fid")
    ref_path = os.path.join(cdir, f"ref_{ref_key(dataset, n_fid, protocol, wpath)}.npz")
    return extractor, ref_path, load_ref(ref_path), ""


@torch.no_grad()
def warm_reference(dataset, *, max_images: int | None = None, fid_images: int | None = None,
                   protocol: str = "fvq", device: str = "cpu", cache_dir: str | None = None,
                   batch_size: int = 64) -> str:
    """Fill the reference cache that ``evaluate`` (same arguments) will read; return a one-line status.

    The same images, batches and Inception chunks as inside ``evaluate``, so the cache holds the same
    features; runs that start side by side then do not each extract them."""
    proto = get_protocol(protocol)
    dataset = _with_protocol(dataset, protocol)
    _, n_fid = _counts(dataset, max_images, fid_images)
    extractor, ref_path, ref, reason = _fid_setup(dataset, n_fid, protocol, device, cache_dir)
    if extractor is None:
        return f"no rFID reference: {reason}"
    if ref is not None:
        return f"rFID reference for {n_fid} images already cached ({ref_path})"
    feats = []
    for start in range(0, n_fid, batch_size):
        x = torch.stack([dataset[i] for i in range(start, min(n_fid, start + batch_size))]).to(device)
        feats.append(extractor(fid_input(to_image(x, proto.to_uint8), proto)))
    save_ref(ref_path, torch.cat(feats))
    return f"rFID reference for {n_fid} images computed ({ref_path})"


def _with_protocol(dataset, protocol: str):
    if hasattr(dataset, "protocol") and dataset.protocol != protocol:
        dataset = copy.copy(dataset)
        dataset.protocol = protocol
    return dataset


def _usage_metrics(indices: list[torch.Tensor], num_codes: int) -> dict[str, float]:
    from fvq.eval.metrics import UsageCounter

    c = UsageCounter(num_codes)
    for i in indices:
        c.update(i)
    c.all_reduce()  # data-parallel: the union of every rank's codes, not rank 0's alone
    return {"usage": float(c.usage), "perplexity": float(c.perplexity), "dead_codes": float(c.dead_codes),
            "tokens_per_code": float(c.tokens_per_code)}


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int = 64, device: str = "cpu", fid: bool = True,
             lpips_module=None, protocol: str = "fvq", cache_dir: str | None = None,
             max_images: int | None = None, fid_images: int | None = None, psnr_channel: str = "auto",
             ssim_range: float = 0.0, ssim_window: str = "auto", progress: bool = False) -> EvalResult:
    """One pass over the first ``max_images`` images of ``dataset``; see the module docstring.
    rFID uses the first ``fid_images`` of them (None or 0: all); its count is reported as ``fid_images``.
    ``psnr_channel`` / ``ssim_range`` / ``ssim_window``: "auto" / 0 keep the protocol's own."""
    from fvq.core import dist

    proto: Protocol = get_protocol(protocol, psnr_channel, ssim_range, ssim_window)
    dataset = _with_protocol(dataset, protocol)
    n, n_fid = _counts(dataset, max_images, fid_images)
    dev = torch.device(device)
    res = EvalResult()

    extractor, ref_path, ref, reason = (None, None, None, "") if not fid else \
        _fid_setup(dataset, n_fid, protocol, device, cache_dir)
    if reason:
        res.missing["rfid"] = reason
    # Data-parallel: every rank takes part in computing real features when any rank lacks the cached stats.
    need_real = dist.any_true(extractor is not None and ref is None)

    indices, psnrs, ssims, sq, lp = [], [], [], 0.0, []
    real_feats, fake_feats = [], []
    n_pix = 0
    mine = dist.shard(n)  # data-parallel: this rank's contiguous slice; per-image values are gathered below
    for start in range(mine.start, mine.stop, batch_size):
        x = torch.stack([dataset[i] for i in range(start, min(mine.stop, start + batch_size))]).to(dev)
        x_hat, qout = model(x)
        x_hat = x_hat.float()
        indices.append(qout.indices.detach().cpu())
        sq += float((x_hat - x).pow(2).sum())
        n_pix += x.numel()
        # the images the protocol compares: float [0,1], or on the uint8 grid (llamagen, official)
        xc, yc = to_image(x, proto.to_uint8), to_image(x_hat, proto.to_uint8)
        psnrs += psnr(xc, yc, proto).tolist()
        a, b = xc.permute(0, 2, 3, 1).double().cpu().numpy(), yc.permute(0, 2, 3, 1).double().cpu().numpy()
        ssims += [ssim(a[i], b[i], proto) for i in range(len(a))]
        if lpips_module is not None:
            y_pm = x_hat.clamp(-1, 1) if proto.to_uint8 == "none" else yc.mul(2).sub(1)
            lp.append(lpips_module(x, y_pm).reshape(-1).float().cpu())
        k = min(len(x), n_fid - start)  # the first n_fid images (global order) feed rFID
        if extractor is not None and k > 0:
            fake_feats.append(extractor(fid_input(yc[:k], proto)))
            if need_real:
                real_feats.append(extractor(fid_input(xc[:k], proto)))
        if progress:
            print(f"eval {min(mine.stop, start + batch_size)}/{mine.stop}", flush=True)

    # Means over images are taken over the gathered per-image values (weighted by each rank's count, in
    # the 1-process order); usage counts are summed (a union of codes); rFID uses all ranks' features.
    res.metrics.update(_usage_metrics(indices, model.quantizer.num_codes))
    q = model.quantizer
    if hasattr(q, "level_counts"):  # multi-code quantizers (fvq/vq/multicode.py): usage per depth/scale, Table 4
        counts = sum((q.level_counts(i) for i in indices), torch.zeros(q.levels, q.num_codes, dtype=torch.long))
        res.metrics.update(q.level_usage(dist.all_reduce(counts)))  # counts add over ranks, fractions do not
    psnrs = dist.all_gather_cat(torch.tensor(psnrs, dtype=torch.float64)).tolist()
    ssims = dist.all_gather_cat(torch.tensor(ssims, dtype=torch.float64)).tolist()
    sq = float(dist.all_reduce(torch.tensor(sq, dtype=torch.float64)))
    n_pix = int(dist.all_reduce(torch.tensor(n_pix)))
    res.metrics["psnr"] = float(np.mean(psnrs))
    res.metrics["ssim"] = float(np.nanmean(ssims)) if not all(math.isnan(s) for s in ssims) else float("nan")
    if math.isnan(res.metrics["ssim"]):
        del res.metrics["ssim"]
        res.missing["ssim"] = f"images smaller than the {proto.ssim_window} SSIM window: SSIM undefined"
    res.metrics["rec_l2"] = sq / max(1, n_pix)
    if lpips_module is not None:
        res.metrics["lpips"] = float(dist.all_gather_cat(torch.cat(lp) if lp else torch.zeros(0)).mean())
    else:
        res.missing["lpips"] = "no LPIPS module (eval.lpips=false or weights absent)"
    if extractor is not None:
        empty = torch.zeros(0, 2048, dtype=torch.float64)
        fake = dist.all_gather_cat(torch.cat(fake_feats) if fake_feats else empty)
        real = dist.all_gather_cat(torch.cat(real_feats) if real_feats else empty) if need_real else None
        rfid, card = None, {}
        if dist.is_main():  # one rank computes the distance (an eigendecomposition) and writes the cache
            if need_real:
                ref = save_ref(ref_path, real)
            rfid = frechet_distance(ref, fake)
            card = fid_card("rfid", reference=reference_name(dataset), ref=ref, ref_images=n_fid,
                            kind=extractor.kind, path=extractor.path, images=n_fid, crop=crop_text(dataset, protocol),
                            protocol=protocol, jpeg=f"quality {proto.fid_jpeg} round trip" if proto.fid_jpeg else "none")
        res.metrics["rfid"], res.card = dist.broadcast_object((rfid, card))
        res.metrics["fid_images"] = float(n_fid)
    res.metrics["eval_images"] = float(n)
    return res
