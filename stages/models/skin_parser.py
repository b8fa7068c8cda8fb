"""A learned per-pixel skin parser: a tiny U-Net on the face crop -> skin logit (inference only).

The classical skin mask (:func:`stages.occlusion.segment_skin`) cannot reject an occluder whose
colour and shading match the face's (a hand of the face's own tone). This network sees the shape
of things: trained (:mod:`stages.train.skin_parser`) on the classical mask of clean photos with
synthetic occluders pasted on them and labelled not-skin, it learns that a palm-and-fingers outline
or a strand over the cheek is not skin whatever its colour.

Input ``(B, 5, S, S)`` on a square crop around the 478 landmarks (:func:`crop_matrix`): RGB in
``[-1, 1]``, and two priors drawn from the landmarks: the face oval and the kept regions (brows,
eyes, lips, nostrils; :data:`stages.occlusion.KEEP_REGIONS`). Output ``(B, 1, S, S)`` skin logits.
:func:`parse_skin` runs it on a photo and returns the skin probability on the photo's pixels.

Model folders: :mod:`stages.models.folder`, ``model_type = "skin_parser"``, one network ``parser``.
Presets: ``tiny`` (tests, 32^2), ``small`` (CPU, 96^2, ~0.1 M parameters).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from stages.models.folder import load_pretrained

MODEL_TYPE = "skin_parser"
IN_CHANNELS = 5
#: The crop's side is this times the landmarks' larger box side (room for occluders at the border).
CROP_SCALE = 1.3


@dataclass
class SkinParserConfig:
    """Architecture (saved in ``config.json``).

    Attributes:
        size: side ``S`` of the square crop (a multiple of ``2 ** (len(channels) - 1)``).
        channels: channels per U-Net level.
    """

    size: int = 96
    channels: tuple[int, ...] = (8, 16, 32, 64)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"SkinParserConfig.channels must be positive, got {self.channels}")
        factor = 2 ** (len(self.channels) - 1)
        if self.size < factor or self.size % factor:
            raise ValueError(f"SkinParserConfig.size {self.size} is not a multiple of {factor}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SkinParserConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown SkinParserConfig keys {unknown}")
        return cls(**d)


PRESETS: dict[str, SkinParserConfig] = {
    "tiny": SkinParserConfig(size=32, channels=(4, 8)),
    "small": SkinParserConfig(size=96, channels=(8, 16, 32, 64)),
}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SkinParser(nn.Module):
    """U-Net: ``(B, 5, S, S)`` (RGB in [-1, 1], oval, kept regions) -> ``(B, 1, S, S)`` skin logits."""

    def __init__(self, config: SkinParserConfig):
        super().__init__()
        ch = config.channels
        self.size = config.size
        self.down = nn.ModuleList([_block(IN_CHANNELS if i == 0 else ch[i - 1], c) for i, c in enumerate(ch)])
        self.up = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1))])
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def build_parser(config: dict) -> SkinParser:
    return SkinParser(SkinParserConfig.from_dict(config))


def crop_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """``(2, 3)`` affine photo pixel -> crop pixel: a square of :data:`CROP_SCALE` times the
    landmarks' larger box side, centred on the box, scaled to ``size``."""
    lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    centre, side = (lo + hi) / 2, CROP_SCALE * float(max(hi - lo))
    k = size / max(side, 1e-6)
    return np.array([[k, 0.0, size / 2 - k * centre[0]], [0.0, k, size / 2 - k * centre[1]]])


def crop_photo(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 crop of ``rgb`` under ``matrix`` (area-averaged when shrinking;
    border pixels replicated outside the photo)."""
    k = matrix[0, 0]
    if k < 1.0:  # pre-shrink so the bilinear warp does not alias
        pre = cv2.resize(rgb, (max(1, round(rgb.shape[1] * k * 2)), max(1, round(rgb.shape[0] * k * 2))),
                         interpolation=cv2.INTER_AREA)
        sx, sy = pre.shape[1] / rgb.shape[1], pre.shape[0] / rgb.shape[0]
        matrix = matrix @ np.diag([1 / sx, 1 / sy, 1.0])
        rgb = pre
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def prior_channels(landmarks: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``(2, size, size)`` float32: the face oval and the kept regions, filled, in crop pixels."""
    from stages.occlusion import FACE_OVAL, KEEP_REGIONS

    pts = landmarks[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    out = np.zeros((2, size, size), np.float32)
    for channel, groups in ((0, [FACE_OVAL]), (1, list(KEEP_REGIONS.values()))):
        for idx in groups:
            hull = cv2.convexHull(np.round(pts[list(idx)] * 4).astype(np.int32))
            cv2.fillPoly(out[channel], [hull.reshape(-1, 1, 2)], 1.0, cv2.LINE_8, 2)
    return out


def network_input(crop: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """``(5, S, S)`` float32 from a uint8 ``(S, S, 3)`` crop and ``(2, S, S)`` priors."""
    rgb = crop.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return np.concatenate([rgb, priors], axis=0)


@torch.no_grad()
def parse_skin(parser: SkinParser, rgb: np.ndarray, landmarks: np.ndarray,
               window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Skin probability of the face ``landmarks`` on the pixels of ``rgb`` (or of its ``window``).

    Args:
        parser: a loaded network (eval mode).
        rgb: ``(H, W, 3)`` uint8 photo; landmarks: ``(478, 3)`` MediaPipe points, pixel ``x, y``.
        window: ``(x0, y0, x1, y1)``: only these pixels (default: the whole photo).

    Returns:
        ``(y1 - y0, x1 - x0)`` (default ``(H, W)``) float32 in ``[0, 1]``; 0 outside the crop.
    """
    size = parser.size
    x0, y0, x1, y1 = window or (0, 0, rgb.shape[1], rgb.shape[0])
    matrix = crop_matrix(landmarks, size)
    x = network_input(crop_photo(rgb, matrix, size), prior_channels(landmarks, matrix, size))
    prob = torch.sigmoid(parser(torch.from_numpy(x)[None]))[0, 0].numpy()
    to_window = matrix.copy()
    to_window[:, 2] += matrix[:, :2] @ [x0, y0]   # crop pixel of window pixel (0, 0)
    return cv2.warpAffine(prob, to_window, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def load_skin_parser(path: str | Path) -> SkinParser:
    """The ``parser`` network of a ``skin_parser`` model folder (eval mode, no gradients; its
    ``source`` is the folder's path, recorded in ``fit.json``'s skin info).

    Raises:
        MissingArtifactError: a missing / corrupt folder or another model type (one line, named).
    """
    models, _ = load_pretrained(path, {"parser": build_parser}, model_type=MODEL_TYPE)
    parser = models["parser"].requires_grad_(False)
    parser.source = str(path)
    return parser
