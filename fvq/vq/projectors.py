"""Codebook projectors f(C): one interface, four kinds (section 3, Table 5, Fig. 3).

Every projector maps the raw codebook C (K, d) to the codebook the quantizer searches, f(C) (K, d).
Because f is shared by all codes, every code receives gradient through it, selected or not: this is the
cure for the sparse codebook gradients of Challenge 3 (section 2).

- ``identity``: plain VQ, f(C) = C (only selected codes get gradient).
- ``linear``:   SimVQ / VQGAN-LC, f(C) = C W + b (Zhu et al., 2024a;b). Weak under annealing (Observation 3).
- ``mlp``:      ``mlp_layers`` Linear layers of width d' with ReLU between (the paper's MLP-5).
- ``vqbridge``: compress - process - recover (section 3.2, Fig. 4):
    eq. 8   h_g = LN(C_g W_comp)        groups of p contiguous codes, flattened (p*d) -> d'
    eq. 9   H'  = ViT^N(H)              N pre-norm blocks over the K/p group tokens
    eq. 10  H~  = LN(H') W_exp          d' -> p*d
    eq. 11  C^  = reshape(H~)           back to K x d
  The output is f(C) alone (not C + f(C)), as eq. 8-11 write it.

Facts from the official code (not in the paper's text): 4 attention heads, MLP ratio 2, LayerNorms without
affine parameters and eps 1e-6, tanh-approximated GELU in the ViT MLP, no positional embedding
(and, unlike eq. 8, no LayerNorm after the compressing patch embedding: we keep the paper's LN),
xavier-uniform weights and zero biases, and the last Linear initialised to exactly zero, so every projected
code starts identical and ties decide the first assignments. The official baselines are built differently:
the linear (SimVQ) and MLP-5 projectors keep PyTorch's default init in every layer (no init call), and
MLP-5 is five d -> d Linears with ReLU between. Here the ``init`` option sets the *last* Linear of every
projector: ``zero`` (the official bridge), ``small`` (N(0, 1e-4), zero bias) or ``default`` (PyTorch's,
the official baselines); every other Linear is built as the official code builds it. The bridge's last-layer
init matters at small scale: with p=4, zero init stalled near 3/4 usage (all codes at one in-group position share one slice of W_exp and live or die together; a slice none
of whose codes is ever picked gets no gradient). Measured on the cpu reference (K=1,024, p=4, lr 1e-4, 300
steps): std 1e-2 collapsed (usage 0.08), 1e-3 stalled at exactly 0.75, 1e-4 reached ~0.98, PyTorch's
default collapsed like plain VQ (an independent small VQBridge model showed the same with 1e-3: the sweet
spot is "as close to zero as still breaks the ties").

Group size p: the official scripts use p=16 at K=16,384 and p=64 at K=65,536 and 262,144; those values
reproduce Table 10's FLOPs. The paper's text suggests scaling p by 4x with K (p=256 at 262k); the value is a
parameter, the presets use the Table 10 ones.
"""
from __future__ import annotations

import torch
from torch import nn

KINDS = ("identity", "none", "linear", "mlp", "vqbridge")
INITS = ("zero", "small", "default")
LN_EPS = 1e-6  # the official ViT blocks' and final layer's LayerNorm eps

PRESETS: dict[str, dict] = {
    "none": dict(kind="identity"),
    "linear": dict(kind="linear"),
    "mlp-5": dict(kind="mlp", mlp_layers=5),
    "vqbridge-L/4": dict(kind="vqbridge", depth=2, group=4),     # cpu scale (K = 1,024)
    "vqbridge-L/16": dict(kind="vqbridge", depth=2, group=16),   # K = 16,384 (official)
    "vqbridge-L/64": dict(kind="vqbridge", depth=2, group=64),   # K = 65,536 and 262,144 (official, Table 10)
}


def _positive(**kw: int) -> None:
    for name, v in kw.items():
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}={v!r} must be a positive int")


def _init_last(layer: nn.Linear, init: str) -> None:
    if init == "zero":
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    elif init == "small":
        nn.init.normal_(layer.weight, std=1e-4)
        nn.init.zeros_(layer.bias)
    # "default": keep PyTorch's init


class Identity(nn.Module):
    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return c


