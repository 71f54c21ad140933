"""The LlamaGen VQGAN encoder/decoder (Esser et al., 2021; Sun et al., 2024) around the VQ layer.

Paper section 4.1: "The encoder and decoder configurations are identical to those in VQGAN / LlamaGen,
utilizing 2 layers of ResBlocks." VQ-16: ch 128, ch_mult (1, 1, 2, 2, 4), z 256, GroupNorm(32), attention
in the middle block and at the lowest resolution; 256x256 -> 16x16 tokens. VQ-8 (Table 3 rows 13-14):
ch_mult (1, 2, 2, 4), 256x256 -> 32x32 tokens.

The vector channel d of the codes (Table 3: 4, 8, 256, 512) is decoupled from the z channels by 1x1 convs:
encoder -> quant_conv (z -> d) -> VQ -> post_quant_conv (d -> z) -> decoder.

``cpu-4`` / ``cpu-2`` / ``cpu-8`` are the same code, narrower and shallower, for 32x32 images on CPU (8x8,
16x16 and 4x4 latents): the stand-ins of VQ-16, VQ-8 and VQ-32 (RQ-VAE's ratio-32 tokenizer of Table 4) at
``scale=cpu`` (sweeps/scale.py). With ``num_res_blocks=0`` the encoder has no per-level res blocks, so it
stays at 8 channels down to its middle block (res, attention, res); the decoder keeps one res block per
level (32, 16, 8 channels). Chosen for speed: the grid of Fig. 6 right must run in minutes on 2 cores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    norm_groups: int = 32
    dropout: float = 0.0

    @property
    def ratio(self) -> int:
        """Downsampling ratio (the "Ratio" column of Table 3): one halving per level after the first."""
        return 2 ** (len(self.ch_mult) - 1)


ARCHS: dict[str, ArchSpec] = {
    "vq-16": ArchSpec(128, (1, 1, 2, 2, 4), 2, 256),
    "vq-8": ArchSpec(128, (1, 2, 2, 4), 2, 256),
    # RQ-VAE's 8x8x4 tokenizer (Table 4; rq-vae in256-rqvae-8x8x4 config): ch_mult (1, 1, 2, 2, 4, 4), 256 -> 8x8
    "vq-32": ArchSpec(128, (1, 1, 2, 2, 4, 4), 2, 256),
    # cpu-4 with VQBridge K=1,024: ~0.38 s per fwd+bwd step at batch 32 on one core of this 2-core machine,
    # 300 steps in ~2 minutes. Its predecessor (ch 16, one res block per level; see git log) took ~1.0 s per
    # step here: 8 base channels and no per-level res blocks cut it 2.6x.
    "cpu-4": ArchSpec(8, (1, 2, 4), 0, 64, norm_groups=4),
    "cpu-2": ArchSpec(8, (1, 2), 0, 64, norm_groups=4),
    "cpu-8": ArchSpec(8, (1, 2, 4, 4), 0, 64, norm_groups=4),  # the vq-32 stand-in: 32x32 -> 4x4
}


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, ch, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 q/k/v/proj convs (VQGAN)."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, hw, c)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as VQGAN


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, a: ArchSpec, in_ch: int = 3):
        super().__init__()
        g, chans = a.norm_groups, [a.ch * m for m in a.ch_mult]
        self.conv_in = nn.Conv2d(in_ch, a.ch, 3, padding=1)
        layers: list[nn.Module] = []
        cin = a.ch
        for i, cout in enumerate(chans):
            for _ in range(a.num_res_blocks):
                layers.append(ResBlock(cin, cout, g, a.dropout))
                cin = cout
                if i == len(chans) - 1:  # attention at the lowest resolution
                    layers.append(AttnBlock(cin, g))
            if i != len(chans) - 1:
                layers.append(Downsample(cin))
        layers += [ResBlock(cin, cin, g, a.dropout), AttnBlock(cin, g), ResBlock(cin, cin, g, a.dropout)]  # mid
        self.body = nn.Sequential(*layers)
        self.norm_out, self.conv_out = _norm(cin, g), nn.Conv2d(cin, a.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))


class Decoder(nn.Module):
    def __init__(self, a: ArchSpec, out_ch: int = 3):
        super().__init__()
        g, chans = a.norm_groups, [a.ch * m for m in a.ch_mult]
        cin = chans[-1]
        self.conv_in = nn.Conv2d(a.z_channels, cin, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(cin, cin, g, a.dropout), AttnBlock(cin, g),
                                   ResBlock(cin, cin, g, a.dropout)]  # mid
        for i, cout in enumerate(reversed(chans)):
            for _ in range(a.num_res_blocks + 1):
                layers.append(ResBlock(cin, cout, g, a.dropout))
                cin = cout
                if i == 0:
                    layers.append(AttnBlock(cin, g))
            if i != len(chans) - 1:
                layers.append(Upsample(cin))
        self.body = nn.Sequential(*layers)
        self.norm_out, self.conv_out = _norm(cin, g), nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))


def get_arch(arch: str | ArchSpec) -> ArchSpec:
    if isinstance(arch, ArchSpec):
        return arch
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")
    return ARCHS[arch]


class VQModel(nn.Module):
    """encoder -> quant_conv (z -> d) -> quantizer -> post_quant_conv (d -> z) -> decoder."""

    def __init__(self, arch: str | ArchSpec, channel: int, quantizer: nn.Module):
        super().__init__()
        self.arch_name = arch if isinstance(arch, str) else "custom"
        self.spec = get_arch(arch)
        if channel <= 0:
            raise ValueError(f"model.channel={channel} must be > 0")
        self.encoder, self.decoder = Encoder(self.spec), Decoder(self.spec)
        self.quant_conv = nn.Conv2d(self.spec.z_channels, channel, 1)
        self.post_quant_conv = nn.Conv2d(channel, self.spec.z_channels, 1)
        self.quantizer = quantizer

    @property
    def ratio(self) -> int:
        return self.spec.ratio

    def latent_size(self, image_size: int) -> int:
        return image_size // self.ratio

    def check_image_size(self, image_size: int) -> None:
        if image_size <= 0 or image_size % self.ratio:
            raise ValueError(f"data.image_size={image_size} is not divisible by the downsampling ratio "
                             f"{self.ratio} of model.arch={self.arch_name}")

    def encode(self, x: torch.Tensor):
        return self.quantizer(self.quant_conv(self.encoder(x)))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, idx: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.decode_indices(idx))

    def forward(self, x: torch.Tensor):
        q = self.encode(x)
        return self.decode(q.z_q), q
