"""UV-space utilities: the rasterized layout of a face model and per-texel interpolation.

A :class:`UVLayout` is computed once per (model, size) and cached: for every texel it knows which
model triangle covers it and the barycentrics of the texel centre, so any per-vertex quantity
(screen position, normal, model position) becomes a UV map by one gather and a weighted sum over
the layout's texels only (a numba kernel; the empty part of the square is never visited).
Texel ``(i, j)`` sits at ``u = (j + 0.5) / S``, ``v = 1 - (i + 0.5) / S`` (v up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numba import njit

from stages.core.face_model import FaceModel
from stages.core.raster import run_split


@dataclass(frozen=True)
class UVLayout:
    """The face model's triangles rasterized into an ``S x S`` UV image.

    Attributes:
        size: ``S``.
        triangle_id: ``(S, S)`` int32 model triangle per texel, -1 outside the layout.
        bary: ``(S, S, 3)`` float32 barycentrics of each texel centre in its triangle.
        mask: ``(S, S)`` bool, texels covered by the layout.

    When the layout is symmetric under ``u -> 1 - u`` (the built-in model) and texel centres sit at
    ``(j + 0.5) / S``, a texel's mirror partner is exactly column ``S - 1 - j`` of the same row.
    Otherwise (``FaceModel.uv_symmetric`` False, e.g. the ICT head's two tiles) ``mirror_texel``
    holds each texel's partner, found in 3D: the texel's barycentrics applied to the mirror
    partners of its triangle's vertices give the mirrored surface point, whose UV names the texel.
    """

    size: int
    triangle_id: np.ndarray
    bary: np.ndarray
    mask: np.ndarray
    #: ``(T,)`` int64 flat index (``row * S + col``) of each of the ``T`` layout texels, ascending.
    texels: np.ndarray = field(repr=False, default=None)
    #: ``(T, 3)`` int32 vertices of each layout texel's triangle, ascending per row, and
    #: ``(T, 3)`` float32 the texel centre's barycentrics in that order:
    #: ``uv_map.flat[texels[t]] = sum_k corner_bary[t, k] * per_vertex[corners[t, k]]``.
    corners: np.ndarray = field(repr=False, default=None)
    corner_bary: np.ndarray = field(repr=False, default=None)
    #: ``(S*S,)`` int64 flat index of each texel's mirror partner (-1: none, outside the layout or
    #: mapped outside it), or None for a layout symmetric under ``u -> 1 - u``.
    mirror_texel: np.ndarray | None = field(repr=False, default=None)

    def interpolate(self, per_vertex: np.ndarray) -> np.ndarray:
        """Per-vertex ``(V, C)`` values of the layout's model -> ``(S, S, C)`` float32 UV map (zeros outside)."""
        values = np.asarray(per_vertex, dtype=np.float64)
        flat = np.ascontiguousarray(values.reshape(values.shape[0], -1))
        out = np.zeros((self.size * self.size, flat.shape[1]), dtype=np.float32)
        run_split(_interpolate_kernel, len(self.texels), self.texels, self.corners, self.corner_bary, flat, out,
                  min_part=4096)
        return out.reshape(self.size, self.size, *values.shape[1:])

    def mirror(self, uv_image: np.ndarray) -> np.ndarray:
        """The left-right mirror of a ``(S, S, ...)`` UV map: column flip for a symmetric layout,
        else a gather through ``mirror_texel`` (zeros where a texel has no partner)."""
        if self.mirror_texel is None:
            return uv_image[:, ::-1]
        flat = uv_image.reshape(self.size * self.size, *uv_image.shape[2:])
        ok = self.mirror_texel >= 0
        out = np.zeros_like(flat)
        out[ok] = flat[self.mirror_texel[ok]]
        return out.reshape(uv_image.shape)


@njit(cache=True, nogil=True)
def _interpolate_kernel(lo, hi, texels, corners, bary, values, out):
    """``out[texels[t], c] = sum_k bary[t, k] * values[corners[t, k], c]`` for ``lo <= t < hi``,
    summed in float64 in the corners' order (ascending vertex index, as a sparse matrix product
    would) and stored as ``out``'s dtype."""
    for t in range(lo, hi):
        row = texels[t]
        for c in range(values.shape[1]):
            acc = 0.0
            for k in range(3):
                acc += np.float64(bary[t, k]) * values[corners[t, k], c]
            out[row, c] = acc


def _texel_mirror(triangle_id: np.ndarray, bary: np.ndarray, uv: np.ndarray, tris: np.ndarray,
                  mirror_index: np.ndarray) -> np.ndarray:
    """``(S*S,)`` partner texel of every texel through the 3D vertex mirror (see :class:`UVLayout`)."""
    size = triangle_id.shape[0]
    flat_t = triangle_id.ravel()
    inside = np.flatnonzero(flat_t >= 0)
    corners = mirror_index[tris[flat_t[inside]]]                          # (T, 3) mirrored vertices
    p = (bary.reshape(-1, 3)[inside, :, None] * uv[corners]).sum(axis=1)  # (T, 2) mirrored uv
    col = np.floor(p[:, 0] * size).astype(np.int64)
    row = np.floor((1.0 - p[:, 1]) * size).astype(np.int64)
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    target = np.where(ok, row * size + col, 0)
    ok &= flat_t[target] >= 0
    out = np.full(size * size, -1, dtype=np.int64)
    out[inside[ok]] = target[ok]
    return out


@lru_cache(maxsize=8)
def _layout_cached(model_key: tuple, size: int, uv_bytes: bytes, tri_bytes: bytes,
                   mirror_bytes: bytes | None = None) -> UVLayout:
    from stages.core.raster import rasterize_uv

    uv = np.frombuffer(uv_bytes, dtype=np.float32).reshape(-1, 2)
    tris = np.frombuffer(tri_bytes, dtype=np.int32).reshape(-1, 3)
    frags = rasterize_uv(uv, tris, size)
    mask = frags.triangle_id >= 0
    texel = np.flatnonzero(mask.ravel())
    corners = tris[frags.triangle_id.ravel()[texel]]                          # (T, 3)
    order = np.argsort(corners, axis=1, kind="stable")
    corners = np.ascontiguousarray(np.take_along_axis(corners, order, axis=1), dtype=np.int32)
    corner_bary = np.ascontiguousarray(np.take_along_axis(frags.bary.reshape(-1, 3)[texel], order, axis=1),
                                       dtype=np.float32)
    mirror_texel = None
    if mirror_bytes is not None:
        mirror_texel = _texel_mirror(frags.triangle_id, frags.bary.astype(np.float64), uv.astype(np.float64),
                                     tris, np.frombuffer(mirror_bytes, dtype=np.int32))
    layout = UVLayout(size=size, triangle_id=frags.triangle_id, bary=frags.bary.astype(np.float32),
                      mask=mask, texels=texel.astype(np.int64), corners=corners, corner_bary=corner_bary,
                      mirror_texel=mirror_texel)
    for arr in (layout.triangle_id, layout.bary, layout.mask, layout.texels, layout.corners, layout.corner_bary) + (
            () if mirror_texel is None else (mirror_texel,)):
        arr.setflags(write=False)
    return layout


def uv_layout(model: FaceModel, size: int) -> UVLayout:
    """Rasterized UV layout of ``model`` at ``size x size`` (cached per model and size)."""
    uv = np.ascontiguousarray(model.uv, dtype=np.float32)
    tris = np.ascontiguousarray(model.triangles, dtype=np.int32)
    mirror = None if model.uv_symmetric else np.ascontiguousarray(model.mirror_index, dtype=np.int32).tobytes()
    return _layout_cached((model.name, model.n_vertices, model.n_triangles), int(size),
                          uv.tobytes(), tris.tobytes(), mirror)
