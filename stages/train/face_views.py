"""Image-space views of a training face: what the render losses and the face discriminator see.

Seed 001 (§3.2) renders the predicted UV map on the fitted shape, at the photo's pose (``I_0^R``,
compared with the background-masked photo ``I^m`` by an L1 loss and the face discriminator) and at
another pose (``I_1^R``: face discriminator, identity loss). Rendering happens in the trainer with
the differentiable deferred renderer (:func:`stages.core.shading.render`); visibility is fixed, so
this module precomputes, per folder, everything that does not depend on the prediction:

- :func:`photo_view`: the photo cropped around the fitted face and resized to ``R x R``, the fitted
  shape's screen vertices in that crop, its triangle ids (z-buffer) and the face mask (rendered
  silhouette, eroded so background at the fitted silhouette never enters a loss);
- :func:`novel_view`: the same shape re-posed by a yaw/pitch offset, centred in an ``R x R`` image.

Screen coordinates follow ``docs/CONVENTIONS.md`` (x right, y down, pixel centres at +0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.core.camera import euler_to_matrix
from stages.core.errors import MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import load_photo
from stages.core.raster import rasterize
from stages.fit import FitResult
from stages.train.reposing import view_pose_rolled

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
    """

    screen: np.ndarray
    triangle_id: np.ndarray
    mask: np.ndarray
    image: np.ndarray | None = None


def resolve_photo(fit: FitResult, folder: str | Path) -> Path:
    """The photo a fit was made from, for the fit in ``folder`` (:meth:`FitResult.photo_path`:
    relative to the folder first, then the recorded path). Raises :class:`MissingArtifactError`."""
    return fit.photo_path(Path(folder) / "fit.json")


def _eroded(mask: np.ndarray, size: int) -> np.ndarray:
    radius = max(1, round(MASK_EROSION * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(np.float32)


def photo_view(fit: FitResult, model: FaceModel, rgb: np.ndarray, size: int) -> FaceView:
    """Crop the photo around the fitted face into an ``size x size`` view.

    Args:
        fit: the photo's fit (pose and per-image shape).
        model: the face model of the fit.
        rgb: ``(H, W, 3)`` float32 photo in ``[0, 1]``.
        size: ``R``.

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
    return FaceView(screen=local.astype(np.float32), triangle_id=triangle_id, mask=mask,
                    image=(crop * mask[..., None]).astype(np.float32))


def novel_view(model: FaceModel, vertices: np.ndarray, fit_rotation: np.ndarray, yaw: float, pitch: float,
               size: int) -> FaceView:
    """The per-image shape turned by ``(yaw, pitch)`` degrees from its fitted orientation.

    Args:
        model: face model.
        vertices: ``(V, 3)`` model-space shape.
        fit_rotation: ``(3, 3)`` the fitted rotation (the new view is ``R(yaw, pitch, 0) @ fit_rotation``).
        yaw, pitch: the offset in degrees.
        size: ``R``; the face spans about 0.8 of it, like the photo crop.
    """
    rotation = euler_to_matrix(yaw, pitch, 0.0) @ np.asarray(fit_rotation, dtype=np.float64)
    # view_pose_rolled poses by Euler angles; give it the vertices pre-rotated instead.
    turned = np.asarray(vertices, dtype=np.float64) @ rotation.T
    pose = view_pose_rolled(turned, 0.0, 0.0, 0.0, size, fill=1.0 / (1.0 + 2.0 * CROP_MARGIN))
    screen = pose.to_screen(turned)
    triangle_id = rasterize(screen, model.triangles, size, size).triangle_id.astype(np.int64)
    return FaceView(screen=screen.astype(np.float32), triangle_id=triangle_id, mask=_eroded(triangle_id >= 0, size))


def load_photo_view(folder: str | Path, fit: FitResult, model: FaceModel, size: int) -> FaceView:
    """:func:`photo_view` of the folder's photo (found by :func:`resolve_photo`), with one-line errors."""
    path = resolve_photo(fit, folder)
    width, height = (int(v) for v in fit.image_size)
    # The fit saw the photo downscaled to its image_size; load it the same way.
    rgb = load_photo(path, max_side=max(width, height)).rgb
    if rgb.shape[:2] != (height, width):
        raise MissingArtifactError(path, f"photo is {rgb.shape[1]}x{rgb.shape[0]} but fit.json was made on "
                                         f"{width}x{height} (re-run `facetex fit`)")
    return photo_view(fit, model, rgb.astype(np.float32) / 255.0, size)
