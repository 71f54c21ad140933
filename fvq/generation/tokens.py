"""Token caches: a finished tokenizer run -> its code indices and class labels, the generator's data.

The generator of Tables 2 and 11 trains on the indices a frozen tokenizer assigns to the training images
(LlamaGen extracts codes once, then trains the GPT on them). The cache is written beside the tokenizer
(``<tokenizer run dir>/tokens-<split>-<n>.pt``) and reused by every generator trained on that tokenizer.

A cache carries the key of the tokenizer that wrote it: the run's name (its signature) and a hash of its
stored science config. A cache whose key is not the run's current one is refused (one line), never
silently used: a token stream only means something with the decoder that made it.

Augmentation (``aug``), as LlamaGen's ``autoregressive/train/extract_codes_c2i.py``:
- ``none``: one code map per image, the tokenizer data source's train item (fixed at epoch 0), as before.
- ``ten_crop_flip`` (its ``--ten-crop``, the FVQ scripts' ``imagenet_code_c2i_flip_ten_crop`` codes): the
  image centre-cropped to ``int(1.1 x size)`` (ADM's ``center_crop_arr``; its ``--crop-range`` default 1.1),
  then torchvision's ``TenCrop(size)``: the four corners and the centre, each also flipped left-right. All
  ten code maps are stored, ``indices`` (N, 10, T); training draws one of them per sample, uniformly, each
  time (its ``dataset/imagenet.py``), so an epoch is still N samples. The cache file name carries the mode.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch
from torchvision.transforms.functional import ten_crop

from fvq.core.config import NON_SCIENCE_KEYS, from_flat_dict
from fvq.core.errors import SetupError
from fvq.core.rundir import read_json, read_status


AUGS = ("none", "ten_crop_flip")
TEN_CROP_RANGE = 1.1  # LlamaGen's --crop-range default: centre crop 1.1 x size (281 px at 256) before TenCrop
VIEWS = {"none": 1, "ten_crop_flip": 10}  # code maps stored per image


class TokenizerError(SetupError):
    """A tokenizer run that cannot feed a generator (missing, unfinished, failed) or a foreign token cache."""


def tokenizer_key(run_dir: str) -> str:
    """``<signature>:<sha1 of the stored science config>``; the identity a token cache is keyed by."""
    stored = read_json(os.path.join(run_dir, "config.json"))
    sci = {k: v for k, v in sorted(stored.items()) if k not in NON_SCIENCE_KEYS}
    blob = json.dumps(sci, sort_keys=True, separators=(",", ":"), default=str)
    return f"{os.path.basename(os.path.normpath(run_dir))}:{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def check_tokenizer(run_dir: str) -> None:
    """Refuse a run dir that is not a finished tokenizer run with a checkpoint."""
    if not os.path.isdir(run_dir) or not os.path.exists(os.path.join(run_dir, "config.json")):
        raise TokenizerError(f"tokenizer run {run_dir} does not exist (no config.json)")
    st = read_status(run_dir)
    if st.get("state") != "FINISHED":
        why = f": {st['reason']}" if st.get("reason") else ""
        raise TokenizerError(f"tokenizer run {os.path.basename(run_dir)} is {st.get('state', 'not started')}{why}, "
                             f"not FINISHED")
    if not os.path.exists(os.path.join(run_dir, "ckpt.pt")):
        raise TokenizerError(f"tokenizer run {os.path.basename(run_dir)} has no ckpt.pt")


def load_tokenizer(run_dir: str, device: torch.device | str = "cpu"):
    """(config, VQModel in eval mode) of a finished run."""
    from fvq.build import build_model
    from fvq.core.checkpoint import load_checkpoint

    check_tokenizer(run_dir)
    cfg = from_flat_dict(read_json(os.path.join(run_dir, "config.json")), strict=False)
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(os.path.join(run_dir, "ckpt.pt"))["model"])
    return cfg, model.to(device).eval()


def labelled_dataset(cfg, split: str, n: int | None, aug: str = "none"):
    """The tokenizer's data source, as (image, label) pairs through ``label(i)``; for ``ten_crop_flip``, the
    images ``views`` cuts ten crops from."""
    from fvq.core.data import build_dataset

    size, kw = cfg.data.image_size, {"protocol": cfg.eval.protocol if split == "val" else "fvq"}
    if aug == "ten_crop_flip":
        size = int(size * TEN_CROP_RANGE)
        if cfg.data.source == "imagefolder":
            # the whole image, ADM-centre-cropped: the llamagen protocol's val crop is LlamaGen's transform
            kw = {"protocol": "llamagen", "train": False}
        # the built-in sources have no whole image per item: their train item at the larger size stands in
    # train crops are fixed at epoch 0: the cache is a fixed set, as LlamaGen's pre-extracted codes
    ds = build_dataset(cfg.data.source, split, size, path=cfg.data.path or None, seed=cfg.seed, n=n, **kw)
    if not hasattr(ds, "label"):
        raise TokenizerError(f"data.source={cfg.data.source} has no class labels (photos, fashion_mnist and imagefolder do)")
    return ds


def check_aug(aug: str) -> None:
    if aug not in AUGS:
        raise ValueError(f"aug={aug!r}; known: {', '.join(AUGS)}")


def cache_path(run_dir: str, split: str, n: int, aug: str = "none") -> str:
    check_aug(aug)
    return os.path.join(run_dir, f"tokens-{split}-{n}{'' if aug == 'none' else '-' + aug}.pt")


def views(x: torch.Tensor, size: int) -> torch.Tensor:
    """(10, 3, size, size): torchvision's TenCrop of one (3, H, W) image, i.e. the corners and the centre,
    then the same five of the image flipped left-right."""
    return torch.stack(ten_crop(x, [size, size]))


def token_cache(run_dir: str, split: str = "train", n: int = 4096, batch: int = 64,
                device: torch.device | str = "cpu", log=print, aug: str = "none") -> dict:
    """``{"key", "aug", "indices", "labels" (N,), "classes", "vocab", "side"}``: read from the cache beside
    the run, or extracted once and written there (atomically). ``indices``: (N, T) int64 for ``none``;
    (N, 10, T) int16 (int32 past a 32,768 codebook) for ``ten_crop_flip``, where int64 would need 26 GB at
    ImageNet scale. Read memory-mapped, so data-parallel ranks on one node share one copy."""
    path = cache_path(run_dir, split, n, aug)
    check_tokenizer(run_dir)
    key = tokenizer_key(run_dir)
    if os.path.exists(path):
        c = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if c.get("key") != key:
            raise TokenizerError(f"token cache {path} was written by tokenizer {c.get('key')!r}, not {key!r}; "
                                 f"delete it to re-extract")
        if c.get("aug", "none") != aug:  # caches written before ``aug`` existed are plain ones
            raise TokenizerError(f"token cache {path} holds aug={c.get('aug', 'none')!r} codes, not {aug!r}")
        return c
    cfg, model = load_tokenizer(run_dir, device)
    if cfg.quant.kind != "vq":
        raise TokenizerError(f"quant.kind={cfg.quant.kind}: the generator reads one code per position (kind=vq)")
    ds = labelled_dataset(cfg, split, n, aug)
    size, nv = cfg.data.image_size, VIEWS[aug]
    small = torch.int16 if cfg.quant.codebook_size <= 2 ** 15 else torch.int32
    idx, lab = [], []
    with torch.no_grad():
        step = max(1, batch // nv)  # images per encoder call: at most ``batch`` crops
        for s in range(0, len(ds), step):
            r = range(s, min(s + step, len(ds)))
            if nv == 1:
                x = torch.stack([ds[i] for i in r]).to(device)
                idx.append(model.encode(x).indices.reshape(len(r), -1).cpu())
            else:
                x = torch.cat([views(ds[i], size) for i in r]).to(device)
                idx.append(model.encode(x).indices.reshape(len(r), nv, -1).cpu().to(small))
            lab.extend(ds.label(i) for i in r)
    side = size // model.ratio
    indices = torch.cat(idx)
    c = {"key": key, "aug": aug, "indices": indices.long() if nv == 1 else indices,
         "labels": torch.tensor(lab, dtype=torch.long), "classes": int(ds.num_classes),
         "vocab": int(cfg.quant.codebook_size), "side": int(side)}
    tmp = path + ".tmp"
    torch.save(c, tmp)
    os.replace(tmp, path)
    log(f"[tokens] {len(ds)} {split} images ({nv} code map(s) each, aug={aug}) of {key} -> {path}", flush=True)
    return c
