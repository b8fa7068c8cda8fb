"""How the networks see an unwrap: the one masked resize and the position-map scale.

Training (:mod:`stages.train`) and inference (:mod:`stages.completion.unet`,
:mod:`stages.diffusion.pipeline`) share these, so a network sees at inference exactly the inputs
it was trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from stages.core.uv import uv_layout

if TYPE_CHECKING:  # typing only: the models package sits below the stages
    from stages.core.face_model import FaceModel
    from stages.unwrap import UnwrapResult

#: UV position maps (model space, unit-RMS model) are divided by this before entering a network.
POSITION_SCALE = 1.5
#: A resized texel counts as seen when at least this fraction of its area was seen.
SEEN_COVERAGE = 0.5


def resize_area(image: np.ndarray, size: int) -> np.ndarray:
    """``(S, S[, C])`` -> ``(size, size[, C])`` float32: INTER_AREA when shrinking, bilinear when
    enlarging, unchanged (as float32) at the same size."""
    if image.shape[0] == size:
        return np.asarray(image, dtype=np.float32)
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (size, size), interpolation=interpolation)
    return out.reshape(size, size, *image.shape[2:])


def resize_masked(image: np.ndarray, mask: np.ndarray, size: int, *,
                  min_coverage: float = SEEN_COVERAGE) -> tuple[np.ndarray, np.ndarray]:
    """Resize values defined only on ``mask`` by normalised convolution (unmasked zeros do not
    bleed into the edge of the masked region).

    Args:
        image: ``(S, S)`` or ``(S, S, C)`` values.
        mask: ``(S, S)`` bool or 0/1 where ``image`` is defined.
        size: output side.
        min_coverage: output texels whose mask coverage is below this are 0 (use a tiny value to
            keep every texel any masked texel reaches).

    Returns:
        ``(values, coverage)``: float32 values of ``image``'s shape at ``size`` and the ``(size, size)``
        float32 coverage of the mask.
    """
    weight = resize_area(np.asarray(mask, dtype=np.float32), size)
    m = np.asarray(mask, dtype=np.float32)
    summed = resize_area(image * (m[..., None] if image.ndim == 3 else m), size)
    denom = weight[..., None] if image.ndim == 3 else weight
    keep = denom >= min_coverage
    values = np.where(keep, summed / np.maximum(denom, 1e-6), 0.0)
    return values.astype(np.float32), weight


def resize_unwrap(unwrap: UnwrapResult, model: FaceModel, uv_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An unwrap as the UV generator sees it at ``uv_size`` (training and inference share this).

    Seen colours and confidences are resized by :func:`resize_masked` (a texel stays seen when
    most of its area was); positions over the layout, keeping every texel the layout reaches.

    Returns:
        ``texture (S, S, 3)`` zero where unseen, ``confidence (S, S)``, ``position (S, S, 3)`` model
        space, zero outside the layout; float32.
    """
    texture, confidence, position = unwrap.texture, unwrap.confidence, unwrap.position
    if unwrap.size != uv_size:
        seen = confidence > 0
        texture, _ = resize_masked(texture, seen, uv_size)
        confidence, _ = resize_masked(confidence, seen, uv_size)
        position, _ = resize_masked(position, unwrap.layout_mask, uv_size, min_coverage=1e-6)
    layout = uv_layout(model, uv_size).mask
    confidence = np.where(layout, confidence, 0.0).astype(np.float32)
    texture = np.where((confidence > 0)[..., None], texture, 0.0).astype(np.float32)
    position = np.where(layout[..., None], position, 0.0).astype(np.float32)
    return texture, confidence, position
