"""The preview pictures show only the part of the photo they are about, checked by value."""

from __future__ import annotations

import cv2
import numpy as np

from stages.fit import draw_overlay, overlay_window
from stages.occlusion import REJECT_BELOW, skin_overlay
from tests.test_unwrap_render import synthetic_fit

TINT = np.array([255, 0, 200], np.float32)


def _photo(height: int, width: int) -> np.ndarray:
    """A smooth colourful photo (exact under INTER_AREA downscaling by 2 up to rounding)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 90)], axis=2).astype(np.uint8)


def test_skin_overlay_is_the_masks_window_at_the_photos_preview_scale():
    """A 1280^2 photo shown at 640: the overlay is the mask's box (+5%) at half size, rejected pixels tinted
    magenta, skin pixels the photo's, and an empty mask gives the whole photo at that scale."""
    photo = _photo(1280, 1280)
    prob = np.zeros((1280, 1280), np.float32)
    prob[400:800, 300:700] = 1.0          # skin
    prob[400:800, 300:400] = 1e-3         # rejected (not skin) inside the window: tinted
    assert REJECT_BELOW > 1e-3
    out = skin_overlay(photo, prob)
    pad = 20                              # 5% of the 400 px box, each side
    assert out.shape == ((400 + 2 * pad) // 2, (400 + 2 * pad) // 2, 3)
    half = cv2.resize(photo, (640, 640), interpolation=cv2.INTER_AREA)
    window = half[(400 - pad) // 2:(800 + pad) // 2, (300 - pad) // 2:(700 + pad) // 2].astype(np.float32)
    assert window.shape == out.shape
    rejected = np.s_[pad // 2 + 10:pad // 2 + 190, pad // 2 + 10:pad // 2 + 40]    # inside, off the border line
    tinted = window[rejected] * 0.45 + TINT * 0.55
    assert np.abs(out[rejected].astype(np.float32) - tinted).max() <= 1.0
    skin = np.s_[pad // 2 + 10:pad // 2 + 190, pad // 2 + 60:pad // 2 + 190]
    assert np.abs(out[skin].astype(int) - window[skin].astype(int)).max() <= 1
    empty = skin_overlay(photo, np.zeros_like(prob))
    assert np.array_equal(empty, half)


def test_fit_overlay_is_the_face_window_with_the_mesh_drawn(model):
    """draw_overlay: the window of overlay_window (face box + mesh + 30% of the face), the photo's own pixels away
    from the mesh, the wireframe over the face; downscaled to max_side when the window is larger."""
    size = 900
    fit = synthetic_fit(model, 15.0, 300)    # the face around (150, 150) of a 900 px photo
    photo = _photo(size, size)
    x0, y0, x1, y1 = overlay_window(fit, size, size)
    assert x1 < size / 2 and y1 < size / 2, "the face's window is part of the photo"
    out = draw_overlay(photo, fit, model)
    window = photo[y0:y1, x0:x1]
    assert out.shape == window.shape
    screen = fit.screen_vertices()[:, :2] - [x0, y0]
    face = np.zeros(out.shape[:2], np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(screen).astype(np.int32)), 1)
    changed = np.abs(out.astype(int) - window).max(axis=2) > 10
    assert changed[face > 0].mean() > 0.2                     # the wireframe covers the face
    assert (out[-8:, -8:] == window[-8:, -8:]).all()         # the margin is the photo as it is
    small = draw_overlay(photo, fit, model, max_side=100)
    assert max(small.shape[:2]) == 100
