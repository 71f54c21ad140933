"""Evaluate a tokenizer checkpoint: ``python -m fvq.evaluate ckpt=PATH format=llamagen [scale=paper] [key=value ...]``.

FVQ releases its tokenizers as LlamaGen-format ("VQGAN format") files and evaluates them with LlamaGen's VQ
model (yfChang-cv/FVQ README.md:58-67, scripts/recon_eval/eval.sh). Here such a file is loaded onto our
``VQModel`` (fvq/vq/checkpoint_io.py: every key and shape checked) and measured by our evaluation
(fvq/eval/evaluate.py through fvq/build.py's ``evaluate_run``: usage, PSNR, SSIM, LPIPS, rFID, then each
``eval.extra`` set), so a released model and our own runs go through one code path and one protocol.

- ``format=llamagen``: the config is ``scale``'s preset (paper: VQ-16, K=16,384, d=256, ImageNet val at 256,
  the official protocol: the shape of FVQ's scripts/recon/FVQ-16384.sh) with ``quant.projector=none`` (the
  file's codebook is already projected), then the given keys. A release at another K or d needs
  ``quant.codebook_size`` / ``model.channel``; LlamaGen's own VQ-16 also ``model.channel=8 quant.l2_norm=true``
  (LlamaGen tokenizer/tokenizer_image/vq_train.py:284-285); a mismatch names the file's key and the values
  that fit it.
- ``format=fvq``: one of our ``ckpt.pt``; its stored config, then the given keys (another ``eval.protocol``).

Prints ``{"ckpt", "format", "metrics", "missing"}`` as JSON. Bad input (a key, a value, the file) is one line
on stderr and exit 2. Several processes (torchrun) share the images as training's evaluation does.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import torch

from fvq.build import build_eval_lpips, build_model, build_val_dataset, evaluate_run, resolve_device
from fvq.core import dist
from fvq.core.checkpoint import CheckpointError
from fvq.core.config import Config, ConfigError, all_keys, apply_overrides, base_config, from_flat_dict
from fvq.core.errors import SetupError, one_line
from fvq.core.keyvalue import fields_of, split, typed, unknown
from fvq.vq.checkpoint_io import FORMATS, load_state, model_state, read_checkpoint

USAGE = "python -m fvq.evaluate ckpt=PATH format=llamagen|fvq [scale=paper|cpu] [key=value ...]"


@dataclass(frozen=True)
class Args:
    ckpt: str = ""
    format: str = "llamagen"     # llamagen (FVQ's released files) | fvq (our ckpt.pt)
    scale: str = "paper"         # format=llamagen: the preset the config starts from (fvq/core/config.py)


def parse(argv: list[str]) -> tuple[Args, list[str]]:
    """(the command's options, config overrides as ``key=value``) through the one parser (fvq/core/keyvalue.py)."""
    mine, overrides, keys = [], [], set(all_keys())
    for k, v in split(argv, USAGE):
        if k in fields_of(Args):  # scale is also a config key: here it picks the preset, as in fvq.train
            mine.append((k, v))
        elif k in keys:
            overrides.append(f"{k}={v}")
        else:
            raise unknown(k, [*fields_of(Args), *keys])
    args = typed(Args, mine)
    if args.format not in FORMATS:
        raise ConfigError(f"format={args.format!r} is not one of {', '.join(FORMATS)}")
    if not args.ckpt:
        raise ConfigError(f"give ckpt=PATH ({USAGE})")
    return args, overrides


def load(args: Args, overrides: list[str]) -> tuple[Config, torch.nn.Module]:
    """The config and the model with the checkpoint's weights (on CPU)."""
    obj = read_checkpoint(args.ckpt)
    if args.format == "llamagen":
        cfg = apply_overrides(base_config(args.scale), ["quant.projector=none", *overrides])
        if cfg.quant.projector != "none" or cfg.quant.kind != "vq":
            raise ConfigError(f"quant.projector={cfg.quant.projector} quant.kind={cfg.quant.kind}: a LlamaGen-format "
                              f"model is plain VQ with its codebook already projected (quant.projector=none)")
    else:
        stored = obj.get("config")
        if not isinstance(stored, dict):
            raise CheckpointError(f"checkpoint {args.ckpt} stores no config (is it an fvq ckpt.pt?)")
        cfg = apply_overrides(from_flat_dict(stored), overrides)
    model = build_model(cfg)
    load_state(model, model_state(obj, args.ckpt), args.format, args.ckpt)
    return cfg, model


def run(args: Args, overrides: list[str]) -> dict:
    cfg, model = load(args, overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    with dist.joined(resolve_device(cfg)) as device:
        model = model.to(device).eval()
        lpips = build_eval_lpips(cfg, device, None)  # no training loss here: eval.lpips_net=loss is missing
        with torch.no_grad():
            res = evaluate_run(cfg, model, build_val_dataset(cfg), device, *lpips)
    return {"ckpt": args.ckpt, "format": args.format, "metrics": res.metrics, "missing": res.missing}


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 evaluated, 2 bad input (one line on stderr)."""
    try:
        args, overrides = parse(list(sys.argv[1:] if argv is None else argv))
        out = run(args, overrides)
    except (SetupError, ValueError, OSError) as e:  # ValueError: a constructor refusing a value
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if dist.env_rank() == 0:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
