"""Tests for stages.core.raster (numba z-buffer rasterizer)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.raster import (
    Fragments,
    rasterize,
    rasterize_reference,
    rasterize_uv,
    signed_area,
)

H, W = 48, 64


def _random_mesh(rng, n_tris=50, n_verts=70, margin=8.0):
    verts = np.empty((n_verts, 3))
    verts[:, 0] = rng.uniform(-margin, W + margin, n_verts)
    verts[:, 1] = rng.uniform(-margin, H + margin, n_verts)
    verts[:, 2] = rng.uniform(0.0, 10.0, n_verts)
    tris = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_tris)])
    return verts, tris


def _grid_mesh(n_x, n_y, width, height, *, rng=None, snap=None):
    xs = np.linspace(0.0, width, n_x + 1)
    ys = np.linspace(0.0, height, n_y + 1)
    gx, gy = np.meshgrid(xs, ys)
    verts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    if rng is not None:
        inner = ((gx > 0) & (gx < width) & (gy > 0) & (gy < height)).ravel()
        verts[inner, :2] += rng.uniform(-0.4, 0.4, (inner.sum(), 2)) * (width / n_x)
    if snap is not None:
        verts[:, :2] = np.round(verts[:, :2] / snap) * snap
    idx = np.arange((n_x + 1) * (n_y + 1)).reshape(n_y + 1, n_x + 1)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    return verts, tris


def _coverage_count(verts, tris, height, width):
    count = np.zeros((height, width), dtype=np.int64)
    for t in tris:
        count += rasterize(verts, t[None], height, width).mask
    return count


def _pixel_centres(height, width):
    py, px = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return px, py


# --------------------------------------------------------------------------------------------


def test_output_types_and_empty():
    frags = rasterize(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), H, W)
    assert isinstance(frags, Fragments)
    assert frags.triangle_id.shape == (H, W) and frags.triangle_id.dtype == np.int32
    assert frags.bary.shape == (H, W, 3) and frags.bary.dtype == np.float32
    assert frags.depth.shape == (H, W) and frags.depth.dtype == np.float32
    assert not frags.mask.any()
    assert np.isinf(frags.depth).all() and (frags.bary == 0).all()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cull", [False, True])
def test_matches_bruteforce_reference(seed, cull):
    rng = np.random.default_rng(seed)
    verts, tris = _random_mesh(rng)
    got = rasterize(verts, tris, H, W, cull_backfaces=cull)
    ref = rasterize_reference(verts, tris, H, W, cull_backfaces=cull)
    assert got.mask.sum() > 100  # overlapping, non-trivial scene
    np.testing.assert_array_equal(got.triangle_id, ref.triangle_id)
    np.testing.assert_allclose(got.bary, ref.bary, atol=1e-6)
    np.testing.assert_allclose(got.depth, ref.depth, atol=1e-5)
    # empty pixels carry the documented fill values
    empty = ~got.mask
    assert np.isinf(got.depth[empty]).all() and (got.bary[empty] == 0).all()


@pytest.mark.parametrize("cull", [False, True])
def test_without_barycentrics_same_ids_and_depths(cull):
    """``barycentrics=False`` (the unwrap's z-buffer) leaves ``bary`` out and changes nothing else."""
    rng = np.random.default_rng(5)
    verts, tris = _random_mesh(rng)
    full = rasterize(verts, tris, H, W, cull_backfaces=cull)
    lean = rasterize(verts, tris, H, W, cull_backfaces=cull, barycentrics=False)
    assert lean.bary is None and full.mask.sum() > 100
    np.testing.assert_array_equal(lean.triangle_id, full.triangle_id)
    np.testing.assert_array_equal(lean.depth, full.depth)


def test_matches_reference_on_snapped_mesh_with_edges_through_centres():
    # Coordinates on a 0.5 lattice: many edges and vertices pass exactly through pixel centres.
    rng = np.random.default_rng(11)
    verts, tris = _random_mesh(rng, n_tris=40, n_verts=30)
    verts[:, :2] = np.round(verts[:, :2] * 2) / 2
    got = rasterize(verts, tris, H, W)
    ref = rasterize_reference(verts, tris, H, W)
    np.testing.assert_array_equal(got.triangle_id, ref.triangle_id)


def test_two_triangle_square_covers_every_pixel_once():
    # square image: the diagonal passes exactly through pixel centres
    s = 32
    verts = np.array([[0, 0, 0], [s, 0, 0], [s, s, 0], [0, s, 0]], dtype=np.float64)
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    count = _coverage_count(verts, tris, s, s)
    np.testing.assert_array_equal(count, 1)
    frags = rasterize(verts, tris, s, s)
    assert frags.mask.all()
    # top-left rule: centres on the diagonal belong to the triangle to the right of it
    diag = np.arange(s)
    assert (frags.triangle_id[diag, diag] == 0).all()


@pytest.mark.parametrize("snap", [None, 0.5, 0.25])
def test_watertight_grid_no_cracks_no_double_coverage(snap):
    rng = np.random.default_rng(3)
    verts, tris = _grid_mesh(9, 7, 30.0, 24.0, rng=rng, snap=snap)
    count = _coverage_count(verts, tris, 24, 30)
    np.testing.assert_array_equal(count, 1)


def test_fan_around_a_pixel_centre_vertex_covers_once():
    # 12 triangles sharing a vertex exactly on a pixel centre, spokes through pixel centres
    c = np.array([10.5, 10.5])
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    rim = c + np.round(8 * np.stack([np.cos(angles), np.sin(angles)], 1))
    verts = np.concatenate([[c], rim])
    verts = np.concatenate([verts, np.zeros((len(verts), 1))], axis=1)
    tris = np.array([[0, 1 + k, 1 + (k + 1) % 12] for k in range(12)])
    count = _coverage_count(verts, tris, 21, 21)
    assert count.max() == 1
    assert count[10, 10] == 1  # the shared vertex itself
    # every pixel centre strictly inside the rim polygon is covered
    assert count[6:15, 6:15].min() == 1


def test_depth_test_picks_nearer_triangle():
    verts = np.array([
        [2, 2, 5.0], [30, 2, 5.0], [2, 30, 5.0],      # far triangle
        [4, 4, 1.0], [28, 4, 1.0], [4, 28, 1.0],      # near triangle
    ])
    for tris in (np.array([[0, 1, 2], [3, 4, 5]]), np.array([[3, 4, 5], [0, 1, 2]])):
        frags = rasterize(verts, tris, 32, 32)
        near_id = int(np.nonzero((tris == 3).any(1))[0][0])
        inside_near = (rasterize(verts, tris[near_id][None], 32, 32).mask)
        assert inside_near.sum() > 50
        assert (frags.triangle_id[inside_near] == near_id).all()
        np.testing.assert_allclose(frags.depth[inside_near], 1.0, atol=1e-6)
        only_far = frags.mask & ~inside_near
        assert only_far.any()
        np.testing.assert_allclose(frags.depth[only_far], 5.0, atol=1e-6)


def test_sloped_depth_interpolation_and_crossing():
    # two triangles crossing in depth: each is nearer on one side
    verts = np.array([
        [0, 0, 0.0], [32, 0, 10.0], [0, 32, 0.0],
        [0, 0, 10.0], [32, 0, 0.0], [0, 32, 10.0],
    ])
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, tris, 32, 32)
    px, _ = _pixel_centres(32, 32)
    m = frags.mask
    z_a = px * 10.0 / 32.0
    z_b = 10.0 - z_a
    np.testing.assert_allclose(frags.depth[m], np.minimum(z_a, z_b)[m], atol=1e-4)
    left = m & (px < 15)
    right = m & (px > 17)
    assert (frags.triangle_id[left] == 0).all() and (frags.triangle_id[right] == 1).all()


