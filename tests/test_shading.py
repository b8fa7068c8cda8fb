"""Tests for stages.core.shading (differentiable deferred shading in torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.core import raster
from stages.core.shading import (
    SH_C0,
    ambient_sh,
    barycentrics_from_ids,
    interpolate,
    rasterize_and_render,
    rasterize_batch,
    render,
    sample_texture,
    sh_basis,
    sh_shading,
)


def _sphere_quadrature(n_z=8, n_phi=16):
    """Gauss-Legendre in z times uniform in phi: exact for polynomials of degree < 2 n_z."""
    z, wz = np.polynomial.legendre.leggauss(n_z)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz ** 2)
    pts = np.stack([r * np.cos(pp), r * np.sin(pp), zz], -1).reshape(-1, 3)
    w = (wz[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None]).reshape(-1)
    return torch.from_numpy(pts), torch.from_numpy(w)


def _random_unit(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=dtype)
    return v / v.norm(dim=-1, keepdim=True)


def _quad(width, height, z=0.0):
    """Screen quad covering [0, W] x [0, H]; UVs map it onto the whole unit square (v up)."""
    verts = torch.tensor([[0, 0, z], [width, 0, z], [width, height, z], [0, height, z]],
                         dtype=torch.float64)
    uv = torch.tensor([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=torch.float64)
    tris = torch.tensor([[0, 3, 2], [0, 2, 1]])  # counter-clockwise on screen (front)
    return verts, uv, tris


def _random_mesh(seed, n_tris=12, n_verts=14, height=10, width=12):
    rng = np.random.default_rng(seed)
    v = np.empty((n_verts, 3))
    v[:, 0] = rng.uniform(-2, width + 2, n_verts)
    v[:, 1] = rng.uniform(-2, height + 2, n_verts)
    v[:, 2] = rng.uniform(0, 1, n_verts)
    t = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_tris)])
    return torch.from_numpy(v), torch.from_numpy(t)


# --------------------------------------------------------------------------------------------
# spherical harmonics
# --------------------------------------------------------------------------------------------


def test_sh_basis_orthonormal_quadrature():
    pts, w = _sphere_quadrature()
    assert torch.isclose(w.sum(), torch.tensor(4 * np.pi, dtype=w.dtype))
    y = sh_basis(pts)  # (N, 9)
    gram = (y * w[:, None]).T @ y
    torch.testing.assert_close(gram, torch.eye(9, dtype=gram.dtype), atol=1e-10, rtol=0)


def test_sh_basis_orthonormal_monte_carlo():
    n = _random_unit(200_000, seed=1)
    y = sh_basis(n)
    gram = 4 * np.pi * (y.T @ y) / len(n)
    torch.testing.assert_close(gram, torch.eye(9, dtype=gram.dtype), atol=0.03, rtol=0)


def test_sh_basis_order_and_constants():
    y = sh_basis(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(y[0].numpy(), [0.282095, 0, 0.488603, 0, 0, 0, 0.630784, 0, 0],
                               atol=1e-6)
    np.testing.assert_allclose(y[1].numpy(), [0.282095, 0, 0, 0.488603, 0, 0, -0.315392, 0,
                                              0.546274], atol=1e-6)
    np.testing.assert_allclose(y[2].numpy(), [0.282095, 0.488603, 0, 0, 0, 0, -0.315392, 0,
                                              -0.546274], atol=1e-6)
    s = 1 / np.sqrt(3)
    y = sh_basis(torch.tensor([s, s, s], dtype=torch.float64))
    assert y.shape == (9,)
    np.testing.assert_allclose(y[[4, 5, 7]].numpy(), 1.092548 / 3, atol=1e-6)


def test_ambient_sh_constant_shading():
    n = _random_unit(1000, seed=2, dtype=torch.float32)
    for level in (1.0, 0.37):
        coeffs = ambient_sh(level)
        assert coeffs.shape == (9, 3)
        assert coeffs[0, 0].item() == pytest.approx(level / SH_C0, rel=1e-6)
        torch.testing.assert_close(sh_shading(n, coeffs), torch.full((1000, 3), level),
                                   atol=1e-6, rtol=0)
    # batched coefficients (B, 9, C) against (B, H, W, 3) normals
    normals = _random_unit(2 * 4 * 5, seed=3, dtype=torch.float32).reshape(2, 4, 5, 3)
    coeffs = torch.stack([ambient_sh(0.5), ambient_sh(2.0)])
    out = sh_shading(normals, coeffs)
    assert out.shape == (2, 4, 5, 3)
    torch.testing.assert_close(out[0], torch.full((4, 5, 3), 0.5))
    torch.testing.assert_close(out[1], torch.full((4, 5, 3), 2.0))


def test_sh_shading_matches_matmul():
    g = torch.Generator().manual_seed(0)
    n = _random_unit(50, seed=4)
    coeffs = torch.randn(9, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sh_shading(n, coeffs), sh_basis(n) @ coeffs)
    nb = n.reshape(2, 5, 5, 3)
    cb = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    out = sh_shading(nb, cb)
    torch.testing.assert_close(out[1], sh_basis(nb[1]) @ cb[1])


# --------------------------------------------------------------------------------------------
# barycentrics, interpolation, texture sampling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_barycentrics_from_ids_match_rasterizer(seed):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    verts = np.stack([rng.uniform(-5, w + 5, 60), rng.uniform(-5, h + 5, 60),
                      rng.uniform(0, 5, 60)], 1)
    tris = np.stack([rng.choice(60, 3, replace=False) for _ in range(50)])
    frags = raster.rasterize(verts, tris, h, w)
    tid = torch.from_numpy(frags.triangle_id).long()
    bary = barycentrics_from_ids(torch.from_numpy(verts), torch.from_numpy(tris), tid)
    assert bary.shape == (1, h, w, 3)
    np.testing.assert_allclose(bary[0].numpy(), frags.bary, atol=2e-5)
    assert (bary[0][~torch.from_numpy(frags.mask)] == 0).all()
    # batched: two different vertex sets with their own ids
    verts2 = verts.copy()
    verts2[:, 0] += 3.0
    frags2 = raster.rasterize(verts2, tris, h, w)
    vb = torch.from_numpy(np.stack([verts, verts2]))
    tb = torch.from_numpy(np.stack([frags.triangle_id, frags2.triangle_id])).long()
    bb = barycentrics_from_ids(vb, torch.from_numpy(tris), tb)
    np.testing.assert_allclose(bb[1].numpy(), frags2.bary, atol=2e-5)
    # interpolating the vertex positions gives back the pixel centres (and the z-buffer depth)
    pos = interpolate(vb, torch.from_numpy(tris), tb, bb)
    m = tb[1] >= 0
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    np.testing.assert_allclose(pos[1, ..., 0][m].numpy(), jj[m.numpy()], atol=1e-9)
    np.testing.assert_allclose(pos[1, ..., 1][m].numpy(), ii[m.numpy()], atol=1e-9)
    np.testing.assert_allclose(pos[1, ..., 2][m].numpy(), frags2.depth[m.numpy()], atol=1e-5)
    assert (pos[1][~m] == 0).all()


@pytest.mark.parametrize("shape", [(8, 8), (5, 7)])
def test_sample_texture_hits_texel_centres_exactly(shape):
    ht, wt = shape
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 3, ht, wt, generator=g)
    ii, jj = torch.meshgrid(torch.arange(ht), torch.arange(wt), indexing="ij")
    uv = torch.stack([(jj + 0.5) / wt, 1 - (ii + 0.5) / ht], -1).float()
    out = sample_texture(tex, uv.expand(2, ht, wt, 2))
    torch.testing.assert_close(out, tex, atol=1e-6, rtol=0)
    # v up: v close to 1 is row 0 (top); border padding outside [0, 1]
    corner = sample_texture(tex, torch.tensor([[[[0.0, 1.0], [-0.5, 2.0]]]]).expand(2, 1, 2, 2))
    torch.testing.assert_close(corner[:, :, 0, 0], tex[:, :, 0, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(corner[:, :, 0, 1], tex[:, :, 0, 0], atol=1e-6, rtol=0)
    # half-way between two horizontally adjacent texel centres: their mean
    mid = sample_texture(tex, torch.tensor([[[[1.0 / wt, 1 - 0.5 / ht]]]]).expand(2, 1, 1, 2))
    torch.testing.assert_close(mid[:, :, 0, 0], tex[:, :, 0, :2].mean(-1), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def test_flat_quad_reproduces_texture():
    s = 16
    verts, uv, tris = _quad(s, s)
    g = torch.Generator().manual_seed(5)
    tex = torch.rand(1, 3, s, s, generator=g, dtype=torch.float64)
    tid = rasterize_batch(verts, tris, s, s, cull_backfaces=True)
    assert (tid >= 0).all()
    image, mask = render(verts[None], tris, uv, tex, tid)
    assert image.shape == (1, 3, s, s) and mask.shape == (1, 1, s, s)
    assert (mask == 1).all()
    torch.testing.assert_close(image, tex, atol=1e-9, rtol=0)
    # with ambient SH of level 0.5 and flat normals
    normals = torch.tensor([[0.0, 0.0, 1.0]] * 4, dtype=torch.float64)
    image2, _ = render(verts[None], tris, uv, tex, tid, vert_normals=normals,
                       sh_coeffs=ambient_sh(0.5, dtype=torch.float64)[None])
    torch.testing.assert_close(image2, 0.5 * tex, atol=1e-9, rtol=0)


def test_render_background_and_partial_coverage():
    s = 16
    verts, uv, tris = _quad(8, 16)  # covers the left half of a 16x16 image
    tex = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    image, mask, tid = rasterize_and_render(verts[None], tris, uv, tex, s, s,
                                            background=torch.tensor([0.1, 0.2, 0.3]))
    assert (mask[0, 0, :, :8] == 1).all() and (mask[0, 0, :, 8:] == 0).all()
    assert (tid[0, :, 8:] == -1).all()
    expected_bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(image[0, :, :, 8:], expected_bg.expand(3, 16, 8))
    image_s, _, _ = rasterize_and_render(verts, tris, uv, tex, s, s, background=0.7)
    assert (image_s[0, :, :, 8:] == 0.7).all()


def test_sh_lighting_uses_normals():
    s = 8
    verts, uv, tris = _quad(s, s)
    tex = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    coeffs = torch.zeros(9, 3, dtype=torch.float64)
    coeffs[2] = 1.0  # Y10 (z) only
    normals = torch.tensor([[0.0, 0.0, 2.0]] * 4, dtype=torch.float64)  # renormalised inside
    tid = rasterize_batch(verts, tris, s, s)
    image, _ = render(verts, tris, uv, tex, tid, vert_normals=normals, sh_coeffs=coeffs)
    torch.testing.assert_close(image, torch.full_like(image, 0.488603), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        render(verts, tris, uv, tex, tid, sh_coeffs=coeffs)


def test_gradcheck_barycentrics_wrt_vertices():
    verts, tris = _random_mesh(0, n_tris=6, n_verts=9, height=6, width=7)
    tid = rasterize_batch(verts, tris, 6, 7)
    assert (tid >= 0).sum() > 5
    v = verts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: barycentrics_from_ids(x, tris, tid), (v,),
                                    eps=1e-6, atol=1e-5)


def test_gradcheck_render_wrt_texture_and_sh():
    h, w = 6, 7
    verts, tris = _random_mesh(1, n_tris=6, n_verts=9, height=h, width=w)
    g = torch.Generator().manual_seed(2)
    uv = torch.rand(9, 2, generator=g, dtype=torch.float64)
    normals = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    tex = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    sh = torch.randn(2, 9, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    vb = torch.stack([verts, verts + 0.3])
    tid = rasterize_batch(vb, tris, h, w)
    assert (tid >= 0).sum() > 10

    def f(t, c):
        return render(vb, tris, uv, t, tid, vert_normals=normals, sh_coeffs=c,
                      background=0.25)[0]

    assert torch.autograd.gradcheck(f, (tex, sh), eps=1e-6, atol=1e-5)


def test_gradcheck_render_wrt_vertices_uv_and_normals():
    h, w = 5, 6
    verts, tris = _random_mesh(3, n_tris=5, n_verts=8, height=h, width=w)
    g = torch.Generator().manual_seed(4)
    uv = torch.rand(8, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    normals = torch.randn(1, 8, 3, generator=g, dtype=torch.float64)
    tex = torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64)
    sh = torch.randn(9, 3, generator=g, dtype=torch.float64)
    tid = rasterize_batch(verts, tris, h, w)
    assert (tid >= 0).sum() > 5
    v = verts[None].clone().requires_grad_(True)
    uv = uv.requires_grad_(True)
    normals = normals.requires_grad_(True)

    def f(vv, uu, nn):
        return render(vv, tris, uu, tex, tid, vert_normals=nn, sh_coeffs=sh)[0]

    assert torch.autograd.gradcheck(f, (v, uv, normals), eps=1e-7, atol=1e-4)


def test_gradients_flow_and_are_finite_with_empty_pixels():
    s = 12
    verts, uv, tris = _quad(6, 6)
    v = verts.float()[None].requires_grad_(True)
    tex = torch.rand(1, 3, 8, 8, requires_grad=True)
    sh = ambient_sh(1.0)[None].clone().requires_grad_(True)
    normals = torch.tensor([[0.0, 0.0, 1.0]] * 4)
    image, mask, _ = rasterize_and_render(v, tris, uv.float(), tex, s, s,
                                          vert_normals=normals, sh_coeffs=sh)
    assert mask.mean() == 0.25
    (image * torch.linspace(0, 1, s)).sum().backward()
    for t in (v, tex, sh):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_render_cuda_matches_cpu():
    verts, tris = _random_mesh(5, height=16, width=16)
    uv = torch.rand(14, 2, dtype=torch.float64)
    tex = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    cpu, _, _ = rasterize_and_render(verts, tris, uv, tex, 16, 16)
    gpu, _, _ = rasterize_and_render(verts.cuda(), tris.cuda(), uv.cuda(), tex.cuda(), 16, 16)
    torch.testing.assert_close(gpu.cpu(), cpu)
