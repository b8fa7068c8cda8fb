"""Spherical-harmonics lighting estimated from the visible skin of a fitted face.

Model: a skin pixel's colour ``c`` (sRGB in [0, 1], treated as linear-in-shading for simplicity)
is ``c = sh_basis(n) @ L`` with ``L`` of shape ``(9, 3)``: the mean skin albedo is folded into
``L`` (albedo and light cannot be separated from one photo without an albedo prior). Dividing a
texture by ``sh_basis(n) @ L / mean_albedo`` therefore removes shading while keeping the colour;
see :func:`shading_normalised`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stages.core.face_model import FaceModel
    from stages.fit import FitResult

# The one real 2nd-order SH basis of facetex (numpy here, torch in stages.core.shading.sh_basis;
# both evaluate sh_terms), orthonormal over the unit sphere, constants at full double precision.
#: ``Y00 = 1 / (2 sqrt(pi))`` ~= 0.282095
SH_C0 = 0.5 / math.sqrt(math.pi)
#: ``sqrt(3 / (4 pi))`` ~= 0.488603 (l = 1)
SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))
#: ``0.5 sqrt(15 / pi)`` ~= 1.092548 (xy, yz, xz)
SH_C2 = 0.5 * math.sqrt(15.0 / math.pi)
#: ``0.25 sqrt(5 / pi)`` ~= 0.315392 (3z^2 - 1)
SH_C3 = 0.25 * math.sqrt(5.0 / math.pi)
#: ``0.25 sqrt(15 / pi)`` ~= 0.546274 (x^2 - y^2)
SH_C4 = 0.25 * math.sqrt(15.0 / math.pi)
_C0, _C1 = SH_C0, SH_C1  # the names stages.render and tests/test_unwrap_render.py read


def sh_terms(x, y, z, ones) -> list:
    """The 9 basis functions of unit-normal components ``x, y, z`` (numpy arrays or torch tensors;
    ``ones`` like ``x``), in the order ``Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy), Y2-1 (yz),
    Y20 (3z^2-1), Y21 (xz), Y22 (x^2-y^2)``."""
    return [SH_C0 * ones, SH_C1 * y, SH_C1 * z, SH_C1 * x,
            SH_C2 * x * y, SH_C2 * y * z, SH_C3 * (3.0 * z * z - 1.0), SH_C2 * x * z, SH_C4 * (x * x - y * y)]


def sh_basis_np(normals: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit normals -> ``(N, 9)`` (:func:`sh_terms`; torch: :func:`stages.core.shading.sh_basis`)."""
    x, y, z = normals[:, 0], normals[:, 1], normals[:, 2]
    return np.stack(sh_terms(x, y, z, np.ones_like(x)), axis=1)


def fit_sh_lighting(colors: np.ndarray, normals: np.ndarray, *, ridge: float = 1e-3,
                    outlier_sigma: float = 2.5) -> tuple[np.ndarray, dict]:
    """Least-squares SH lighting from skin samples, with one round of outlier rejection.

    Args:
        colors: ``(N, 3)`` RGB in ``[0, 1]`` of visible skin pixels.
        normals: ``(N, 3)`` unit camera-space normals (x right, y up, z to camera) at those pixels.
        ridge: Tikhonov weight on the first- and second-order coefficients (keeps the fit tame
            when the visible normals span a small cone, e.g. profiles).
        outlier_sigma: samples with residual above this many robust sigmas (hair, specular
            highlights, glasses) are dropped before the final fit.

    Returns:
        ``(coeffs, info)``: ``(9, 3)`` coefficients and ``{"samples", "inliers", "rms"}``.
    """
    if len(colors) < 30:
        raise ValueError(f"too few skin samples ({len(colors)}) to estimate lighting")
    basis = sh_basis_np(np.asarray(normals, dtype=np.float64))
    target = np.asarray(colors, dtype=np.float64)
    reg = np.full(9, ridge * len(basis))
    reg[0] = 0.0
    keep = np.ones(len(basis), dtype=bool)
    for _ in range(2):
        a = basis[keep]
        coeffs = np.linalg.solve(a.T @ a + np.diag(reg), a.T @ target[keep])
        resid = np.linalg.norm(basis @ coeffs - target, axis=1)
        sigma = 1.4826 * np.median(resid) + 1e-6
        keep = resid < outlier_sigma * sigma
    rms = float(np.sqrt(np.mean(resid[keep] ** 2)))
    return coeffs.astype(np.float32), {"samples": len(basis), "inliers": int(keep.sum()), "rms": rms}


def shading_normalised(normals: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Shading ``(N, 3)`` of the lighting divided by its ambient term, so its mean level is ~1.

    Dividing a photo texture by this removes the directional part of the light but keeps colour.
    """
    shade = sh_basis_np(normals) @ coeffs
    ambient = coeffs[0] * SH_C0
    return shade / np.maximum(ambient, 1e-6)


#: Shading never goes below this fraction of the ambient level when dividing by it (grazing or
#: back-facing texels would otherwise blow up).
MIN_SHADING = 0.15


def texel_normals(model: FaceModel, vertices: np.ndarray, rotation: np.ndarray, size: int) -> np.ndarray:
    """``(S, S, 3)`` float32 unit camera-space normal of every layout texel (zeros outside it)."""
    from stages.core.uv import uv_layout

    normals = np.asarray(model.vertex_normals(vertices), dtype=np.float64) @ np.asarray(rotation).T
    out = uv_layout(model, size).interpolate(normals)
    return out / (np.linalg.norm(out, axis=2, keepdims=True) + 1e-12)


def texel_shading(normals: np.ndarray, lighting: np.ndarray, *, normalise: bool = False) -> np.ndarray:
    """``(S, S, 3)`` SH shading ``sh_basis(n) @ L`` of a normal map, floored at :data:`MIN_SHADING`
    times the ambient level (``L[0] * Y00``) so it can be divided by.

    ``normalise``: divide by the ambient level (mean shading ~1: for ``fit.json``'s lighting, whose
    albedo is folded in, as ``--delight`` does)."""
    lighting = np.asarray(lighting, dtype=np.float64)
    shade = (sh_basis_np(normals.reshape(-1, 3).astype(np.float64)) @ lighting).reshape(normals.shape)
    ambient = np.maximum(lighting[0] * SH_C0, 1e-6)
    if normalise:
        shade, ambient = shade / ambient, np.ones(3)
    return np.maximum(shade, MIN_SHADING * ambient).astype(np.float32)


def fit_shading(model: FaceModel, fit: FitResult, size: int) -> np.ndarray:
    """``(S, S, 3)`` the shading of ``fit.json``'s light at every texel, normalised to its ambient level
    (that light has the mean albedo folded in; as ``--delight``), floored as :func:`texel_shading`."""
    return texel_shading(texel_normals(model, fit.vertices, fit.pose.rotation, size), fit.lighting, normalise=True)


def albedo_space_mirror(texture: np.ndarray, shading: np.ndarray, layout) -> np.ndarray:
    """``(S, S, 3)`` what each texel takes from its mirror partner, in albedo space: the partner's colour
    divided by the partner's shading, times this texel's shading (``layout.mirror(texture / shading) *
    shading``; ``layout``: the :class:`stages.core.uv.UVLayout`, whose ``mirror`` pairs texels through
    the 3D mirror on a layout that is not left-right symmetric). Under uniform light this is the plain
    mirror ``layout.mirror(texture)``."""
    albedo = np.asarray(texture, dtype=np.float32) / shading
    return np.clip(layout.mirror(albedo) * shading, 0.0, 1.0).astype(np.float32)
