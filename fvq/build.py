"""Config -> objects: the one place that maps `fvq.core.config.Config` onto the library's constructors."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from fvq.core.config import Config, ConfigError


def build_quantizer(cfg: Config):
    """VQ (section 3), or a multi-code quantizer (quant.kind=rq / msvq, section 4.4), through the projector."""
    from fvq.vq.projectors import build_projector
    from fvq.vq.quantize import VectorQuantizer

    q, d = cfg.quant, cfg.model.channel

    def projector():
        if q.projector == "none":
            return None
        return build_projector(q.projector, q.codebook_size, d, latent_dim=q.latent_dim, depth=q.depth,
                               group=q.group, heads=q.heads, mlp_ratio=q.mlp_ratio, mlp_layers=q.mlp_layers,
                               init=q.init,  # the last Linear of every projector: the logged value is what runs
                               bridge=q.bridge)  # vit (eq. 8-11) | dit (qbridge.py): fvq/vq/projectors.py

    if q.kind == "vq":
        return VectorQuantizer(q.codebook_size, d, projector=projector(), beta=q.beta, l2_norm=q.l2_norm,
                               search_budget_mb=q.search_mb, search_dtype=q.search_dtype)
    from fvq.vq.multicode import MultiScaleQuantizer, ResidualQuantizer

    kw = dict(shared=q.shared, projector=projector, beta=q.beta, l2_norm=q.l2_norm, search_budget_mb=q.search_mb)
    if q.kind == "rq":
        return ResidualQuantizer(q.codebook_size, d, q.depth_codes, **kw)
    if q.kind == "msvq":
        from fvq.core.validation import parse_scales
        from fvq.vq.models import get_arch

        latent = cfg.data.image_size // get_arch(cfg.model.arch).ratio
        scales = parse_scales(q.scales)
        if scales[-1] > latent:
            raise ConfigError(f"quant.scales={q.scales} ends at {scales[-1]}, larger than the {latent}x{latent} "
                              f"latent of model.arch={cfg.model.arch} at data.image_size={cfg.data.image_size}")
        return MultiScaleQuantizer(q.codebook_size, d, scales, latent_size=latent, phi=q.phi, **kw)
    raise ConfigError(f"quant.kind={q.kind!r} is not one of vq, rq, msvq")


def check_buildable(cfg: Config, files: bool = True) -> None:
    """What a run needs beyond valid values, checked before anything is submitted (``dry=true`` too): a
    known architecture, an image size it can downsample and, with ``files`` (the run will start on this
    machine), the data on disk and LPIPS weights when asked for."""
    import os

    from fvq.vq.losses import lpips_backbone_path
    from fvq.vq.models import ARCHS

    if cfg.model.arch not in ARCHS:
        raise ConfigError(f"model.arch={cfg.model.arch!r} is not one of {', '.join(ARCHS)}")
    ratio = ARCHS[cfg.model.arch].ratio
    if cfg.data.image_size % ratio:
        raise ConfigError(f"data.image_size={cfg.data.image_size} is not divisible by the downsampling ratio "
                          f"{ratio} of model.arch={cfg.model.arch}")
    if not files:
        return
    if cfg.data.source == "imagefolder" and not os.path.isdir(cfg.data.path):
        raise ConfigError(f"data.path={cfg.data.path!r} is not a directory (data.source=imagefolder)")
    if cfg.loss.perceptual_weight > 0:
        lpips_backbone_path(cfg.loss.lpips_net, cfg.loss.lpips_weights or None)


def build_model(cfg: Config):
    """Encoder -> 1x1 -> VQ (through the projector) -> 1x1 -> decoder; validates the image size."""
    from fvq.vq.models import VQModel

    model = VQModel(cfg.model.arch, cfg.model.channel, build_quantizer(cfg))
    model.check_image_size(cfg.data.image_size)
    return model


def build_datasets(cfg: Config):
    return build_train_dataset(cfg), build_val_dataset(cfg)


def build_train_dataset(cfg: Config):
    from fvq.core.data import build_dataset

    d = cfg.data
    return build_dataset(d.source, "train", d.image_size, n=d.train_size or None, train=True,
                         path=d.path or None, seed=cfg.seed)


def build_val_dataset(cfg: Config):
    from fvq.core.data import build_dataset

    d = cfg.data
    return build_dataset(d.source, "val", d.image_size, n=d.val_size, train=False, path=d.path or None,
                         seed=cfg.seed)


def eval_kwargs(cfg: Config) -> dict:
    """``cfg.eval`` as the arguments of ``fvq.eval.evaluate.evaluate`` / ``warm_reference`` that pick the images."""
    e = cfg.eval
    return dict(batch_size=e.batch, protocol=e.protocol, max_images=e.images, fid_images=e.fid_images)


def metric_kwargs(cfg: Config) -> dict:
    """The explicit PSNR / SSIM options of ``cfg.eval`` ("auto" / 0: the protocol's own)."""
    e = cfg.eval
    return dict(psnr_channel=e.psnr_channel, ssim_range=e.ssim_range, ssim_window=e.ssim_window)


def build_extra_datasets(cfg: Config) -> list[tuple[str, object]]:
    """(name, dataset) of each second evaluation set (``eval.extra=coco:PATH``), cropped like the val set.
    A missing path or a folder without images is a one-line FileNotFoundError."""
    from fvq.core.data import build_dataset
    from fvq.core.protocol_presets import extra_sets

    out = []
    for name, path in extra_sets(cfg.eval.extra):
        try:
            ds = build_dataset("imagefolder", "val", cfg.data.image_size, path=path, train=False,
                               protocol=cfg.eval.protocol, seed=cfg.seed)
        except FileNotFoundError:
            why = "does not exist" if not os.path.isdir(path) else "holds no .jpg/.jpeg/.png images"
            raise FileNotFoundError(f"eval.extra={name}:{path}: {path} {why}") from None
        out.append((name, ds))
    return out


def build_eval_lpips(cfg: Config, device: torch.device, loss_lpips) -> tuple[object, str]:
    """(LPIPS module for evaluation, "") or (None, why it is missing). ``eval.lpips_net=loss`` reuses the
    training loss's module; alex / vgg load their own weights (the paper reports AlexNet LPIPS)."""
    from fvq.vq.losses import LPIPSWeightsMissing, load_lpips

    e = cfg.eval
    if not e.lpips:
        return None, "disabled (eval.lpips=false)"
    if e.lpips_net == "loss":
        return (loss_lpips, "") if loss_lpips is not None else \
            (None, "no LPIPS module (eval.lpips_net=loss needs loss.perceptual_weight > 0)")
    try:
        return load_lpips(e.lpips_net, e.lpips_weights or None).to(device), ""
    except LPIPSWeightsMissing as err:
        return None, str(err).replace("loss.lpips_weights", "eval.lpips_weights")


def evaluate_run(cfg: Config, model, val_ds, device: torch.device, lpips_module, lpips_reason: str = "",
                 extra: bool = True):
    """The run's evaluation (fvq.eval.evaluate.evaluate with ``cfg.eval``): the val set, then each extra set
    (``eval.extra``) with its metrics named ``<set>/<metric>`` (e.g. ``coco/rfid``, Table 3)."""
    from fvq.eval.evaluate import evaluate

    kw = {**eval_kwargs(cfg), **metric_kwargs(cfg)}

    def one(ds):
        r = evaluate(model, ds, device=str(device), fid=cfg.eval.fid, lpips_module=lpips_module, **kw)
        if lpips_module is None:
            r.missing["lpips"] = lpips_reason or r.missing.get("lpips", "")
        if not cfg.eval.fid:
            r.missing["rfid"] = "disabled (eval.fid=false)"
        return r

    res = one(val_ds)
    for name, ds in (build_extra_datasets(cfg) if extra else []):
        sub = one(ds)
        res.metrics.update({f"{name}/{k}": v for k, v in sub.metrics.items()})
        res.missing.update({f"{name}/{k}": v for k, v in sub.missing.items()})
        res.card.update({f"{name}/{k}": v for k, v in sub.card.items()})
    return res


def warm_fid_reference(cfg: Config) -> str:
    """Fill the rFID reference cache that this run's evaluation will read; a one-line status."""
    from fvq.eval.evaluate import warm_reference

    if not cfg.eval.fid:
        return "rFID disabled (eval.fid=false)"
    device = str(resolve_device(cfg))
    lines = [warm_reference(build_val_dataset(cfg), device=device, **eval_kwargs(cfg))]
    lines += [f"{name}: " + warm_reference(ds, device=device, **eval_kwargs(cfg))
              for name, ds in build_extra_datasets(cfg)]
    return "; ".join(lines)


def build_loss(cfg: Config, device: torch.device):
    """VQLoss (eq. 35) with LPIPS / PatchGAN only when their weights are > 0.

    LPIPS backbone weights cannot be downloaded here: `load_lpips` raises a one-line error naming the
    missing file, at start-up, before any step runs (never a random backbone).
    """
    from fvq.vq.losses import PatchGAN, VQLoss, load_lpips

    lc = cfg.loss
    lpips = load_lpips(lc.lpips_net, lc.lpips_weights or None).to(device) if lc.perceptual_weight > 0 else None
    disc = PatchGAN().to(device) if lc.disc_weight > 0 else None
    loss = VQLoss(rec_weight=lc.rec_weight, perceptual_weight=lc.perceptual_weight, disc_weight=lc.disc_weight,
                  disc_start=lc.disc_start, codebook_weight=lc.codebook_weight, lpips=lpips,
                  discriminator=disc)
    return loss, lpips, disc


@dataclass
class Parts:
    """Everything one training step touches (`fvq.train.train_step`), built once from a Config.

    ``net`` / ``disc_net`` are what the step runs: the DDP wrappers when data-parallel (gradients are
    all-reduced: encoder, decoder, raw codebook and the VQBridge projector are shared parameters, so the
    projected codebook stays identical on every rank), else the bare modules. ``model`` / ``disc`` are the
    bare modules (state dicts, evaluation, the generator's adversarial term)."""
    cfg: Config
    model: Any
    net: Any
    vqloss: Any
    lpips: Any
    disc: Any
    disc_net: Any
    opt: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None


def build_parts(cfg: Config, device: torch.device) -> Parts:
    """Model, losses, DDP wrappers and optimisers of a run (seed torch first for reproducible weights)."""
    from fvq.core import dist

    model = build_model(cfg).to(device)
    vqloss, lpips, disc = build_loss(cfg, device)
    net = dist.wrap(model, device)
    disc_net = dist.wrap(disc, device, sync_bn=True) if disc is not None else None
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    # One optimiser for encoder + decoder + raw codebook + projector: the projector is trained jointly
    # with the codebook (section 3.1, f(C) "with joint optimization over c"). The discriminator's is made
    # after its wrapper, which may swap its BatchNorms for SyncBatchNorm.
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.projector_lr != 1.0:
        # The projector(s) in a second group at lr x optim.projector_lr (fvq/train.py reads "lr_mult"); at 1.0
        # one group, as before (old checkpoints' optimiser states still load).
        proj = {id(t) for m in model.quantizer.modules() if getattr(m, "projector", None) is not None
                for t in m.projector.parameters()}
        opt = torch.optim.Adam([dict(params=[t for t in model.parameters() if id(t) not in proj]),
                                dict(params=[t for t in model.parameters() if id(t) in proj],
                                     lr_mult=cfg.optim.projector_lr)],
                               lr=cfg.lr, betas=betas, weight_decay=cfg.optim.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=betas) if disc is not None else None
    return Parts(cfg, model, net, vqloss, lpips, disc, disc_net, opt, opt_d)


def resolve_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible (use device=cpu or device=auto)")
    return torch.device(cfg.device)
