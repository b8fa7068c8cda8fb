"""The fitted face seen in the photo: an ``R x R`` crop around it with fixed visibility.

Used wherever the photo is compared with a render of the fitted face in image space: the
analysis-by-synthesis albedo fit (``complete --method uvapm``) and the training render losses
(:mod:`stages.train.face_views`, which adds re-posed synthetic views). Screen coordinates follow
``docs/CONVENTIONS.md`` (x right, y down, pixel centres at +0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.core.face_model import FaceModel
from stages.core.raster import rasterize
from stages.fit import FitResult

#: Margin around the projected mesh's bounding box in the photo crop (fraction of its larger side).
CROP_MARGIN = 0.08
#: Erosion of the face mask (fraction of ``R``): the fitted silhouette is only approximately right.
MASK_EROSION = 0.02


@dataclass
class FaceView:
    """One face seen in an ``R x R`` image, with fixed visibility.

    Attributes:
        screen: ``(V, 3)`` float32 screen-space vertices in this image (z: depth, unused by shading).
        triangle_id: ``(R, R)`` int64 front triangle per pixel, ``-1`` where empty.
        mask: ``(R, R)`` float32 1 on the (eroded) face, 0 elsewhere.
        image: ``(R, R, 3)`` float32 photo crop in ``[0, 1]`` (zero outside ``mask``), or None for a
            synthetic view.
        crop: ``(R, R, 3)`` float32 the same crop unmasked (the background a render is blended into), or None.
        skin: ``(R, R)`` float32 the skin probability in the crop (None without one).
    """

    screen: np.ndarray
    triangle_id: np.ndarray
    mask: np.ndarray
    image: np.ndarray | None = None
    crop: np.ndarray | None = None
    skin: np.ndarray | None = None


def _eroded(mask: np.ndarray, size: int) -> np.ndarray:
    radius = max(1, round(MASK_EROSION * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(np.float32)


def photo_view(fit: FitResult, model: FaceModel, rgb: np.ndarray, size: int, *,
               skin: np.ndarray | None = None) -> FaceView:
    """Crop the photo around the fitted face into an ``size x size`` view.

    Args:
        fit: the photo's fit (pose and per-image shape).
        model: the face model of the fit.
        rgb: ``(H, W, 3)`` float32 photo in ``[0, 1]``.
        size: ``R``.
        skin: optional ``(H, W)`` skin probability (``FitResult.skin.prob``): the mask is multiplied
            by it, so hair, hands or glasses in front of the face are no target.

    Returns:
        A :class:`FaceView` whose ``image`` is the crop (area-filtered), zero outside the face mask.
    """
    screen = fit.screen_vertices()
    lo, hi = screen[:, :2].min(axis=0), screen[:, :2].max(axis=0)
    side = float((hi - lo).max()) * (1.0 + 2.0 * CROP_MARGIN)
    x0, y0 = (lo + hi) / 2.0 - side / 2.0
    scale = size / side
    # Continuous coords p map to (p - origin) * scale. cv2 puts pixel centres at integers, so shift
    # by half a pixel on both sides; blur first so shrinking does not alias.
    if scale < 1.0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigmaX=0.5 / scale)
    affine = np.array([[scale, 0.0, (0.5 - x0) * scale - 0.5], [0.0, scale, (0.5 - y0) * scale - 0.5]])
    crop = cv2.warpAffine(np.ascontiguousarray(rgb, dtype=np.float32), affine, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    local = np.column_stack([(screen[:, 0] - x0) * scale, (screen[:, 1] - y0) * scale, screen[:, 2] * scale])
    triangle_id = rasterize(local, model.triangles, size, size).triangle_id.astype(np.int64)
    mask = _eroded(triangle_id >= 0, size)
    if skin is not None:
        skin = cv2.warpAffine(np.ascontiguousarray(skin, dtype=np.float32), affine, (size, size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = mask * skin
    return FaceView(screen=local.astype(np.float32), triangle_id=triangle_id, mask=mask,
                    image=(crop * mask[..., None]).astype(np.float32), crop=crop.astype(np.float32), skin=skin)
