"""The learned UV sampler network (seed 001, §3.1, "UV attention sampling") and its model folder.

:class:`UVSampler`: residual blocks with spectral normalisation on every convolution -> global
feature (``feature_dim``) -> fully connected sampler head -> a coarse ``grid_size x grid_size x 2``
sampling map (normalised crop coordinates, see :mod:`stages.models.alignment`), added to a learned
base map initialised with the frontal mean-shape projection; a small deconvolution head gives a
coarse visibility logit map. Both are bilinearly upsampled to any UV size (:meth:`UVSampler.predict`).

Model folders (:mod:`stages.models.folder`, ``model_type = "uv_sampler"``, one network named
``sampler``) are read by :func:`load_sampler`; training lives in :mod:`stages.train.sampler`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.core.errors import MissingArtifactError
from stages.models.folder import RESERVED_KEYS, load_pretrained, save_pretrained

MODEL_TYPE = "uv_sampler"

@dataclass
class SamplerConfig:
    """Architecture of :class:`UVSampler` (saved in ``config.json``).

    Attributes:
        crop_size: side ``C`` of the input crop (power of two, >= 16).
        in_channels: input channels (masked RGB + hull mask).
        base_channels: channels of the first residual block (doubling per block up to ``max_channels``).
        max_channels: channel cap.
        feature_dim: size of the global feature (seed 001: 512).
        head_hidden: width of the hidden fully connected layers of the sampler head.
        head_layers: hidden fully connected layers (ReLU between them).
        grid_size: side ``G`` of the coarse sampling map the head predicts.
        vis_size: side of the coarse visibility logit map (a multiple of 4, >= 8).
        spectral_norm: spectral normalisation on every convolution.
    """

    crop_size: int = 128
    in_channels: int = 4
    base_channels: int = 16
    max_channels: int = 256
    feature_dim: int = 512
    head_hidden: int = 512
    head_layers: int = 1
    grid_size: int = 32
    vis_size: int = 32
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("crop_size", "in_channels", "base_channels", "max_channels", "feature_dim", "head_hidden",
                     "grid_size", "vis_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SamplerConfig.{name} must be a positive integer, got {value!r}")
        if self.crop_size < 16 or self.crop_size & (self.crop_size - 1):
            raise ValueError(f"SamplerConfig.crop_size must be a power of two >= 16, got {self.crop_size}")
        if self.vis_size < 8 or self.vis_size % 4:
            raise ValueError(f"SamplerConfig.vis_size must be a multiple of 4 and >= 8, got {self.vis_size}")
        if self.head_layers < 0:
            raise ValueError(f"SamplerConfig.head_layers must be >= 0, got {self.head_layers}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SamplerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SamplerConfig keys {unknown}")
        return cls(**d)


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


class _ResDown(nn.Module):
    """Pre-activation residual block that halves the resolution: ``(B, cin, H, W) -> (B, cout, H/2, W/2)``.

    The second convolution runs after the pooling (half the cost of a full-resolution pair).
    """

    def __init__(self, cin: int, cout: int, sn: bool):
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, padding=1), sn)
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, padding=1), sn)
        self.skip = _sn(nn.Conv2d(cin, cout, 1), sn)

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.conv1(F.leaky_relu(x, 0.2)), 2)
        h = self.conv2(F.leaky_relu(h, 0.2))
        return h + F.avg_pool2d(self.skip(x), 2)


class UVSampler(nn.Module):
    """Seed 001's UV sampler: aligned face crop -> coarse sampling map + visibility logits.

    ``forward(x)`` with ``x`` ``(B, in_channels, C, C)`` (:func:`network_input`) returns
    ``(coords, vis)``: ``(B, G, G, 2)`` coarse grid coordinates (x, y) in the crop (``grid_sample``
    convention, ``align_corners=False``) and ``(B, 1, Gv, Gv)`` visibility logits, both in UV image
    layout (row 0 = top of the UV square = v near 1).
    """

    def __init__(self, config: SamplerConfig):
        super().__init__()
        self.config = config
        c = config
        sn = c.spectral_norm
        channels = [c.base_channels]
        blocks = []
        size = c.crop_size
        self.stem = _sn(nn.Conv2d(c.in_channels, c.base_channels, 3, padding=1), sn)
        while size > 4:
            cout = min(c.max_channels, channels[-1] * 2)
            blocks.append(_ResDown(channels[-1], cout, sn))
            channels.append(cout)
            size //= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_feature = nn.Linear(channels[-1] * 16, c.feature_dim)
        head: list[nn.Module] = []
        width = c.feature_dim
        for _ in range(c.head_layers):
            head += [nn.Linear(width, c.head_hidden), nn.ReLU(inplace=True)]
            width = c.head_hidden
        last = nn.Linear(width, c.grid_size * c.grid_size * 2)
        nn.init.normal_(last.weight, std=1e-3)   # start at the base map
        nn.init.zeros_(last.bias)
        self.sampler_head = nn.Sequential(*head, last)
        self.base_grid = nn.Parameter(torch.zeros(c.grid_size, c.grid_size, 2))
        v0 = c.vis_size // 4
        self.vis_fc = nn.Linear(c.feature_dim, 32 * v0 * v0)
        self.vis_head = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(32, 32, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(32, 16, 3, padding=1),
            nn.LeakyReLU(0.2), nn.Conv2d(16, 1, 3, padding=1))
        self.base_vis = nn.Parameter(torch.zeros(1, 1, c.vis_size, c.vis_size))

    @torch.no_grad()
    def init_base(self, grid: np.ndarray | Tensor, vis_logit: np.ndarray | Tensor | None = None) -> None:
        """Set the base sampling map ``(G, G, 2)`` (and the base visibility logits ``(Gv, Gv)``)."""
        self.base_grid.copy_(torch.as_tensor(np.asarray(grid), dtype=self.base_grid.dtype))
        if vis_logit is not None:
            vis = torch.as_tensor(np.asarray(vis_logit), dtype=self.base_vis.dtype)
            self.base_vis.copy_(vis.view_as(self.base_vis))

    def features(self, x: Tensor) -> Tensor:
        """``(B, in_channels, C, C)`` -> ``(B, feature_dim)`` global feature."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or x.shape[2:] != (self.config.crop_size,) * 2:
            raise ValueError(f"UVSampler expects (B, {self.config.in_channels}, {self.config.crop_size}, "
                             f"{self.config.crop_size}), got {tuple(x.shape)}")
        h = self.blocks(self.stem(x))
        return self.to_feature(F.leaky_relu(h, 0.2).flatten(1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        g, gv = self.config.grid_size, self.config.vis_size
        feat = self.features(x)
        coords = self.sampler_head(feat).view(-1, g, g, 2) + self.base_grid
        v0 = gv // 4
        vis = self.vis_head(F.relu(self.vis_fc(feat)).view(-1, 32, v0, v0)) + self.base_vis
        return coords, vis

    def predict(self, x: Tensor, uv_size: int) -> tuple[Tensor, Tensor]:
        """Sampling map and visibility logits upsampled (bilinear) to ``uv_size``.

        Returns:
            ``(B, S, S, 2)`` grid coordinates and ``(B, 1, S, S)`` visibility logits.
        """
        coords, vis = self(x)
        return upsample_grid(coords, uv_size), F.interpolate(vis, size=(uv_size, uv_size), mode="bilinear",
                                                             align_corners=False)


def upsample_grid(coords: Tensor, size: int) -> Tensor:
    """``(B, G, G, 2)`` -> ``(B, S, S, 2)`` by bilinear interpolation (texel centres, ``align_corners=False``)."""
    if coords.shape[1] == size:
        return coords
    up = F.interpolate(coords.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return up.permute(0, 2, 3, 1)


def build_sampler(config: dict) -> UVSampler:
    """Builder for :func:`stages.models.folder.load_pretrained`."""
    return UVSampler(SamplerConfig.from_dict(config))


def load_sampler(directory: str | Path | None, *, map_location: str | torch.device = "cpu") -> tuple[UVSampler, dict]:
    """Load a trained UV sampler folder.

    Returns:
        ``(network in eval mode, config.json dict)``.

    Raises:
        MissingArtifactError: no folder given, or a missing / corrupt model folder (one line, named).
    """
    if directory is None:
        raise MissingArtifactError(None, "no UV sampler model given: pass --model MODEL_DIR (train one with "
                                         "`facetex train sampler --data FOLDERS -o MODEL_DIR`)")
    models, config = load_pretrained(directory, {"sampler": build_sampler}, model_type=MODEL_TYPE,
                                     map_location=map_location)
    return models["sampler"], config


def export_sampler(model_dir: str | Path, out_dir: str | Path, *, half: bool = True) -> Path:
    """Copy a trained sampler folder without its training state (for shipping), weights in float16 by default.

    Only ``config.json`` (plus ``"weights_dtype"``) and ``weights.safetensors`` are written; the
    network loads back in float32 (the float16 values are upcast on load).
    """
    net, config = load_sampler(model_dir)
    extra = {k: v for k, v in config.items() if k not in RESERVED_KEYS}
    if not extra.get("last_losses"):
        extra.pop("last_losses", None)     # a folder finalised by a resume without new steps has none
    extra["weights_dtype"] = "float16" if half else "float32"
    if half:
        net = net.half()
    return save_pretrained(out_dir, {"sampler": net}, {"sampler": config["configs"]["sampler"]},
                           model_type=MODEL_TYPE, extra=extra)


