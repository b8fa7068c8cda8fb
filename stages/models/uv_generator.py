"""Networks of seed 001's UV completion (§3.2–3.3): a U-Net UV generator and PatchGAN discriminators.

- :class:`UVGenerator`: ``(partial RGB, seen mask, UV position map) -> complete UV texture`` in ``[0, 1]``.
  A U-Net: strided 3x3 convolutions down, nearest upsampling + 3x3 convolution up, skip connections,
  GroupNorm + SiLU, sigmoid output.
- :class:`PatchDiscriminator`: a PatchGAN (pix2pix style) with spectral normalisation on every
  convolution (seed 001 applies spectral norm to stabilise training) and no other normalisation;
  it returns a map of logits, one per receptive-field patch. Seed 001 uses two of them on partial UV
  crops (centre and sides, see :func:`stages.train.losses.uv_crops`).

Both are configured by small dataclasses with ``to_dict``/``from_dict`` so a model folder
(:mod:`stages.models.folder`, ``model_type = "uv_generator"``: ``generator`` and, in a training
folder, the discriminators) can rebuild them from ``config.json``; :func:`load_generator` reads one.
Training lives in :mod:`stages.train.trainer`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.models.folder import load_pretrained

MODEL_TYPE = "uv_generator"


def _check_positive(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive integer, got {value!r}")


def _from_dict(cls, d: dict):
    if not isinstance(d, dict):
        raise ValueError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown} (known: {sorted(known)})")
    return cls(**d)


@dataclass
class UVGeneratorConfig:
    """Settings of :class:`UVGenerator`.

    Attributes:
        in_channels: input channels after concatenation: partial RGB (``in_channels - 4``, zero where
            unseen) + seen mask (1) + UV position map (3).
        out_channels: output channels (RGB).
        base_channels: channels at full resolution; doubled at every level down.
        depth: number of down/up levels (the UV size must be divisible by ``2**depth``).
        max_channels: cap on the channels of any level.
    """

    in_channels: int = 7
    out_channels: int = 3
    base_channels: int = 32
    depth: int = 4
    max_channels: int = 256

    def __post_init__(self) -> None:
        _check_positive(self, ("in_channels", "out_channels", "base_channels", "depth", "max_channels"))
        if self.in_channels < 5:
            raise ValueError(f"UVGeneratorConfig.in_channels must be >= 5 (partial + mask + position), "
                             f"got {self.in_channels}")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of the settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UVGeneratorConfig:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on unknown keys or bad values."""
        return _from_dict(cls, d)


