"""Run configuration: frozen dataclasses, typed ``key=value`` overrides, scale presets (the value checks
that need no model: fvq/core/validation.py).

A run is fully described by one :class:`Config`. Keys are dotted (``quant.codebook_size=4096``); an
unknown key or a value that does not parse as the field's type is a one-line ``ConfigError`` naming the
key and its type (the nanoGPT configurator habit, without exec). Keys are never renamed once runs exist;
a new field gets a default that keeps old behaviour, so old signatures stay valid.

Two scales share every key (big_vision's "local shrink switch"):
- ``cpu``   (the default): built-in real photos, 32x32 crops, the ``cpu-4`` encoder/decoder (8x8 latents),
            K=1,024, d=256, batch 16, 800 Adam steps at lr 2e-3 on one thread, 1,024 held-out images;
            ~3 minutes per run with evaluation (the calibration in sweeps/scale.py).
- ``paper``: ImageNet 256x256, VQ-16, K=16,384, d=256, batch 128, 40 epochs (Table 6, Implementation
            Details of section 4.1), LPIPS and PatchGAN on; the official evaluation protocol, COCO 2017
            val as a second evaluation set (Table 3).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from fvq.core.errors import ConfigError, shorten
from fvq.core.validation import SCALES, validate


@dataclass(frozen=True)
class ModelCfg:
    arch: str = "cpu-4"          # fvq.vq.models.ARCHS: vq-16, vq-8, cpu-4, ...
    channel: int = 256           # vector channel d: code dimension, decoupled from z by 1x1 convs (Table 3)
    # Weights loaded before step 0 (fvq/vq/checkpoint_io.py): a LlamaGen-format file (FVQ's releases; onto
    # quant.projector=none) or an fvq ckpt.pt; "" = random init. A resumed run takes its own ckpt.pt instead.
    init: str = ""


@dataclass(frozen=True)
class QuantCfg:
    codebook_size: int = 1024    # K
    beta: float = 0.25           # commitment weight (eq. 5, Table 6)
    l2_norm: bool = False        # cosine-style search on l2-normalised vectors (ViT-VQGAN variant)
    projector: str = "vqbridge"  # none | linear (SimVQ) | mlp | vqbridge (section 3.2)
    bridge: str = "vit"          # vqbridge blocks: vit (eq. 8-11, the paper) | dit (qbridge.py, the official scripts')
    latent_dim: int = 0          # d' of VQBridge / MLP width; 0 = d' = d (Fig. 6 left: best when d' = d)
    depth: int = 2               # N ViT blocks (Fig. 6 middle: N = 2)
    group: int = 4               # p codes compressed per token (Fig. 6 right); 16 at K=16k in the paper
    heads: int = 4               # official code: 4 heads
    mlp_ratio: float = 2.0       # official code: MLP ratio 2
    mlp_layers: int = 5          # layers of the MLP projector (MLP-5, Table 5 / Fig. 3)
    init: str = "small"          # last-layer init of the projector: zero | small | default (see fvq/vq/projectors.py)
    search_mb: int = 256         # memory budget of the chunked nearest-code search
    search_dtype: str = "fp32"   # fp32 | bf16: in training, the distance as the official bf16 autocast computes it
    # multi-code quantizers (section 4.4, Table 4; fvq/vq/multicode.py). The defaults are plain VQ.
    kind: str = "vq"             # vq | rq (RQ-VAE residual stack) | msvq (VAR multi-scale residual)
    depth_codes: int = 1         # D codes per position of kind=rq (Table 4: 8x8x4 -> 4); not quant.depth (N)
    shared: bool = True          # one codebook for every depth/scale (RQ-VAE and VAR share); false: one each
    scales: str = ""             # kind=msvq: side of each step's token map, increasing, "1,2,3,4,5,6,8,10,13,16"
    phi: int = 0                 # kind=msvq: VAR's shared 3x3 "phi" refiners (VAR uses 4); 0 = none


@dataclass(frozen=True)
class DataCfg:
    source: str = "photos"       # photos (built-in, offline) | fashion_mnist | imagefolder
    path: str = ""               # root for imagefolder
    image_size: int = 32
    train_size: int = 4096       # samples per epoch for infinite sources (random crops)
    val_size: int = 1024         # fixed validation images (cpu: 64 tokens per code at K=1,024, sweeps/scale.py)
    workers: int = 0


@dataclass(frozen=True)
class OptimCfg:
    base_lr: float = 1e-4        # Table 6
    base_batch: int = 128        # lr = base_lr * batch / base_batch (Table 6, LlamaGen recipe)
    batch: int = 16              # cpu calibration: batch 16 x 800 steps beat 32 x 400 (same images seen)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    grad_clip: float = 1.0       # max global grad norm; 0 = off
    steps: int = 800             # total optimisation steps (epochs are converted by the scale preset)
    # Multiplier on the recipe's lr. The paper scale uses 1.0 (its recipe exactly); the cpu scale uses 160,
    # i.e. lr = 2e-3 at batch 16: an 800-step run cannot afford the linearly scaled 1.25e-5. Chosen by the
    # calibration sweep of sweeps/scale.py (results/calibration.csv).
    lr_scale: float = 160.0
    # Multiplier on the lr of the codebook projector's parameters (VQBridge / linear / MLP); 1.0 = the one lr of
    # the recipe. The bridge moves every code at once (one Adam step on its last Linear, which reads LayerNorm'd
    # d'-dim tokens, shifts a whole in-group position's codes together); VAR's residual stack cannot follow such
    # steps at the cpu lr (its fine-scale targets are small residuals, not a free latent): see sweeps/scale.py.
    projector_lr: float = 1.0
    # Gradient accumulation: each rank's slice runs as `accum` micro-batches, one optimiser step per global
    # batch (same result up to float error; the PatchGAN's BatchNorm sees micro-batches). Not science.
    accum: int = 1


@dataclass(frozen=True)
class SchedCfg:
    kind: str = "anneal"         # anneal (Table 6) | constant (no annealing, Table 3 row 3) | cosine (Table 9)
    warmup: float = 0.1          # fraction of total steps; 0 = no warmup (Table 9 "w/o warmup")
    warmup_start: float = 0.005  # warmup starts at 0.005 x lr (Table 6)
    constant: float = 0.3        # share of the post-warmup steps held at lr (Table 6 baselr(0.3))
    final: float = 0.01          # decay ends at 1% of lr (Table 6 "1 to 0.01")


@dataclass(frozen=True)
class LossCfg:
    rec_weight: float = 1.0
    codebook_weight: float = 1.0
    perceptual_weight: float = 0.0   # paper: 1.0 (needs LPIPS backbone weights; absent offline)
    lpips_net: str = "vgg"
    lpips_weights: str = ""          # path to the backbone weights; "" = torch hub cache
    disc_weight: float = 0.0         # paper: 0.5 (PatchGAN, hinge)
    disc_start: int = 0              # step at which the discriminator starts


@dataclass(frozen=True)
class EvalCfg:
    every: int = 0               # evaluate every N steps during training; 0 = only at the end
    images: int = 1024           # validation images per evaluation (<= data.val_size)
    batch: int = 64
    fid: bool = True             # rFID with torch-fidelity (offline Inception when its weights are absent)
    fid_images: int = 64         # rFID over the first N evaluated images; 0 = all (fvq/eval/evaluate.py: cost)
    lpips: bool = False          # LPIPS metric (needs backbone weights)
    protocol: str = "fvq"        # fvq | llamagen | official: crop, uint8, JPEG before rFID (core/protocol_presets.py)
    psnr_channel: str = "auto"   # auto (the protocol's) | rgb | y (BT.601 luma)
    ssim_range: float = 0.0      # SSIM data_range on [0,1] images; 0 = the protocol's
    ssim_window: str = "auto"    # auto (the protocol's) | uniform7 | gaussian11
    lpips_net: str = "loss"      # loss (the training loss's module) | alex | vgg (own weights; absent -> missing)
    lpips_weights: str = ""      # for alex / vgg: torchvision backbone or whole LPIPS state dict; "" = hub cache
    extra: str = ""              # a second val set, "coco:/path/to/val2017" (Table 3's rFID_COCO); "" = none


@dataclass(frozen=True)
class LogCfg:
    every: int = 10              # metric logging interval (steps)
    usage_window: int = 100      # steps in the windowed training usage (the Fig. 3 curve): 102,400 cpu tokens
    ckpt_every: int = 200        # checkpoint interval (steps); also on SIGTERM / SIGUSR1
    progress: str = "auto"       # auto (bar on a tty, log lines otherwise) | bar | lines | off


@dataclass(frozen=True)
class Config:
    scale: str = "cpu"           # informative: which preset the run started from
    seed: int = 0
    device: str = "cpu"          # cpu | cuda | auto
    threads: int = 1             # torch intra-op threads on CPU (two 1-thread runs beat one 2-thread run)
    model: ModelCfg = field(default_factory=ModelCfg)
    quant: QuantCfg = field(default_factory=QuantCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    sched: SchedCfg = field(default_factory=SchedCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    log: LogCfg = field(default_factory=LogCfg)

    @property
    def lr(self) -> float:
        """Peak learning rate: base_lr x batch / base_batch (Table 6)."""
        o = self.optim
        return o.base_lr * o.batch / o.base_batch * o.lr_scale


# Keys that do not change the science of a run: excluded from its signature (sweeps/identity.py).
# eval.every only adds intermediate evaluations (no RNG is drawn by evaluation), so it is not science either.
NON_SCIENCE_KEYS = frozenset({
    "device", "threads", "data.workers", "data.path", "eval.batch", "eval.every", "log.every",
    "log.ckpt_every", "log.progress", "quant.search_mb", "loss.lpips_weights", "eval.lpips_weights",
    "optim.accum",  # a layout: the same global batch, the same result up to float error (OptimCfg.accum)
    "eval.extra",  # like eval.every: adds a second set's metrics, changes nothing else of the run
})


def science_mismatch(stored: dict[str, Any], flat: dict[str, Any], as_text: bool = False) -> list[str]:
    """Sorted science keys whose value in ``stored`` (a flat config read back from disk, or MLflow's params
    with ``as_text``: every value a string) differs from ``flat``. Keys absent from ``stored`` are not
    compared: a field added later keeps its old-behaviour default."""
    return sorted(k for k in flat if k not in NON_SCIENCE_KEYS and k in stored
                  and stored[k] != (str(flat[k]) if as_text else flat[k]))


def base_config(scale: str = "cpu") -> Config:
    """The reference point of every grid at the given scale."""
    if scale == "cpu":
        return Config()
    if scale == "paper":
        # ImageNet-1k: 1,281,167 train images; 40 epochs at batch 128 (section 4.1, Table 6).
        steps = 40 * 1_281_167 // 128
        return Config(
            scale="paper", device="auto", threads=0,
            model=ModelCfg(arch="vq-16", channel=256),
            quant=QuantCfg(codebook_size=16384, group=16, init="zero"),
            data=DataCfg(source="imagefolder", path="/datasets/imagenet", image_size=256,
                         train_size=0, val_size=50_000, workers=8),
            optim=OptimCfg(batch=128, steps=steps, lr_scale=1.0),
            loss=LossCfg(perceptual_weight=1.0, disc_weight=0.5, disc_start=20_000),
            # The numbers of Tables 1, 3, 7, 8 come from the official evaluation: centre crop without
            # resize, JPEG before rFID, PSNR on Y, SSIM data_range=2, AlexNet LPIPS (docs/evaluation.md).
            eval=EvalCfg(images=50_000, fid_images=0, batch=64, lpips=True, protocol="official",
                         psnr_channel="y", ssim_range=2.0, ssim_window="gaussian11", lpips_net="alex",
                         extra="coco:/datasets/coco/val2017"),
            log=LogCfg(every=100, usage_window=1000, ckpt_every=5000),
        )
    raise ConfigError(f"scale={scale!r} is not one of {', '.join(SCALES)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse ``raw`` as type ``tp``; bool accepts true/false/1/0/yes/no."""
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw.replace("_", "").replace(",", ""))
        if tp is float:
            return float(raw)
        if tp is str:
            return raw
    except ValueError:
        pass
    raise ConfigError(f"{shorten(key)}={shorten(repr(raw))}: expected {_type_name(tp)}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check/convert an already-typed value (from a grid dict or a stored config)."""
    if isinstance(value, str) and tp is not str:
        return parse_value(key, value, tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}={shorten(repr(value))}: expected bool")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}={shorten(repr(value))}: expected int")
    if tp in (float, str) and not isinstance(value, tp):
        raise ConfigError(f"{key}={shorten(repr(value))}: expected {_type_name(tp)}")
    return value


