"""Seed 003's texture GAN (Slossberg et al., §3): a StyleGAN2-style UV albedo generator and a residual
photo discriminator.

**Generator** ``z (B, Z) -> albedo (B, 3, S, S)`` (UV layout of the built-in face model, v up as every
facetex texture): a mapping MLP ``z -> w`` (``z`` normalised to unit second moment, equalised learning
rate with a 0.01 multiplier, a running ``w_avg`` for truncation), then the synthesis network: a learned
constant ``4 x 4`` input, per resolution two modulated/demodulated 3x3 convolutions (the first after a
bilinear 2x upsampling), each followed by a per-pixel noise input scaled by a learned strength, a bias
and a leaky ReLU, and a modulated 1x1 ``toRGB`` (no demodulation) whose output is added to the
upsampled RGB of the resolution below (the "skip" generator of StyleGAN2). One ``w`` per layer
(``num_ws``) so ``W+`` inversion and style mixing work. Output: ``0.5 + 0.5 * rgb``, i.e. StyleGAN's
``[-1, 1]`` range mapped to albedo ``[0, 1]``; callers clamp where a texture must be valid.

**Discriminator** ``photo crop (B, 3, R, R) in [0, 1] -> logit (B,)``: StyleGAN2's residual
architecture: a 1x1 ``fromRGB``, per resolution two 3x3 convolutions and a 2x average-pool
downsampling with a 1x1 residual skip (sum scaled by ``1/sqrt(2)``), down to ``4 x 4``, then the
minibatch standard deviation channel, a 3x3 conv and two linear layers.

Departures from StyleGAN2 (for CPU and code size): bilinear up/down sampling instead of the FIR
filters; no path-length regularisation (R1 and style mixing are in the trainer,
:mod:`stages.train.texture_gan`); no pretrained weights (none can be had here: the paper initialises
from FFHQ's StyleGAN2).

Presets: ``tiny`` (tests, 32^2 UV, 32^2 crops), ``small`` (CPU, 128^2 UV, 64^2 crops), ``base`` (GPU,
512^2 UV, 256^2 crops, StyleGAN2's 512-d latents and channel schedule).

Model folders: :mod:`stages.models.folder`, ``model_type = "texture_gan"``, networks ``generator``
(the exponential moving average of the trained generator: what inference uses), ``discriminator``
(kept so a folder can be fine-tuned; inference never loads it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.models.folder import load_pretrained

MODEL_TYPE = "texture_gan"
#: Gain of the leaky ReLU (keeps unit variance, as StyleGAN2's ``lrelu`` with ``gain = sqrt(2)``).
LRELU_GAIN = math.sqrt(2.0)


def _from_dict(cls, d: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}")
    return cls(**d)


def _power_of_two(value: int, name: str, low: int) -> None:
    if value < low or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {low}, got {value}")


@dataclass
class TextureGANConfig:
    """Architecture of :class:`TextureGenerator` and :class:`PhotoDiscriminator` (saved in ``config.json``).

    Attributes:
        uv_size: side ``S`` of the generated UV albedo (power of two >= 8).
        view_size: side ``R`` of the photo crops the discriminator sees (power of two >= 8).
        z_dim, w_dim: latent sizes.
        mapping_layers: depth of the mapping MLP.
        channel_base, channel_max: channels at resolution ``r`` are ``min(channel_base // r, channel_max)``
            (StyleGAN2's schedule), for the generator; ``d_channel_base``, ``d_channel_max`` for the
            discriminator.
        mbstd_group: minibatch-std group size.
    """

    uv_size: int = 128
    view_size: int = 64
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 2048
    channel_max: int = 64
    d_channel_base: int = 1024
    d_channel_max: int = 64
    mbstd_group: int = 4

    def __post_init__(self) -> None:
        _power_of_two(int(self.uv_size), "uv_size", 8)
        _power_of_two(int(self.view_size), "view_size", 8)
        for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "d_channel_base",
                     "d_channel_max", "mbstd_group"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextureGANConfig.{name} must be positive")

    def channels(self, resolution: int) -> int:
        return max(1, min(self.channel_base // resolution, self.channel_max))

    def d_channels(self, resolution: int) -> int:
        return max(1, min(self.d_channel_base // resolution, self.d_channel_max))

    @property
    def num_ws(self) -> int:
        """One ``w`` per modulated conv, plus one for the last toRGB."""
        return 2 * int(math.log2(self.uv_size)) - 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TextureGANConfig:
        return _from_dict(cls, d)


PRESETS: dict[str, TextureGANConfig] = {
    "tiny": TextureGANConfig(uv_size=32, view_size=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256,
                             channel_max=16, d_channel_base=256, d_channel_max=16, mbstd_group=2),
    "small": TextureGANConfig(),
    "base": TextureGANConfig(uv_size=512, view_size=256, z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384,
                             channel_max=512, d_channel_base=16384, d_channel_max=512),
}


# ------------------------------------------------------------------------------------------------
# layers with equalised learning rate
# ------------------------------------------------------------------------------------------------

class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights ~ N(0, 1/lr_mul), scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activate else x


class EqualConv2d(nn.Module):
    """3x3 (or kxk) convolution with equalised learning rate, optional bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True,
                 activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activate else x


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: the weight scaled per input channel by a style ``A(w)``
    (initialised to 1) and, with ``demodulate``, renormalised per output channel; one grouped conv for
    the whole batch. ``x (B, C_in, H, W), w (B, w_dim) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, *, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.scale = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.demodulate = demodulate

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        b, c_in, h, width = x.shape
        styles = self.affine(w)                                            # (B, C_in)
        weight = self.weight[None] * self.scale * styles[:, None, :, None, None]   # (B, C_out, C_in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        c_out, k = weight.shape[1], weight.shape[-1]
        out = F.conv2d(x.reshape(1, b * c_in, h, width), weight.reshape(b * c_out, c_in, k, k), padding=k // 2,
                       groups=b)
        return out.reshape(b, c_out, h, width)


class StyledLayer(nn.Module):
    """Modulated 3x3 conv (after a 2x upsampling when ``up``) + noise input + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, up: bool = False):
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w) + noise * self.noise_strength
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation, + bias."""

    def __init__(self, in_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


# ------------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    """``z (B, Z) -> w (B, W)``; ``w_avg`` (a buffer the trainer updates) is the truncation centre."""

    def __init__(self, config: TextureGANConfig):
        super().__init__()
        dims = [config.z_dim] + [config.w_dim] * config.mapping_layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=0.01, activate=True)
                                   for a, b in zip(dims, dims[1:], strict=False)])
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: Tensor, truncation: float = 1.0) -> Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        w = self.net(z)
        if truncation != 1.0:
            w = self.w_avg + truncation * (w - self.w_avg)
        return w

    @torch.no_grad()
    def update_w_avg(self, w: Tensor, beta: float = 0.995) -> None:
        self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, beta))