def test_barycentrics_reproduce_pixel_centre():
    rng = np.random.default_rng(5)
    verts, tris = _random_mesh(rng)
    frags = rasterize(verts, tris, H, W)
    m = frags.mask
    px, py = _pixel_centres(H, W)
    tri_v = verts[tris[frags.triangle_id[m]]]  # (N, 3, 3)
    recon = (frags.bary[m][..., None].astype(np.float64) * tri_v).sum(1)
    np.testing.assert_allclose(recon[:, 0], px[m], atol=1e-3)
    np.testing.assert_allclose(recon[:, 1], py[m], atol=1e-3)
    np.testing.assert_allclose(recon[:, 2], frags.depth[m], atol=1e-4)
    np.testing.assert_allclose(frags.bary[m].sum(-1), 1.0, atol=1e-5)
    assert (frags.bary[m] >= -1e-6).all()


def test_offscreen_degenerate_and_nan_triangles_do_not_crash():
    verts = np.array([
        [-100, -100, 0], [-50, -100, 0], [-100, -50, 0],       # fully off-screen
        [-1e6, -1e6, 0], [1e6, -1e6, 0], [0, 1e6, 0],          # huge, covers everything
        [5, 5, 0], [10, 10, 0], [15, 15, 0],                   # collinear (zero area)
        [np.nan, 1, 0], [3, 3, 0], [1, 9, 0],                  # NaN vertex
        [1, 1, np.inf], [20, 1, 0], [1, 20, 0],                # inf depth
        [3, 3, 0], [3, 3, 0], [3, 3, 0],                       # single point
        [60, 40, -1], [80, 40, -1], [60, 60, -1],              # partly off-screen
    ], dtype=np.float64)
    tris = np.arange(len(verts)).reshape(-1, 3)
    frags = rasterize(verts, tris, H, W)
    ref = rasterize_reference(verts, tris, H, W)
    np.testing.assert_array_equal(frags.triangle_id, ref.triangle_id)
    assert set(np.unique(frags.triangle_id)) == {1, 6}
    assert frags.mask.all()
    assert (frags.triangle_id[40:, 60:] == 6).all()
    # degenerate alone: nothing drawn; out-of-range index: skipped
    assert not rasterize(verts, tris[[2, 5]], H, W).mask.any()
    assert not rasterize(verts, np.array([[0, 1, 999]]), H, W).mask.any()


