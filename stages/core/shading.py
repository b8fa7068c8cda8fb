"""Differentiable deferred shading in pure PyTorch (CPU or CUDA, batched).

Visibility (which triangle covers which pixel) comes from the numba rasterizer
(:func:`stages.core.raster.rasterize`) and is not differentiable; everything after it is:
barycentrics are recomputed from the vertex positions (:func:`barycentrics_from_ids`), so
gradients flow to vertices, UVs, normals, the texture and the lighting.

Conventions (see ``docs/CONVENTIONS.md``):

- **Screen space.** ``verts_screen`` ``(..., V, 3)``: ``x, y`` continuous pixel coordinates, x
  right, y down, pixel ``(row i, col j)`` centre at ``(j + 0.5, i + 0.5)``; ``z`` depth (smaller
  is closer). Barycentrics are those of the pixel centres w.r.t. the triangle's vertices in order.
- **Images** are ``(B, C, H, W)``; per-pixel buffers (ids, barycentrics, interpolated
  attributes) are channels-last ``(B, H, W, ...)``.
- **UV** ``(u, v)`` in ``[0, 1]``, u right, **v up**. A texture ``(B, C, S, S)`` stores texel
  ``(row i, col j)`` at ``u = (j + 0.5) / S, v = 1 - (i + 0.5) / S``. Sampling uses
  ``grid_sample(align_corners=False, mode='bilinear', padding_mode='border')`` with
  ``gx = 2u - 1, gy = 1 - 2v``.
- **Lighting.** Real 2nd-order spherical harmonics, 9 coefficients per channel, order and
  constants in :func:`sh_basis`. Shading of a unit normal ``n`` is ``sh_basis(n) @ coeffs``;
  ambient light of level ``L`` is ``coeffs[0] = L / Y00`` (:func:`ambient_sh`). Normals must be
  expressed in the same frame as the coefficients (for facetex: camera space, x right, y up,
  z towards the camera).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stages.core.lighting import SH_C0, SH_C1, SH_C2, SH_C3, SH_C4, sh_terms  # noqa: E402

__all__ = [
    "SH_C0",
    "SH_C1",
    "SH_C2",
    "SH_C3",
    "SH_C4",
    "ambient_sh",
    "barycentrics_from_ids",
    "interpolate",
    "pixel_centres",
    "rasterize_and_render",
    "rasterize_batch",
    "render",
    "sample_texture",
    "sh_basis",
    "sh_shading",
]

# The SH constants and terms are stages.core.lighting's (one basis, numpy and torch).


# --------------------------------------------------------------------------------------------
# spherical harmonics
# --------------------------------------------------------------------------------------------


def sh_basis(normals: Tensor) -> Tensor:
    """Real 2nd-order spherical-harmonics basis (orthonormal over the unit sphere).

    Order (index: function)::

        0: Y00  = 0.282095
        1: Y1-1 = 0.488603 * y
        2: Y10  = 0.488603 * z
        3: Y11  = 0.488603 * x
        4: Y2-2 = 1.092548 * x * y
        5: Y2-1 = 1.092548 * y * z
        6: Y20  = 0.315392 * (3 z^2 - 1)
        7: Y21  = 1.092548 * x * z
        8: Y22  = 0.546274 * (x^2 - y^2)

    (constants at full double precision, see ``SH_C0..SH_C4``). This is the order used by
    ``stages.core.lighting.sh_basis_np``.

    Args:
        normals: ``(..., 3)`` unit normals ``(x, y, z)``. They are not renormalised here
            (``3 z^2 - 1`` assumes unit length).

    Returns:
        ``(..., 9)`` basis values, same dtype and device as ``normals``.
    """
    x, y, z = normals.unbind(-1)
    return torch.stack(sh_terms(x, y, z, torch.ones_like(x)), dim=-1)


def sh_shading(normals: Tensor, coeffs: Tensor) -> Tensor:
    """Shading ``sh_basis(normals) @ coeffs``.

    Args:
        normals: ``(..., 3)`` unit normals, e.g. ``(B, H, W, 3)`` or ``(N, 3)``.
        coeffs: ``(9, C)`` shared coefficients, or ``(*L, 9, C)`` with leading dims ``L``
            aligned to the *leading* dims of ``normals`` (batch first), e.g. normals
            ``(B, H, W, 3)`` with coeffs ``(B, 9, 3)``. Usually ``C = 3`` (RGB).

    Returns:
        ``(..., C)`` shading, where ``...`` are the leading dims of ``normals``.
    """
    basis = sh_basis(normals)  # (..., 9)
    if coeffs.shape[-2] != 9:
        raise ValueError(f"coeffs must be (..., 9, C), got {tuple(coeffs.shape)}")
    if coeffs.dim() == 2:
        return basis @ coeffs.to(basis.dtype)
    lead = coeffs.shape[:-2]
    n_extra = basis.dim() - 1 - len(lead)
    if n_extra < 0:
        raise ValueError(f"coeffs {tuple(coeffs.shape)} has more leading dims than normals "
                         f"{tuple(normals.shape)}")
    c = coeffs.reshape(*lead, *([1] * n_extra), 9, coeffs.shape[-1]).to(basis.dtype)
    return (basis.unsqueeze(-1) * c).sum(-2)


def ambient_sh(level: float = 1.0, channels: int = 3, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
    """SH coefficients of a pure ambient light: shading equals ``level`` for every normal.

    Args:
        level: the constant shading value.
        channels: number of colour channels ``C``.
        dtype: tensor dtype.
        device: tensor device.

    Returns:
        ``(9, C)`` coefficients with ``coeffs[0] = level / Y00`` and zeros elsewhere.
    """
    coeffs = torch.zeros(9, channels, dtype=dtype, device=device)
    coeffs[0] = level / SH_C0
    return coeffs


# --------------------------------------------------------------------------------------------
# deferred shading
# --------------------------------------------------------------------------------------------


def pixel_centres(height: int, width: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Continuous coordinates of the pixel centres.

    Returns:
        ``(px, py)``, each ``(H, W)``: ``px[i, j] = j + 0.5``, ``py[i, j] = i + 0.5``.
    """
    ys = torch.arange(height, dtype=dtype, device=device) + 0.5
    xs = torch.arange(width, dtype=dtype, device=device) + 0.5
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    return px, py


