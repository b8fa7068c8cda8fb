"""Losses and UV crops of seed 001's UV generator training (§3.2–3.3).

All image tensors are ``(B, C, S, S)`` UV images (row 0 = top of the UV square = v near 1); weights
and masks are float ``(1 or B, 1, S, S)`` tensors that broadcast over the batch and the channels.
The built-in UV layout is left-right symmetric, so the mirror of a UV image is ``x.flip(-1)``.

- :func:`weighted_l1`: reconstruction loss against the pseudo ground truth (eq. 11).
- :func:`symmetry_loss`: ``||UV - FlipLR(UV)||_1`` (eq. 12), inside a mask.
- :func:`tv_loss`: total variation (eq. 7), optionally inside a mask.
- :func:`d_hinge_loss` / :func:`g_hinge_loss`, :func:`d_bce_loss` / :func:`g_bce_loss`: adversarial
  losses on logits (the BCE pair is eq. 10 in its non-saturating form).
- :func:`uv_crops`: the centre and side partial-UV crops fed to the two UV discriminators.
- :func:`masked_nose`: blanks the nose / nostril region before the partial-UV discriminators.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8

Box = tuple[float, float, float, float]

# Crop rectangles as fractions (top, left, bottom, right) of the UV size. The built-in layout puts
# the face in u in [0.02, 0.98] and rows (1 - v) in about [0.13, 0.87] (forehead top 0.13, brows
# 0.26, eyes 0.37, nose tip 0.51, nostrils 0.56, mouth 0.68, chin 0.87), symmetric about u = 0.5.
DEFAULT_CENTRE_CROP: Box = (0.20, 1.0 / 3.0, 0.92, 2.0 / 3.0)
"""Centre crop (UV_ctr): the middle third in width, from above the brows to below the chin."""

DEFAULT_SIDE_CROP: Box = (0.10, 0.0, 0.90, 1.0 / 3.0)
"""Left side crop (UV_left): the outer third in width, full face height. The right crop is its mirror."""

DEFAULT_NOSTRIL_BOX: Box = (0.47, 0.38, 0.61, 0.62)
"""A rectangle around the nose tip and nostrils (for :func:`box_mask` -> :func:`masked_nose`)."""


def _expand_weight(weight: Tensor, like: Tensor) -> Tensor:
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f"weight/mask must be (1 or B, 1, H, W), got {tuple(weight.shape)}")
    b, _, h, w = like.shape
    return weight.to(like.dtype).expand(b, 1, h, w)


def weighted_l1(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean absolute error.

    Returns:
        Scalar ``sum(w * |pred - target|) / (sum(w) * C + eps)`` with ``w`` broadcast to
        ``(B, 1, S, S)`` (so a weight of ones gives the plain mean absolute error; all-zero weight gives 0).
    """
    w = _expand_weight(weight, pred)
    return (w * (pred - target).abs()).sum() / (w.sum() * pred.shape[1] + EPS)


def symmetry_loss(pred: Tensor, mask: Tensor | None = None) -> Tensor:
    """Left-right symmetry loss (seed 001 eq. 12).

    Args:
        pred: ``(B, C, S, S)`` UV images.
        mask: ``(1 or B, 1, S, S)`` where symmetry applies (e.g. the UV layout's face region); only
            texels whose mirror partner is also inside count (``mask * mask.flip(-1)``). ``None``: all.

    Returns:
        Scalar :func:`weighted_l1` between ``pred`` and ``pred.flip(-1)`` (0 for a symmetric image).
    """
    if mask is None:
        mask = pred.new_ones(1, 1, *pred.shape[2:])
    m = mask * mask.flip(-1)
    return weighted_l1(pred, pred.flip(-1), m)


def tv_loss(pred: Tensor, mask: Tensor | None = None) -> Tensor:
    """Total variation: mean absolute difference between horizontal and vertical neighbours.

    Args:
        pred: ``(B, C, S, S)`` images.
        mask: optional ``(1 or B, 1, S, S)``; a neighbour pair counts with weight ``m[a] * m[b]``.

    Returns:
        Scalar ``(sum w_h |dx| + sum w_v |dy|) / ((sum w_h + sum w_v) * C + eps)``: the mean over all
        neighbour pairs and channels (0 for a constant image).
    """
    if mask is None:
        mask = pred.new_ones(1, 1, *pred.shape[2:])
    m = _expand_weight(mask, pred)
    dx = (pred[..., :, 1:] - pred[..., :, :-1]).abs()
    dy = (pred[..., 1:, :] - pred[..., :-1, :]).abs()
    wx = m[..., :, 1:] * m[..., :, :-1]
    wy = m[..., 1:, :] * m[..., :-1, :]
    num = (wx * dx).sum() + (wy * dy).sum()
    return num / ((wx.sum() + wy.sum()) * pred.shape[1] + EPS)


