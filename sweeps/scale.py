"""Scale presets: the same grid point at ``scale=paper`` or ``scale=cpu`` (big_vision's shrink switch).

Grid points are written in the paper's own terms (ImageNet 256x256, VQ-16, K=16,384, p=16, 40 epochs).
``resolve(point, scale)`` turns one into a full `Config`. At ``paper`` scale the values are used as they
are; ``epochs`` becomes optimisation steps over ImageNet-1k's 1,281,167 training images.

At ``cpu`` scale (built-in photos, 32x32, minutes per run on one core) sizes that cannot fit are scaled
down by one fixed, documented rule - never dropped:
- codebook size K / 16   (16,384 -> 1,024; 4,096 -> 256; 65,536 -> 4,096; 262,144 -> 16,384);
- VQBridge group p / 4   (16 -> 4, 64 -> 16, 4 -> 1; at least 1): K and p shrink together, so the paper's
  4^n pairing of p with K (Fig. 6 right) is kept and the bridge sees K/p = (paper K/p) / 4 tokens;
- encoder/decoder: vq-16 -> cpu-4 (32x32 -> 8x8 latents), vq-8 -> cpu-2 (32x32 -> 16x16), vq-32 -> cpu-8
  (32x32 -> 4x4): the ratio-8 row of Table 3 keeps "twice the latent resolution" and RQ-VAE's ratio-32
  tokenizer of Table 4 (8x8x4) keeps "half" (4x4x4 at cpu scale);
- multi-scale token maps (quant.scales, VAR): the steps whose side fits the cpu latent are kept and the
  last step stays the full latent (VAR quantizes the un-pooled residual last), appended if it is missing:
  1,2,3,4,5,6,8,10,13,16 on a 16x16 latent -> 1,2,3,4,5,6,8 on the 8x8 cpu latent (680 -> 155 tokens);
- epochs e -> 300 x e / 40 steps (40 epochs -> 300 steps, 120 -> 900);
- the linear (SimVQ) and MLP-5 baselines are built as the official ones at every scale: PyTorch's default
  init in every layer (quant.init=default, set by to_scale and honoured by fvq/build.py);
- the bridge's last Linear starts "small" (N(0, 1e-4)) instead of exactly zero: at this scale zero init
  stalls at ~3/4 usage with p=4 (measured; fvq/projectors.py); the paper scale keeps zero.
- lr: the cpu scale uses 2e-4 at batch 32 (optim.lr_scale=8) instead of the linearly scaled 2.5e-5, which
  is far too small for 300 steps (measured: fvq/config.py OptimCfg.lr_scale);
- rFID over the first 64 of the 256 evaluated images (eval.fid_images; the Inception pass dominates a cpu run);
Vector channel, d', depth N, projector type and schedule are used unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from fvq.config import Config, ConfigError, apply_overrides, base_config

IMAGENET_TRAIN = 1_281_167
CPU_STEPS_PER_40_EPOCHS = 300
ARCH_TO_CPU = {"vq-16": "cpu-4", "vq-8": "cpu-2", "vq-32": "cpu-8"}


def to_scale(point: dict[str, Any], scale: str) -> dict[str, Any]:
    """Paper-terms overrides -> overrides for ``scale`` (pseudo-key ``epochs`` becomes optim.steps)."""
    out = dict(point)
    epochs = out.pop("epochs", 40)
    if out.get("quant.projector") in ("linear", "mlp"):
        # The official SimVQ / MLP-5 baselines (Qbridge-lin/1, Qbridge-lin/5) keep PyTorch's default init in
        # every layer, at every scale; zero/small last-layer init is the official VQBridge's only.
        out.setdefault("quant.init", "default")
    if scale == "paper":
        batch = int(out.get("optim.batch", 128))
        out["optim.steps"] = int(epochs) * IMAGENET_TRAIN // batch
        return out
    if scale != "cpu":
        raise ConfigError(f"scale={scale!r} is not one of cpu, paper")
    if "quant.codebook_size" in out:
        out["quant.codebook_size"] = max(int(out["quant.codebook_size"]) // 16, 16)
    if "quant.group" in out:
        out["quant.group"] = max(int(out["quant.group"]) // 4, 1)
    if "model.arch" in out:
        arch = out["model.arch"]
        if arch not in ARCH_TO_CPU:
            raise ConfigError(f"model.arch={arch!r} has no cpu-scale counterpart (known: {', '.join(ARCH_TO_CPU)})")
        out["model.arch"] = ARCH_TO_CPU[arch]
    if "quant.scales" in out:
        out["quant.scales"] = shrink_scales(out["quant.scales"], cpu_latent_side(out))
    out["optim.steps"] = int(round(CPU_STEPS_PER_40_EPOCHS * float(epochs) / 40))
    return out


def cpu_latent_side(cpu_point: dict[str, Any]) -> int:
    """Latent side of a cpu-scale point: image size over the cpu arch's downsampling ratio."""
    from fvq.models import get_arch

    base = base_config("cpu")
    arch = get_arch(cpu_point.get("model.arch", base.model.arch))
    return int(cpu_point.get("data.image_size", base.data.image_size)) // arch.ratio


def shrink_scales(scales: str, side: int) -> str:
    """Keep the steps that fit a side x side latent; the last step is the full latent (module docstring)."""
    from fvq.config import parse_scales

    kept = [s for s in parse_scales(scales) if s <= side]
    return ",".join(map(str, kept if kept and kept[-1] == side else [*kept, side]))


def resolve(point: dict[str, Any], scale: str, extra: dict[str, Any] | None = None) -> Config:
    """Full config of one grid point at ``scale``; ``extra`` are command-line overrides applied last."""
    cfg = apply_overrides(base_config(scale), {**to_scale(point, scale), **(extra or {})})
    if cfg.quant.latent_dim == cfg.model.channel:
        # d' = d spelled explicitly is the same science as the default 0 ("d' = d"): one signature, one run
        cfg = replace(cfg, quant=replace(cfg.quant, latent_dim=0))
    return cfg