def _batch_ids(triangle_id: Tensor) -> Tensor:
    if triangle_id.dim() == 2:
        triangle_id = triangle_id.unsqueeze(0)
    if triangle_id.dim() != 3:
        raise ValueError(f"triangle_id must be (B, H, W) or (H, W), got {tuple(triangle_id.shape)}")
    return triangle_id.long()


def _gather_corners(attr: Tensor, triangles: Tensor, tid: Tensor) -> Tensor:
    """``attr`` (B, V, C), ``triangles`` (F, 3), ``tid`` (B, H, W) (>= 0) -> (B, H, W, 3, C)."""
    b, h, w = tid.shape
    c = attr.shape[-1]
    idx = triangles.to(device=tid.device, dtype=torch.long)[tid]  # (B, H, W, 3)
    flat = idx.reshape(b, h * w * 3, 1).expand(b, h * w * 3, c)
    return torch.gather(attr, 1, flat).reshape(b, h, w, 3, c)


def _broadcast_batch(x: Tensor, b: int, name: str) -> Tensor:
    if x.shape[0] == b:
        return x
    if x.shape[0] == 1:
        return x.expand(b, *x.shape[1:])
    raise ValueError(f"{name} has batch {x.shape[0]}, expected {b} or 1")


def barycentrics_from_ids(verts_screen: Tensor, triangles: Tensor, triangle_id: Tensor) -> Tensor:
    """Differentiable barycentrics of the pixel centres for given triangle ids.

    For each pixel ``(i, j)`` with ``triangle_id >= 0``, returns ``(w0, w1, w2)`` such that
    ``w0 * v0 + w1 * v1 + w2 * v2 = (j + 0.5, i + 0.5)`` (x, y of the triangle's vertices in
    order) and ``w0 + w1 + w2 = 1``; they match :class:`stages.core.raster.Fragments.bary` for
    the same vertices, and gradients flow to ``verts_screen`` (x, y only; z does not enter).

    Args:
        verts_screen: ``(B, V, 3)`` or ``(V, 3)`` (or ``(..., 2)``) screen-space vertices.
        triangles: ``(F, 3)`` integer vertex indices (shared by the batch).
        triangle_id: ``(B, H, W)`` or ``(H, W)`` integer ids, ``-1`` = empty.

    Returns:
        ``(B, H, W, 3)`` barycentrics (always batched; ``B = 1`` when both inputs are
        unbatched), dtype of ``verts_screen``; zeros where empty (and for a zero-area
        triangle).
    """
    tid = _batch_ids(triangle_id).to(verts_screen.device)
    verts = verts_screen if verts_screen.dim() == 3 else verts_screen.unsqueeze(0)
    b = max(tid.shape[0], verts.shape[0])
    tid = _broadcast_batch(tid, b, "triangle_id")
    verts = _broadcast_batch(verts, b, "verts_screen")
    _, h, w = tid.shape
    valid = tid >= 0
    corners = _gather_corners(verts[..., :2], triangles, tid.clamp(min=0))  # (B, H, W, 3, 2)
    x0, y0 = corners[..., 0, 0], corners[..., 0, 1]
    x1, y1 = corners[..., 1, 0], corners[..., 1, 1]
    x2, y2 = corners[..., 2, 0], corners[..., 2, 1]
    px, py = pixel_centres(h, w, dtype=verts.dtype, device=verts.device)
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    ok = valid & (area2 != 0)
    safe = torch.where(ok, area2, torch.ones_like(area2))
    # edge k opposite vertex k; value / doubled area = barycentric of vertex k
    e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    bary = torch.stack([e0, e1, e2], dim=-1) / safe.unsqueeze(-1)
    return torch.where(ok.unsqueeze(-1), bary, torch.zeros_like(bary))


