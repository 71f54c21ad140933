"""Multi-code quantizers with FVQ (section 4.4, Table 4): several codes per spatial position.

``ResidualQuantizer`` (RQ-VAE, Lee et al., 2022): D codes per position, each quantizing what the previous
ones left over,
    r_0 = z,   k_d = argmin_k ||r_{d-1} - C^_k||^2,   r_d = r_{d-1} - C^_{k_d},   z^(d) = sum_{j<=d} C^_{k_j}
and the decoder sees z^(D). Indices are a (B, H, W, D) map (Table 4's 8x8x4).

``MultiScaleQuantizer`` (VAR, Tian et al., 2024): the same residual loop over token maps of growing side
s_1 < ... < s_S (Table 4's 680_10step: 1, 2, 3, 4, 5, 6, 8, 10, 13, 16). At step i the residual is
area-downsampled to s_i x s_i, quantized, the codes bicubic-upsampled back to H x W (optionally refined by
a phi conv) and subtracted:  f^ += phi_i(up(C^[k_i])),  rest -= the same. Indices are VAR's ``idx_Bl``:
the S maps flattened and concatenated, (B, sum s_i^2) = (B, 680).

FVQ: every codebook is a VectorQuantizer, so it goes through any projector of fvq/vq/projectors.py
(none / linear / MLP / VQBridge); the projected codebook C^ = f(C) is computed once per forward and reused
by every level that shares it. Both kinds share one codebook by default (RQ-VAE's ``shared_codebook``,
VAR's single vocabulary); ``shared=False`` gives each level its own codebook and projector.

Loss (eq. 5 over the stack), as VAR's quant.py and RQ-VAE's commitment loss write it: for each level the
partial sum z^(d) is pulled towards sg[z] (codebook term; gradient reaches every code used so far, and
through the projector every code of the book) and z towards sg[z^(d)] (commitment, weight beta); both are
averaged over the levels. With D = 1 this is exactly VectorQuantizer's loss. Straight-through (eq. 4) on
the final sum: z_q = z + sg[z^(D) - z]. The baselines here learn codes by this gradient (no EMA or code
restart as in the original repositories): Table 4 compares projectors, not update rules.

``l2_norm``: the nearest code is chosen by cosine similarity (VAR's ``using_znorm``), but the code added to
the sum is the projected code itself; normalising the codes would fix every level's step to unit length
and the residual could never shrink.

Phi refiners (VAR): ``phi`` shared 3x3 convs, h -> 0.5 h + 0.5 conv(h); step i uses the one whose tick
(evenly spread over [0, 1]) is nearest to i / (S - 1), as VAR's PhiPartiallyShared. VAR uses 4. They are
kept as an option (the Table 4 rows follow VAR and use 4) because they are part of VAR's decoder-side
map: with them, decoding indices needs the phi weights as well as the baked codebook.

Everything after the projector runs in fp32 (as VAR's quantizer does under autocast): residuals shrink
level after level and bf16 would round the later ones away.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fvq.vq.quantize import QuantOut, VectorQuantizer, nearest_code

PHI_RATIO = 0.5  # VAR's quant_resi: half identity, half conv


class Phi(nn.Conv2d):
    """VAR's residual refiner: h -> (1 - r) h + r conv3x3(h)."""

    def __init__(self, dim: int):
        super().__init__(dim, dim, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - PHI_RATIO) + super().forward(h) * PHI_RATIO


