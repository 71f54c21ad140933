"""Token caches: a finished tokenizer run -> its code indices and class labels, the generator's data.

The generator of Tables 2 and 11 trains on the indices a frozen tokenizer assigns to the training images
(LlamaGen extracts codes once, then trains the GPT on them). The cache is written beside the tokenizer
(``<tokenizer run dir>/tokens-<split>-<n>.pt``) and reused by every generator trained on that tokenizer.

A cache carries the key of the tokenizer that wrote it: the run's name (its signature) and a hash of its
stored science config. A cache whose key is not the run's current one is refused (one line), never
silently used: a token stream only means something with the decoder that made it.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch

from fvq.core.config import NON_SCIENCE_KEYS, from_flat_dict
from fvq.core.errors import SetupError
from fvq.core.rundir import read_json, read_status


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


def labelled_dataset(cfg, split: str, n: int | None):
    """The tokenizer's data source, as (image, label) pairs through ``label(i)``."""
    from fvq.core.data import build_dataset

    # train crops are fixed at epoch 0: the cache is a fixed set, as LlamaGen's pre-extracted codes
    ds = build_dataset(cfg.data.source, split, cfg.data.image_size, path=cfg.data.path or None, seed=cfg.seed,
                       n=n, protocol=cfg.eval.protocol if split == "val" else "fvq")
    if not hasattr(ds, "label"):
        raise TokenizerError(f"data.source={cfg.data.source} has no class labels (photos, fashion_mnist and imagefolder do)")
    return ds


def cache_path(run_dir: str, split: str, n: int) -> str:
    return os.path.join(run_dir, f"tokens-{split}-{n}.pt")


def token_cache(run_dir: str, split: str = "train", n: int = 4096, batch: int = 64,
                device: torch.device | str = "cpu", log=print) -> dict:
    """``{"key", "indices" (N, T) int64, "labels" (N,), "classes", "vocab", "side"}``: read from the cache
    beside the run, or extracted once and written there (atomically)."""
    path = cache_path(run_dir, split, n)
    check_tokenizer(run_dir)
    key = tokenizer_key(run_dir)
    if os.path.exists(path):
        c = torch.load(path, map_location="cpu", weights_only=True)
        if c.get("key") != key:
            raise TokenizerError(f"token cache {path} was written by tokenizer {c.get('key')!r}, not {key!r}; "
                                 f"delete it to re-extract")
        return c
    cfg, model = load_tokenizer(run_dir, device)
    if cfg.quant.kind != "vq":
        raise TokenizerError(f"quant.kind={cfg.quant.kind}: the generator reads one code per position (kind=vq)")
    ds = labelled_dataset(cfg, split, n)
    idx, lab = [], []
    with torch.no_grad():
        for s in range(0, len(ds), batch):
            r = range(s, min(s + batch, len(ds)))
            x = torch.stack([ds[i] for i in r]).to(device)
            idx.append(model.encode(x).indices.reshape(len(r), -1).cpu())
            lab.extend(ds.label(i) for i in r)
    side = cfg.data.image_size // model.ratio
    c = {"key": key, "indices": torch.cat(idx).long(), "labels": torch.tensor(lab, dtype=torch.long),
         "classes": int(ds.num_classes), "vocab": int(cfg.quant.codebook_size), "side": int(side)}
    tmp = path + ".tmp"
    torch.save(c, tmp)
    os.replace(tmp, path)
    log(f"[tokens] {len(ds)} {split} images of {key} -> {path}", flush=True)
    return c
