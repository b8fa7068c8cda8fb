"""Lab mean-variance colour matching (seed 000's final colour correction).

Per Lab channel, the source's values are shifted and scaled so that, over ``source_mask``, their
mean and standard deviation equal the reference's over ``reference_mask``:
``out = (x - mu_s) * sigma_r / sigma_s + mu_r``; then back to RGB, clipped to ``[0, 1]``.
Lab is OpenCV's float convention (sRGB D65, L in ``[0, 100]``).
"""

from __future__ import annotations

import cv2
import numpy as np


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., H, W, 3)``-shaped float RGB in ``[0, 1]`` -> float32 Lab (L in [0, 100])."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2LAB)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_lab` (not clipped)."""
    return cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_LAB2RGB)


def lab_statistics(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (3,), std (3,))`` of the Lab values of ``rgb (H, W, 3)`` over ``mask (H, W)``."""
    values = rgb_to_lab(rgb)[np.asarray(mask, dtype=bool)]
    if values.shape[0] == 0:
        raise ValueError("lab_statistics: empty mask")
    return values.mean(axis=0), values.std(axis=0)


def match_colour_lab(source: np.ndarray, reference: np.ndarray, *, source_mask: np.ndarray | None = None,
                     reference_mask: np.ndarray | None = None, min_std: float = 1e-3) -> np.ndarray:
    """Match the Lab mean and standard deviation of ``source`` to ``reference``.

    Args:
        source: ``(H, W, 3)`` float RGB to correct (clipped to ``[0, 1]``; every texel is transformed).
        reference: ``(H', W', 3)`` float RGB in ``[0, 1]`` whose statistics to take.
        source_mask: ``(H, W)`` bool, where the source statistics are measured (default: all).
        reference_mask: ``(H', W')`` bool, where the reference statistics are measured (default: all).
        min_std: floor of the source standard deviation (a flat source is only shifted).

    Returns:
        ``(H, W, 3)`` float32 RGB in ``[0, 1]``.

    Raises:
        ValueError: wrong shapes or an empty mask.
    """
    source = np.clip(np.asarray(source, dtype=np.float32), 0.0, 1.0)
    reference = np.asarray(reference, dtype=np.float32)
    for name, image in (("source", source), ("reference", reference)):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"match_colour_lab: {name} must be (H, W, 3), got {image.shape}")
    source_mask = np.ones(source.shape[:2], bool) if source_mask is None else np.asarray(source_mask, bool)
    reference_mask = np.ones(reference.shape[:2], bool) if reference_mask is None else np.asarray(reference_mask, bool)
    if source_mask.shape != source.shape[:2] or reference_mask.shape != reference.shape[:2]:
        raise ValueError("match_colour_lab: each mask must have its image's (H, W)")
    mu_s, sd_s = lab_statistics(source, source_mask)
    mu_r, sd_r = lab_statistics(reference, reference_mask)
    lab = rgb_to_lab(source)
    lab = (lab - mu_s) * (sd_r / np.maximum(sd_s, min_std)) + mu_r
    return np.clip(lab_to_rgb(lab), 0.0, 1.0)
