"""UV-space utilities: the rasterized layout of a face model and per-texel interpolation.

A :class:`UVLayout` is computed once per (model, size) and cached: for every texel it knows which
model triangle covers it and the barycentrics of the texel centre, so any per-vertex quantity
(screen position, normal, model position) becomes a UV map by one gather and a weighted sum.
Texel ``(i, j)`` sits at ``u = (j + 0.5) / S``, ``v = 1 - (i + 0.5) / S`` (v up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from stages.core.face_model import FaceModel


@dataclass(frozen=True)
class UVLayout:
    """The face model's triangles rasterized into an ``S x S`` UV image.

    Attributes:
        size: ``S``.
        triangle_id: ``(S, S)`` int32 model triangle per texel, -1 outside the layout.
        bary: ``(S, S, 3)`` float32 barycentrics of each texel centre in its triangle.
        mask: ``(S, S)`` bool, texels covered by the layout.

    Because the layout is symmetric under ``u -> 1 - u`` and texel centres sit at
    ``(j + 0.5) / S``, a texel's mirror partner is exactly column ``S - 1 - j`` of the same row.
    """

    size: int
    triangle_id: np.ndarray
    bary: np.ndarray
    mask: np.ndarray
    #: ``(S*S, V)`` sparse barycentric weights: ``uv_map.reshape(S*S, C) = weights @ per_vertex``.
    weights: sp.csr_matrix = field(repr=False, default=None)

    def interpolate(self, per_vertex: np.ndarray) -> np.ndarray:
        """Per-vertex ``(V, C)`` values of the layout's model -> ``(S, S, C)`` float32 UV map (zeros outside)."""
        values = np.asarray(per_vertex, dtype=np.float64)
        out = self.weights @ values.reshape(values.shape[0], -1)
        return out.reshape(self.size, self.size, *values.shape[1:]).astype(np.float32)

    def mirror(self, uv_image: np.ndarray) -> np.ndarray:
        """The left-right mirror of a UV map (the layout is symmetric under ``u -> 1 - u``)."""
        return uv_image[:, ::-1]


@lru_cache(maxsize=8)
def _layout_cached(model_key: tuple, size: int, uv_bytes: bytes, tri_bytes: bytes) -> UVLayout:
    from stages.core.raster import rasterize_uv

    uv = np.frombuffer(uv_bytes, dtype=np.float32).reshape(-1, 2)
    tris = np.frombuffer(tri_bytes, dtype=np.int32).reshape(-1, 3)
    frags = rasterize_uv(uv, tris, size)
    mask = frags.triangle_id >= 0
    texel = np.flatnonzero(mask.ravel())
    corners = tris[frags.triangle_id.ravel()[texel]]                          # (T, 3)
    weights = sp.csr_matrix((frags.bary.reshape(-1, 3)[texel].ravel().astype(np.float64),
                             (np.repeat(texel, 3), corners.ravel())), shape=(size * size, len(uv)))
    layout = UVLayout(size=size, triangle_id=frags.triangle_id, bary=frags.bary.astype(np.float32),
                      mask=mask, weights=weights)
    for arr in (layout.triangle_id, layout.bary, layout.mask):
        arr.setflags(write=False)
    return layout


def uv_layout(model: FaceModel, size: int) -> UVLayout:
    """Rasterized UV layout of ``model`` at ``size x size`` (cached per model and size)."""
    uv = np.ascontiguousarray(model.uv, dtype=np.float32)
    tris = np.ascontiguousarray(model.triangles, dtype=np.int32)
    return _layout_cached((model.name, model.n_vertices, model.n_triangles), int(size),
                          uv.tobytes(), tris.tobytes())