class MultiCodeQuantizer(nn.Module):
    """Shared parts: the codebooks (VectorQuantizers), the search, the loss, usage per level, export."""

    levels: int

    def __init__(self, num_codes: int, dim: int, levels: int, shared: bool = True,
                 projector: Callable[[], nn.Module | None] | None = None, beta: float = 0.25,
                 l2_norm: bool = False, search_budget_mb: int = 256):
        super().__init__()
        make = projector or (lambda: None)
        # The books search plain (l2_norm=False): the cosine search of l2_norm is done here, see the docstring.
        self.books = nn.ModuleList(VectorQuantizer(num_codes, dim, make(), beta, False, search_budget_mb)
                                   for _ in range(1 if shared else levels))
        self.num_codes, self.dim, self.levels, self.shared = num_codes, dim, levels, shared
        self.beta, self.l2_norm, self.budget = beta, l2_norm, search_budget_mb * 2**20

    def codebooks(self) -> list[torch.Tensor]:
        """The projected codebook of each level (K, d), fp32; a shared book is projected once."""
        books = [b.codebook().float() for b in self.books]
        return books * self.levels if self.shared else books

    def codebook(self) -> torch.Tensor:
        """(K, d) if shared, else (levels, K, d): what ``codebook.pt`` stores (fvq/train.py)."""
        books = [b.codebook() for b in self.books]
        return books[0] if self.shared else torch.stack(books)

    def _search(self, r: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
        if self.l2_norm:  # cosine similarity: argmin ||r/|r| - c/|c| ||^2
            return nearest_code(F.normalize(r, dim=-1), F.normalize(cb.detach(), dim=-1), self.budget)
        return nearest_code(r, cb.detach(), self.budget)

    def _loss(self, z: torch.Tensor, partial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codebook term, commitment term) of eq. 5 for one level's partial sum."""
        return F.mse_loss(partial, z.detach()), F.mse_loss(z, partial.detach())

    def _out(self, z: torch.Tensor, z_hat: torch.Tensor, idx: torch.Tensor, cb_loss, cm_loss) -> QuantOut:
        cb_loss, cm_loss = cb_loss / self.levels, cm_loss / self.levels
        z_q = z + (z_hat - z).detach()  # eq. 4 on the final sum
        return QuantOut(z_q, idx, cb_loss + self.beta * cm_loss, cb_loss, cm_loss)

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def level_counts(self, indices) -> torch.Tensor:
        """Selections of each code at each depth/scale, (levels, K) int64 on the CPU. Counts add up over
        batches and over data-parallel ranks (sum them, then ``level_usage``), fractions do not."""
        return torch.stack([torch.bincount(i.reshape(-1).cpu(), minlength=self.num_codes)
                            for i in self.split(indices)])

    @torch.no_grad()
    def level_usage(self, counts: torch.Tensor) -> dict[str, float]:
        """``usage_l0`` ...: fraction of the K codes each depth/scale selected (from ``level_counts``).

        The overall ``usage`` of fvq/eval/evaluate.py counts all tokens against one K: with a shared book that is
        the book's usage. With ``shared=False`` ``usage_books`` adds the fraction of all levels x K codes used.
        """
        used = counts.gt(0).double().mean(1).tolist()
        out = {f"usage_l{i}": u for i, u in enumerate(used)}
        if not self.shared:
            out["usage_books"] = sum(used) / len(used)
        return out

    @torch.no_grad()
    def export(self) -> "MultiCodeQuantizer":
        """A projector-free copy: every codebook baked to f(C) (section 3.2: no inference cost)."""
        plain = copy.deepcopy(self)
        plain.books = nn.ModuleList(b.export() for b in self.books)
        return plain


class ResidualQuantizer(MultiCodeQuantizer):
    """RQ-VAE: ``depth`` residual codes per position; indices (B, H, W, D) or (N, D) for (N, d) input."""

    def __init__(self, num_codes: int, dim: int, depth: int, **kw):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth_codes={depth!r} must be an int >= 1")
        super().__init__(num_codes, dim, depth, **kw)

    def forward(self, z: torch.Tensor) -> QuantOut:
        channel_first = z.dim() == 4
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) if channel_first else z
        if flat.shape[-1] != self.dim:
            raise ValueError(f"latent has {flat.shape[-1]} channels, quantizer dim={self.dim}")
        books = self.codebooks()
        with torch.autocast(z.device.type, enabled=False):
            flat = flat.float()
            rest, z_hat = flat.detach(), torch.zeros_like(flat)
            idx, cb_loss, cm_loss = [], 0.0, 0.0
            for cb in books:
                k = self._search(rest, cb)
                code = cb[k]                   # gradient into the projected codebook
                z_hat = z_hat + code
                rest = rest - code.detach()
                a, b = self._loss(flat, z_hat)
                cb_loss, cm_loss, idx = cb_loss + a, cm_loss + b, idx + [k]
        out = self._out(flat, z_hat, torch.stack(idx, -1), cb_loss, cm_loss)
        if channel_first:
            b_, _, h, w = z.shape
            out = out._replace(z_q=out.z_q.reshape(b_, h, w, self.dim).permute(0, 3, 1, 2),
                               indices=out.indices.reshape(b_, h, w, self.levels))
        return out

    def decode_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) -> (B, d, H, W), or (N, D) -> (N, d): the sum of each position's D codes."""
        if idx.shape[-1] != self.levels:
            raise ValueError(f"index map has {idx.shape[-1]} codes per position, quantizer depth={self.levels}")
        z = sum(cb[idx[..., i]] for i, cb in enumerate(self.codebooks()))
        return z.permute(0, 3, 1, 2) if idx.dim() == 4 else z

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        return list(indices.unbind(-1))


