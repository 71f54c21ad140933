"""The VQ layer (paper eq. 1, 4, 5) with a projected codebook and a chunked nearest-code search.

forward(z_e):
    C^  = projector(C)                          recomputed every call, i.e. every training step
    x   = argmin_k ||z_e - C^_k||^2             eq. 1 (squared L2; optionally on l2-normalised vectors)
    z_q = C^_x
    codebook_loss = ||sg[z_e] - z_q||^2         eq. 5, first term: moves the codes (through the projector)
    commit_loss   = ||z_e - sg[z_q]||^2         eq. 5, second term, weighted by beta = 0.25 (Table 6)
    z_q <- z_e + sg[z_q - z_e]                  eq. 4, the straight-through estimator

The search never materialises the N x K distance matrix when it would be large: it walks the codebook in
chunks sized from a memory budget, keeping a running minimum. By default (``search_dtype="fp32"``) it runs
in fp32 even under autocast (bf16 distances tie or swap near codes) and always under no_grad (no autograd
graph through the argmin). ``search_dtype="bf16"`` reproduces the official training instead, whose distance
is computed inside its bf16 autocast (official tokenizer/tokenizer_image/vq_model_qbridge.py:264-266 under
vq_train_qbridge_lr.py:296): the norms in fp32, the cross term z.c a bf16 matmul; benchmarks/search_precision.py
measures how often the two disagree. In training mode only: the official evaluation and code extraction
(eval_fid_usage_lpips.py, autoregressive/train/extract_codes_c2i_qbridge.py) run without autocast, so in
eval mode the search stays fp32. Ties resolve exactly like ``torch.argmin`` on the full matrix: the lowest
index wins (strict < across chunks), which matters when a zero-initialised VQBridge makes every projected
code identical at step 0.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


CPU_TILE_BYTES = 8 * 2**20
SEARCH_DTYPES = ("fp32", "bf16")  # quant.search_dtype (fvq/core/validation.py holds the same choices)


class QuantOut(NamedTuple):
    z_q: torch.Tensor            # quantized, straight-through; same shape as the input
    indices: torch.Tensor        # input shape without the channel dim
    loss: torch.Tensor           # codebook_loss + beta * commit_loss
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor


@torch.no_grad()
def nearest_code(z: torch.Tensor, codebook: torch.Tensor, budget_bytes: int = 256 * 2**20,
                 dtype: str = "fp32") -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of z (N, d); codebook (K, d). Chunked; ``dtype``
    fp32 (exact up to fp32 rounding) or bf16 (the official runs' distance under bf16 autocast)."""
    if dtype not in SEARCH_DTYPES:
        raise ValueError(f"search dtype={dtype!r} is not one of {', '.join(SEARCH_DTYPES)}")
    low = dtype == "bf16"
    with torch.autocast(z.device.type, enabled=False):
        z = z.float()
        cb = codebook.float()
        n, k = z.shape[0], cb.shape[0]
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2; ||z||^2 is constant per row, so in fp32 it cannot change the
        # argmin and is left out. bf16 keeps it: the official sum adds it before the rounded cross term.
        cb_sq = (cb * cb).sum(1)
        entry = 6 if low else 4  # bytes per distance: the fp32 tile, plus the bf16 cross term
        chunk = max(1, min(k, budget_bytes // max(entry * n, 1)))
        if z.device.type == "cpu":
            # On CPU a distance tile that stays in cache beats one big buffer: with 8 MiB tiles the search runs
            # at 0.98-0.99x the bare (N,d)@(d,K) product, with the whole budget (256 MiB) at 1.21-1.24x
            # (N=4,096, d=256, K=16k/65k, 2 threads; benchmarks/quantizer.py). GPUs keep big chunks.
            chunk = min(chunk, max(256, CPU_TILE_BYTES // max(entry * n, 1)))
        best_val = torch.full((n,), float("inf"), device=z.device)
        best_idx = torch.zeros(n, dtype=torch.long, device=z.device)
        buf = torch.empty(n, chunk, device=z.device)
        if low:  # what autocast does to the official expression: pow/sum in fp32, the matmul in bf16
            z_sq, zb, cbb = (z * z).sum(1, keepdim=True), z.bfloat16(), cb.bfloat16()
            cross = torch.empty(n, chunk, device=z.device, dtype=torch.bfloat16)
        for start in range(0, k, chunk):
            stop = min(start + chunk, k)
            d = buf[:, : stop - start]
            if low:  # (||z||^2 + ||c||^2) - 2 bf16(z.c), in the official order; 2x is exact in bf16
                x = cross[:, : stop - start]
                torch.mm(zb, cbb[start:stop].t(), out=x)
                torch.add(z_sq, cb_sq[start:stop], out=d)
                d.sub_(x, alpha=2.0)
            else:
                torch.addmm(cb_sq[start:stop], z, cb[start:stop].t(), beta=1.0, alpha=-2.0, out=d)
            val, idx = d.min(1)  # first minimum within the chunk
            better = val < best_val  # strict: an equal value in a later chunk keeps the lower index
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx + start, best_idx)
        return best_idx


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int, dim: int, projector: nn.Module | None = None, beta: float = 0.25,
                 l2_norm: bool = False, search_budget_mb: int = 256, search_dtype: str = "fp32"):
        super().__init__()
        for name, v in (("num_codes", num_codes), ("dim", dim), ("search_budget_mb", search_budget_mb)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if beta < 0:
            raise ValueError(f"beta={beta} must be >= 0")
        if search_dtype not in SEARCH_DTYPES:
            raise ValueError(f"search_dtype={search_dtype!r} is not one of {', '.join(SEARCH_DTYPES)}")
        self.num_codes, self.dim, self.beta, self.l2_norm = num_codes, dim, beta, l2_norm
        self.search_dtype = search_dtype
        self.budget = search_budget_mb * 2**20
        self.projector = projector
        # Uniform(-1/K, 1/K) as in VQ-VAE/LlamaGen: small raw codes; a projector rescales them as it needs.
        self.embedding = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))

    def codebook(self) -> torch.Tensor:
        """The codebook the search uses: projector(C), l2-normalised if l2_norm. (K, d)."""
        c = self.embedding if self.projector is None else self.projector(self.embedding)
        return F.normalize(c, dim=-1) if self.l2_norm else c

    def forward(self, z: torch.Tensor) -> QuantOut:
        channel_first = z.dim() == 4
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim) if channel_first else z
        if flat.shape[-1] != self.dim:
            raise ValueError(f"latent has {flat.shape[-1]} channels, quantizer dim={self.dim}")
        if self.l2_norm:
            flat = F.normalize(flat, dim=-1)
        cb = self.codebook()
        idx = nearest_code(flat.detach(), cb.detach(), self.budget, self.search_dtype if self.training else "fp32")
        zq = cb[idx]  # gradient flows into the projected codebook (and through the projector into C)
        codebook_loss = F.mse_loss(zq.float(), flat.detach().float())
        commit_loss = F.mse_loss(flat.float(), zq.detach().float())
        zq = flat + (zq - flat).detach()  # eq. 4
        if channel_first:
            b, _, h, w = z.shape
            zq = zq.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)
            idx = idx.reshape(b, h, w)
        return QuantOut(zq, idx, codebook_loss + self.beta * commit_loss, codebook_loss, commit_loss)

    def decode_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """Codes for an index map (B, H, W) -> (B, d, H, W), always through the projected codebook."""
        zq = self.codebook()[idx]
        return zq.permute(0, 3, 1, 2) if idx.dim() == 3 else zq

    @torch.no_grad()
    def export(self) -> "VectorQuantizer":
        """A projector-free quantizer whose codebook is projector(C) baked in (section 3.2: no inference cost)."""
        plain = VectorQuantizer(self.num_codes, self.dim, None, self.beta, False, self.budget // 2**20,
                                self.search_dtype)
        plain.embedding.data.copy_(self.codebook().detach().float())
        # the baked codes are already normalised if l2_norm; inputs still need normalising at search time
        plain.l2_norm = self.l2_norm
        return plain.to(self.embedding.device)