@dataclass
class DiscriminatorConfig:
    """Settings of :class:`PatchDiscriminator`.

    Attributes:
        in_channels: channels of the images judged (RGB).
        base_channels: channels of the first layer; doubled per layer (capped at 8x).
        layers: number of stride-2 layers; the receptive field and the downsampling grow with it.
        spectral_norm: wrap every convolution in spectral normalisation (seed 001).
    """

    in_channels: int = 3
    base_channels: int = 32
    layers: int = 3
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        _check_positive(self, ("in_channels", "base_channels", "layers"))
        if not isinstance(self.spectral_norm, bool):
            raise ValueError(f"DiscriminatorConfig.spectral_norm must be a bool, got {self.spectral_norm!r}")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of the settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DiscriminatorConfig:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on unknown keys or bad values."""
        return _from_dict(cls, d)


TINY_GENERATOR = UVGeneratorConfig(base_channels=4, depth=2, max_channels=8)
"""A generator small enough for unit tests (a few hundred parameters)."""

TINY_DISCRIMINATOR = DiscriminatorConfig(base_channels=4, layers=2)
"""A discriminator small enough for unit tests."""


def group_count(channels: int) -> int:
    """Largest group count <= 8 that divides ``channels``."""
    g = min(8, channels)
    while channels % g:
        g -= 1
    return g


class _ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
            nn.GroupNorm(group_count(cout), cout),
            nn.SiLU(),
        )


class _Up(nn.Module):
    """Nearest x2 upsampling, 3x3 conv to ``cout``, concatenation with the skip, 3x3 conv block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = _ConvNormAct(cin, cout)
        self.fuse = nn.Sequential(_ConvNormAct(2 * cout, cout), _ConvNormAct(cout, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.fuse(torch.cat([x, skip], dim=1))


class UVGenerator(nn.Module):
    """U-Net that completes a partial UV texture (seed 001's UV generator).

    Args:
        config: the network's settings.
    """

    def __init__(self, config: UVGeneratorConfig):
        super().__init__()
        self.config = config
        c = config
        chans = [min(c.base_channels * 2**i, c.max_channels) for i in range(c.depth + 1)]
        self.channels = chans
        self.stem = nn.Sequential(_ConvNormAct(c.in_channels, chans[0]), _ConvNormAct(chans[0], chans[0]))
        self.down = nn.ModuleList()
        for i in range(c.depth):
            self.down.append(nn.Sequential(_ConvNormAct(chans[i], chans[i + 1], stride=2),
                                           _ConvNormAct(chans[i + 1], chans[i + 1])))
        self.bottleneck = _ConvNormAct(chans[-1], chans[-1])
        self.up = nn.ModuleList([_Up(chans[i + 1], chans[i]) for i in reversed(range(c.depth))])
        self.head = nn.Conv2d(chans[0], c.out_channels, 1)

    def forward(self, partial: Tensor, mask: Tensor, position: Tensor | None = None) -> Tensor:
        """Complete a partial UV texture.

        Args:
            partial: ``(B, in_channels - 4, S, S)`` visible texels in ``[0, 1]``, zero where unseen.
            mask: ``(B, 1, S, S)`` seen mask / confidence in ``[0, 1]``.
            position: ``(B, 3, S, S)`` UV position map (model-space xyz per texel), or ``None`` (zeros).

        Returns:
            ``(B, out_channels, S, S)`` complete texture in ``[0, 1]`` (sigmoid output; the caller
            decides whether to paste the seen texels back).

        Raises:
            ValueError: wrong ranks/shapes/channels, or ``S`` not divisible by ``2**depth``.
        """
        if partial.dim() != 4 or mask.dim() != 4:
            raise ValueError(f"UVGenerator: expected (B, C, S, S) inputs, got {tuple(partial.shape)} "
                             f"and {tuple(mask.shape)}")
        b, _, h, w = partial.shape
        if position is None:
            position = partial.new_zeros(b, 3, h, w)
        for name, t in (("mask", mask), ("position", position)):
            if t.dim() != 4 or t.shape[0] != b or t.shape[2:] != partial.shape[2:]:
                raise ValueError(f"UVGenerator: {name} has shape {tuple(t.shape)}, partial {tuple(partial.shape)}")
        x = torch.cat([partial, mask.to(partial.dtype), position.to(partial.dtype)], dim=1)
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"UVGenerator: inputs have {x.shape[1]} channels in total, config expects "
                             f"{self.config.in_channels} (partial {partial.shape[1]} + mask {mask.shape[1]} + "
                             f"position {position.shape[1]})")
        k = 2**self.config.depth
        if h % k or w % k:
            raise ValueError(f"UVGenerator: UV size {h}x{w} must be divisible by 2**depth = {k}")
        x = self.stem(x)
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = self.bottleneck(x)
        for up, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = up(x, skip)
        return torch.sigmoid(self.head(x))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator with spectral normalisation (seed 001's partial UV / face discriminators).

    ``layers`` stride-2 4x4 convolutions (channels ``base * 2**i``, capped at 8x), one stride-1 3x3
    convolution, then a 3x3 convolution to one logit channel; LeakyReLU(0.2) between layers and no
    normalisation besides spectral norm. An input of ``H x W`` gives ``(H // 2**layers) x (W // 2**layers)``
    logits.

    Args:
        config: the network's settings.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        sn = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda m: m)
        mods: list[nn.Module] = []
        cin = config.in_channels
        for i in range(config.layers):
            cout = config.base_channels * min(2**i, 8)
            mods += [sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            cin = cout
        cout = config.base_channels * min(2**config.layers, 8)
        mods += [sn(nn.Conv2d(cin, cout, 3, stride=1, padding=1)), nn.LeakyReLU(0.2)]
        mods += [sn(nn.Conv2d(cout, 1, 3, stride=1, padding=1))]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """Score patches of ``x``.

        Args:
            x: ``(B, in_channels, H, W)`` images (any size with ``H, W >= 2**layers``).

        Returns:
            ``(B, 1, H // 2**layers, W // 2**layers)`` logits (real > 0 > fake).
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"PatchDiscriminator: expected (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        k = 2**self.config.layers
        if min(x.shape[2:]) < k:
            raise ValueError(f"PatchDiscriminator: input {x.shape[2]}x{x.shape[3]} is smaller than 2**layers = {k}")
        return self.net(x)


def load_generator(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[UVGenerator, dict]:
    """Load the generator of a ``uv_generator`` model folder.

    Returns:
        ``(generator in eval mode, config.json dict)``; the training resolution is ``config["uv_size"]``.

    Raises:
        MissingArtifactError: a missing / corrupt folder (one line, named).
    """
    models, config = load_pretrained(path, {"generator": lambda c: UVGenerator(UVGeneratorConfig.from_dict(c))},
                                     model_type=MODEL_TYPE, names=["generator"], map_location=map_location)
    return models["generator"], config