class TextureGenerator(nn.Module):
    """The UV albedo generator (module docstring).

    ``forward(z, truncation=1, noise=None, generator=None) -> (B, 3, S, S)``;
    ``synthesis(ws (B, num_ws, W), noise) -> (B, 3, S, S)`` for inversion in ``W+``.
    """

    def __init__(self, config: TextureGANConfig):
        super().__init__()
        self.config = config
        c = config
        self.mapping = MappingNetwork(c)
        self.const = nn.Parameter(torch.randn(c.channels(4), 4, 4))
        self.layers = nn.ModuleList([StyledLayer(c.channels(4), c.channels(4), c.w_dim)])
        self.to_rgb = nn.ModuleList([ToRGB(c.channels(4), c.w_dim)])
        res = 8
        while res <= c.uv_size:
            self.layers.append(StyledLayer(c.channels(res // 2), c.channels(res), c.w_dim, up=True))
            self.layers.append(StyledLayer(c.channels(res), c.channels(res), c.w_dim))
            self.to_rgb.append(ToRGB(c.channels(res), c.w_dim))
            res *= 2

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """``(1, H, W)`` of each layer's noise input, in layer order."""
        shapes, res = [(1, 4, 4)], 8
        while res <= self.config.uv_size:
            shapes += [(1, res, res), (1, res, res)]
            res *= 2
        return shapes

    def make_noise(self, batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> list[Tensor]:
        """Fresh N(0, 1) noise inputs ``[(B, 1, H, W), ...]`` (seeded by ``generator``)."""
        return [torch.randn(batch, *shape, generator=generator, device=device) for shape in self.noise_shapes()]

    def synthesis(self, ws: Tensor, noise: list[Tensor] | None = None) -> Tensor:
        """``ws (B, num_ws, W)`` and per-layer noise (``None``: fresh) -> albedo ``(B, 3, S, S)``."""
        if ws.dim() != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.config.w_dim:
            raise ValueError(f"TextureGenerator: ws must be (B, {self.num_ws}, {self.config.w_dim}), "
                             f"got {tuple(ws.shape)}")
        b = ws.shape[0]
        if noise is None:
            noise = self.make_noise(b, device=ws.device)
        if len(noise) != len(self.layers):
            raise ValueError(f"TextureGenerator: {len(self.layers)} noise inputs needed, got {len(noise)}")
        x = self.const[None].expand(b, -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], noise[0])
        rgb = self.to_rgb[0](x, ws[:, 1])
        for i in range(1, len(self.to_rgb)):
            x = self.layers[2 * i - 1](x, ws[:, 2 * i - 1], noise[2 * i - 1])
            x = self.layers[2 * i](x, ws[:, 2 * i], noise[2 * i])
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + \
                self.to_rgb[i](x, ws[:, 2 * i + 1])
        return 0.5 + 0.5 * rgb

    def forward(self, z: Tensor, truncation: float = 1.0, noise: list[Tensor] | None = None,
                z2: Tensor | None = None, cut: int | None = None) -> Tensor:
        """``z (B, Z)`` -> albedo ``(B, 3, S, S)``; with ``z2`` and ``cut`` (style mixing), layers from
        ``cut`` on take ``z2``'s ``w``. Mapping and synthesis in one forward (what DDP wraps)."""
        w = self.mapping(z, truncation)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if z2 is not None and cut is not None:
            ws[:, cut:] = self.mapping(z2, truncation)[:, None]
        return self.synthesis(ws, noise)


# ------------------------------------------------------------------------------------------------
# discriminator
# ------------------------------------------------------------------------------------------------

class _DBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        return (x + skip) / math.sqrt(2.0)


class PhotoDiscriminator(nn.Module):
    """Residual discriminator with minibatch std: ``(B, 3, R, R)`` in ``[0, 1]`` -> logits ``(B,)``."""

    def __init__(self, config: TextureGANConfig):
        super().__init__()
        self.config = config
        c = config
        self.from_rgb = EqualConv2d(3, c.d_channels(c.view_size), 1)
        blocks, res = [], c.view_size
        while res > 4:
            blocks.append(_DBlock(c.d_channels(res), c.d_channels(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        ch = c.d_channels(4)
        self.conv = EqualConv2d(ch + 1, ch, 3)
        self.fc = EqualLinear(ch * 16, ch, activate=True)
        self.out = EqualLinear(ch, 1)

    def minibatch_std(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        group = min(self.config.mbstd_group, b)
        while b % group:
            group -= 1
        y = x.reshape(group, -1, c, h, w)
        y = (y - y.mean(dim=0)).pow(2).mean(dim=0).add(1e-8).sqrt()          # (B/G, C, H, W)
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, image: Tensor) -> Tensor:
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-1] != self.config.view_size:
            raise ValueError(f"PhotoDiscriminator: expected (B, 3, {self.config.view_size}, "
                             f"{self.config.view_size}), got {tuple(image.shape)}")
        x = self.blocks(self.from_rgb(image * 2.0 - 1.0))
        x = self.conv(self.minibatch_std(x))
        return self.out(self.fc(x.flatten(1)))[:, 0]


def build_generator(config: dict) -> TextureGenerator:
    return TextureGenerator(TextureGANConfig.from_dict(config))


def build_discriminator(config: dict) -> PhotoDiscriminator:
    return PhotoDiscriminator(TextureGANConfig.from_dict(config))


def load_texture_generator(path: str | Path, *,
                           map_location: str | torch.device = "cpu") -> tuple[TextureGenerator, dict]:
    """The generator of a ``texture_gan`` model folder (eval mode, gradients off) and its ``config.json``.

    Raises:
        MissingArtifactError: a missing / corrupt folder or another model type (one line, named).
    """
    models, config = load_pretrained(path, {"generator": build_generator}, model_type=MODEL_TYPE,
                                     names=["generator"], map_location=map_location)
    return models["generator"].requires_grad_(False), config


__all__ = ["MODEL_TYPE", "PRESETS", "PhotoDiscriminator", "TextureGANConfig", "TextureGenerator",
           "build_discriminator", "build_generator", "load_texture_generator"]