class MultiScaleQuantizer(MultiCodeQuantizer):
    """VAR: residual quantization over token maps of sides ``scales``; indices (B, sum s_i^2)."""

    def __init__(self, num_codes: int, dim: int, scales: Sequence[int], latent_size: int = 0, phi: int = 0,
                 **kw):
        scales = tuple(scales)
        if not scales or any(not isinstance(s, int) or s < 1 for s in scales):
            raise ValueError(f"scales={scales!r} must be a non-empty list of positive ints")
        if any(b <= a for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales={','.join(map(str, scales))} must be strictly increasing")
        if latent_size and scales[-1] > latent_size:
            raise ValueError(f"scales={','.join(map(str, scales))}: the last side {scales[-1]} exceeds the "
                             f"latent size {latent_size}")
        if not isinstance(phi, int) or phi < 0:
            raise ValueError(f"phi={phi!r} must be an int >= 0")
        super().__init__(num_codes, dim, len(scales), **kw)
        self.scales, self.latent_size = scales, latent_size or scales[-1]
        self.phis = nn.ModuleList(Phi(dim) for _ in range(phi))
        # VAR's PhiPartiallyShared: ticks spread over [0, 1]; step i takes the phi nearest to i / (S - 1).
        # Plain Python (no tensors): the quantizer is also built on the meta device to validate a grid.
        ticks = [1 / 3 / phi + j * (1 - 2 / 3 / phi) / max(phi - 1, 1) for j in range(phi)]
        at = [i / (len(scales) - 1) if len(scales) > 1 else 0.0 for i in range(len(scales))]
        self.phi_of = [min(range(phi), key=lambda j: abs(ticks[j] - a)) for a in at] if phi else []
        if len(set(self.phi_of)) < phi:  # an idle conv gets no gradient: DDP stops on it, Adam never moves it
            raise ValueError(f"phi={phi}: {len(scales)} scales use only {len(set(self.phi_of))} of the refiners "
                             f"(use phi <= {len(set(self.phi_of))})")

    def _lift(self, codes: torch.Tensor, step: int, size: tuple[int, int]) -> torch.Tensor:
        """Codes (B, s, s, d) of one step -> their contribution (B, d, H, W) to the latent."""
        h = codes.permute(0, 3, 1, 2)
        if tuple(h.shape[-2:]) != size:
            h = F.interpolate(h, size=size, mode="bicubic")
        return self.phis[self.phi_of[step]](h) if self.phis else h

    def forward(self, z: torch.Tensor) -> QuantOut:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"multi-scale quantizer needs a (B, {self.dim}, H, W) latent, got {tuple(z.shape)}")
        b, _, h, w = z.shape
        if self.scales[-1] > min(h, w):
            raise ValueError(f"scales end at {self.scales[-1]}, larger than the {h}x{w} latent")
        books = self.codebooks()
        with torch.autocast(z.device.type, enabled=False):
            f = z.float()
            rest, f_hat = f.detach(), torch.zeros_like(f)
            idx, cb_loss, cm_loss = [], 0.0, 0.0
            for i, (s, cb) in enumerate(zip(self.scales, books)):
                small = rest if (s, s) == (h, w) else F.interpolate(rest, size=(s, s), mode="area")
                k = self._search(small.permute(0, 2, 3, 1).reshape(-1, self.dim), cb).view(b, s, s)
                step = self._lift(cb[k], i, (h, w))
                f_hat = f_hat + step
                rest = rest - step.detach()
                a, c = self._loss(f, f_hat)
                cb_loss, cm_loss, idx = cb_loss + a, cm_loss + c, idx + [k.reshape(b, -1)]
        return self._out(f, f_hat, torch.cat(idx, 1), cb_loss, cm_loss)

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """(B, sum s_i^2) -> [(B, s_i, s_i)]; a list of per-step maps is returned as it is."""
        if isinstance(indices, (list, tuple)):
            return list(indices)
        if indices.shape[-1] != sum(s * s for s in self.scales):
            raise ValueError(f"index tensor has {indices.shape[-1]} tokens, scales {self.scales} make "
                             f"{sum(s * s for s in self.scales)}")
        parts = indices.split([s * s for s in self.scales], dim=-1)
        return [p.reshape(*p.shape[:-1], s, s) for p, s in zip(parts, self.scales)]

    def decode_indices(self, idx, size: int = 0) -> torch.Tensor:
        """The concatenated (B, sum s_i^2) indices, or VAR's list of (B, s_i, s_i) maps -> (B, d, H, W)."""
        side = size or self.latent_size
        maps = self.split(idx)
        out = 0.0
        with torch.autocast(maps[0].device.type, enabled=False):
            for i, (k, cb) in enumerate(zip(maps, self.codebooks())):
                out = out + self._lift(cb[k], i, (side, side))
        return out
