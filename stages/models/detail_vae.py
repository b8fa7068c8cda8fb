"""The detail VAE of UVAPM (seed 002, §3.4): a V-channel residual <-> a small spatial latent.

The network encodes a UV map of the *detail* (the value channel of a real texture minus that of its
coarse PCA fit, see :mod:`stages.train.detail_vae`) into a Gaussian latent ``z (L, S/f, S/f)`` and
decodes it back. At inference only the decoder is used: ``complete --method uvapm --model DIR``
optimises ``z`` so the decoded residual matches the de-lit photo's V on the seen texels
(:func:`stages.completion.uvapm.fit_detail`), and the decoder fills the rest with detail.

Encoder: ``(B, 2, S, S)`` = (residual / ``scale`` on the seen texels, 0 elsewhere; seen mask) ->
a conv stem, then per level a residual block and a stride-2 conv -> ``(B, 2L, S/f, S/f)`` (mean and
log variance). Decoder: the mirror image (nearest upsampling + conv) -> ``(B, 1, S, S)`` times
``scale`` (the residual is small, about +-0.1; the network works at unit scale). ``f = 2 ** (levels - 1)``.

Presets: ``base`` (the paper's latent, 4 x 32 x 32 from a 256^2 map), ``small`` (CPU: 4 x 32 x 32 from
128^2, fewer channels), ``tiny`` (tests: 4 x 16 x 16 from 32^2).

Model folders: :mod:`stages.models.folder`, ``model_type = "detail_vae"``, networks ``encoder`` and
``decoder`` (:func:`load_detail_decoder` loads only the decoder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from stages.models.folder import load_pretrained
from stages.models.uv_generator import group_count

MODEL_TYPE = "detail_vae"


@dataclass
class DetailVAEConfig:
    """Architecture of :class:`DetailEncoder` / :class:`DetailDecoder` (saved in ``config.json``).

    Attributes:
        uv_size: side ``S`` of the residual map (a multiple of the downsampling ``f``).
        channels: channels per level (``len(channels) - 1`` stride-2 steps: ``f = 2 ** (len - 1)``).
        latent_channels: ``L``.
        scale: the decoder's output is multiplied by it (typical residual magnitude).
    """

    uv_size: int = 128
    channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    scale: float = 0.1

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"DetailVAEConfig.channels must be positive, got {self.channels}")
        if self.latent_channels < 1 or self.scale <= 0:
            raise ValueError("DetailVAEConfig.latent_channels and scale must be positive")
        if self.uv_size < self.factor or self.uv_size % self.factor:
            raise ValueError(f"DetailVAEConfig.uv_size {self.uv_size} is not a multiple of the downsampling "
                             f"{self.factor}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.uv_size // self.factor
        return (self.latent_channels, side, side)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DetailVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DetailVAEConfig keys {unknown}")
        return cls(**d)


PRESETS: dict[str, DetailVAEConfig] = {
    "tiny": DetailVAEConfig(uv_size=32, channels=(4, 8)),
    "small": DetailVAEConfig(uv_size=128, channels=(16, 32, 64)),
    "base": DetailVAEConfig(uv_size=256, channels=(64, 128, 256, 256)),
}


class _Res(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(group_count(channels), channels), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(group_count(channels), channels), nn.SiLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DetailEncoder(nn.Module):
    """``(B, 2, S, S)`` (scaled residual, seen mask) -> ``(mean, logvar)``, each ``(B, L, S/f, S/f)``."""

    def __init__(self, config: DetailVAEConfig):
        super().__init__()
        ch = config.channels
        layers: list[nn.Module] = [nn.Conv2d(2, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            layers.append(_Res(c))
            if i + 1 < len(ch):
                layers.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))
        layers += [nn.GroupNorm(group_count(ch[-1]), ch[-1]), nn.SiLU(),
                   nn.Conv2d(ch[-1], 2 * config.latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)


class DetailDecoder(nn.Module):
    """``z (B, L, S/f, S/f)`` -> V residual ``(B, 1, S, S)`` (in V units: times ``config.scale``)."""

    def __init__(self, config: DetailVAEConfig):
        super().__init__()
        ch = config.channels[::-1]
        self.scale = float(config.scale)
        self.latent_shape = config.latent_shape
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            layers.append(_Res(c))
            if i + 1 < len(ch):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, ch[i + 1], 3, padding=1)]
        layers += [nn.GroupNorm(group_count(ch[-1]), ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z) * self.scale


def build_encoder(config: dict) -> DetailEncoder:
    return DetailEncoder(DetailVAEConfig.from_dict(config))


def build_decoder(config: dict) -> DetailDecoder:
    return DetailDecoder(DetailVAEConfig.from_dict(config))


def load_detail_decoder(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[DetailDecoder, dict]:
    """The decoder of a ``detail_vae`` model folder (eval mode, gradients off for its weights) and
    the folder's ``config.json``.

    Raises:
        MissingArtifactError: a missing / corrupt folder or another model type (one line, named).
    """
    models, config = load_pretrained(path, {"decoder": build_decoder}, model_type=MODEL_TYPE, names=["decoder"],
                                     map_location=map_location)
    return models["decoder"].requires_grad_(False), config