def test_backface_culling_removes_exactly_clockwise_triangles():
    rng = np.random.default_rng(9)
    # non-overlapping triangles on a grid of cells, random winding
    verts, tris = [], []
    expected_front = []
    for r in range(4):
        for c in range(6):
            x0, y0 = c * 10 + 1, r * 11 + 1
            p = np.array([[x0, y0, 0], [x0 + 8, y0, 0], [x0, y0 + 9, 0]], dtype=np.float64)
            # (x0,y0) -> (x0+8,y0) -> (x0,y0+9) is clockwise on screen (y down): back face
            if rng.random() < 0.5:
                p = p[[0, 2, 1]]
                expected_front.append(True)
            else:
                expected_front.append(False)
            tris.append(np.arange(3) + len(verts) * 3)
            verts.append(p)
    verts = np.concatenate(verts)
    tris = np.array(tris)
    expected_front = np.array(expected_front)
    assert ((signed_area(verts, tris) < 0) == expected_front).all()
    all_ = rasterize(verts, tris, H, W)
    culled = rasterize(verts, tris, H, W, cull_backfaces=True)
    ids_all = set(np.unique(all_.triangle_id)) - {-1}
    ids_culled = set(np.unique(culled.triangle_id)) - {-1}
    assert ids_all == set(range(len(tris)))
    assert ids_culled == set(np.nonzero(expected_front)[0].tolist())
    keep = np.isin(all_.triangle_id, list(ids_culled))
    np.testing.assert_array_equal(culled.triangle_id, np.where(keep, all_.triangle_id, -1))


