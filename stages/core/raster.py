"""Z-buffer triangle rasterizer (numba, CPU) with an exact top-left fill rule.

Conventions (see ``docs/CONVENTIONS.md``):

- **Screen space.** Vertices are ``(V, 3)``: ``x, y`` are continuous pixel coordinates with x to
  the right and y *down*; the image covers ``[0, W] x [0, H]`` and the centre of pixel
  ``(row i, col j)`` is ``(j + 0.5, i + 0.5)``. ``z`` is depth, **smaller is closer**.
- **Coverage.** A pixel is covered by a triangle when its centre lies inside it. Centres lying
  exactly on an edge follow the *top-left rule*: they belong to the triangle whose interior is to
  the right of the edge (a "left" edge) or, for a horizontal edge, below it (a "top" edge, y
  down). This is the same as sampling at the centre nudged by an infinitesimal ``(+e, +e^2)``,
  so two triangles sharing an edge (with bitwise identical end points) cover each centre on it
  exactly once: no cracks, no double coverage. Edge functions are evaluated in float64 from a
  canonical ordering of the edge's end points, so both triangles see bitwise opposite values.
- **Depth.** Depth is interpolated linearly in screen space (correct for the scaled orthographic
  camera). The nearest triangle wins; on an exact depth tie the lower triangle id wins.
- **Barycentrics** ``(w0, w1, w2)`` are those of the pixel centre w.r.t. the triangle's vertices
  in the order given in ``triangles``: ``centre = w0 * v0 + w1 * v1 + w2 * v2`` (in x, y) and
  ``w0 + w1 + w2 = 1``.
- **Winding / culling.** The signed area of a triangle in image coordinates is
  ``A = 0.5 * ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))`` (with y pointing down).
  A front-facing triangle is counter-clockwise as *seen in the image* (i.e. counter-clockwise in
  a y-up view, the OBJ convention for faces whose normal points to the camera): that is
  ``A < 0``. Clockwise triangles on screen have ``A > 0`` and are removed when
  ``cull_backfaces=True``. Zero-area triangles are never drawn.
- **UV space.** :func:`rasterize_uv` maps ``(u, v)`` (v up) to ``x = u * S, y = (1 - v) * S``.

Triangles with a non-finite vertex coordinate are skipped; triangles partly or fully outside the
image are clipped to it.
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit

__all__ = [
    "Fragments",
    "rasterize",
    "rasterize_pytorch3d",
    "rasterize_reference",
    "rasterize_uv",
    "signed_area",
]


@dataclass
class Fragments:
    """Per-pixel output of the rasterizer.

    Attributes:
        triangle_id: ``(H, W)`` int32, index into ``triangles`` of the visible triangle, ``-1``
            where no triangle covers the pixel centre.
        bary: ``(H, W, 3)`` float32 barycentrics of the pixel centre w.r.t. the visible
            triangle's three vertices in order (``0`` where empty); None when rasterized with
            ``barycentrics=False``.
        depth: ``(H, W)`` float32 interpolated depth (smaller = closer), ``+inf`` where empty.
    """

    triangle_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool, True where a triangle covers the pixel."""
        return self.triangle_id >= 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.triangle_id.shape


