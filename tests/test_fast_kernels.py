"""The fast paths of fit + unwrap equal the numpy formulations they replaced, bit for bit.

Each reference below is the replaced code, kept here (tests only) so a change to a kernel that
alters a result fails: texel visibility (numba pass over the layout texels), UV interpolation
(gather instead of a sparse matrix product), the silhouette erosion (distance transform + band
test instead of ``cv2.erode``), vertex normals (``np.bincount`` instead of ``np.add.at``), the
lighting samples, and the row/texel split across threads.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.sparse as sp

from stages.core.camera import Pose, euler_to_matrix
from stages.core.ict import load_face_model
from stages.core.raster import crop_window, rasterize
from stages.core.uv import uv_layout
from stages.unwrap import erode_ellipse, texel_visibility


def _sparse_interpolate(model, size: int, per_vertex: np.ndarray) -> np.ndarray:
    """The replaced ``UVLayout.interpolate``: a sparse ``(S*S, V)`` barycentric matrix product."""
    layout = uv_layout(model, size)
    texel = np.flatnonzero(layout.mask.ravel())
    corners = model.triangles[layout.triangle_id.ravel()[texel]]
    weights = sp.csr_matrix((layout.bary.reshape(-1, 3)[texel].ravel().astype(np.float64),
                             (np.repeat(texel, 3), corners.ravel())), shape=(size * size, model.n_vertices))
    values = np.asarray(per_vertex, dtype=np.float64)
    out = weights @ values.reshape(values.shape[0], -1)
    return out.reshape(size, size, *values.shape[1:]).astype(np.float32)


def _reference_visibility(model, vertices, pose, height, width, uv_size, erosion=0.03, depth_tolerance=0.01,
                          min_confidence=0.05):
    """The replaced numpy ``texel_visibility`` -> ``(confidence, texel_screen, normal)``."""
    layout = uv_layout(model, uv_size)

    def interp(v):
        return _sparse_interpolate(model, uv_size, v)

    tris = model.triangles
    screen = pose.to_screen(vertices)
    texel_screen = interp(screen)
    texel_normal = interp(pose.rotate_normals(_reference_normals(model, vertices)))
    texel_normal /= np.linalg.norm(texel_normal, axis=2, keepdims=True) + 1e-12
    facing = np.clip(texel_normal[..., 2], 0.0, 1.0)
    face_width = float(np.ptp(screen[:, 0]))
    radius = round(erosion * face_width)
    x0, y0, x1, y1 = crop_window(screen, height, width, margin=radius + 2)
    offset = np.array([x0, y0, 0.0])
    frags = rasterize(screen - offset, tris, y1 - y0, x1 - x0)
    region = frags.mask.astype(np.uint8)
    if radius > 0:
        region = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    local = texel_screen - offset.astype(np.float32)
    inside = (local[..., 0] >= 0) & (local[..., 0] < x1 - x0) & (local[..., 1] >= 0) & (local[..., 1] < y1 - y0)
    px = np.clip(np.floor(local[..., 0]).astype(np.int64), 0, max(0, x1 - x0 - 1))
    py = np.clip(np.floor(local[..., 1]).astype(np.int64), 0, max(0, y1 - y0 - 1))
    front = np.where(inside, frags.triangle_id[py, px], -1)
    s = screen - offset
    p0, p1, p2 = (s[tris[:, k]] for k in range(3))
    normal = np.cross(p1 - p0, p2 - p0)
    edge_on = np.abs(normal[:, 2]) < 1e-9 * (np.abs(normal).sum(axis=1) + 1e-30)
    nz = np.where(edge_on, 1.0, normal[:, 2])
    a, b = -normal[:, 0] / nz, -normal[:, 1] / nz
    c = p0[:, 2] - a * p0[:, 0] - b * p0[:, 1]
    ids = np.where(front >= 0, front, 0)
    depth = a[ids] * local[..., 0] + b[ids] * local[..., 1] + c[ids]
    front_depth = np.where((front >= 0) & ~edge_on[ids], depth, frags.depth[py, px])
    unoccluded = (front == layout.triangle_id) | (texel_screen[..., 2] <= front_depth + depth_tolerance * pose.scale)
    visible = layout.mask & inside & (region[py, px] > 0) & (front >= 0) & unoccluded
    confidence = np.where(visible, facing, 0.0).astype(np.float32)
    confidence[confidence < min_confidence] = 0.0
    return confidence, texel_screen, texel_normal


def _reference_normals(model, vertices):
    """The replaced ``FaceModel.vertex_normals`` (``np.add.at``)."""
    x = np.asarray(vertices, dtype=np.float64)
    t = model.triangles
    xb = x.reshape(-1, model.n_vertices, 3)
    fn = np.cross(xb[:, t[:, 1]] - xb[:, t[:, 0]], xb[:, t[:, 2]] - xb[:, t[:, 0]])
    n = np.zeros_like(xb)
    for k in range(3):
        np.add.at(n, (slice(None), t[:, k]), fn)
    n = n.reshape(x.shape)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(length > 1e-30, n / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0])).astype(np.float32)


def _posed(model, yaw: float, size: int, shift: float = 0.0):
    rotation = euler_to_matrix(yaw, 10.0, 5.0)
    scale = 0.35 * size / np.sqrt((model.vertices**2).sum(1).mean())
    pose = Pose(rotation=rotation, scale=scale, translation=np.array([size / 2 + shift, size / 2, 0.0]))
    rng = np.random.default_rng(int(yaw) + 100)
    vertices = np.asarray(model.vertices, dtype=np.float64) * (1 + 0.02 * rng.standard_normal((1, 3)))
    return vertices, pose


@pytest.fixture(scope="module")
def ict():
    return load_face_model("ict")


@pytest.mark.parametrize("which", ["mediapipe", "ict"])
@pytest.mark.parametrize("yaw, shift", [(0.0, 0.0), (40.0, 0.0), (-70.0, 0.0), (15.0, 170.0)])
def test_texel_visibility_equals_the_numpy_reference(model, ict, which, yaw, shift):
    """Frontal, turned, near-profile (self-occlusion) and half out of the image (shift)."""
    m = model if which == "mediapipe" else ict
    size = 300
    vertices, pose = _posed(m, yaw, size, shift)
    fast = texel_visibility(m, vertices, pose, size, size, 256)
    confidence, texel_screen, normal = _reference_visibility(m, vertices, pose, size, size, 256)
    assert (confidence > 0).sum() > 1000  # something is seen, and occluded or eroded texels exist
    assert ((confidence == 0) & uv_layout(m, 256).mask).sum() > 1000
    np.testing.assert_array_equal(fast.confidence, confidence)
    np.testing.assert_array_equal(fast.texel_screen, texel_screen)
    np.testing.assert_array_equal(fast.normal, normal)


def test_interpolate_equals_the_sparse_product(ict):
    layout = uv_layout(ict, 512)
    values = np.random.default_rng(0).standard_normal((ict.n_vertices, 5)) * 100
    np.testing.assert_array_equal(layout.interpolate(values), _sparse_interpolate(ict, 512, values))
    one = layout.interpolate(values[:, 0])
    assert one.shape == (512, 512) and one.dtype == np.float32
    assert (one[~layout.mask] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_erode_ellipse_equals_cv2_erode(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = rng.integers(3, 90, 2)
        blur = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(0.5, 6))
        mask = (blur > rng.uniform(0.3, 0.7)).astype(np.uint8)
        if rng.random() < 0.3:  # an almost full mask: the border counts as set
            mask[:] = 1
            mask[rng.integers(0, h), rng.integers(0, w)] = 0
        radius = int(rng.integers(1, 45))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        np.testing.assert_array_equal(erode_ellipse(mask, radius), cv2.erode(mask, kernel))


def test_vertex_normals_equal_the_add_at_reference(model, ict):
    rng = np.random.default_rng(1)
    for m in (model, ict):
        batch = np.asarray(m.vertices, dtype=np.float64) + 0.01 * rng.standard_normal((3, m.n_vertices, 3))
        np.testing.assert_array_equal(m.vertex_normals(batch), _reference_normals(m, batch))
        np.testing.assert_array_equal(m.vertex_normals(batch[0]), _reference_normals(m, batch[0]))


def test_lighting_samples_equal_the_numpy_gather(model):
    from stages.fit import _skin_samples

    rng = np.random.default_rng(2)
    vertices, pose = _posed(model, 20.0, 200)
    frags = rasterize(pose.to_screen(vertices), model.triangles, 200, 200)
    normals_cam = pose.rotate_normals(model.vertex_normals(vertices))
    rgb = rng.integers(0, 256, (230, 240, 3), dtype=np.uint8)
    pixels = rng.choice(np.flatnonzero(frags.mask.ravel()), 500, replace=False)
    rows, cols = np.divmod(pixels, 200)
    tri = model.triangles[frags.triangle_id[rows, cols]]
    expected = (normals_cam[tri] * frags.bary[rows, cols][..., None]).sum(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True) + 1e-12
    normals, colors = np.empty((500, 3)), np.empty((500, 3))
    _skin_samples(pixels, frags.triangle_id, frags.bary, model.triangles, normals_cam, rgb, 7, 11, normals, colors)
    np.testing.assert_array_equal(normals, expected)
    np.testing.assert_array_equal(colors, rgb[rows + 7, cols + 11].astype(np.float64) / 255.0)


def test_thread_split_does_not_change_results(ict, monkeypatch):
    """Rasterizer rows and texel ranges split over threads give the same bits as one thread."""
    import stages.core.raster as raster

    vertices, pose = _posed(ict, 30.0, 400)
    outputs = []
    for n in (1, 2, 3):
        monkeypatch.setattr(raster, "kernel_threads", lambda n=n: n)
        frags = rasterize(pose.to_screen(vertices), ict.triangles, 400, 400)
        seen = texel_visibility(ict, vertices, pose, 400, 400, 512)
        outputs.append((frags.triangle_id, frags.bary, frags.depth, seen.confidence, seen.texel_screen))
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_kernel_threads_leave_torch_threads_alone():
    """Splitting work must not start numba's OpenMP layer, which raises torch's thread count."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np, torch\n"
            "from stages.core.raster import rasterize, kernel_threads\n"
            "assert kernel_threads() == 2, kernel_threads()\n"
            "rng = np.random.default_rng(0)\n"
            "rasterize(rng.random((50, 3)) * 300, rng.integers(0, 50, (80, 3)), 300, 300)\n"
            "print(torch.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_estimate_lighting_equals_the_whole_window_numpy_reference(ict):
    """The skin-only window and the numba sample gather leave the SH estimate unchanged."""
    from stages.core.lighting import fit_sh_lighting
    from stages.fit import LIGHTING_SAMPLES, estimate_lighting

    size = 500
    vertices, pose = _posed(ict, 25.0, size)
    screen = pose.to_screen(vertices)
    normals_cam = pose.rotate_normals(ict.vertex_normals(vertices))
    rng = np.random.default_rng(3)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 3)

    skin = np.zeros(ict.n_vertices, dtype=bool)
    skin[ict.regions["skin"]] = True
    x0, y0, x1, y1 = crop_window(screen, size, size)
    frags = rasterize(screen - np.array([x0, y0, 0.0]), ict.triangles, y1 - y0, x1 - x0, cull_backfaces=True)
    on_skin = np.zeros(len(ict.triangles) + 1, dtype=bool)
    on_skin[np.flatnonzero(skin[ict.triangles].all(axis=1))] = True
    rows, cols = np.nonzero(on_skin[frags.triangle_id])
    assert len(rows) > LIGHTING_SAMPLES  # the random subset is drawn
    pick = np.random.default_rng(0).choice(len(rows), LIGHTING_SAMPLES, replace=False)
    rows, cols = rows[pick], cols[pick]
    normals = (normals_cam[ict.triangles[frags.triangle_id[rows, cols]]] * frags.bary[rows, cols][..., None]).sum(1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    expected = fit_sh_lighting(rgb[rows + y0, cols + x0].astype(np.float64) / 255.0, normals)

    coeffs, info = estimate_lighting(rgb, screen, normals_cam, ict, np.random.default_rng(0))
    np.testing.assert_array_equal(coeffs, expected[0])
    assert info == expected[1]