def test_front_face_convention_matches_camera_projection():
    # A model-space triangle that is counter-clockwise seen from +z (normal towards camera),
    # projected as x_img = x, y_img = -y (see CONVENTIONS.md), must be kept by culling.
    model = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float64)
    scr = np.stack([10 + 20 * model[:, 0], 30 - 20 * model[:, 1], -model[:, 2]], 1)
    tri = np.array([[0, 1, 2]])
    assert signed_area(scr, tri)[0] < 0
    assert rasterize(scr, tri, 32, 32, cull_backfaces=True).mask.sum() > 100


def test_rasterize_uv_covers_unit_square():
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    tris = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise in UV (v up)
    s = 16
    frags = rasterize_uv(uv, tris, s)
    assert frags.mask.all()
    np.testing.assert_array_equal(_coverage_count(
        np.stack([uv[:, 0] * s, (1 - uv[:, 1]) * s, np.zeros(4)], 1), tris, s, s), 1)
    # barycentrics reproduce the texel-centre UV: u=(j+.5)/S, v=1-(i+.5)/S
    uv_pix = (frags.bary[..., None].astype(np.float64) * uv[tris[frags.triangle_id]]).sum(-2)
    jj, ii = np.meshgrid(np.arange(s), np.arange(s))
    np.testing.assert_allclose(uv_pix[..., 0], (jj + 0.5) / s, atol=1e-6)
    np.testing.assert_allclose(uv_pix[..., 1], 1 - (ii + 0.5) / s, atol=1e-6)
    # CCW in UV stays CCW on screen: kept by culling
    assert rasterize_uv(uv, tris, s, cull_backfaces=True).mask.all()
    # half-covered layout; (H, W) size
    half = rasterize_uv(uv * [0.5, 1.0], tris, (8, 12))
    assert half.triangle_id.shape == (8, 12)
    assert half.mask[:, :6].all() and not half.mask[:, 6:].any()


def test_bigger_mesh_matches_reference():
    rng = np.random.default_rng(21)
    verts, tris = _grid_mesh(12, 10, 64.0, 48.0, rng=rng)
    verts[:, 2] = rng.uniform(0, 1, len(verts))
    got = rasterize(verts, tris, H, W)
    ref = rasterize_reference(verts, tris, H, W)
    np.testing.assert_array_equal(got.triangle_id, ref.triangle_id)
    assert got.mask.all()


def test_pytorch3d_parity():
    pytest.importorskip("pytorch3d")
    from stages.core.raster import rasterize_pytorch3d

    rng = np.random.default_rng(1)
    verts, tris = _random_mesh(rng, n_tris=30)
    ours = rasterize(verts, tris, H, W, backend="numba")
    theirs = rasterize_pytorch3d(verts, tris, H, W)
    # no top-left rule in pytorch3d: allow a handful of edge pixels to differ
    agree = ours.triangle_id == theirs.triangle_id
    assert agree.mean() > 0.98
    both = agree & ours.mask
    np.testing.assert_allclose(ours.bary[both], theirs.bary[both], atol=1e-3)
    np.testing.assert_allclose(ours.depth[both], theirs.depth[both], atol=1e-3)


def test_backend_selection(monkeypatch):
    from stages.core.raster import default_backend

    monkeypatch.setenv("FACETEX_RASTERIZER", "numba")
    assert default_backend() == "numba"
    # Unset: numba, whether or not pytorch3d is importable (never an import side effect).
    monkeypatch.delenv("FACETEX_RASTERIZER")
    assert default_backend() == "numba"
    import importlib.util

    if importlib.util.find_spec("pytorch3d") is None:
        monkeypatch.setenv("FACETEX_RASTERIZER", "pytorch3d")
        with pytest.raises(ValueError, match="not installed"):
            default_backend()
    monkeypatch.setenv("FACETEX_RASTERIZER", "auto")
    with pytest.raises(ValueError, match="FACETEX_RASTERIZER"):
        default_backend()
    monkeypatch.setenv("FACETEX_RASTERIZER", "opengl")
    with pytest.raises(ValueError, match="FACETEX_RASTERIZER"):
        default_backend()
