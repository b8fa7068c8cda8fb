"""Colour and lighting augmentation of training batches (torch, same code on CPU and CUDA).

The London photos share one studio light and one camera, so a generator trained on them alone
learns that look and fails on photos taken elsewhere (measured: hidden-texel PSNR 18.2 dB on the
wild set against 22.6 dB for ``mirror``). Each sample is therefore relit and recoloured at random,
*consistently* across everything that shows the same face:

- a directional light: ``shade = a + (1 - a) * max(0, n . l) / mean(max(0, n . l))`` per texel, with
  ``n`` the texel's camera-space normal at the fitted pose, ``l`` a random direction in front of the
  face and ``a`` (the ambient share) in ``[1 - light, 1]``; the same field is rendered into the photo
  view so the image-space targets get the same light;
- per-channel gains (white balance) in ``[1 - gain, 1 + gain]``, a global brightness in
  ``[1 - brightness, 1 + brightness]`` and a gamma in ``[1 - gamma, 1 + gamma]``.

The input, the targets and the discriminators' real examples change together, so every loss keeps
its meaning; only the look of the faces widens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ColourAugment:
    """Ranges of the random relighting and recolouring (0 disables a term).

    Attributes:
        probability: chance that a sample is augmented at all.
        light: largest share of the directional (non-ambient) light, in ``[0, 1]``.
        gain: half-width of the per-channel gain range.
        brightness: half-width of the global brightness range.
        gamma: half-width of the gamma range.
    """

    probability: float = 0.8
    light: float = 0.6
    gain: float = 0.12
    brightness: float = 0.25
    gamma: float = 0.2

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"ColourAugment.{name} must be in [0, 1], got {value}")

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and any((self.light, self.gain, self.brightness, self.gamma))


@dataclass
class AugmentParams:
    """Per-sample random draws (``B`` samples).

    Attributes:
        light_dir: ``(B, 3)`` unit light directions (camera space, z towards the camera).
        ambient: ``(B,)`` ambient share ``a``.
        gain: ``(B, 3)`` per-channel gains times the global brightness.
        gamma: ``(B,)`` gammas.
    """

    light_dir: Tensor
    ambient: Tensor
    gain: Tensor
    gamma: Tensor


def draw_params(config: ColourAugment, batch: int, generator: torch.Generator, *,
                device: torch.device | str = "cpu") -> AugmentParams:
    """Draw the augmentation of ``batch`` samples from ``generator`` (CPU generator: reproducible)."""
    def uniform(*shape):
        return torch.rand(*shape, generator=generator) * 2.0 - 1.0

    active = (torch.rand(batch, generator=generator) < config.probability).float()
    direction = torch.stack([uniform(batch), uniform(batch), torch.rand(batch, generator=generator) * 0.8 + 0.2], 1)
    direction = direction / direction.norm(dim=1, keepdim=True)
    ambient = 1.0 - active * config.light * torch.rand(batch, generator=generator)
    gain = (1.0 + active[:, None] * config.gain * uniform(batch, 3)) * (1.0 + active * config.brightness *
                                                                         uniform(batch))[:, None]
    gamma = 1.0 + active * config.gamma * uniform(batch)
    return AugmentParams(*(t.to(device) for t in (direction, ambient, gain, gamma)))


def shading_field(normals: Tensor, mask: Tensor, params: AugmentParams) -> Tensor:
    """Directional shading of every texel.

    Args:
        normals: ``(B, 3, S, S)`` camera-space unit normals (zero outside the layout).
        mask: ``(B or 1, 1, S, S)`` the layout; the Lambertian term is normalised by its mean there.
        params: the draws.

    Returns:
        ``(B, 1, S, S)`` multiplicative shading, mean about 1 on the layout.
    """
    lambert = (normals * params.light_dir[:, :, None, None]).sum(1, keepdim=True).clamp_min(0.0)
    m = mask.expand_as(lambert)
    mean = (lambert * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1.0)
    lambert = lambert / mean.clamp_min(0.05)[:, None, None, None]
    a = params.ambient[:, None, None, None]
    return a + (1.0 - a) * lambert


def apply_colour(images: Tensor, params: AugmentParams, shading: Tensor | None = None) -> Tensor:
    """``clamp(images * shading * gain, 0, 1) ** gamma`` per sample.

    Args:
        images: ``(B, 3, H, W)`` colours in ``[0, 1]`` (zeros stay zero).
        params: the draws.
        shading: ``(B, 1, H, W)`` or None.
    """
    out = images * params.gain[:, :, None, None]
    if shading is not None:
        out = out * shading
    return out.clamp(0.0, 1.0).clamp_min(1e-6).pow(params.gamma[:, None, None, None]) * (images > 0).to(images.dtype)
