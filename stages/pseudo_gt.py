"""``pseudo-gt``: the pseudo ground truth of the weakly supervised pipeline (seed 001, §3.2.1).

Three steps on one unwrap:

1. **PCA texture fit** (Eq. 8): ridge-regress the per-channel PCA coefficients to the visible
   texels (confidence-weighted, at the PCA model's resolution), giving a complete but smooth
   ``UV_pca`` (upsampled to the unwrap's size).
2. **Poisson blending** (Eq. 9): on the domain Ω of real texels, solve ``Δf = div v`` with ``v``
   the gradients of the real texture and ``f = UV_pca`` on ∂Ω: the photo's detail, shifted by a
   smooth field so it meets ``UV_pca`` without a seam.
3. **Symmetric fill** (Fig. 5h), "also based on Eq. 9": texels hidden in the photo whose mirror
   partner was seen join Ω with the mirrored gradients. Real and mirrored texels are separate
   guidance regions, so the lighting step between the two sides is never copied into the result.

Outputs: ``uv_pseudo.png``, ``uv_pseudo_provenance.png`` (green real, blue mirrored, orange
model), ``uv_pca.png`` and ``pseudo_gt.json``. 512^2 in well under a second (coarse Poisson solve
with the detail carried by the guidance, :func:`stages.core.poisson.poisson_fill_fast`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.core.atomic import write_json
from stages.core.image_io import save_png
from stages.core.poisson import poisson_fill_fast, pull_push_fill
from stages.core.provenance import (KEEP_CONFIDENCE, MIRRORED, MODEL, VISIBLE, provenance_image, provenance_map,
                                    seen_or_mirrored)
from stages.pca import AlbedoPCA, downsample_unwrap
from stages.unwrap import UnwrapResult

#: Ridge weight of Eq. 8 (on coefficients, per channel; the data term is a weighted mean).
DEFAULT_LAMBDA = 1e-2
#: Guidance region labels of the blend.
_REAL, _MIRROR = 1, 2


@dataclass
class PseudoGT:
    """Result of :func:`pseudo_ground_truth`.

    Attributes:
        texture: ``(S, S, 3)`` float32 complete texture (``UV_bl``), padded beyond the layout.
        uv_pca: ``(S, S, 3)`` float32 the PCA fit (``UV_pca``).
        provenance: ``(S, S)`` uint8 VISIBLE / MIRRORED / MODEL / OUTSIDE.
        coeffs: ``(C, K)`` the fitted PCA coefficients.
        info: fractions and settings.
    """

    texture: np.ndarray
    uv_pca: np.ndarray
    provenance: np.ndarray
    coeffs: np.ndarray
    info: dict

    def provenance_image(self) -> np.ndarray:
        return provenance_image(self.provenance)

    def save(self, out_dir: str | Path) -> list[Path]:
        out_dir = Path(out_dir)
        save_png(out_dir / "uv_pca.png", self.uv_pca)
        save_png(out_dir / "uv_pseudo_provenance.png", self.provenance_image())
        save_png(out_dir / "uv_pseudo.png", self.texture)
        write_json(out_dir / "pseudo_gt.json", {"schema": "facetex.pseudo_gt", "schema_version": 1, **self.info,
                                                "coefficients": np.round(self.coeffs, 5).tolist()})
        return [out_dir / n for n in ("uv_pseudo.png", "uv_pseudo_provenance.png", "uv_pca.png", "pseudo_gt.json")]


def pca_texture(unwrap: UnwrapResult, pca: AlbedoPCA, lam: float = DEFAULT_LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 8: the PCA texture that best explains the visible texels.

    Returns:
        ``(uv_pca (S, S, 3) float32 in [0, 1], coeffs (C, K))``; ``uv_pca`` is upsampled (bicubic)
        from the model's resolution and padded beyond the layout.
    """
    image, weights = downsample_unwrap(unwrap.texture, unwrap.confidence, pca.resolution)
    coeffs = pca.fit(image, weights, lam)
    low = pull_push_fill(pca.reconstruct(coeffs), pca.mask)
    size = unwrap.size
    full = cv2.resize(low.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(full, 0.0, 1.0), coeffs


def blend_into(uv_pca: np.ndarray, unwrap: UnwrapResult, *, mirror: bool = True,
               keep_confidence: float = KEEP_CONFIDENCE, solve_size: int | None = 128) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 9 with the symmetric fill: Poisson-blend the real (and mirrored) texels into ``uv_pca``.

    Args:
        uv_pca: ``(S, S, 3)`` complete base texture (Dirichlet values outside Ω).
        unwrap: the partial texture.
        mirror: also fill hidden texels from their seen mirror partners.
        keep_confidence: a seen texel keeps its own colour at or above this confidence, or when its
            partner was seen worse; otherwise the better-seen partner's colour is used.
        solve_size: coarse grid of the Poisson solve (None: exact).

    Returns:
        ``(texture (S, S, 3) float32, provenance (S, S) uint8)``.
    """
    layout = unwrap.layout_mask
    real, mirrored = seen_or_mirrored(unwrap.confidence, layout, mirror=mirror, keep_confidence=keep_confidence)
    guidance = np.where(real[..., None], unwrap.texture, unwrap.texture[:, ::-1])
    labels = np.where(real, _REAL, np.where(mirrored, _MIRROR, 0))
    # Ω = real ∪ mirrored; its boundary values come from UV_pca on the other layout texels. The
    # layout's own border is no boundary (no texture exists beyond it): no flux there. A part of Ω
    # that touches no UV_pca texel takes its mean level from UV_pca.
    fixed = layout & ~(real | mirrored)
    result = poisson_fill_fast(uv_pca, fixed, layout, guidance, labels, anchor=uv_pca, solve_size=solve_size)
    texture = pull_push_fill(np.clip(result, 0.0, 1.0), layout)
    provenance = provenance_map(layout, real, mirrored)
    return texture.astype(np.float32), provenance


def pseudo_ground_truth(unwrap: UnwrapResult, pca: AlbedoPCA, *, lam: float = DEFAULT_LAMBDA, mirror: bool = True,
                        solve_size: int | None = 128, pca_file: dict | None = None) -> PseudoGT:
    """PCA fit + Poisson blend + symmetric fill of one unwrap (seed 001's ``UV_bl``).

    ``pca_file``: which file ``pca`` was loaded from, as
    :func:`stages.core.checksums.model_file_record` gives it (``{"path", "sha256"}``); recorded in
    ``pseudo_gt.json`` (None when the caller built the model in memory)."""
    uv_pca, coeffs = pca_texture(unwrap, pca, lam)
    texture, provenance = blend_into(uv_pca, unwrap, mirror=mirror, solve_size=solve_size)
    n = max(1, int(unwrap.layout_mask.sum()))
    info = {"lambda": lam, "mirror": mirror, "pca_resolution": pca.resolution, "pca_components": pca.n_components,
            "pca_model_id": pca.model_id, "pca_file": pca_file,
            "visible_fraction": round(float((provenance == VISIBLE).sum()) / n, 4),
            "mirrored_fraction": round(float((provenance == MIRRORED).sum()) / n, 4),
            "model_fraction": round(float((provenance == MODEL).sum()) / n, 4)}
    return PseudoGT(texture=texture, uv_pca=uv_pca, provenance=provenance, coeffs=coeffs, info=info)
