"""The learned UV sampler (seed 001, §3.1, "UV attention sampling"): photo -> per-texel sampling positions.

The geometric unwrap (:mod:`stages.unwrap`) needs a 3D fit to know where each UV texel lands in
the photo. The learned sampler predicts that correspondence directly from a 2D-aligned face crop:

- **Input.** The photo warped by a 2D similarity that maps four detector landmarks (the two eye
  centres, the two mouth corners of MediaPipe's 478 points) onto fixed template positions
  (:func:`alignment_matrix`), ``crop_size`` pixels square, background outside the convex hull of
  the 468 mesh landmarks set to 0 (:func:`aligned_crop`). No pose, no shape, no visibility test.
- **Network** (:class:`UVSampler`). Residual blocks with spectral normalisation on every
  convolution -> global feature (``feature_dim``) -> fully connected sampler head -> a coarse
  ``grid_size x grid_size x 2`` sampling map (normalised crop coordinates, ``grid_sample``
  convention with ``align_corners=False``: ``gx = 2 x / C - 1`` for a continuous pixel ``x`` of a
  ``C``-wide crop), added to a learned base map initialised with the frontal mean-shape
  projection; a small deconvolution head gives a coarse visibility logit map. Both are bilinearly
  upsampled to any UV size (:meth:`UVSampler.predict`), as seed 001 §4.1 does with coarse maps.
- **Output.** The incomplete UV map is the crop (or, at inference, the full-resolution photo
  through the inverse alignment) sampled at those positions, masked by the predicted visibility.

Training (:func:`train_uv_sampler`) uses the geometric unwrap of each training photo as the
target (Eq. 5 of seed 001 plus two documented extras), see :class:`SamplerTrainConfig`.
Model folders are written with :func:`stages.train.model_dir.save_pretrained`
(``model_type = "uv_sampler"``) and read back with :func:`load_sampler`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.core.errors import MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import load_photo, save_png
from stages.core.poisson import pull_push_fill
from stages.core.raster import rasterize
from stages.core.uv import uv_layout
from stages.train.model_dir import load_pretrained, save_pretrained
from stages.train.trainer import save_checkpoint

MODEL_TYPE = "uv_sampler"

# --------------------------------------------------------------------------------------------
# 2D alignment (no 3D fit)
# --------------------------------------------------------------------------------------------

#: MediaPipe face-mesh indices averaged into the four alignment points: the subject's right eye
#: (outer, inner corner), the left eye (inner, outer corner), the right and the left mouth corner.
ALIGN_GROUPS: tuple[tuple[int, ...], ...] = ((33, 133), (362, 263), (61,), (291,))
#: Number of detector mesh points whose convex hull is the face region (MediaPipe: 468 + 10 iris).
HULL_POINTS = 468
#: Side of the template square taken by the frontal mean shape's bounding box (the rest is margin).
TEMPLATE_FILL = 0.80


def _group_points(points: np.ndarray) -> np.ndarray:
    """``(L, >=2)`` landmark/vertex array -> ``(4, 2)`` alignment points (means of :data:`ALIGN_GROUPS`)."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    if pts.shape[0] < HULL_POINTS:
        raise ValueError(f"need the {HULL_POINTS} MediaPipe mesh points (or more), got {pts.shape[0]}")
    return np.stack([pts[list(group)].mean(axis=0) for group in ALIGN_GROUPS])


def frontal_mean_shape(model: FaceModel) -> np.ndarray:
    """``(V, 2)`` the model's mean shape seen from the front, in unit template coordinates.

    Image convention (x right, y down), scaled and centred so the bounding box of the mesh is
    :data:`TEMPLATE_FILL` of the unit square and centred in it.
    """
    xy = np.asarray(model.vertices, dtype=np.float64)[:, :2] * np.array([1.0, -1.0])
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (xy - (lo + hi) / 2) * (TEMPLATE_FILL / float((hi - lo).max())) + 0.5


def alignment_template(model: FaceModel) -> np.ndarray:
    """``(4, 2)`` template positions of the alignment points in unit crop coordinates ``[0, 1]^2``."""
    return _group_points(frontal_mean_shape(model))