def d_hinge_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss: ``mean(relu(1 - real)) + mean(relu(1 + fake))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss: ``-mean(fake)``."""
    return -fake_logits.mean()


def d_bce_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator BCE on logits (eq. 10): ``mean(softplus(-real)) + mean(softplus(fake))``,
    i.e. ``-log sigmoid(real) - log(1 - sigmoid(fake))``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_bce_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: ``mean(softplus(-fake)) = -mean(log sigmoid(fake))``."""
    return F.softplus(-fake_logits).mean()


def box_pixels(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel rows/columns ``(r0, c0, r1, c1)`` (half-open) of a fractional box ``(top, left, bottom, right)``.

    Raises:
        ValueError: fractions outside ``[0, 1]``, or an empty box at this size.
    """
    top, left, bottom, right = (float(v) for v in box)
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
        raise ValueError(f"crop box {box} must satisfy 0 <= top < bottom <= 1 and 0 <= left < right <= 1")
    r0, r1 = round(top * height), round(bottom * height)
    c0, c1 = round(left * width), round(right * width)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"crop box {box} is empty at size {height}x{width}")
    return r0, c0, r1, c1


def box_mask(box: Box, size: int, *, device=None, dtype=torch.float32) -> Tensor:
    """A ``(1, 1, size, size)`` mask that is 1 inside the fractional box (e.g. :data:`DEFAULT_NOSTRIL_BOX`)."""
    r0, c0, r1, c1 = box_pixels(box, size, size)
    m = torch.zeros(1, 1, size, size, device=device, dtype=dtype)
    m[..., r0:r1, c0:c1] = 1.0
    return m


def uv_crops(uv: Tensor, *, centre: Box = DEFAULT_CENTRE_CROP, side: Box = DEFAULT_SIDE_CROP) -> dict[str, Tensor]:
    """Crop a UV image into seed 001's partial UV patches (UV_ctr, UV_left, UV_right -> UV_sd).

    Args:
        uv: ``(B, C, S, S)`` UV images (or masks: crops of masks line up with crops of images).
        centre: centre box ``(top, left, bottom, right)`` as fractions of ``S``.
        side: the *left* side box (image left, small u); the right box is its mirror,
            columns ``[S - c1, S - c0)``.

    Returns:
        ``"centre"``: ``(B, C, hc, wc)`` the centre crop.
        ``"left"``: ``(B, C, hs, ws)`` the left crop.
        ``"right"``: ``(B, C, hs, ws)`` the right crop, mirrored (flipped along width) so it looks
        like a left side.
        ``"side"``: ``(2B, C, hs, ws)`` = ``cat([left, right], 0)``: both sides for one discriminator.
        For a left-right mirrored input, ``left`` and ``right`` swap (and so do the halves of ``side``).
    """
    if uv.dim() != 4:
        raise ValueError(f"uv_crops: expected (B, C, S, S), got {tuple(uv.shape)}")
    h, w = uv.shape[2:]
    r0, c0, r1, c1 = box_pixels(centre, h, w)
    out = {"centre": uv[..., r0:r1, c0:c1]}
    r0, c0, r1, c1 = box_pixels(side, h, w)
    left = uv[..., r0:r1, c0:c1]
    right = uv[..., r0:r1, w - c1:w - c0].flip(-1)
    out.update(left=left, right=right, side=torch.cat([left, right], dim=0))
    return out


def masked_nose(uv: Tensor, nose_mask: Tensor) -> Tensor:
    """Blank the nose region before the partial-UV discriminators (seed 001 §3.2.2: the fitted nose
    shape is inaccurate, so the nostrils of UV_ctr and the nose of UV_sd are masked).

    Args:
        uv: ``(B, C, S, S)`` UV images.
        nose_mask: ``(1 or B, 1, S, S)`` in ``[0, 1]``, 1 on the nose.

    Returns:
        ``uv * (1 - nose_mask)``: same shape, zero on the nose.
    """
    return uv * (1.0 - nose_mask.to(uv.dtype))
