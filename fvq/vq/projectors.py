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

Two bridges (``bridge=``, config ``quant.bridge``). The official repository ships two VQBridges, and its
README (lines 53-54) says which is which: the first "directly uses DiT" (vq_train_qbridge_lr.py), the
second "uses ViT blocks, which is more streamlined and corresponds to the method described in the paper"
(the README names vq_train_qbridge_release.py; the file shipped is vq_train_qbridge_lr_release.py, which
imports qbridge_ViT.py). The training scripts train the DiT one: scripts/recon/FVQ-16384.sh:36 runs
vq_train_qbridge_lr.py, which imports vq_model_qbridge (:29), whose quantizer builds qbridge.py's models
(vq_model_qbridge.py:10, :251), as ``QBridge-L/4`` at K=16,384 (FVQ-16384.sh:12) and ``QBridge-L/8`` at
65,536 and 262,144 (FVQ-65536.sh:12, FVQ-262144.sh:12), all with ``--is_uncondition`` (line 48 of each).

- ``vit`` (the default; every existing run): eq. 8-11 above, as the paper writes them. One difference
  from both official bridges remains: they cut the codebook, laid out as a sqrt(K) x sqrt(K) grid, into
  P x P patches (qbridge_ViT.py:75, qbridge.py:171), so a token holds P runs of P codes; ours holds p
  contiguous codes (eq. 8, Fig. 4's "1D patchify"). Same cost, different codes per token.
- ``dit``: qbridge.py's DiT as the scripts run it. The codebook (K, d) is read as a d-channel image of
  sqrt(K) x sqrt(K) codes, code n at row n // sqrt(K), column n % sqrt(K) (vq_model_qbridge.py:258); a
  P x P conv patch embedding (stride P) turns it into T = K / P^2 tokens of width d' (qbridge.py:171); a fixed 2-D
  sin-cos position embedding is added (:182, :200-201); N DiT blocks with adaLN-Zero modulation (:101-122)
  and a final LayerNorm + modulation + Linear d' -> P^2 d (:127-144) are conditioned on one learned class
  embedding (``--is_uncondition`` gives a one-row label table, :180, initialised N(0, 0.02), :210); the
  output is unpatchified back to the grid (:227-240) and returned as f(C) alone (vq_model_qbridge.py:259).
  Weights: xavier-uniform Linears and patch embedding (as a Linear), zero biases (qbridge.py:192-206), every adaLN
  Linear zero (:216-223) and the last Linear zero (:224-225; here ``init``), so f(C) starts at exactly 0.
  p = P^2 codes per token: ``group`` keeps the meaning it has for ``vit`` (QBridge-L/4 is p = 16, L/8 is
  p = 64). K must be a perfect square and P must divide sqrt(K): qbridge.py reshapes the codebook to
  int(sqrt K) x int(sqrt K) (vq_model_qbridge.py:242, :258), which fails for any other K (a non-square
  layout is left commented out, :244-248), so such K is a ValueError here.

Why ``vit`` stays the default: it is the bridge the paper describes (and the README says so), and every
stored run used it. Table 10 was counted on the DiT (fvq/vq/flops.py), but the two differ there only by the
adaLN of one vector (0.02% at K = 16,384). ``dit`` is there to reproduce what the shipped scripts train.
"""
from __future__ import annotations

import math

import torch
from torch import nn

KINDS = ("identity", "none", "linear", "mlp", "vqbridge")
BRIDGES = ("vit", "dit")
INITS = ("zero", "small", "default")
LN_EPS = 1e-6  # the official ViT blocks' and final layer's LayerNorm eps


def _qbridge(width: str, patch: int, depth: int = 2) -> dict:
    """An official QBridge size: width d' = 4 heads x a per-head width of 8/16/32/64/128 for XS/S/B/L/XL
    (qbridge.py:170), P x P patches (p = P^2 codes per token), ``depth`` DiT blocks, MLP ratio 2 (:159)."""
    d_model = {"XS": 32, "S": 64, "B": 128, "L": 256, "XL": 512}[width]
    return dict(kind="vqbridge", bridge="dit", latent_dim=d_model, depth=depth, group=patch * patch, heads=4)

PRESETS: dict[str, dict] = {
    "none": dict(kind="identity"),
    "linear": dict(kind="linear"),
    "mlp-5": dict(kind="mlp", mlp_layers=5),
    "vqbridge-L/4": dict(kind="vqbridge", depth=2, group=4),     # cpu scale (K = 1,024)
    "vqbridge-L/16": dict(kind="vqbridge", depth=2, group=16),   # K = 16,384 (official)
    "vqbridge-L/64": dict(kind="vqbridge", depth=2, group=64),   # K = 65,536 and 262,144 (official, Table 10)
    # bridge=dit: the table of qbridge.py:368-420 under its own names, "/P" the patch side (p = P^2).
    "qbridge-XS/2": _qbridge("XS", 2),           # qbridge.py:368
    "qbridge-S/2": _qbridge("S", 2),             # qbridge.py:371
    "qbridge-S/4": _qbridge("S", 4),             # qbridge.py:374 (vq_model_qbridge.py's default, :25)
    "qbridge-S/4-d4": _qbridge("S", 4, 4),       # qbridge.py:377 (registered as "Qbridge-S/4-d4", :441)
    "qbridge-S/8": _qbridge("S", 8),             # qbridge.py:380
    "qbridge-B/2": _qbridge("B", 2),             # qbridge.py:383
    "qbridge-B/8": _qbridge("B", 8),             # qbridge.py:386
    "qbridge-B/4": _qbridge("B", 4),             # qbridge.py:389
    "qbridge-B/4-d1": _qbridge("B", 4, 1),       # qbridge.py:392
    "qbridge-B/4-d4": _qbridge("B", 4, 4),       # qbridge.py:395
    "qbridge-L/2-d4": _qbridge("L", 2, 4),       # qbridge.py:398
    "qbridge-L/8": _qbridge("L", 8),             # qbridge.py:401; K = 65,536 / 262,144 (FVQ-65536.sh:12)
    "qbridge-L/4": _qbridge("L", 4),             # qbridge.py:404; K = 16,384, the paper's p = 16 (FVQ-16384.sh:12)
    "qbridge-L/2": _qbridge("L", 2),             # qbridge.py:407
    "qbridge-L/4-d1": _qbridge("L", 4, 1),       # qbridge.py:410
    "qbridge-L/4-d4": _qbridge("L", 4, 4),       # qbridge.py:413
    "qbridge-XL/4": _qbridge("XL", 4),           # qbridge.py:416
    "qbridge-XL/4-d4": _qbridge("XL", 4, 4),     # qbridge.py:419
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


class DiTBlock(Block):
    """DiT block with adaLN-Zero (qbridge.py:101-122): the ViT block's norms, attention and MLP, each branch's
    LayerNorm output scaled and shifted, and the branch gated, by six vectors a SiLU + Linear reads from the
    conditioning vector. The Linear starts at zero, so the block starts as the identity."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__(dim, heads, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, h, need_weights=False)[0]
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


def sincos_2d(width: int, side: int) -> torch.Tensor:
    """The fixed 2-D sin-cos position embedding of a side x side token grid, (side^2, width), tokens row-major:
    the first half encodes the column, the second the row, each half [sin | cos] over width / 4 frequencies
    1 / 10000^(i / (width / 4)). This is the MAE table qbridge.py:275-322 builds: its first half ("emb_h")
    reads grid[0] of np.meshgrid(w, h), which holds the column (:283, :297)."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row, col = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                              indexing="ij")

    def half(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.reshape(-1, 1) * omega
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([half(col), half(row)], dim=1).float()


class DiTBridge(nn.Module):
    """qbridge.py's DiT over the codebook laid out as a sqrt(K) x sqrt(K) grid (module docstring, ``dit``)."""

    def __init__(self, num_codes: int, dim: int, latent_dim: int = 0, depth: int = 2, group: int = 16,
                 heads: int = 4, mlp_ratio: float = 2.0, init: str = "zero"):
        super().__init__()
        latent_dim = latent_dim or dim
        _positive(num_codes=num_codes, dim=dim, latent_dim=latent_dim, depth=depth, group=group, heads=heads)
        side, patch = math.isqrt(num_codes), math.isqrt(group)
        if side * side != num_codes:  # qbridge reshapes to int(sqrt K)^2 codes (vq_model_qbridge.py:242, :258)
            raise ValueError(f"num_codes={num_codes} must be a perfect square for bridge=dit (the codebook is a "
                             f"sqrt(K) x sqrt(K) grid of codes)")
        if patch * patch != group or side % patch:
            raise ValueError(f"group={group} must be P*P with P dividing sqrt(num_codes)={side} for bridge=dit "
                             f"(P x P patches of the code grid, e.g. 4, 16, 64)")
        if latent_dim % heads:
            raise ValueError(f"latent_dim={latent_dim} must be divisible by heads={heads}")
        if latent_dim % 4:  # sin and cos of the row and of the column (qbridge.py:294, :310)
            raise ValueError(f"latent_dim={latent_dim} must be divisible by 4 for bridge=dit (2-D sin-cos "
                             f"position embedding)")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={mlp_ratio} must be > 0")
        self.num_codes, self.dim, self.group, self.side, self.patch = num_codes, dim, group, side, patch
        self.compress = nn.Conv2d(dim, latent_dim, patch, stride=patch)   # the patch embedding (qbridge.py:171)
        # Fixed, so a buffer (the official frozen Parameter, :182, is the same numbers); not saved: it is a
        # function of (d', grid side) alone.
        self.register_buffer("pos", sincos_2d(latent_dim, side // patch).unsqueeze(0), persistent=False)
        self.cond = nn.Parameter(torch.empty(1, latent_dim))             # the one class embedding (:180)
        self.blocks = nn.ModuleList(DiTBlock(latent_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(latent_dim, elementwise_affine=False, eps=LN_EPS)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(latent_dim, 2 * latent_dim))
        self.expand = nn.Linear(latent_dim, group * dim)                 # d' -> P^2 d, one patch per token
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for b in self.blocks:
            nn.init.xavier_uniform_(b.attn.in_proj_weight)  # timm's fused qkv Linear, xavier as one matrix
            nn.init.zeros_(b.attn.in_proj_bias)
            nn.init.zeros_(b.ada[-1].weight)                 # adaLN-Zero (qbridge.py:217-219)
            nn.init.zeros_(b.ada[-1].bias)
        nn.init.xavier_uniform_(self.compress.weight.view(latent_dim, -1))  # as a Linear, not a conv (:204-206)
        nn.init.zeros_(self.compress.bias)
        nn.init.normal_(self.cond, std=0.02)                 # the label table's init (:210)
        nn.init.zeros_(self.ada_out[-1].weight)              # (:222-223)
        nn.init.zeros_(self.ada_out[-1].bias)
        _init_last(self.expand, init)                        # official: zero (:224-225)

    def embed(self, c: torch.Tensor) -> torch.Tensor:
        """The tokens the blocks see, (1, T, d'): P x P patches of the code grid, embedded, plus positions."""
        k, d = c.shape
        grid = c.t().reshape(1, d, self.side, self.side)  # code n at (n // side, n % side): vq_model_qbridge.py:258
        return self.compress(grid).flatten(2).transpose(1, 2) + self.pos

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        k, d = c.shape
        h = self.embed(c)
        for blk in self.blocks:
            h = blk(h, self.cond)
        shift, scale = self.ada_out(self.cond).unsqueeze(1).chunk(2, dim=-1)
        h = self.expand(self.norm_out(h) * (1 + scale) + shift)  # (1, T, P*P*d): (row, column, channel) per patch
        g, p = self.side // self.patch, self.patch
        # unpatchify (qbridge.py:237-239): token (i, j), in-patch (r, s) -> grid row i*P + r, column j*P + s
        return h.reshape(g, g, p, p, d).permute(0, 2, 1, 3, 4).reshape(k, d)


def build_projector(kind: str, num_codes: int, dim: int, *, latent_dim: int = 0, depth: int = 2, group: int = 16,
                    heads: int = 4, mlp_ratio: float = 2.0, mlp_layers: int = 5, init: str = "zero",
                    bridge: str = "vit") -> nn.Module:
    """Construct a projector; invalid combinations raise ValueError naming the parameter. ``bridge`` picks the
    VQBridge's blocks (vit: eq. 8-11; dit: the official scripts' qbridge.py) and means nothing to other kinds."""
    if kind not in KINDS:
        raise ValueError(f"projector kind={kind!r} is not one of {', '.join(KINDS)}")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {', '.join(INITS)}")
    if bridge not in BRIDGES:
        raise ValueError(f"bridge={bridge!r} is not one of {', '.join(BRIDGES)}")
    if bridge != "vit" and kind != "vqbridge":
        raise ValueError(f"bridge={bridge!r} needs kind=vqbridge (got kind={kind!r})")
    _positive(num_codes=num_codes, dim=dim)
    if kind in ("identity", "none"):
        return Identity()
    if kind == "linear":
        return LinearProjector(dim, init)
    if kind == "mlp":
        _positive(mlp_layers=mlp_layers)
        return MLPProjector(dim, latent_dim or dim, mlp_layers, init)
    bridge_cls = DiTBridge if bridge == "dit" else VQBridge
    return bridge_cls(num_codes, dim, latent_dim, depth, group, heads, mlp_ratio, init)


def from_preset(name: str, num_codes: int, dim: int, **overrides) -> nn.Module:
    if name not in PRESETS:
        raise ValueError(f"unknown projector preset {name!r} (valid: {', '.join(PRESETS)})")
    kw = {**PRESETS[name], **overrides}
    return build_projector(kw.pop("kind"), num_codes, dim, **kw)
