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

from pathlib import Path

import numpy as np

from stages.core.camera import euler_to_matrix
from stages.core.face_model import FaceModel
from stages.core.raster import rasterize
from stages.fit import FitResult
from stages.face_view import CROP_MARGIN, FaceView, _eroded, photo_view  # noqa: F401  (re-exported)
from stages.train.reposing import view_pose_rolled


def resolve_photo(fit: FitResult, folder: str | Path) -> Path:
    """The photo a fit was made from, for the fit in ``folder`` (:meth:`FitResult.photo_path`:
    relative to the folder first, then the recorded path). Raises :class:`MissingArtifactError`."""
    return fit.photo_path(Path(folder) / "fit.json")


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
    """:func:`photo_view` of the folder's photo (:meth:`FitResult.load_fitted_photo`), with one-line
    errors; its mask is weighted by the fit's skin mask when there is one (what unwrap rejected as
    hair, hands or glasses is never a render-loss target)."""
    rgb = fit.load_fitted_photo(Path(folder) / "fit.json")
    skin = fit.skin.prob if fit.skin is not None else None
    return photo_view(fit, model, rgb.astype(np.float32) / 255.0, size, skin=skin)
