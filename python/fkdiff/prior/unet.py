"""A compact UNet for epsilon prediction on 3 x 32 x 32 images (pure torch).

Layout (``base`` channels, ``mults`` per resolution, ``blocks`` residual blocks per level):

    conv 3x3 (3 -> base)
    down:  at each resolution r = 32, 16, 8, ...: ``blocks`` ResBlocks (+ self-attention where
           r is in ``attn_res``), skips kept; a strided 3x3 conv halves r between levels
    mid:   ResBlock, attention (if ``mid_attn``), ResBlock
    up:    at each resolution, coarse to fine: ``blocks + 1`` ResBlocks, each on the
           concatenation with one skip; nearest upsampling + 3x3 conv between levels
    GroupNorm, SiLU, conv 3x3 (-> 3), zero-initialised

A ResBlock is ``GroupNorm, SiLU, conv, + projected time embedding, GroupNorm, SiLU, conv``
(second conv zero-initialised, so every block starts as the identity) plus a 1x1 projection of
the input where the widths differ. The time embedding is sinusoidal in the network's timestep
(0 .. T-1), ``time_dim`` wide, followed by a 2-layer MLP with SiLU to ``4 * base``.

``UNet.config`` is a plain dict of the constructor's arguments: ``UNet(**config)`` rebuilds it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNet", "timestep_embedding", "parameter_count"]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(batch, dim)`` of integer (or real) timesteps: ``[cos(t w_k),
    sin(t w_k)]`` with frequencies ``w_k = max_period ** (-k / (dim / 2))``."""
    if dim % 2:
        raise ValueError(f"dim: expected an even embedding width, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.to(torch.float32).reshape(-1, 1) * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(temb, cout)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a (small) feature map, residual."""

    def __init__(self, channels: int, groups: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads: {heads} does not divide {channels} channels")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(b, c, hgt, wid))


class UNet(nn.Module):
    """Epsilon-prediction UNet: ``model(x (b, C, H, W), timestep (b,) long) -> (b, C, H, W)``.

    Args:
        channels: image channels (3).
        image_size: height = width (32); must be divisible by ``2 ** (len(mults) - 1)``.
        base: channels at full resolution.
        mults: channel multiplier per resolution, finest first: ``(1, 2, 2)`` = 32, 16, 8.
        blocks: residual blocks per resolution on the way down (``blocks + 1`` on the way up).
        attn_res: resolutions with a self-attention layer after each block (``()``: none).
        mid_attn: self-attention between the two middle blocks.
        heads: attention heads.
        groups: GroupNorm groups (reduced to a divisor of the width where needed).
        dropout: inside residual blocks (0: none, the training is then fully deterministic given
            its generator).
        timesteps: the schedule length T (informative; sets nothing but the config).
        time_dim: width of the sinusoidal timestep embedding (then an MLP to ``4 * base``).
    """

    def __init__(self, channels: int = 3, image_size: int = 32, base: int = 32, mults=(1, 2, 2), blocks: int = 1,
                 attn_res=(), mid_attn: bool = True, heads: int = 1, groups: int = 8, dropout: float = 0.0,
                 timesteps: int = 1000, time_dim: int = 64):
        super().__init__()
        mults = tuple(int(m) for m in mults)
        attn_res = tuple(int(r) for r in attn_res)
        if image_size % (2 ** (len(mults) - 1)):
            raise ValueError(f"image_size {image_size} is not divisible by 2 ** {len(mults) - 1}")
        self.config = dict(channels=channels, image_size=image_size, base=base, mults=list(mults), blocks=blocks,
                           attn_res=list(attn_res), mid_attn=bool(mid_attn), heads=heads, groups=groups,
                           dropout=float(dropout), timesteps=timesteps, time_dim=time_dim)
        temb = 4 * base
        self.temb_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.stem = nn.Conv2d(channels, base, 3, padding=1)

        widths = [base * m for m in mults]
        self.down = nn.ModuleList()
        skips = [base]
        cur, res = base, image_size
        for level, width in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResBlock(cur, width, temb, groups, dropout))
                cur = width
                skips.append(cur)
                if res in attn_res:
                    self.down.append(Attention(cur, groups, heads))
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, groups, dropout)])
        if mid_attn:
            self.mid.append(Attention(cur, groups, heads))
        self.mid.append(ResBlock(cur, cur, temb, groups, dropout))

        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for _ in range(blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), width, temb, groups, dropout))
                cur = width
                if res in attn_res:
                    self.up.append(Attention(cur, groups, heads))
            if level > 0:
                self.up.append(_Upsample(cur))
                res *= 2
        assert not skips

        self.head = nn.Sequential(_norm(cur, groups), nn.SiLU(), nn.Conv2d(cur, channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        timestep = torch.as_tensor(timestep, device=x.device)
        if timestep.dim() == 0:
            timestep = timestep.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(timestep, self.temb_dim))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
                hs.append(h)
            elif isinstance(layer, Attention):
                h = layer(h)
                hs[-1] = h
            else:  # downsampling conv
                h = layer(h)
                hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.head(h)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
