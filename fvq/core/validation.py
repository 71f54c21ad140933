"""Checks of a resolved :class:`fvq.core.config.Config` that need no model construction: choices, positive
sizes, fractions, finite numbers, optimiser settings, evaluation counts, multi-code keys. Each failure is a
one-line ``ConfigError`` naming the key. Models and projectors check their own combinations, and
``fvq.build.check_buildable`` adds what needs the architecture or the file system.

config.py validates every override it applies, so this module sits below it and reads nothing of it at
run time: the config comes with its flat form (``to_flat_dict``), and the allowed values of each key,
the scale presets' names among them, are here.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from fvq.core.errors import ConfigError, shorten

if TYPE_CHECKING:  # annotations only
    from fvq.core.config import Config, QuantCfg

SCALES = ("cpu", "paper")  # the presets of fvq.core.config.base_config

_CHOICES = {
    "scale": SCALES,
    "device": ("cpu", "cuda", "auto"),
    "quant.projector": ("none", "linear", "mlp", "vqbridge"),
    "quant.bridge": ("vit", "dit"),  # fvq/vq/projectors.py BRIDGES
    "quant.kind": ("vq", "rq", "msvq"),
    "quant.init": ("zero", "small", "default"),
    "quant.search_dtype": ("fp32", "bf16"),  # fvq/vq/quantize.py SEARCH_DTYPES
    "data.source": ("photos", "fashion_mnist", "imagefolder"),
    "sched.kind": ("anneal", "constant", "cosine"),
    "eval.protocol": ("fvq", "llamagen", "official"),
    "eval.psnr_channel": ("auto", "rgb", "y"),
    "eval.ssim_window": ("auto", "uniform7", "gaussian11"),
    "eval.lpips_net": ("loss", "alex", "vgg"),
    "log.progress": ("auto", "bar", "lines", "off"),
    "loss.lpips_net": ("vgg", "alex"),
}

_POSITIVE = ("model.channel", "quant.codebook_size", "quant.depth", "quant.group", "quant.heads",
             "quant.mlp_layers", "quant.search_mb", "quant.depth_codes", "data.image_size", "data.val_size", "optim.batch",
             "optim.base_batch", "optim.steps", "eval.batch", "log.every", "log.usage_window",
             "log.ckpt_every")
_FRACTIONS = ("sched.warmup", "sched.warmup_start", "sched.constant", "sched.final")


def validate(cfg: Config, flat: dict[str, Any]) -> None:
    """Checks that need no model construction; models/projectors validate their own combinations
    (fvq.build.check_buildable adds the ones that need the architecture or the file system). ``flat`` is
    ``to_flat_dict(cfg)``."""
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value}: must be a finite number")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key}={shorten(repr(flat[key]))} is not one of {', '.join(choices)}")
    for key in _POSITIVE:
        if flat[key] <= 0:
            raise ConfigError(f"{key}={flat[key]} must be > 0")
    for key in _FRACTIONS:
        if not 0.0 <= flat[key] <= 1.0:
            raise ConfigError(f"{key}={flat[key]} must be in [0, 1]")
    if cfg.optim.accum < 1 or cfg.optim.batch % cfg.optim.accum:
        raise ConfigError(f"optim.accum={cfg.optim.accum} must be >= 1 and divide optim.batch={cfg.optim.batch}")
    o = cfg.optim
    if o.grad_clip < 0:
        raise ConfigError(f"optim.grad_clip={o.grad_clip} must be >= 0 (0 = no clipping; < 0 would ascend)")
    if not (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1):
        raise ConfigError(f"optim.beta1={o.beta1}, optim.beta2={o.beta2}: Adam's betas must be in [0, 1)")
    if o.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={o.weight_decay} must be >= 0")
    if cfg.eval.fid and cfg.eval.fid_images > cfg.eval.images:
        raise ConfigError(f"eval.fid_images={cfg.eval.fid_images} exceeds eval.images={cfg.eval.images} "
                          f"(rFID uses the first fid_images of the evaluated images; 0 = all)")
    if cfg.optim.projector_lr <= 0:
        raise ConfigError(f"optim.projector_lr={cfg.optim.projector_lr} must be > 0 (a multiplier on the lr)")
    if cfg.optim.base_lr <= 0 or cfg.optim.lr_scale <= 0:
        raise ConfigError(f"optim.base_lr={cfg.optim.base_lr} and optim.lr_scale={cfg.optim.lr_scale} must be > 0")
    if cfg.quant.latent_dim < 0:
        raise ConfigError(f"quant.latent_dim={cfg.quant.latent_dim} must be >= 0 (0 = same as model.channel)")
    _validate_multicode(cfg.quant)
    _validate_bridge(cfg.quant, cfg.model.channel)
    if cfg.data.source == "imagefolder" and not cfg.data.path:
        raise ConfigError("data.source=imagefolder needs data.path=/path/to/dataset")
    if cfg.eval.images > cfg.data.val_size:
        raise ConfigError(f"eval.images={cfg.eval.images} exceeds data.val_size={cfg.data.val_size}")
    if cfg.eval.fid_images < 0:
        raise ConfigError(f"eval.fid_images={cfg.eval.fid_images} must be >= 0 (0 = every evaluated image)")
    if cfg.eval.ssim_range < 0:
        raise ConfigError(f"eval.ssim_range={cfg.eval.ssim_range} must be >= 0 (0 = the protocol's)")
    from fvq.core.protocol_presets import extra_sets

    try:
        extra_sets(cfg.eval.extra)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.loss.perceptual_weight < 0 or cfg.loss.disc_weight < 0 or cfg.loss.disc_start < 0:
        raise ConfigError("loss weights and loss.disc_start must be >= 0")


def parse_scales(text: str, key: str = "quant.scales") -> tuple[int, ...]:
    """"1,2,3" -> (1, 2, 3): positive, strictly increasing, written without spaces (one spelling per run)."""
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", text):
        raise ConfigError(f"{key}={shorten(repr(text))}: expected comma-separated token-map sides such as 1,2,4,8")
    sizes = tuple(int(x) for x in text.split(","))
    if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ConfigError(f"{key}={shorten(repr(text))}: sides must be >= 1 and strictly increasing")
    return sizes


def _validate_bridge(q: QuantCfg, channel: int) -> None:
    """The VQBridge's shape (quant.bridge, fvq/vq/projectors.py): heads split its width d' (0 = model.channel);
    the dit bridge cuts a sqrt(K) x sqrt(K) code grid into P x P patches (p = P^2) and adds 2-D sin-cos
    positions (d' / 4 frequencies per axis and function)."""
    if q.projector != "vqbridge":
        if q.bridge != "vit":  # a stray key would change the signature of a run it does not change
            raise ConfigError(f"quant.bridge={q.bridge} needs quant.projector=vqbridge "
                              f"(got quant.projector={q.projector})")
        return
    width = q.latent_dim or channel
    where = f"quant.latent_dim={q.latent_dim}" + (f" -> model.channel={channel}" if not q.latent_dim else "")
    if width % q.heads:
        raise ConfigError(f"{where}: the bridge width {width} must be divisible by quant.heads={q.heads}")
    if q.bridge != "dit":
        return
    side, patch = math.isqrt(q.codebook_size), math.isqrt(q.group)
    if side * side != q.codebook_size:
        raise ConfigError(f"quant.codebook_size={q.codebook_size} must be a perfect square with quant.bridge=dit "
                          f"(a sqrt(K) x sqrt(K) grid of codes, as the official qbridge.py)")
    if patch * patch != q.group or side % patch:
        raise ConfigError(f"quant.group={q.group} must be P*P with P dividing sqrt(quant.codebook_size)={side} with "
                          f"quant.bridge=dit (P x P patches of the code grid, e.g. 4, 16, 64)")
    if width % 4:
        raise ConfigError(f"{where}: the bridge width {width} must be divisible by 4 with quant.bridge=dit "
                          f"(2-D sin-cos position embedding)")


def _validate_multicode(q: QuantCfg) -> None:
    """Multi-code keys only mean something for their own kind: a stray one is an error, not a silent no-op."""
    if q.kind != "rq" and q.depth_codes != 1:
        raise ConfigError(f"quant.depth_codes={q.depth_codes} needs quant.kind=rq (got quant.kind={q.kind})")
    if q.kind == "vq" and not q.shared:
        raise ConfigError("quant.shared=false (one codebook per level) needs quant.kind=rq or msvq")
    if q.kind == "msvq":
        if not q.scales:
            raise ConfigError("quant.kind=msvq needs quant.scales, e.g. quant.scales=1,2,3,4,5,6,8,10,13,16")
        parse_scales(q.scales)
    elif q.scales:
        raise ConfigError(f"quant.scales={shorten(repr(q.scales))} needs quant.kind=msvq (got quant.kind={q.kind})")
    if q.phi < 0:
        raise ConfigError(f"quant.phi={q.phi} must be >= 0")
    if q.phi and q.kind != "msvq":
        raise ConfigError(f"quant.phi={q.phi} needs quant.kind=msvq (got quant.kind={q.kind})")
    if q.search_dtype != "fp32" and q.kind != "vq":  # the multi-code searches (fvq/vq/multicode.py) are fp32
        raise ConfigError(f"quant.search_dtype={q.search_dtype} needs quant.kind=vq (got quant.kind={q.kind})")
