"""Detail ratio: is a filled region as detailed as the photo's own skin?

Band: the difference of Gaussians ``G(sigma_lo) * V - G(sigma_hi) * V`` of the HSV value channel
``V = max(R, G, B)``, with ``sigma_lo = 1`` and ``sigma_hi = 4`` texels at UV 512, scaled with the
texture size (``sigma * S / 512``): pores, stubble, freckles, fine wrinkles; not shading, not noise.
Energy of a region = the mean squared band response over its texels. Each region is eroded by
``2 sigma_hi`` first (away from each other and from the layout border), so the seam between seen and
filled texels and the padding beyond the layout do not count.

``detail_ratio = energy(filled skin) / energy(seen skin)``: 1.0 = as detailed as the photo, 0 = a
smooth fill. nan when either region is empty after erosion.
"""

from __future__ import annotations

import cv2
import numpy as np

#: DoG sigmas in texels at UV 512.
SIGMA_LO, SIGMA_HI = 1.0, 4.0
REFERENCE_SIZE = 512


def band_pass(texture: np.ndarray) -> np.ndarray:
    """``(S, S)`` float32 DoG response of the V channel of an ``(S, S, 3)`` texture in ``[0, 1]`` (or of
    an ``(S, S)`` map taken as V itself)."""
    size = texture.shape[0]
    v = np.asarray(texture, dtype=np.float32)
    v = v[..., :3].max(axis=2) if v.ndim == 3 else v
    lo, hi = (s * size / REFERENCE_SIZE for s in (SIGMA_LO, SIGMA_HI))
    return cv2.GaussianBlur(v, (0, 0), lo) - cv2.GaussianBlur(v, (0, 0), hi)


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def region_pixels(mask: np.ndarray) -> np.ndarray:
    """``(S, S)`` bool: ``mask`` eroded by ``2 sigma_hi`` (the texels whose band response counts)."""
    return _eroded(mask, max(1, int(np.ceil(2 * SIGMA_HI * mask.shape[0] / REFERENCE_SIZE))))


def region_energy(band: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared ``band`` (a :func:`band_pass` response, ``(S, S)``) over :func:`region_pixels` of
    ``mask``; nan when nothing is left."""
    pixels = region_pixels(mask)
    return float(np.mean(band[pixels] ** 2)) if pixels.any() else float("nan")


def detail_ratio(texture: np.ndarray, seen: np.ndarray, filled: np.ndarray, region: np.ndarray) -> float:
    """Band-pass energy of ``texture`` on ``filled & region`` over the same on ``seen & region``.

    Args:
        texture: ``(S, S, 3)`` completed texture in ``[0, 1]``.
        seen: ``(S, S)`` bool texels that are the photo's own.
        filled: ``(S, S)`` bool texels the method filled (the photo did not see them).
        region: ``(S, S)`` bool texels that count (the skin of the layout).
    """
    band = band_pass(texture)
    seen_energy, filled_energy = region_energy(band, seen & region), region_energy(band, filled & region)
    if seen_energy != seen_energy or filled_energy != filled_energy:
        return float("nan")
    return filled_energy / max(seen_energy, 1e-12)