def interpolate(attr: Tensor, triangles: Tensor, triangle_id: Tensor, bary: Tensor) -> Tensor:
    """Interpolate per-vertex attributes at the pixels: ``sum_k bary_k * attr[tri[k]]``.

    Args:
        attr: ``(B, V, C)`` or ``(V, C)`` per-vertex attributes.
        triangles: ``(F, 3)`` integer vertex indices.
        triangle_id: ``(B, H, W)`` or ``(H, W)`` ids, ``-1`` = empty.
        bary: ``(B, H, W, 3)`` barycentrics (e.g. from :func:`barycentrics_from_ids`).

    Returns:
        ``(B, H, W, C)``, zeros where empty.
    """
    tid = _batch_ids(triangle_id).to(attr.device)
    a = attr if attr.dim() == 3 else attr.unsqueeze(0)
    if bary.dim() == 3:
        bary = bary.unsqueeze(0)
    b = max(tid.shape[0], a.shape[0], bary.shape[0])
    tid = _broadcast_batch(tid, b, "triangle_id")
    a = _broadcast_batch(a, b, "attr")
    bary = _broadcast_batch(bary, b, "bary")
    corners = _gather_corners(a, triangles, tid.clamp(min=0))  # (B, H, W, 3, C)
    out = (corners * bary.unsqueeze(-1).to(corners.dtype)).sum(-2)
    return torch.where((tid >= 0).unsqueeze(-1), out, torch.zeros_like(out))


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear texture lookup at UV coordinates (v up).

    Uses ``grid_sample(align_corners=False, mode='bilinear', padding_mode='border')`` with
    ``gx = 2u - 1, gy = 1 - 2v``: texel ``(row i, col j)`` of an ``Ht x Wt`` texture is
    returned exactly at ``u = (j + 0.5) / Wt, v = 1 - (i + 0.5) / Ht``.

    Args:
        texture: ``(B, C, Ht, Wt)`` (or ``(C, Ht, Wt)``; batch 1 broadcasts).
        uv: ``(B, H, W, 2)`` (or ``(H, W, 2)``) UV coordinates.

    Returns:
        ``(B, C, H, W)`` sampled values.
    """
    if texture.dim() == 3:
        texture = texture.unsqueeze(0)
    if uv.dim() == 3:
        uv = uv.unsqueeze(0)
    b = max(texture.shape[0], uv.shape[0])
    texture = _broadcast_batch(texture, b, "texture")
    uv = _broadcast_batch(uv, b, "uv")
    uv = uv.to(texture.dtype)
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1)
    return F.grid_sample(texture, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def render(verts_screen: Tensor, triangles: Tensor, vert_uv: Tensor, texture: Tensor,
           triangle_id: Tensor, *, vert_normals: Tensor | None = None,
           sh_coeffs: Tensor | None = None,
           background: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
    """Deferred textured (and optionally SH-shaded) rendering for given visibility.

    ``image = mask * texture(uv) * shading(n) + (1 - mask) * background`` where ``uv`` and
    ``n`` (renormalised) are interpolated with barycentrics recomputed from ``verts_screen``
    (:func:`barycentrics_from_ids`), so the result is differentiable w.r.t. vertex positions,
    UVs, normals, texture and SH coefficients; visibility (``triangle_id``) is fixed.

    Args:
        verts_screen: ``(B, V, 3)`` (or ``(V, 3)``) screen-space vertices (x right, y down,
            pixel centres at +0.5; z depth, unused here).
        triangles: ``(F, 3)`` integer vertex indices.
        vert_uv: ``(V, 2)`` or ``(B, V, 2)`` per-vertex UVs (v up).
        texture: ``(B, C, Ht, Wt)`` texture (batch 1 broadcasts).
        triangle_id: ``(B, H, W)`` (or ``(H, W)``) visible triangle per pixel, ``-1`` empty,
            e.g. ``torch.from_numpy(raster.rasterize(...).triangle_id)``.
        vert_normals: ``(B, V, 3)`` or ``(V, 3)`` per-vertex normals in the SH frame;
            required when ``sh_coeffs`` is given.
        sh_coeffs: ``(B, 9, C')`` or ``(9, C')`` SH lighting (``C'`` = ``C`` or 1), or None
            for no shading (shading = 1).
        background: scalar, or tensor broadcastable to ``(B, C, H, W)``; a 1-D tensor of
            length ``C`` is a per-channel colour.

    Returns:
        ``(image, mask)``: ``(B, C, H, W)`` and ``(B, 1, H, W)`` (float, 1 where covered).
    """
    tid = _batch_ids(triangle_id).to(texture.device)
    bary = barycentrics_from_ids(verts_screen, triangles, tid)  # (B, H, W, 3)
    b = bary.shape[0]
    tid = _broadcast_batch(tid, b, "triangle_id")
    uv = interpolate(vert_uv, triangles, tid, bary)  # (B, H, W, 2)
    color = sample_texture(texture, uv)  # (B, C, H, W)
    if color.shape[0] != b:
        b = color.shape[0]
        tid = _broadcast_batch(tid, b, "triangle_id")
    if sh_coeffs is not None:
        if vert_normals is None:
            raise ValueError("sh_coeffs given without vert_normals")
        n = interpolate(vert_normals, triangles, tid, bary)
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        shade = sh_shading(n, sh_coeffs).permute(0, 3, 1, 2)  # (B, C', H, W)
        color = color * shade.to(color.dtype)
    mask = (tid >= 0).unsqueeze(1).to(color.dtype)
    if isinstance(background, Tensor):
        bg = background.to(device=color.device, dtype=color.dtype)
        if bg.dim() == 1:
            bg = bg.view(1, -1, 1, 1)
    else:
        bg = float(background)
    image = color * mask + (1.0 - mask) * bg
    return image, mask


def rasterize_batch(verts_screen: Tensor, triangles: Tensor, height: int, width: int, *,
                    cull_backfaces: bool = False) -> Tensor:
    """Run the numba rasterizer (:func:`stages.core.raster.rasterize`) on each batch item.

    Args:
        verts_screen: ``(B, V, 3)`` or ``(V, 3)`` screen-space vertices (detached for this).
        triangles: ``(F, 3)`` integer vertex indices.
        height: image height.
        width: image width.
        cull_backfaces: drop triangles clockwise on screen (see ``raster.rasterize``).

    Returns:
        ``(B, H, W)`` long triangle ids (-1 empty) on ``verts_screen.device``.
    """
    from stages.core import raster

    verts = verts_screen if verts_screen.dim() == 3 else verts_screen.unsqueeze(0)
    v_np = verts.detach().to("cpu", torch.float64).numpy()
    t_np = triangles.detach().cpu().numpy() if isinstance(triangles, Tensor) else \
        np.asarray(triangles)
    ids = [raster.rasterize(v, t_np, height, width, cull_backfaces=cull_backfaces).triangle_id
           for v in v_np]
    return torch.from_numpy(np.stack(ids)).long().to(verts_screen.device)


def rasterize_and_render(verts_screen: Tensor, triangles: Tensor, vert_uv: Tensor,
                         texture: Tensor, height: int, width: int, *,
                         vert_normals: Tensor | None = None, sh_coeffs: Tensor | None = None,
                         background: float | Tensor = 0.0,
                         cull_backfaces: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Convenience: :func:`rasterize_batch` then :func:`render`.

    Args:
        verts_screen: ``(B, V, 3)`` or ``(V, 3)`` screen-space vertices.
        triangles: ``(F, 3)`` integer vertex indices.
        vert_uv, texture, vert_normals, sh_coeffs, background: as :func:`render`.
        height: image height ``H``.
        width: image width ``W``.
        cull_backfaces: as :func:`stages.core.raster.rasterize`.

    Returns:
        ``(image, mask, triangle_id)``: ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` long.
    """
    triangles = torch.as_tensor(triangles, dtype=torch.long, device=verts_screen.device)
    tid = rasterize_batch(verts_screen, triangles, height, width, cull_backfaces=cull_backfaces)
    image, mask = render(verts_screen, triangles, vert_uv, texture, tid,
                         vert_normals=vert_normals, sh_coeffs=sh_coeffs, background=background)
    return image, mask, tid