def similarity_2d(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity (rotation, uniform scale, translation; no reflection).

    Args:
        source: ``(N, 2)`` points, ``N >= 2`` and not all equal.
        target: ``(N, 2)`` corresponding points.

    Returns:
        ``(2, 3)`` matrix ``M`` with ``target ≈ M[:, :2] @ source + M[:, 2]``.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var = float((s0**2).sum())
    if var <= 1e-12:
        raise ValueError("alignment points coincide")
    # Complex-number form: d = z * s, z = a + ib.
    a = float((s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum()) / var
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()) / var
    lin = np.array([[a, -b], [b, a]])
    return np.concatenate([lin, (mu_d - lin @ mu_s)[:, None]], axis=1)


def alignment_matrix(landmarks: np.ndarray, model: FaceModel, crop_size: int) -> np.ndarray:
    """``(2, 3)`` similarity from photo pixels to the aligned crop's pixels (continuous coordinates).

    Args:
        landmarks: ``(L, 2+)`` MediaPipe points in photo pixels (``L >= 468``; only x, y are used).
        model: the face model (its frontal mean shape defines the template).
        crop_size: ``C``, side of the crop.
    """
    return similarity_2d(_group_points(landmarks), alignment_template(model) * crop_size)


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine map to ``(..., 2)`` points."""
    xy = np.asarray(xy, dtype=np.float64)
    return xy @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine map."""
    lin_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([lin_inv, (-lin_inv @ matrix[:, 2])[:, None]], axis=1)


def _cv_matrix(matrix: np.ndarray) -> np.ndarray:
    """Continuous-coordinate affine -> OpenCV's pixel-index convention (pixel centres at integers)."""
    shift_in = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    full = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ shift_in
    full[:2, 2] -= 0.5
    return full[:2]


def warp_crop(rgb: np.ndarray, matrix: np.ndarray, crop_size: int) -> np.ndarray:
    """Warp ``(H, W, 3)`` uint8 into the ``C x C`` crop (``(C, C, 3)`` float32 in ``[0, 1]``), anti-aliased.

    When the crop is smaller than the photo's face (scale < 1), the photo is first area-downscaled
    to about the crop's density, so no aliasing; then one bilinear warp.
    """
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    source, m = rgb, matrix
    if scale < 0.7:
        h, w = rgb.shape[:2]
        factor = min(1.0, scale * 1.25)
        source = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
        fx, fy = source.shape[1] / w, source.shape[0] / h
        m = matrix @ np.array([[1.0 / fx, 0.0, 0.0], [0.0, 1.0 / fy, 0.0], [0.0, 0.0, 1.0]])
    out = cv2.warpAffine(source, _cv_matrix(m), (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out.astype(np.float32) / 255.0


def hull_mask(landmarks: np.ndarray, matrix: np.ndarray, crop_size: int) -> np.ndarray:
    """``(C, C)`` float32 1 inside the convex hull of the 468 mesh landmarks (mapped into the crop)."""
    pts = apply_affine(matrix, np.asarray(landmarks, dtype=np.float64)[:HULL_POINTS, :2])
    hull = cv2.convexHull((pts * 16).round().astype(np.int32) - 8)   # 4 fractional bits, pixel centres
    mask = np.zeros((crop_size, crop_size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def aligned_crop(rgb: np.ndarray, landmarks: np.ndarray, model: FaceModel, crop_size: int,
                 matrix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampler's input for one face: aligned, background-masked crop.

    Args:
        rgb: ``(H, W, 3)`` uint8 photo.
        landmarks: ``(L, 2+)`` MediaPipe points in photo pixels.
        model: face model (template).
        crop_size: ``C``.
        matrix: a ``(2, 3)`` photo -> crop map to use instead of :func:`alignment_matrix`.

    Returns:
        ``(crop, mask, matrix)``: ``(C, C, 3)`` float32 masked crop in ``[0, 1]``, ``(C, C)`` float32
        hull mask, and the ``(2, 3)`` photo -> crop matrix.
    """
    if matrix is None:
        matrix = alignment_matrix(landmarks, model, crop_size)
    mask = hull_mask(landmarks, matrix, crop_size)
    crop = warp_crop(rgb, matrix, crop_size) * mask[..., None]
    return crop, mask, matrix


def network_input(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(C, C, 3)`` masked crop + ``(C, C)`` mask -> ``(4, C, C)`` float32 network input in ``[-1, 1]``."""
    return np.concatenate([crop.transpose(2, 0, 1) * 2.0 - 1.0, mask[None] * 2.0 - 1.0]).astype(np.float32)


def pixels_to_grid(xy: np.ndarray | Tensor, crop_size: int):
    """Continuous crop pixels -> ``grid_sample`` coordinates (``align_corners=False``): ``2 x / C - 1``."""
    return xy * (2.0 / crop_size) - 1.0


def grid_to_pixels(grid: np.ndarray | Tensor, crop_size: int):
    """Inverse of :func:`pixels_to_grid`."""
    return (grid + 1.0) * (crop_size / 2.0)


def mean_shape_grid(model: FaceModel, size: int) -> np.ndarray:
    """``(size, size, 2)`` float32 grid coordinates of the frontal mean shape's texels (the baseline map).

    Inside the UV layout: where each texel of the frontal mean shape sits in the template crop;
    outside: smoothly extended (pull-push), so bilinear upsampling near the layout's edge is sane.
    """
    layout = uv_layout(model, size)
    grid = layout.interpolate(pixels_to_grid(frontal_mean_shape(model), 1.0))
    return pull_push_fill(grid, layout.mask).astype(np.float32)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------


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
    """Builder for :func:`stages.train.model_dir.load_pretrained`."""
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
    extra = {k: v for k, v in config.items()
             if k not in ("schema", "format_version", "model_type", "configs", "facetex_version")}
    if not extra.get("last_losses"):
        extra.pop("last_losses", None)     # a folder finalised by a resume without new steps has none
    extra["weights_dtype"] = "float16" if half else "float32"
    if half:
        net = net.half()
    return save_pretrained(out_dir, {"sampler": net}, {"sampler": config["configs"]["sampler"]},
                           model_type=MODEL_TYPE, extra=extra)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

#: Files every training folder must hold, and the command that writes each (plus the photo named
#: by fit.json's ``source``).
REQUIRED_FILES: tuple[tuple[str, str], ...] = (
    ("fit.json", "facetex fit"),
    ("unwrap.json", "facetex unwrap"),
    ("uv_texture.png", "facetex unwrap"),
)


def check_sampler_folder(folder: str | Path) -> Path:
    """Check one training folder; returns the photo path.

    Raises:
        MissingArtifactError: naming the first missing file and the command that writes it, or the
            photo fit.json points to.
    """
    from stages.train.dataset import check_training_folder

    folder = Path(folder)
    check_training_folder(folder, REQUIRED_FILES)
    try:
        source = json.loads((folder / "fit.json").read_text()).get("source")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MissingArtifactError(folder / "fit.json", f"unreadable ({exc})") from None
    if not source or not Path(source).is_file():
        raise MissingArtifactError(folder / "fit.json", f"its source photo {source!r} is not on disk (the sampler "
                                                        "trains on the photo itself)")
    return Path(source)


def _area_resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image.astype(np.float32)
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (size, size), interpolation=interp)
    return out.reshape(size, size, *image.shape[2:])


def resize_unwrap(texture: np.ndarray, confidence: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an unwrap (``(S0, S0, 3)`` texture, ``(S0, S0)`` confidence) to ``size``.

    Seen texels are averaged by normalised convolution (unseen zeros do not bleed in); a texel
    stays seen when at least half its area was seen.
    """
    seen = (confidence > 0).astype(np.float32)
    coverage = _area_resize(seen, size)
    denom = np.maximum(coverage, 1e-6)
    tex = _area_resize(texture * seen[..., None], size) / denom[..., None]
    conf = _area_resize(confidence * seen, size) / denom
    keep = coverage >= 0.5
    return np.where(keep[..., None], tex, 0.0).astype(np.float32), np.where(keep, conf, 0.0).astype(np.float32)


@dataclass
class _SamplerFolder:
    """One training face in memory."""

    path: Path
    rgb: np.ndarray            # (h, w, 3) uint8 photo, downscaled to about 2x the crop's density
    landmarks: np.ndarray      # (L, 2) in rgb's pixels
    vertex_screen: np.ndarray  # (V, 3) the fitted mesh in rgb's pixels (x, y, depth)
    texel_screen: np.ndarray   # (S, S, 2) where each texel lands in rgb (geometric correspondence)
    texture: np.ndarray        # (S, S, 3) geometric unwrap, 0 where unseen
    confidence: np.ndarray     # (S, S) its confidence


def load_sampler_folder(folder: str | Path, model: FaceModel, uv_size: int, crop_size: int) -> _SamplerFolder:
    """Read one checked training folder (photo, fit, geometric unwrap) at training resolution."""
    from stages.fit import FitResult
    from stages.unwrap import UnwrapResult

    folder = Path(folder)
    photo_path = check_sampler_folder(folder)
    fit = FitResult.load(folder / "fit.json")
    if fit.model_id != model.name or fit.vertices.shape != (model.n_vertices, 3):
        raise MissingArtifactError(folder / "fit.json", f"fit was made with model {fit.model_id!r}, not {model.name!r}")
    if fit.landmarks.shape[0] < HULL_POINTS:
        raise MissingArtifactError(folder / "fit.json", f"has {fit.landmarks.shape[0]} landmarks; the sampler needs "
                                                        f"MediaPipe's {HULL_POINTS}+ (fit with --landmarks mediapipe)")
    unwrap = UnwrapResult.load(folder, model)
    photo = load_photo(photo_path)
    k = photo.width / fit.image_size[0]          # photo loaded at another size than at fit time
    landmarks = fit.landmarks[:, :2] * k
    screen = fit.pose.to_screen(fit.vertices) * k
    # Keep the photo at about twice the crop's density (plenty for augmentation, small in memory).
    scale = math.sqrt(abs(np.linalg.det(alignment_matrix(landmarks, model, crop_size)[:, :2])))
    factor = min(1.0, 2.0 * scale)
    rgb = photo.rgb
    if factor < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor))),
                         interpolation=cv2.INTER_AREA)
        fx = rgb.shape[1] / photo.width
        landmarks = landmarks * fx
        screen = screen * fx
    layout = uv_layout(model, uv_size)
    texel_screen = layout.interpolate(screen[:, :2])
    texture, confidence = resize_unwrap(unwrap.texture, unwrap.confidence, uv_size)
    confidence = np.where(layout.mask, confidence, 0.0).astype(np.float32)
    return _SamplerFolder(path=folder, rgb=np.ascontiguousarray(rgb), landmarks=landmarks.astype(np.float64),
                          vertex_screen=screen.astype(np.float64), texel_screen=texel_screen.astype(np.float32),
                          texture=np.where((confidence > 0)[..., None], texture, 0.0).astype(np.float32),
                          confidence=confidence)


@dataclass
class Augment:
    """Random 2D jitter of the alignment (the detector's landmarks are not exact either) and mirroring.

    Attributes:
        rotate_deg: rotation range ``[-r, r]`` about the crop centre.
        scale: relative zoom range ``[1 - s, 1 + s]``.
        shift: translation range as a fraction of the crop side.
        flip: probability of a left-right mirrored sample (photo mirrored, UV maps mirrored).
    """

    rotate_deg: float = 8.0
    scale: float = 0.06
    shift: float = 0.03
    flip: float = 0.5


def _jitter_matrix(rng: np.random.Generator, aug: Augment, crop_size: int) -> np.ndarray:
    angle = np.deg2rad(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    zoom = 1.0 + rng.uniform(-aug.scale, aug.scale)
    shift = rng.uniform(-aug.shift, aug.shift, 2) * crop_size
    c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
    lin = np.array([[c, -s], [s, c]])
    centre = np.full(2, crop_size / 2.0)
    return np.concatenate([lin, (centre - lin @ centre + shift)[:, None]], axis=1)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner`` of two ``(2, 3)`` affine maps."""
    return (np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]]))[:2]


class SamplerTrainingSet(torch.utils.data.Dataset):
    """Training samples of the UV sampler from facetex output folders (photo + fit + geometric unwrap).

    Args:
        folders: output folders with ``fit.json`` (whose ``source`` photo must be on disk),
            ``unwrap.json`` and ``uv_texture.png``; checked at construction (first problem raises
            :class:`MissingArtifactError` naming the file and the command that writes it), loaded once.
        model: face model of the fits.
        uv_size: ``S`` of the training UV maps.
        crop_size: ``C`` of the input crops.
        augment: jitter / mirroring (None: no augmentation, the plain alignment).
        seed: sample ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``.
        epoch_length: ``len()`` (default: the number of folders); index ``i`` uses folder ``i % N``.

    ``__getitem__`` returns float32 tensors: ``input (4, C, C)`` (:func:`network_input`), ``crop (3, C, C)``
    masked crop, ``target_grid (S, S, 2)`` where each texel of the fitted mesh lands in the crop
    (grid coordinates), ``texture (3, S, S)`` / ``confidence (1, S, S)`` the geometric unwrap,
    ``visible (1, S, S)`` 0/1 (confidence > 0), ``layout (1, S, S)``, ``verts (V, 3)`` the fitted mesh
    in crop pixels (x, y, depth), ``triangle_id (C, C)`` int64 its rasterization (-1 empty),
    ``region (1, C, C)`` mesh pixels inside the eroded hull (where the render loss compares), and
    ``flip`` (bool).
    """

    def __init__(self, folders: list[Path], model: FaceModel, *, uv_size: int = 128, crop_size: int = 128,
                 augment: Augment | None = None, seed: int = 0, epoch_length: int | None = None,
                 erosion: float = 0.03):
        folders = [Path(f) for f in folders]
        if not folders:
            raise ValueError("no training folders")
        for folder in folders:
            check_sampler_folder(folder)
        self.model = model
        self.uv_size, self.crop_size = int(uv_size), int(crop_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch_length = epoch_length
        self.epoch = 0
        self.erosion = float(erosion)
        self.layout = uv_layout(model, self.uv_size).mask.copy()
        self.triangles = np.asarray(model.triangles)
        self.mirror = np.asarray(model.mirror_index)
        self.folders = [load_sampler_folder(f, model, self.uv_size, self.crop_size) for f in folders]

    def __len__(self) -> int:
        return self.epoch_length or len(self.folders)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        data = self.folders[int(index) % len(self.folders)]
        c = self.crop_size
        matrix = alignment_matrix(data.landmarks, self.model, c)
        flip = False
        if self.augment is not None:
            matrix = _compose(_jitter_matrix(rng, self.augment, c), matrix)
            flip = bool(rng.random() < self.augment.flip)
        if flip:
            matrix = _compose(np.array([[-1.0, 0.0, float(c)], [0.0, 1.0, 0.0]]), matrix)
        crop, mask, _ = aligned_crop(data.rgb, data.landmarks, self.model, c, matrix)
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        verts = np.concatenate([apply_affine(matrix, data.vertex_screen[:, :2]),
                                data.vertex_screen[:, 2:] * scale], axis=1)
        target = pixels_to_grid(apply_affine(matrix, data.texel_screen), c)
        texture, confidence, layout = data.texture, data.confidence, self.layout
        if flip:
            # The mirrored photo shows the mirrored face: vertex v sits where its partner was, and
            # UV maps mirror about u = 0.5 (the layout is symmetric), i.e. their columns reverse.
            verts = verts[self.mirror]
            target, texture, confidence = target[:, ::-1], texture[:, ::-1], confidence[:, ::-1]
        frags = rasterize(verts, self.triangles, c, c)
        radius = max(1, round(self.erosion * float(np.ptp(verts[:, 0]))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        region = (frags.triangle_id >= 0) & (cv2.erode(mask.astype(np.uint8), kernel) > 0)
        return {
            "input": torch.from_numpy(network_input(crop, mask)),
            "crop": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "target_grid": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
            "texture": torch.from_numpy(np.ascontiguousarray(texture.transpose(2, 0, 1))),
            "confidence": torch.from_numpy(np.ascontiguousarray(confidence[None])),
            "visible": torch.from_numpy(np.ascontiguousarray((confidence > 0)[None], dtype=np.float32)),
            "layout": torch.from_numpy(layout[None].astype(np.float32)),
            "verts": torch.from_numpy(verts.astype(np.float32)),
            "triangle_id": torch.from_numpy(frags.triangle_id.astype(np.int64)),
            "region": torch.from_numpy(region[None].astype(np.float32)),
            "flip": flip,
        }


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def sample_crop(crop: Tensor, grid: Tensor) -> Tensor:
    """The incomplete UV map: ``(B, 3, C, C)`` crop sampled at ``(B, S, S, 2)`` grid -> ``(B, 3, S, S)``.

    ``grid_sample`` with ``align_corners=False`` and zero padding (outside the crop is background).
    """
    return F.grid_sample(crop, grid.to(crop.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``sum(w * v) / (sum(w) * C)`` with ``values`` ``(B, C, H, W)`` and ``weight`` ``(B or 1, 1, H, W)``."""
    w = weight.expand(values.shape[0], 1, *values.shape[2:])
    return (w * values).sum() / (w.sum() * values.shape[1] + 1e-8)


def coord_l1(grid: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean absolute error of ``(B, S, S, 2)`` grid coordinates, weighted by ``(B or 1, 1, S, S)``."""
    return _masked_mean((grid - target).abs().permute(0, 3, 1, 2), weight)


def grid_smoothness(grid: Tensor, weight: Tensor) -> Tensor:
    """Second-order smoothness of a ``(B, S, S, 2)`` sampling map inside ``weight`` ``(B or 1, 1, S, S)``.

    Mean absolute second difference (horizontal and vertical), in units of the first difference of
    an identity map (``2 / S``), so the value does not depend on ``S``: 0 for any affine map.
    """
    g = grid.permute(0, 3, 1, 2) * (grid.shape[1] / 2.0)
    dxx = (g[..., :, 2:] - 2 * g[..., :, 1:-1] + g[..., :, :-2]).abs()
    dyy = (g[..., 2:, :] - 2 * g[..., 1:-1, :] + g[..., :-2, :]).abs()
    w = weight.expand(g.shape[0], 1, *g.shape[2:])
    wx = w[..., :, 2:] * w[..., :, 1:-1] * w[..., :, :-2]
    wy = w[..., 2:, :] * w[..., 1:-1, :] * w[..., :-2, :]
    return ((wx * dxx).sum() + (wy * dyy).sum()) / ((wx.sum() + wy.sum()) * 2 + 1e-8)


def tv_l1(image: Tensor, weight: Tensor) -> Tensor:
    """Total variation (seed 001, Eq. 7, with absolute differences) of ``(B, C, S, S)`` inside ``weight``."""
    w = weight.expand(image.shape[0], 1, *image.shape[2:])
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs()
    wx = w[..., :, 1:] * w[..., :, :-1]
    wy = w[..., 1:, :] * w[..., :-1, :]
    return ((wx * dx).sum() + (wy * dy).sum()) / ((wx.sum() + wy.sum()) * image.shape[1] + 1e-8)


def render_in_crop(texture: Tensor, verts: Tensor, triangle_id: Tensor, model: FaceModel) -> Tensor:
    """Render a ``(B, 3, S, S)`` UV texture on the fitted meshes ``(B, V, 3)`` (crop pixels) -> ``(B, 3, C, C)``.

    Differentiable in the texture (seed 001, Eq. 6); visibility ``triangle_id`` ``(B, C, C)`` is fixed.
    """
    from stages.core.shading import render

    triangles = torch.from_numpy(np.array(model.triangles, dtype=np.int64)).to(texture.device)
    uv = torch.from_numpy(np.array(model.uv, dtype=np.float32)).to(device=texture.device, dtype=texture.dtype)
    image, _ = render(verts.to(texture.dtype), triangles, uv, texture, triangle_id)
    return image


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

#: Named sizes: ``tiny`` for tests (seconds on CPU), ``small`` for CPU training, ``base`` for GPUs.
PRESETS = {
    "tiny": {"crop_size": 32, "base_channels": 4, "max_channels": 16, "feature_dim": 32, "head_hidden": 32,
             "grid_size": 8, "vis_size": 8},
    "small": {"crop_size": 128, "base_channels": 16, "max_channels": 256, "feature_dim": 512, "head_hidden": 512,
              "grid_size": 32, "vis_size": 32},
    "base": {"crop_size": 256, "base_channels": 32, "max_channels": 512, "feature_dim": 512, "head_hidden": 1024,
             "grid_size": 64, "vis_size": 64},
}


@dataclass
class SamplerTrainConfig:
    """Every training knob of the UV sampler (saved in ``config.json``).

    Loss (per step) = ``w_uv`` * confidence-weighted L1 between the sampled UV map and the
    geometric unwrap (Eq. 5, first term)
    + ``w_render`` * L1 between the sampled UV map rendered on the fitted mesh at the photo's pose
    (crop coordinates, :func:`render_in_crop`) and the masked crop, on mesh pixels inside the eroded
    face hull (Eq. 5, second term; Eq. 6)
    + ``w_tv`` * total variation of the sampled UV map inside the layout (Eq. 5, third term; Eq. 7)
    + ``w_smooth`` * second-order smoothness of the sampling map itself (:func:`grid_smoothness`,
    extra: keeps the predicted coordinates a smooth warp)
    + ``w_coord`` * L1 between the predicted and the geometric sampling coordinates on every layout
    texel (extra, direct supervision from ``texel_visibility``'s correspondence; ``w_coord_warmup``
    for the first ``coord_warmup_steps`` steps, ``w_coord`` after)
    + ``w_vis`` * binary cross-entropy of the visibility logits against the geometric unwrap's
    ``confidence > 0`` on the layout (extra: the sampler's visibility head).
    """

    preset: str = "small"
    uv_size: int = 128
    batch_size: int = 8
    steps: int = 3000
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    w_uv: float = 1.0
    w_render: float = 1.0
    w_tv: float = 0.01
    w_smooth: float = 0.05
    w_coord: float = 1.0
    w_coord_warmup: float = 5.0
    coord_warmup_steps: int = 300
    w_vis: float = 0.2
    augment: dict = field(default_factory=lambda: asdict(Augment()))
    seed: int = 0
    sample_every: int = 200
    checkpoint_every: int = 250
    log_every: int = 25
    network: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        self.network = {**PRESETS[self.preset], **self.network}
        SamplerConfig.from_dict(self.network)   # validates
        self.betas = tuple(self.betas)
        if self.uv_size < 16:
            raise ValueError(f"uv_size must be >= 16, got {self.uv_size}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch_size and steps must be positive")
        for name in ("w_uv", "w_render", "w_tv", "w_smooth", "w_coord", "w_coord_warmup", "w_vis"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        Augment(**self.augment)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.02, 0.98)
    return np.log(p / (1 - p))


def sampler_losses(net: nn.Module, batch: dict, config: SamplerTrainConfig, model: FaceModel,
                   step: int) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """Forward one batch and compute the weighted loss.

    Returns:
        ``(total, parts, grid, sampled)``: the scalar loss, its unweighted parts (plus metrics
        ``err_px``: mean coordinate error in crop pixels on visible texels, ``iou``: visibility IoU),
        the ``(B, S, S, 2)`` predicted grid and the ``(B, 3, S, S)`` sampled UV map.
    """
    s = config.uv_size
    coords, vis = net(batch["input"])
    grid = upsample_grid(coords, s)
    vis = F.interpolate(vis, size=(s, s), mode="bilinear", align_corners=False)
    layout, conf, visible = batch["layout"], batch["confidence"], batch["visible"]
    sampled = sample_crop(batch["crop"], grid)
    uv = _masked_mean((sampled - batch["texture"]).abs(), conf)
    rendered = render_in_crop(sampled, batch["verts"], batch["triangle_id"], model)
    ren = _masked_mean((rendered - batch["crop"]).abs(), batch["region"])
    tv = tv_l1(sampled, layout)
    smooth = grid_smoothness(grid, layout)
    coord = coord_l1(grid, batch["target_grid"], layout)
    bce = F.binary_cross_entropy_with_logits(vis, visible, reduction="none")
    vis_loss = _masked_mean(bce, layout)
    w_coord = config.w_coord_warmup if step < config.coord_warmup_steps else config.w_coord
    total = (config.w_uv * uv + config.w_render * ren + config.w_tv * tv + config.w_smooth * smooth
             + w_coord * coord + config.w_vis * vis_loss)
    with torch.no_grad():
        crop_size = batch["crop"].shape[-1]
        err = ((grid - batch["target_grid"]).norm(dim=-1) * (crop_size / 2.0)).unsqueeze(1)
        err_px = _masked_mean(err, visible)
        pred = (vis > 0).float() * layout
        iou = (pred * visible).sum() / ((pred + visible).clamp(max=1).sum() + 1e-8)
    parts = {"loss": total, "uv": uv, "render": ren, "tv": tv, "smooth": smooth, "coord": coord, "vis": vis_loss,
             "err_px": err_px, "iou": iou}
    return total, parts, grid, sampled


def _sample_sheet(batch: dict, sampled: Tensor, vis_mask: Tensor, rows: int = 4) -> np.ndarray:
    """``(rows * S, 3 * S, 3)``: input crop (resized to S) | sampled UV x predicted visibility | geometric unwrap."""
    s = sampled.shape[-1]

    def hwc(t: Tensor) -> np.ndarray:
        return t.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()

    crop = F.interpolate(batch["crop"].detach().float(), size=(s, s), mode="area")
    lines = []
    for i in range(min(rows, sampled.shape[0])):
        lines.append(np.concatenate([hwc(crop[i]), hwc(sampled[i] * vis_mask[i]), hwc(batch["texture"][i])], axis=1))
    return np.concatenate(lines, axis=0)


def _collate(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = torch.stack(values) if isinstance(values[0], Tensor) else torch.tensor(values)
    return out


def train_uv_sampler(folders: list[Path], out_dir: Path, config: SamplerTrainConfig, *, model: FaceModel,
                     resume: bool = True, cpu: bool | None = None,
                     progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume training) the UV sampler and write its model folder.

    Args:
        folders: facetex output folders (fit.json with its photo on disk, unwrap.json, uv_texture.png).
        out_dir: model folder (``config.json``, ``weights.safetensors``, ``samples/``,
            ``training_state/`` with the optimizer state for resuming).
        config: training settings.
        model: the face model of the fits.
        resume: continue from ``out_dir/training_state`` when present.
        cpu: force CPU (default: accelerate's choice).
        progress: called as ``progress(step, total, losses)`` after every step.

    Returns:
        The last step's losses (floats) plus ``steps`` and ``seconds``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=bool(cpu))
    set_seed(config.seed)
    net_cfg = SamplerConfig.from_dict(config.network)
    dataset = SamplerTrainingSet(folders, model, uv_size=config.uv_size, crop_size=net_cfg.crop_size,
                                 augment=Augment(**config.augment), seed=config.seed,
                                 epoch_length=max(len(folders), config.batch_size))
    net = UVSampler(net_cfg)
    vis_prior = np.mean([_area_resize(f.confidence > 0, net_cfg.vis_size) for f in dataset.folders], axis=0)
    net.init_base(mean_shape_grid(model, net_cfg.grid_size), _logit(vis_prior))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(config.seed), num_workers=0,
                                         collate_fn=_collate)
    net, optimizer, loader = accelerator.prepare(net, optimizer, loader)

    state_dir = out_dir / "training_state"
    step = 0
    if resume and (state_dir / "step.json").is_file():
        accelerator.load_state(str(state_dir))
        step = int(json.loads((state_dir / "step.json").read_text())["step"])
    start = time.perf_counter()
    last: dict[str, float] = {}
    epoch = step // max(1, len(loader))
    net.train()
    while step < config.steps:
        dataset.set_epoch(epoch)
        for batch in loader:
            if step >= config.steps:
                break
            total, parts, grid, sampled = sampler_losses(net, batch, config, model, step)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(total)
            optimizer.step()
            step += 1
            last = {name: float(value.detach()) for name, value in parts.items()}
            if progress is not None:
                progress(step, config.steps, last)
            if accelerator.is_main_process and config.log_every and step % config.log_every == 0:
                with open(out_dir / "train_log.jsonl", "a") as log:
                    log.write(json.dumps({"step": step, **{k: round(v, 5) for k, v in last.items()}}) + "\n")
            if accelerator.is_main_process and config.sample_every and step % config.sample_every == 0:
                with torch.no_grad():
                    _, vis = accelerator.unwrap_model(net)(batch["input"])
                    vis_mask = (F.interpolate(vis, size=sampled.shape[-2:], mode="bilinear",
                                              align_corners=False) > 0).float() * batch["layout"]
                save_png(out_dir / "samples" / f"step_{step:06d}.png", _sample_sheet(batch, sampled, vis_mask))
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save_checkpoint(accelerator, state_dir, step)
        epoch += 1

    save_checkpoint(accelerator, state_dir, step)
    if accelerator.is_main_process:
        save_pretrained(out_dir, {"sampler": accelerator.unwrap_model(net)}, {"sampler": net_cfg.to_dict()},
                        model_type=MODEL_TYPE, keep=("samples", "training_state", "train_log.jsonl"),
                        extra={"train": asdict(config), "uv_size": config.uv_size, "face_model": model.name,
                               "alignment": {"groups": [list(g) for g in ALIGN_GROUPS], "hull_points": HULL_POINTS,
                                             "template_fill": TEMPLATE_FILL},
                               "steps": step, "data": [str(f) for f in folders], "last_losses": last})
    return {**last, "steps": step, "seconds": time.perf_counter() - start}


__all__ = ["MODEL_TYPE", "SamplerConfig", "SamplerTrainConfig", "SamplerTrainingSet", "UVSampler", "Augment",
           "aligned_crop", "alignment_matrix", "load_sampler", "train_uv_sampler", "mean_shape_grid"]