class LinearProjector(nn.Module):
    """SimVQ: one shared Linear d -> d (PyTorch's default init unless ``init`` says otherwise)."""

    def __init__(self, dim: int, init: str = "default"):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        _init_last(self.proj, init)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.proj(c)


class MLPProjector(nn.Module):
    """``layers`` Linear layers (d -> d' -> ... -> d) with ReLU between: MLP-5 of Table 5 / Fig. 3 (the official
    baseline, d' = d, PyTorch's default init in the hidden layers)."""

    def __init__(self, dim: int, hidden: int, layers: int, init: str = "default"):
        super().__init__()
        widths = [dim] + [hidden] * (layers - 1) + [dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(widths[i], widths[i + 1]))
            if i < layers - 1:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)
        _init_last(mods[-1], init)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


class Block(nn.Module):
    """Pre-norm ViT block (eq. 9): x + MSA(LN(x)); x + MLP(LN(x)). As the official ViT block: LayerNorms
    without affine parameters and eps 1e-6, tanh-approximated GELU, biases on q/k/v."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=LN_EPS)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=LN_EPS)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VQBridge(nn.Module):
    """Compress (eq. 8) - process with N ViT blocks (eq. 9) - recover (eq. 10-11)."""

    def __init__(self, num_codes: int, dim: int, latent_dim: int = 0, depth: int = 2, group: int = 16,
                 heads: int = 4, mlp_ratio: float = 2.0, init: str = "zero"):
        super().__init__()
        latent_dim = latent_dim or dim
        _positive(num_codes=num_codes, dim=dim, latent_dim=latent_dim, depth=depth, group=group, heads=heads)
        if num_codes % group:
            raise ValueError(f"group={group} must divide num_codes={num_codes} (allowed: divisors of K, "
                             f"e.g. 4, 16, 64)")
        if latent_dim % heads:
            raise ValueError(f"latent_dim={latent_dim} must be divisible by heads={heads}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={mlp_ratio} must be > 0")
        self.num_codes, self.dim, self.group = num_codes, dim, group
        self.compress = nn.Linear(group * dim, latent_dim)              # W_comp, shared by all groups
        self.norm_in = nn.LayerNorm(latent_dim, elementwise_affine=False, eps=LN_EPS)
        self.blocks = nn.ModuleList(Block(latent_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(latent_dim, elementwise_affine=False, eps=LN_EPS)
        self.expand = nn.Linear(latent_dim, group * dim)                # W_exp
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for b in self.blocks:  # MultiheadAttention keeps its in_proj as a raw parameter
            nn.init.xavier_uniform_(b.attn.in_proj_weight)
            nn.init.zeros_(b.attn.in_proj_bias)
        _init_last(self.expand, init)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        k, d = c.shape
        h = self.norm_in(self.compress(c.reshape(1, k // self.group, self.group * d)))  # (1, K/p, d')
        for blk in self.blocks:
            h = blk(h)
        return self.expand(self.norm_out(h)).reshape(k, d)


def build_projector(kind: str, num_codes: int, dim: int, *, latent_dim: int = 0, depth: int = 2, group: int = 16,
                    heads: int = 4, mlp_ratio: float = 2.0, mlp_layers: int = 5, init: str = "zero") -> nn.Module:
    """Construct a projector; invalid combinations raise ValueError naming the parameter."""
    if kind not in KINDS:
        raise ValueError(f"projector kind={kind!r} is not one of {', '.join(KINDS)}")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {', '.join(INITS)}")
    _positive(num_codes=num_codes, dim=dim)
    if kind in ("identity", "none"):
        return Identity()
    if kind == "linear":
        return LinearProjector(dim, init)
    if kind == "mlp":
        _positive(mlp_layers=mlp_layers)
        return MLPProjector(dim, latent_dim or dim, mlp_layers, init)
    return VQBridge(num_codes, dim, latent_dim, depth, group, heads, mlp_ratio, init)


def from_preset(name: str, num_codes: int, dim: int, **overrides) -> nn.Module:
    if name not in PRESETS:
        raise ValueError(f"unknown projector preset {name!r} (valid: {', '.join(PRESETS)})")
    kw = {**PRESETS[name], **overrides}
    return build_projector(kw.pop("kind"), num_codes, dim, **kw)