def all_keys() -> list[str]:
    return list(_flat_types(Config))


def set_key(cfg: Config, key: str, value: Any) -> Config:
    """Return a copy of ``cfg`` with dotted ``key`` set; unknown key -> ConfigError with suggestions."""
    flat_types = _flat_types(Config)
    if key not in flat_types:
        close = difflib.get_close_matches(key, flat_types, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"valid keys: {', '.join(flat_types)}"
        raise ConfigError(f"unknown config key {shorten(repr(key))} ({hint})")
    return _set(cfg, key.split("."), _coerce(key, value, flat_types[key]))


def _set(obj: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return replace(obj, **{path[0]: value})
    return replace(obj, **{path[0]: _set(getattr(obj, path[0]), path[1:], value)})


def _flat_types(cls: type, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(_flat_types(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def apply_overrides(cfg: Config, overrides: dict[str, Any] | list[str] | tuple[str, ...]) -> Config:
    """Apply ``{"quant.group": 16}`` or ``["quant.group=16"]``; raises ConfigError on the first bad one."""
    items: list[tuple[str, Any]]
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for ov in overrides:
            if "=" not in ov:
                raise ConfigError(f"override {shorten(repr(ov))} is not key=value")
            k, v = ov.split("=", 1)
            items.append((k.strip(), v.strip()))
    for k, v in items:
        cfg = set_key(cfg, k, v)
    validate(cfg, to_flat_dict(cfg))
    return cfg


def to_flat_dict(cfg: Config) -> dict[str, Any]:
    """``{"quant.codebook_size": 1024, ...}``: the form logged as MLflow params."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            for k, sub in to_flat_dict(v).items():
                out[f"{f.name}.{k}"] = sub
        else:
            out[f.name] = v
    return out


def from_flat_dict(flat: dict[str, Any], strict: bool = True) -> Config:
    """Rebuild a Config from ``to_flat_dict`` output (a stored run). Unknown keys: error if strict."""
    cfg = Config()
    for k, v in flat.items():
        try:
            cfg = set_key(cfg, k, v)
        except ConfigError:
            if strict:
                raise
    return cfg


def to_json(cfg: Config) -> str:
    return json.dumps(to_flat_dict(cfg), indent=1, sort_keys=True)


def diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    fa, fb = to_flat_dict(a), to_flat_dict(b)
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}
