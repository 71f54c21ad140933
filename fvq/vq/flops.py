"""Multiply-adds and parameters of the codebook projectors (Table 10).

The paper's "FLOPs" are multiply-accumulates of one projector forward over the whole codebook (K, d),
counting matrix products only (norms, activations, softmax and biases are negligible and left out):

    linear    K d^2                                       16,384: 1.07G   262,144: 17.18G
    MLP-L     K (d d' + (L-2) d'^2 + d' d)                 L = 5, d' = d:   5.37G / 85.90G
    VQBridge  T = K / p group tokens
              compress + expand      2 T (p d) d'
              per block, linear      T (4 d'^2 + 2 r d'^2)  (q, k, v, out; MLP with ratio r)
              per block, attention   2 T^2 d'               (QK^T and AV over the T tokens)
              p = 16 at 16k: 4.29G (paper 4.30G);  p = 64 at 262k: 55.83G (paper 55.89G, 0.1% apart)

The attention term grows with T^2: that is why the group size p must grow with K (Fig. 6 right).

``bridge=dit`` (qbridge.py, the official scripts' bridge; fvq/vq/projectors.py) does the same products per
token (its P x P conv patch embedding is the compress Linear with p = P^2, its last Linear the expand), plus
the adaLN modulation of its one conditioning vector: 6 d'^2 per block and 2 d'^2 before the last Linear
(about 0.9M multiply-adds at d' = 256, N = 2). Table 10's VQBridge column is a count of this bridge:
qbridge.py's own ``__main__`` (:473-491) runs fvcore's FlopCountAnalysis on QBridge-L/8 at K = 262,144.
Run on qbridge.py's DiT (QBridge-L/4 at 16,384, L/8 at 262,144, d = 256), fvcore gives conv + linear +
matmul = 4,295,884,800 and 55,835,492,352, exactly ``projector_flops(..., bridge="dit")``, plus what this
module leaves out: its LayerNorms (4 per element, 5 norms of T x d') and the unpatchify einsum, for totals
of 4,303,224,680 = 4.30G and 55,890,018,872 = 55.89G, the paper's two numbers.

Multi-code quantizers (fvq/vq/multicode.py, Table 4) project each codebook once per forward, whatever the
number of depths or scales that use it: a shared book costs one projector forward per training step, and
``shared=false`` costs one per level (``codebooks=`` levels). Inference costs nothing either way (the
projected books are baked, section 3.2).
"""
from __future__ import annotations

import functools


def projector_flops(kind: str, num_codes: int, dim: int, *, latent_dim: int = 0, depth: int = 2, group: int = 16,
                    heads: int = 4, mlp_ratio: float = 2.0, mlp_layers: int = 5, bridge: str = "vit") -> int:
    k, d, dl = num_codes, dim, latent_dim or dim
    if bridge not in ("vit", "dit"):
        raise ValueError(f"bridge={bridge!r} is not one of vit, dit")
    if kind in ("identity", "none"):
        return 0
    if kind == "linear":
        return k * d * d
    if kind == "mlp":
        if mlp_layers == 1:
            return k * d * d
        return k * (d * dl + (mlp_layers - 2) * dl * dl + dl * d)
    if kind == "vqbridge":
        t = k // group
        io = 2 * t * group * d * dl
        per_block = t * (4 + 2 * mlp_ratio) * dl * dl + 2 * t * t * dl
        adaln = (6 * depth + 2) * dl * dl if bridge == "dit" else 0  # one conditioning vector, not per token
        return int(io + depth * per_block + adaln)
    raise ValueError(f"projector kind={kind!r} is not one of identity, linear, mlp, vqbridge")


def projector_flops_per_step(kind: str, num_codes: int, dim: int, *, codebooks: int = 1, **kw) -> int:
    """Projector multiply-adds of one training step of a quantizer holding ``codebooks`` projected books."""
    if codebooks < 1:
        raise ValueError(f"codebooks={codebooks} must be >= 1")
    return codebooks * projector_flops(kind, num_codes, dim, **kw)


def projector_params(kind: str, num_codes: int, dim: int, **kw) -> int:
    """Trainable parameters of the projector (built on the meta device: nothing is allocated). For bridge=dit
    the fixed position embedding is a buffer, not counted (qbridge.py:182 keeps it as a frozen Parameter,
    which a plain ``parameters()`` count there includes: T x d' more)."""
    import torch

    from fvq.vq.projectors import build_projector

    with torch.device("meta"):
        return sum(p.numel() for p in build_projector(kind, num_codes, dim, **kw).parameters())


def train_step_flops(cfg) -> int:
    """Rough FLOPs of one training step of ``cfg`` (a `fvq.core.config.Config`): encoder + decoder counted on the
    meta device (nothing allocated), the projector from `projector_flops`, x3 for forward + backward, plus
    the gradient-free nearest-code search (N x K x d). Only used to order jobs (longest first); it leaves
    out losses, norms and the discriminator."""
    from fvq.core.validation import parse_scales

    q, d, b, s = cfg.quant, cfg.model.channel, cfg.optim.batch, cfg.data.image_size
    conv, ratio = _autoencoder_flops(cfg.model.arch, d, b, s)
    tokens = b * (s // ratio) ** 2
    levels = q.depth_codes if q.kind == "rq" else len(parse_scales(q.scales)) if q.kind == "msvq" else 1
    proj = 0 if q.projector == "none" else projector_flops(
        q.projector, q.codebook_size, d, latent_dim=q.latent_dim, depth=q.depth, group=q.group, heads=q.heads,
        mlp_ratio=q.mlp_ratio, mlp_layers=q.mlp_layers, bridge=q.bridge)
    books = 1 if q.shared else levels
    return int(3 * (conv + 2 * books * proj) + 2 * levels * tokens * q.codebook_size * d)


@functools.lru_cache(maxsize=64)
def _autoencoder_flops(arch: str, channel: int, batch: int, size: int) -> tuple[int, int]:
    """(forward FLOPs of encoder + 1x1 convs + decoder, downsampling ratio), counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fvq.vq.models import VQModel

    with torch.device("meta"):
        m = VQModel(arch, channel, torch.nn.Identity())
        with FlopCounterMode(display=False) as fc:
            m.decode(m.quant_conv(m.encoder(torch.empty(batch, 3, size, size))))
    return int(fc.get_total_flops()), m.ratio  # the arch spec's ratio (fvq.vq.models.ArchSpec.ratio)
