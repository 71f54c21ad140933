"""The dynamic vector-quantization toy of section 2 / Fig. 2, small enough to run in seconds on a CPU.

A linear encoder maps fixed inputs x to z_e = E(x); z_e is quantized to the nearest code of the
(projected) codebook, C_hat = f(C) (eq. 1; f = identity for plain VQ); the decoder is the identity, so
the task loss pulls z_q toward a fixed target y = A x + c (the "fixed optimization objective" of Fig. 2).
Loss = ||z_q_ste - y||^2 + ||z_q - sg[z_e]||^2 + beta ||z_e - sg[z_q]||^2 (eq. 4 STE, eq. 5 commitment),
optimized with plain SGD as in the paper's toy.

What it shows (the three challenges of section 2):
- plain STE: the encoder is trained on z_q, the code on the previous z_e (eq. 6): z_e and z_q circle
  the target before they settle (the spiral of Fig. 2 left) and stay far apart for long;
- sparse codebook gradients: a code only moves when selected, and its gradient is weighted by the share
  of points it holds, so most codes never move and usage stays low (Fig. 2 right, ~3% in the paper);
- a projector f shares parameters across all codes, so every code moves; VQBridge (section 3.2) keeps
  z_q close to z_e early and ends with (near) full usage.

    from fvq.toy import run_toy
    run_toy("none", seed=0, **TRAJECTORY_VARIANT).z_e     # 2-D trajectory (Fig. 2 left): a spiral
    run_toy("vqbridge", seed=0, **TSNE_VARIANT).usage     # 16-D, K = 256 (Fig. 2 right): high usage

The projectors are fvq.vq.projectors.build_projector's (the same modules the tokenizer trains with).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PROJECTORS = ("none", "linear", "mlp", "vqbridge")

# Fig. 2 left: one 2-D encoder output and its code, small SGD steps so the path is visible.
TRAJECTORY_VARIANT = dict(steps=400, dim=2, num_codes=16, num_points=1, lr=0.03, group=4, latent_dim=32)
# Fig. 2 right: a higher-dimensional variant with many codes and a few hundred encoder outputs, where
# usage means something (K = 256 codes for 512 outputs: full usage is reachable). p = 4 keeps K/p = 64
# bridge tokens; measured final usage (seed 0): VQBridge 0.91 at p=4, 0.50 at p=16 (whole in-group
# slices die, see fvq/vq/projectors.py), linear 0.53, plain VQ 0.13.
TSNE_VARIANT = dict(steps=600, dim=16, num_codes=256, num_points=512, lr=1.0, group=4, latent_dim=64)


@dataclass(frozen=True)
class ToyResult:
    projector: str
    z_e: np.ndarray        # (steps + 1, dim) trajectory of the tracked encoder output (point 0)
    z_q: np.ndarray        # (steps + 1, dim) trajectory of its quantized vector
    distance: np.ndarray   # (steps + 1,) mean |z_q - z_e| over all points, per step
    usage: float           # share of the K codes selected by the final encoder outputs
    encoder_out: np.ndarray  # (num_points, dim) final z_e
    codes: np.ndarray      # (num_codes, dim) final projected codebook f(C)
    used: np.ndarray       # (num_codes,) bool: code selected by at least one final z_e
    target: np.ndarray     # (dim,) target of the tracked point

    @property
    def final_distance(self) -> float:
        return float(self.distance[-1])

    @property
    def turns(self) -> float:
        """How many times z_e circles its target (2-D): > 1 is the spiral of Fig. 2 left."""
        rel = self.z_e[:, :2] - self.target[:2]
        angle = np.unwrap(np.arctan2(rel[:, 1], rel[:, 0]))
        return float(abs(angle[-1] - angle[0]) / (2 * np.pi))


def _projector(kind: str, num_codes: int, dim: int, latent_dim: int, group: int) -> torch.nn.Module:
    if kind not in PROJECTORS:
        raise ValueError(f"projector={kind!r} is not one of {', '.join(PROJECTORS)}")
    if kind == "none":
        return torch.nn.Identity()
    from fvq.vq.projectors import build_projector

    # "small" last-layer init: the cpu-scale default (sweeps/scale.py); exactly zero stalls small bridges.
    return build_projector(kind, num_codes, dim, latent_dim=latent_dim, depth=2, group=group, heads=4,
                           mlp_layers=5, init="small")


def _quantize(z_e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return torch.cdist(z_e.detach(), codes.detach()).argmin(dim=1)  # eq. 1, Euclidean distance


def run_toy(projector: str, steps: int = 400, seed: int = 0, *, dim: int = 2, num_codes: int = 16,
            num_points: int = 1, lr: float = 0.03, beta: float = 0.25, group: int = 4, latent_dim: int = 32,
            code_scale: float = 0.1, offset: float = 3.0) -> ToyResult:
    """Train the toy for ``steps`` SGD steps; deterministic for a given seed (CPU).

    The defaults are TRAJECTORY_VARIANT's; ``group`` and ``latent_dim`` configure the projector (p and d'
    of section 3.2); codes start as N(0, code_scale^2) near the origin, targets sit ``offset`` away.
    """
    if steps < 1 or num_codes < 1 or num_points < 1:
        raise ValueError(f"steps={steps}, num_codes={num_codes}, num_points={num_points} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_points, dim, generator=gen)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]
    # Targets: rotated, scaled inputs shifted by `offset` (in norm) away from the origin, where codes start.
    y = x @ rotation * 1.5 + offset / dim ** 0.5
    codebook = torch.nn.Parameter(torch.randn(num_codes, dim, generator=gen) * code_scale)
    with torch.random.fork_rng(devices=[]):                 # seeded init, global RNG left untouched
        torch.manual_seed(seed)
        encoder = torch.nn.Linear(dim, dim)
        proj = _projector(projector, num_codes, dim, latent_dim, group)
    with torch.no_grad():                                   # z_e starts at x / 2: far from its target
        encoder.weight.copy_(torch.eye(dim) * 0.5)
        encoder.bias.zero_()
    opt = torch.optim.SGD([*encoder.parameters(), codebook, *proj.parameters()], lr=lr)

    ze_path, zq_path, dist = [], [], []
    for step in range(steps + 1):                           # steps + 1 states: the last is not stepped
        z_e = encoder(x)
        codes = proj(codebook)
        z_q = codes[_quantize(z_e, codes)]
        ze_path.append(z_e[0].detach().clone())
        zq_path.append(z_q[0].detach().clone())
        dist.append((z_q - z_e).detach().norm(dim=1).mean())
        if step == steps:
            break
        z_ste = z_e + (z_q - z_e).detach()                  # eq. 4
        loss = (F.mse_loss(z_ste, y) + F.mse_loss(z_q, z_e.detach())
                + beta * F.mse_loss(z_e, z_q.detach()))     # decoder = identity; eq. 5
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        z_e, codes = encoder(x), proj(codebook).detach()
        used = torch.zeros(num_codes, dtype=torch.bool)
        used[_quantize(z_e, codes)] = True
    return ToyResult(projector=projector, z_e=torch.stack(ze_path).numpy(), z_q=torch.stack(zq_path).numpy(),
                     distance=torch.stack(dist).numpy(), usage=float(used.float().mean()),
                     encoder_out=z_e.numpy(), codes=codes.numpy(), used=used.numpy(), target=y[0].numpy())
