"""Masked Laplacian-pyramid L1 (Bojanowski et al. 2018): the project's perceptual term that needs no
downloaded network. Used by the detail VAE's training (:mod:`stages.train.detail_vae`) and by the texture
GAN's inversion (:mod:`stages.completion.gan`); in ``core`` so inference can use it without importing
``stages.train``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def laplacian_pyramid_l1(pred: Tensor, target: Tensor, weight: Tensor, levels: int = 4) -> Tensor:
    """Masked Laplacian-pyramid L1 (Bojanowski et al. 2018): ``sum_j 2**j * mean|L_j(w (pred - target))|
    / mean(w_j)`` over the band-pass levels ``L_j`` of the masked error (2x2 average pooling per level,
    nearest upsampling back), the last level the low-pass rest. ``(B, 1, S, S)`` tensors."""
    error = (pred - target) * weight
    w = weight
    total = pred.new_zeros(())
    for level in range(levels):
        last = level == levels - 1 or min(error.shape[-2:]) < 2
        if last:
            band = error
        else:
            low = F.avg_pool2d(error, 2)
            band = error - F.interpolate(low, size=error.shape[-2:], mode="nearest")
        total = total + (2.0 ** level) * band.abs().mean() / w.mean().clamp_min(1e-6)
        if last:
            break
        error, w = low, F.avg_pool2d(w, 2)
    return total
