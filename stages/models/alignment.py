"""2D face alignment of the learned UV sampler (seed 001, §3.1): no 3D fit.

Four detector landmarks (the two eye centres, the two mouth corners of MediaPipe's 478 points)
are mapped by a 2D similarity onto fixed template positions (:func:`alignment_matrix`); the face
is cropped ``crop_size`` pixels square with everything outside the convex hull of the 468 mesh
landmarks set to 0 (:func:`aligned_crop`). Used at inference (:mod:`stages.learned_unwrap`) and in
training (:mod:`stages.train.sampler`).

Crop coordinates follow ``grid_sample`` with ``align_corners=False``: ``gx = 2 x / C - 1`` for a
continuous pixel ``x`` of a ``C``-wide crop (:func:`pixels_to_grid`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from torch import Tensor

from stages.core.face_model import FaceModel
from stages.core.poisson import pull_push_fill
from stages.core.uv import uv_layout

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