def signed_area(verts_screen: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed area of each triangle in image coordinates (y down).

    ``A = 0.5 * ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))``. Negative for front faces
    (counter-clockwise as seen in the image), positive for back faces (clockwise on screen).

    Args:
        verts_screen: ``(V, 2+)`` screen-space vertices (only x, y are used).
        triangles: ``(F, 3)`` integer vertex indices.

    Returns:
        ``(F,)`` float64 signed areas in square pixels.
    """
    v = np.asarray(verts_screen, dtype=np.float64)[:, :2]
    t = np.asarray(triangles, dtype=np.int64)
    p0, p1, p2 = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    return 0.5 * ((p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1])
                  - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1]))


# --------------------------------------------------------------------------------------------
# numba kernel
# --------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _canonical_edge(px, py, qx, qy):
    """Edge P->Q in canonical form: returns (ax, ay, bx, by, s) with a < b in (y, x) order and
    ``s = +1`` when the traversal P->Q is a->b, ``-1`` otherwise."""
    if py < qy or (py == qy and px < qx):
        return px, py, qx, qy, 1.0
    return qx, qy, px, py, -1.0


@njit(cache=True, inline="always")
def _is_top_left(px, py, qx, qy, sgn):
    """Whether edge P->Q (of a triangle whose doubled signed area has sign ``sgn``) owns the
    pixel centres lying exactly on it. The inward normal of the edge is
    ``sgn * (-(qy - py), qx - px)``; the edge owns its centres when that normal points right,
    or straight down (y down) for a horizontal edge."""
    nx = -sgn * (qy - py)
    ny = sgn * (qx - px)
    return nx > 0.0 or (nx == 0.0 and ny > 0.0)


@njit(cache=True, nogil=True)
def _rasterize_kernel(row_lo, row_hi, verts, tris, height, width, cull, tri_id, bary, depth, with_bary):
    """Rasterize every triangle into image rows ``row_lo <= i < row_hi`` only (a band: bands are
    independent, each pixel sees the triangles in the same order, so any split gives the same
    image). ``bary`` is written only ``with_bary``."""
    zbuf = np.full((row_hi - row_lo, width), np.inf)
    n_tris = tris.shape[0]
    n_verts = verts.shape[0]
    for f in range(n_tris):
        i0 = tris[f, 0]
        i1 = tris[f, 1]
        i2 = tris[f, 2]
        if i0 < 0 or i1 < 0 or i2 < 0 or i0 >= n_verts or i1 >= n_verts or i2 >= n_verts:
            continue
        x0 = verts[i0, 0]
        y0 = verts[i0, 1]
        z0 = verts[i0, 2]
        x1 = verts[i1, 0]
        y1 = verts[i1, 1]
        z1 = verts[i1, 2]
        x2 = verts[i2, 0]
        y2 = verts[i2, 1]
        z2 = verts[i2, 2]
        # non-finite check (NaN or inf): x - x is NaN for both
        s = (x0 - x0) + (y0 - y0) + (z0 - z0) + (x1 - x1) + (y1 - y1) + (z1 - z1) \
            + (x2 - x2) + (y2 - y2) + (z2 - z2)
        if s != 0.0:
            continue
        area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area2 == 0.0:
            continue
        if cull and area2 > 0.0:
            continue
        sgn = 1.0 if area2 > 0.0 else -1.0

        # bounding box of pixel centres (j + 0.5 in [xmin, xmax]), clipped to the image
        xmin = min(x0, min(x1, x2))
        xmax = max(x0, max(x1, x2))
        ymin = min(y0, min(y1, y2))
        ymax = max(y0, max(y1, y2))
        jlo = max(np.ceil(xmin - 0.5), 0.0)
        jhi = min(np.floor(xmax - 0.5), width - 1.0)
        ilo = max(np.ceil(ymin - 0.5), float(row_lo))
        ihi = min(np.floor(ymax - 0.5), row_hi - 1.0)
        if jlo > jhi or ilo > ihi:
            continue

        # edge k is opposite vertex k: e0 = v1->v2, e1 = v2->v0, e2 = v0->v1
        a0x, a0y, b0x, b0y, s0 = _canonical_edge(x1, y1, x2, y2)
        a1x, a1y, b1x, b1y, s1 = _canonical_edge(x2, y2, x0, y0)
        a2x, a2y, b2x, b2y, s2 = _canonical_edge(x0, y0, x1, y1)
        d0x = b0x - a0x
        d0y = b0y - a0y
        d1x = b1x - a1x
        d1y = b1y - a1y
        d2x = b2x - a2x
        d2y = b2y - a2y
        tl0 = _is_top_left(x1, y1, x2, y2, sgn)
        tl1 = _is_top_left(x2, y2, x0, y0, sgn)
        tl2 = _is_top_left(x0, y0, x1, y1, sgn)
        # oriented + inside-positive multipliers
        o0 = s0 * sgn
        o1 = s1 * sgn
        o2 = s2 * sgn

        for i in range(int(ilo), int(ihi) + 1):
            py = i + 0.5
            r0 = d0x * (py - a0y)
            r1 = d1x * (py - a1y)
            r2 = d2x * (py - a2y)
            for j in range(int(jlo), int(jhi) + 1):
                px = j + 0.5
                e0 = o0 * (r0 - d0y * (px - a0x))
                if e0 < 0.0 or (e0 == 0.0 and not tl0):
                    continue
                e1 = o1 * (r1 - d1y * (px - a1x))
                if e1 < 0.0 or (e1 == 0.0 and not tl1):
                    continue
                e2 = o2 * (r2 - d2y * (px - a2x))
                if e2 < 0.0 or (e2 == 0.0 and not tl2):
                    continue
                # inside: barycentrics = oriented edge value / doubled signed area
                w0 = (sgn * e0) / area2
                w1 = (sgn * e1) / area2
                w2 = (sgn * e2) / area2
                z = w0 * z0 + w1 * z1 + w2 * z2
                if z < zbuf[i - row_lo, j]:
                    zbuf[i - row_lo, j] = z
                    tri_id[i, j] = f
                    if with_bary:
                        bary[i, j, 0] = w0
                        bary[i, j, 1] = w1
                        bary[i, j, 2] = w2
                    depth[i, j] = z


#: Below this many items (rows, texels) per thread a kernel runs in the calling thread.
MIN_SPLIT = 64
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (owning process id, threads, pool)


def kernel_threads() -> int:
    """Threads :func:`run_split` uses: numba's thread count (``NUMBA_NUM_THREADS``, default the
    CPU count; the batch runner lowers it per worker, also through ``numba.set_num_threads``).

    Read without starting numba's threading layer: ``numba.get_num_threads()`` starts it, and its
    OpenMP layer then raises the calling thread's OpenMP thread count, torch's included.
    """
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        return numba.get_num_threads()
    return int(numba.config.NUMBA_NUM_THREADS)


def run_split(kernel, n: int, *args, min_part: int = MIN_SPLIT) -> None:
    """Run ``kernel(lo, hi, *args)`` over ``[0, n)`` cut into :func:`kernel_threads` parts, one
    thread each.

    ``kernel`` is a ``nogil`` numba function whose parts write disjoint outputs, so the result
    does not depend on the split. Plain threads rather than numba's ``parallel=True``: callable
    from any thread (numba's workqueue layer is not thread-safe), no threading layer to start,
    and a process forked after a run gets its own pool.
    """
    global _pool
    parts = max(1, min(kernel_threads(), n // max(1, min_part)))
    if parts == 1:
        kernel(0, n, *args)
        return
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < parts:
        _pool = (os.getpid(), parts, ThreadPoolExecutor(max_workers=parts, thread_name_prefix="facetex-kernel"))
    bounds = np.linspace(0, n, parts + 1).round().astype(np.int64)
    futures = [_pool[2].submit(kernel, int(lo), int(hi), *args) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    for future in futures:
        future.result()


def _prepare(verts_screen, triangles, height, width):
    verts = np.ascontiguousarray(np.asarray(verts_screen, dtype=np.float64))
    tris = np.ascontiguousarray(np.asarray(triangles, dtype=np.int64))
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts_screen must be (V, 3), got {verts.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        if tris.size == 0:
            tris = tris.reshape(0, 3)
        else:
            raise ValueError(f"triangles must be (F, 3), got {tris.shape}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return verts, tris, height, width


def _empty(height, width, barycentrics=True):
    return Fragments(
        triangle_id=np.full((height, width), -1, dtype=np.int32),
        bary=np.zeros((height, width, 3), dtype=np.float32) if barycentrics else None,
        depth=np.full((height, width), np.inf, dtype=np.float32),
    )


def default_backend() -> str:
    """The rasterizer :func:`rasterize` uses: ``$FACETEX_RASTERIZER`` (``numba`` or ``pytorch3d``),
    ``numba`` when unset. An explicit choice, never a side effect of pytorch3d being importable:
    the exact mirror symmetry of the UV layout relies on the numba kernel's top-left pixel rule."""
    choice = os.environ.get("FACETEX_RASTERIZER", "numba").strip().lower() or "numba"
    if choice not in ("numba", "pytorch3d"):
        raise ValueError(f"FACETEX_RASTERIZER must be numba or pytorch3d, got {choice!r}")
    if choice == "pytorch3d" and importlib.util.find_spec("pytorch3d") is None:
        raise ValueError("FACETEX_RASTERIZER=pytorch3d but pytorch3d is not installed")
    return choice


def rasterize(verts_screen: np.ndarray, triangles: np.ndarray, height: int, width: int, *,
              cull_backfaces: bool = False, backend: str | None = None, barycentrics: bool = True) -> Fragments:
    """Rasterize a triangle mesh given in screen space with a z-buffer.

    The numba kernel (single thread, CPU) is the reference and the default; ``backend="pytorch3d"``
    (or ``FACETEX_RASTERIZER=pytorch3d``, see :func:`default_backend`) routes to
    :func:`rasterize_pytorch3d`, which gives the same fragments up to pixels exactly on shared
    edges (pytorch3d has no top-left rule).

    Args:
        verts_screen: ``(V, 3)`` float vertices: ``x, y`` continuous pixel coordinates (x right,
            y down, pixel ``(i, j)`` centre at ``(j + 0.5, i + 0.5)``), ``z`` depth (smaller is
            closer).
        triangles: ``(F, 3)`` integer vertex indices. Triangles with an out-of-range index,
            a non-finite vertex or zero area are skipped.
        height: image height ``H`` in pixels.
        width: image width ``W`` in pixels.
        cull_backfaces: drop triangles that are clockwise on screen, i.e. with signed area
            ``0.5 * ((x1-x0)(y2-y0) - (x2-x0)(y1-y0)) > 0`` in image coordinates (y down).
            Front faces (counter-clockwise as seen in the image = CCW in a y-up view) have a
            negative signed area and are kept. See :func:`signed_area`.
        barycentrics: False leaves ``bary`` out (None): a third less work for a z-buffer that
            needs only triangle ids and depths (the same ids and depths).

    Returns:
        :class:`Fragments` with ``triangle_id`` ``(H, W)`` int32 (-1 empty), ``bary``
        ``(H, W, 3)`` float32 and ``depth`` ``(H, W)`` float32 (+inf empty). Coverage follows
        the top-left fill rule (see the module docstring); the nearest triangle wins and exact
        depth ties go to the lower triangle id.
    """
    if (backend or default_backend()) == "pytorch3d":
        return rasterize_pytorch3d(verts_screen, triangles, height, width, cull_backfaces=cull_backfaces)
    verts, tris, height, width = _prepare(verts_screen, triangles, height, width)
    out = _empty(height, width, barycentrics)
    if tris.shape[0] == 0:
        return out
    run_split(_rasterize_kernel, height, verts, tris, height, width, bool(cull_backfaces),
              out.triangle_id, np.zeros((1, 1, 3), np.float32) if out.bary is None else out.bary, out.depth,
              barycentrics)
    return out


def rasterize_uv(uv: np.ndarray, triangles: np.ndarray, size: int | tuple[int, int], *,
                 cull_backfaces: bool = False) -> Fragments:
    """Rasterize a mesh in UV space (e.g. to find which triangle owns each texel).

    ``(u, v)`` with v up is mapped to screen ``x = u * W, y = (1 - v) * H, z = 0`` so texel
    ``(row i, col j)`` of an ``S x S`` UV image is sampled at ``u = (j + 0.5) / S``,
    ``v = 1 - (i + 0.5) / S``. In a valid (non-overlapping) layout every texel centre is covered
    by at most one triangle; where triangles overlap, the lower triangle id wins (all depths
    are 0).

    Args:
        uv: ``(V, 2)`` float UV coordinates in ``[0, 1]`` (v up).
        triangles: ``(F, 3)`` integer indices into ``uv``.
        size: ``S`` for a square ``S x S`` UV image, or ``(H, W)``.
        cull_backfaces: passed to :func:`rasterize`. Note that a triangle which is
            counter-clockwise in UV (v up) is counter-clockwise in the image too (kept).

    Returns:
        :class:`Fragments` of shape ``(H, W)``; ``bary`` are barycentrics of the texel centres.
    """
    if isinstance(size, (tuple, list)):
        h, w = int(size[0]), int(size[1])
    else:
        h = w = int(size)
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (V, 2), got {uv.shape}")
    verts = np.stack([uv[:, 0] * w, (1.0 - uv[:, 1]) * h, np.zeros(len(uv))], axis=1)
    return rasterize(verts, triangles, h, w, cull_backfaces=cull_backfaces)


# --------------------------------------------------------------------------------------------
# brute-force reference (tests only)
# --------------------------------------------------------------------------------------------


def rasterize_reference(verts_screen: np.ndarray, triangles: np.ndarray, height: int,
                        width: int, *, cull_backfaces: bool = False) -> Fragments:
    """Slow brute-force twin of :func:`rasterize` (numpy), for tests.

    Tests every triangle against every pixel centre of the image (no bounding boxes), in
    triangle order, with the same float64 edge functions, fill rule and depth test as
    :func:`rasterize`, so the triangle ids must agree exactly.

    Args and returns: as :func:`rasterize`.
    """
    verts, tris, height, width = _prepare(verts_screen, triangles, height, width)
    out = _empty(height, width)
    zbuf = np.full((height, width), np.inf)
    px = np.arange(width, dtype=np.float64)[None, :] + 0.5
    py = np.arange(height, dtype=np.float64)[:, None] + 0.5
    px = np.broadcast_to(px, (height, width))
    py = np.broadcast_to(py, (height, width))
    n_verts = len(verts)
    for f, (i0, i1, i2) in enumerate(tris):
        if min(i0, i1, i2) < 0 or max(i0, i1, i2) >= n_verts:
            continue
        p = verts[[i0, i1, i2]]
        if not np.all(np.isfinite(p)):
            continue
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = p
        area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area2 == 0.0 or (cull_backfaces and area2 > 0.0):
            continue
        sgn = 1.0 if area2 > 0.0 else -1.0
        inside = np.ones((height, width), dtype=bool)
        oriented = []
        for (ptx, pty), (qtx, qty) in (((x1, y1), (x2, y2)), ((x2, y2), (x0, y0)),
                                       ((x0, y0), (x1, y1))):
            # canonical end-point order: smaller (y, x) first
            if pty < qty or (pty == qty and ptx < qtx):
                ax, ay, bx, by, s = ptx, pty, qtx, qty, 1.0
            else:
                ax, ay, bx, by, s = qtx, qty, ptx, pty, -1.0
            e = (s * sgn) * ((bx - ax) * (py - ay) - (by - ay) * (px - ax))
            nx, ny = -sgn * (qty - pty), sgn * (qtx - ptx)
            top_left = nx > 0.0 or (nx == 0.0 and ny > 0.0)
            inside &= (e > 0.0) | ((e == 0.0) & top_left)
            oriented.append(sgn * e)
        w = [o / area2 for o in oriented]
        z = w[0] * z0 + w[1] * z1 + w[2] * z2
        win = inside & (z < zbuf)
        zbuf[win] = z[win]
        out.triangle_id[win] = f
        for k in range(3):
            out.bary[..., k][win] = w[k][win]
        out.depth[win] = z[win]
    return out


# --------------------------------------------------------------------------------------------
# optional pytorch3d path
# --------------------------------------------------------------------------------------------


def rasterize_pytorch3d(verts_screen: np.ndarray, triangles: np.ndarray, height: int,
                        width: int, *, cull_backfaces: bool = False,
                        device: str | None = None) -> Fragments:
    """Same as :func:`rasterize` but through ``pytorch3d.renderer.mesh.rasterize_meshes``.

    Only available when pytorch3d is installed (raises ``ImportError`` otherwise). Conversion:
    pytorch3d's NDC has +x *left*, +y *up* and the shorter image side spanning ``[-1, 1]``;
    its pixel ``(i, j)`` (row 0 at the top of the output) has its centre at
    ``x_ndc = (W - 2 * (j + 0.5)) / min(H, W)``, ``y_ndc = (H - 2 * (i + 0.5)) / min(H, W)``,
    so our continuous ``(x, y)`` maps to ``((W - 2x) / m, (H - 2y) / m)``. That map is a
    rotation by 180 degrees (no mirror), so the winding is preserved. Culling is done here
    (by :func:`signed_area`) rather than by pytorch3d. pytorch3d drops faces behind the
    camera (z < 0), so depth is shifted to be positive and shifted back afterwards.
    pytorch3d does not implement the top-left rule, so pixel centres exactly on a shared edge
    may differ from :func:`rasterize`.
    """
    import torch
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    verts, tris, height, width = _prepare(verts_screen, triangles, height, width)
    keep = np.isfinite(verts[tris]).all(axis=(1, 2)) & (signed_area(verts, tris) != 0.0)
    if cull_backfaces:
        keep &= signed_area(verts, tris) < 0.0
    kept = np.nonzero(keep)[0]
    out = _empty(height, width)
    if len(kept) == 0:
        return out
    m = float(min(height, width))
    finite = np.isfinite(verts).all(axis=1)
    zmin = verts[finite, 2].min() if finite.any() else 0.0
    offset = 1.0 - zmin
    ndc = np.stack([(width - 2.0 * verts[:, 0]) / m, (height - 2.0 * verts[:, 1]) / m,
                    verts[:, 2] + offset], axis=1)
    ndc = np.nan_to_num(ndc)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mesh = Meshes(verts=[torch.as_tensor(ndc, dtype=torch.float32, device=dev)],
                  faces=[torch.as_tensor(tris[kept], dtype=torch.int64, device=dev)])
    pix_to_face, zbuf, bary, _ = rasterize_meshes(
        mesh, image_size=(height, width), blur_radius=0.0, faces_per_pixel=1, bin_size=0,
        perspective_correct=False, clip_barycentric_coords=False, cull_backfaces=False)
    p2f = pix_to_face[0, ..., 0].cpu().numpy()
    hit = p2f >= 0
    out.triangle_id[hit] = kept[p2f[hit]].astype(np.int32)
    out.bary[hit] = bary[0, ..., 0, :].cpu().numpy()[hit]
    out.depth[hit] = (zbuf[0, ..., 0].cpu().numpy()[hit] - offset).astype(np.float32)
    return out


def crop_window(verts_screen: np.ndarray, height: int, width: int, margin: float = 2.0) -> tuple[int, int, int, int]:
    """Integer pixel window ``(x0, y0, x1, y1)`` holding the projected vertices plus ``margin``, clipped to the image.

    Rasterizing only this window (vertices shifted by ``(-x0, -y0)``) gives the same fragments as
    rasterizing the whole image, for a fraction of the memory and time when the mesh is small.
    """
    finite = verts_screen[np.isfinite(verts_screen[:, :2]).all(axis=1)]
    if len(finite) == 0:
        return 0, 0, 0, 0
    x0 = int(np.clip(np.floor(finite[:, 0].min() - margin), 0, width))
    y0 = int(np.clip(np.floor(finite[:, 1].min() - margin), 0, height))
    x1 = int(np.clip(np.ceil(finite[:, 0].max() + margin), x0, width))
    y1 = int(np.clip(np.ceil(finite[:, 1].max() + margin), y0, height))
    return x0, y0, x1, y1
