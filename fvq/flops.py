"""Multiply-adds and parameters of the codebook projectors (Table 10).

The paper's "FLOPs" are multiply-accumulates of one projector forward over the whole codebook (K, d),
counting matrix products only (norms, activations, softmax and biases are negligible and left out):

    linear    K d^2                                       16,384: 1.07G   262,144: 17.18G
    MLP-L     K (d d' + (L-2) d'^2 + d' d)                 L = 5, d' = d:   5.37G / 85.90G
    VQBridge  T = K / p group tokens
              compress + expand      2 T (p d) d'
              per block, linear      T (4 d'^2 + 2 r d'^2)  (q, k, v, out; MLP with ratio r)
              per block, attention   2 T^2 d'               (QK^T and AV over the T tokens)
              p = 16 at 16k: 4.30G;  p = 64 at 262k: 55.84G (paper 55.89G, 0.1% apart)

The attention term grows with T^2: that is why the group size p must grow with K (Fig. 6 right).

Multi-code quantizers (fvq/multicode.py, Table 4) project each codebook once per forward, whatever the
number of depths or scales that use it: a shared book costs one projector forward per training step, and
``shared=false`` costs one per level (``codebooks=`` levels). Inference costs nothing either way (the
projected books are baked, section 3.2).
"""
from __future__ import annotations


def projector_flops(kind: str, num_codes: int, dim: int, *, latent_dim: int = 0, depth: int = 2, group: int = 16,
                    heads: int = 4, mlp_ratio: float = 2.0, mlp_layers: int = 5) -> int:
    k, d, dl = num_codes, dim, latent_dim or dim
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
        return int(io + depth * per_block)
    raise ValueError(f"projector kind={kind!r} is not one of identity, linear, mlp, vqbridge")


def projector_flops_per_step(kind: str, num_codes: int, dim: int, *, codebooks: int = 1, **kw) -> int:
    """Projector multiply-adds of one training step of a quantizer holding ``codebooks`` projected books."""
    if codebooks < 1:
        raise ValueError(f"codebooks={codebooks} must be >= 1")
    return codebooks * projector_flops(kind, num_codes, dim, **kw)


def projector_params(kind: str, num_codes: int, dim: int, **kw) -> int:
    """Trainable parameters of the projector (built on the meta device: nothing is allocated)."""
    import torch

    from fvq.projectors import build_projector

    with torch.device("meta"):
        return sum(p.numel() for p in build_projector(kind, num_codes, dim, **kw).parameters())
