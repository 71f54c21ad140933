"""The class-conditional autoregressive generator of the paper's generation results (Tables 2 and 11,
Fig. 1 left, Fig. 5 right): a LlamaGen-style GPT over the tokenizer's code indices.

Following LlamaGen's open-source c2i model: pre-norm RMSNorm blocks, SwiGLU feed-forward (hidden 2/3 of
4 x dim), 2-D rotary position embedding over the token grid (half the rotary pairs follow the row, half
the column), the class embedding as the one prefix token, an extra "null class" row trained by dropping
labels with probability 0.1 (classifier-free guidance), zero-init output head, N(0, 0.02) init, no biases.
Sizes B / L / XL = 111M / 343M / 775M parameters at a 16k vocabulary (``PRESETS``). ``tiny`` is the
cpu-scale model.

The class prefix's rows of the RoPE table are zeros, cos and sin alike, as LlamaGen's
``precompute_freqs_cis_2d`` prepends them: not an identity rotation but a zeroed query and key at the class
position, so every code attends to the class token with logit 0 (its value still flows) whatever the label.

Sampling (``generate``) follows LlamaGen's ``generate.py``: one prefill of the class token, then one cached
step per code, CFG on a doubled batch [labels; null class], optional ``cfg_interval``, temperature, top-k,
top-p. The KV cache is LlamaGen's ``KVCache``: one buffer per layer for the whole sequence (batch x heads x
(1 + tokens) x head_dim), written in place at each step's positions.

Deviations from LlamaGen, and why:
- the KV cache buffers are allocated by the prefill call itself (``start=0``) instead of a separate
  ``setup_caches``, so sampling needs no model mutation beyond ``reset_cache``;
- the tiny model rounds the SwiGLU hidden size to a multiple of 64, not 256 (``ffn_multiple``; 256 would
  nearly double its feed-forward); B/L/XL keep 256, so their sizes are LlamaGen's;
- no drop-path (LlamaGen's default rate is 0 for c2i) and no grouped-query attention (n_kv_head = n_head).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTSpec:
    dim: int
    layers: int
    heads: int
    vocab: int = 16384
    classes: int = 1000
    tokens: int = 256               # sequence length = latent grid side^2 (16x16 at 256 px / ratio 16)
    class_dropout: float = 0.1      # LlamaGen's label drop rate: trains the null class used by CFG
    token_dropout: float = 0.1
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    rope_base: float = 10000.0
    ffn_multiple: int = 256         # SwiGLU hidden = 2/3 x 4 x dim rounded up to this


# LlamaGen's GPT-B / GPT-L / GPT-XL (111M / 343M / 775M at vocab 16384) and cpu-scale models (tiny, S, M:
# the sizes the cpu generation calibration compares, results/generation_calibration.csv).
PRESETS: dict[str, GPTSpec] = {
    "tiny": GPTSpec(dim=64, layers=2, heads=4, ffn_multiple=64),
    "S": GPTSpec(dim=128, layers=4, heads=4, ffn_multiple=64),
    "M": GPTSpec(dim=256, layers=6, heads=8, ffn_multiple=64),
    "B": GPTSpec(dim=768, layers=12, heads=12),
    "L": GPTSpec(dim=1024, layers=24, heads=16),
    "XL": GPTSpec(dim=1280, layers=36, heads=20),
}
# Classifier-free guidance scale the paper samples with (Appendix G: 1.75 for L, 1.65 for XL).
PAPER_CFG = {"L": 1.75, "XL": 1.65}


def spec(name: str, **over) -> GPTSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown AR model {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **over)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_2d(side: int, head_dim: int, base: float, prefix: int = 1) -> torch.Tensor:
    """(prefix + side^2, head_dim/2, 2) cos/sin table: the first head_dim/4 pairs rotate with the row, the
    rest with the column. The prefix rows are all zeros (cos 0 and sin 0, LlamaGen's ``cond_cache``), which
    zeroes the class token's query and key; an identity row (cos 1, sin 0) would not be the same model."""
    quarter = head_dim // 4
    inv = 1.0 / (base ** (torch.arange(quarter, dtype=torch.float64) * 2 / (head_dim // 2)))
    pos = torch.arange(side, dtype=torch.float64)
    ang = torch.outer(pos, inv)  # (side, quarter)
    grid = torch.cat([ang[:, None, :].expand(side, side, quarter), ang[None, :, :].expand(side, side, quarter)], -1)
    grid = grid.reshape(side * side, 2 * quarter)
    table = torch.stack([grid.cos(), grid.sin()], -1)
    return torch.cat([torch.zeros(prefix, 2 * quarter, 2, dtype=table.dtype), table]).float()


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D), table (T, D/2, 2): rotate consecutive pairs of x's channels."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    c, s = table[None, :, None, :, 0], table[None, :, None, :, 1]
    out = torch.stack([xs[..., 0] * c - xs[..., 1] * s, xs[..., 1] * c + xs[..., 0] * s], -1)
    return out.flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, s: GPTSpec):
        super().__init__()
        self.heads, self.hd = s.heads, s.dim // s.heads
        self.max_len = 1 + s.tokens  # class token + codes: the KV cache's length
        self.qkv = nn.Linear(s.dim, 3 * s.dim, bias=False)
        self.out = nn.Linear(s.dim, s.dim, bias=False)
        self.drop = nn.Dropout(s.resid_dropout)
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, rope: torch.Tensor, start: int | None) -> torch.Tensor:
        """``start`` None: full causal pass, no cache. Else: x holds positions start.. start+T-1 and keys /
        values of earlier positions come from the cache, whose buffers this call writes at start..start+T-1
        (``start`` 0 allocates them: batch x heads x max_len x head_dim, like LlamaGen's KVCache)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.hd).unbind(2)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))
        if start is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            if start == 0:
                shape = (b, self.heads, self.max_len, self.hd)
                self.cache = (k.new_zeros(shape), v.new_zeros(shape))
            elif self.cache is None:
                raise RuntimeError(f"cached pass at start={start} without a prefill (start=0) first")
            if start + t > self.max_len:
                raise ValueError(f"positions {start}..{start + t - 1} beyond the sequence length {self.max_len}")
            kb, vb = self.cache
            kb[:, :, start:start + t] = k
            vb[:, :, start:start + t] = v
            keys, vals = kb[:, :, :start + t], vb[:, :, :start + t]
            # query i (absolute start+i) sees keys 0..start+i
            mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
            o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        return self.drop(self.out(o.transpose(1, 2).reshape(b, t, -1)))


class SwiGLU(nn.Module):
    def __init__(self, s: GPTSpec):
        super().__init__()
        hidden = int(2 * 4 * s.dim / 3)
        hidden = s.ffn_multiple * math.ceil(hidden / s.ffn_multiple)
        self.w1 = nn.Linear(s.dim, hidden, bias=False)
        self.w3 = nn.Linear(s.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, s.dim, bias=False)
        self.drop = nn.Dropout(s.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Block(nn.Module):
    def __init__(self, s: GPTSpec):
        super().__init__()
        self.n1, self.attn, self.n2, self.ffn = RMSNorm(s.dim), Attention(s), RMSNorm(s.dim), SwiGLU(s)

    def forward(self, x, rope, start):
        x = x + self.attn(self.n1(x), rope, start)
        return x + self.ffn(self.n2(x))


class GPT(nn.Module):
    """Sequence = [class token, code_1 .. code_T]; the output at position i predicts code_{i+1}."""

    def __init__(self, s: GPTSpec):
        super().__init__()
        side = int(round(math.sqrt(s.tokens)))
        if side * side != s.tokens:
            raise ValueError(f"AR tokens={s.tokens} is not a square latent grid")
        if s.dim % s.heads or (s.dim // s.heads) % 4:
            raise ValueError(f"AR dim={s.dim} / heads={s.heads} must give a head size divisible by 4 (2-D RoPE)")
        self.spec = s
        # row `classes` is the null class (label dropped) that classifier-free guidance conditions on
        self.cls = nn.Embedding(s.classes + (s.class_dropout > 0), s.dim)
        self.tok = nn.Embedding(s.vocab, s.dim)
        self.tok_drop = nn.Dropout(s.token_dropout)
        self.blocks = nn.ModuleList(Block(s) for _ in range(s.layers))
        self.norm = RMSNorm(s.dim)
        self.head = nn.Linear(s.dim, s.vocab, bias=False)
        self.register_buffer("rope", rope_2d(side, s.dim // s.heads, s.rope_base), persistent=False)
        self.apply(self._init)
        nn.init.zeros_(self.head.weight)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    @property
    def null_class(self) -> int:
        return self.spec.classes

    def drop_labels(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.spec.class_dropout <= 0:
            return y
        drop = torch.rand(y.shape, generator=gen, device=y.device) < self.spec.class_dropout
        return torch.where(drop, torch.full_like(y, self.null_class), y)

    def forward(self, idx: torch.Tensor | None, y: torch.Tensor | None, start: int | None = None) -> torch.Tensor:
        """Logits (float32). Training / full pass: idx (B, T<=tokens) and y (B,), start None -> (B, T+1, V)
        (the last row predicts beyond idx). Cached pass: y alone at start 0 (prefill), or idx alone at start
        = its absolute position (1 + number of codes already fed)."""
        parts = []
        if y is not None:
            parts.append(self.cls(y)[:, None])
        if idx is not None:
            parts.append(self.tok(idx))
        h = self.tok_drop(torch.cat(parts, 1))
        s0 = 0 if start is None else start
        rope = self.rope[s0:s0 + h.shape[1]]
        for b in self.blocks:
            h = b(h, rope, start)
        return self.head(self.norm(h)).float()

    def loss(self, idx: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Next-token cross entropy over all codes (labels dropped at the class-dropout rate)."""
        logits = self(idx[:, :-1], self.drop_labels(y, gen))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx.reshape(-1))

    def reset_cache(self) -> None:
        for b in self.blocks:
            b.attn.cache = None


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top_k largest logits and the smallest set whose probability reaches top_p; -inf elsewhere."""
    out = logits.clone()
    if 0 < top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, -1).values[..., -1:]
        out[out < kth] = -float("inf")
    if top_p < 1.0:
        srt, order = torch.sort(out, -1, descending=True)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum - srt.softmax(-1) >= top_p  # mass before this token already reaches top_p; keeps >= 1
        out.scatter_(-1, order, srt.masked_fill(drop, -float("inf")))
    return out


def check_cfg(cfg: float, class_dropout: float) -> None:
    """CFG < 1 pushes samples away from their class; CFG > 1 needs the null class that only label dropout
    trains."""
    if cfg < 1.0:
        raise ValueError(f"cfg={cfg} < 1 (1 = no guidance; the paper samples at 1.65-1.75)")
    if cfg > 1.0 and class_dropout <= 0:
        raise ValueError(f"cfg={cfg} needs the null class, but the AR model has class_dropout=0 (no guidance "
                         f"without it: use cfg=1)")


def guided(logits: torch.Tensor, cfg: float) -> torch.Tensor:
    """CFG on a batch laid out [conditional; unconditional]: u + cfg (c - u)."""
    c, u = logits.chunk(2)
    return u + cfg * (c - u)


def guided_at(i: int, cfg_interval: int) -> bool:
    """Whether code i (0-based) is sampled with guidance. LlamaGen's ``decode_n_tokens`` turns guidance off
    for good once its step counter passes ``cfg_interval`` (its step 0 samples code 1; the prefill samples
    code 0 guided), i.e. codes 0 .. cfg_interval + 1 are guided; -1 (its default) guides every code."""
    return cfg_interval < 0 or i <= cfg_interval + 1


@torch.no_grad()
def generate(model: GPT, y: torch.Tensor, *, cfg: float = 1.0, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, cache: bool = True, cfg_interval: int = -1) -> torch.Tensor:
    """Sample (B, tokens) code indices for labels y. Deterministic given ``seed`` (its own generator, on the
    model's device). ``cache=False`` recomputes the whole prefix at every step (the reference the cache is
    tested against and benchmarked beside). Past ``cfg_interval`` (``guided_at``) the conditional half's
    logits are used alone; the batch stays doubled, as in LlamaGen, so the cache layout never changes."""
    check_cfg(cfg, model.spec.class_dropout)
    model.eval()
    dev = y.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    use_cfg = cfg != 1.0
    yy = torch.cat([y, torch.full_like(y, model.null_class)]) if use_cfg else y
    out = torch.empty(len(y), 0, dtype=torch.long, device=dev)
    model.reset_cache()
    for i in range(model.spec.tokens):
        if not cache:
            seq = torch.cat([out, out]) if use_cfg else out
            logits = model(seq if i else None, yy)[:, -1]
        elif i == 0:
            logits = model(None, yy, start=0)[:, -1]
        else:
            last = out[:, -1:]
            logits = model(torch.cat([last, last]) if use_cfg else last, None, start=i)[:, -1]
        if use_cfg:
            logits = guided(logits, cfg) if guided_at(i, cfg_interval) else logits.chunk(2)[0]
        logits = filter_logits(logits / max(temperature, 1e-5), top_k, top_p)
        nxt = torch.multinomial(logits.softmax(-1), 1, generator=gen)
        out = torch.cat([out, nxt], 1)
    model.reset_cache()
    return out
