"""Unwrap and render agree with each other and with the rasterizer (no detector involved)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.core.camera import Pose, euler_to_matrix
from stages.core.raster import crop_window, rasterize
from stages.core.uv import uv_layout
from stages.fit import FitResult
from stages.render import render_mesh
from stages.unwrap import unwrap_photo
from tests.conftest import smooth_random_texture


def synthetic_fit(model, yaw: float, size: int = 384, pitch: float = 0.0) -> FitResult:
    """A fit of the mean shape at a known pose in a ``size``-square image."""
    rotation = euler_to_matrix(yaw, pitch, 0.0)
    scale = 0.35 * size / np.sqrt((model.vertices**2).sum(1).mean())
    pose = Pose(rotation=rotation, scale=scale, translation=np.array([size / 2, size / 2, 0.0]))
    screen = pose.to_screen(model.vertices)
    return FitResult(source="synthetic.png", stem="synthetic", image_size=(size, size), face_index=0, num_faces=1,
                     landmarks=screen, face_box=(screen[:, 0].min(), screen[:, 1].min(), screen[:, 0].max(),
                                                 screen[:, 1].max()),
                     pose=pose, vertices=np.asarray(model.vertices, dtype=np.float64),
                     lighting=np.zeros((9, 3), np.float32), model_id=model.name, detector="synthetic")


@pytest.mark.parametrize("yaw", [0.0, 35.0, -60.0])
def test_unwrap_recovers_rendered_texture(model, yaw):
    """Render a known texture at a known pose, unwrap it with the same pose: visible texels match."""
    size = 384
    fit = synthetic_fit(model, yaw, size)
    texture = smooth_random_texture(256, seed=1)
    rgb, mask = render_mesh(texture, fit.screen_vertices(), model, size, size)
    photo = (np.where(mask[..., None], rgb, 0.5) * 255 + 0.5).astype(np.uint8)
    result = unwrap_photo(photo, fit, model=model, uv_size=256)
    visible = result.confidence > 0.3
    assert visible.sum() > 0.2 * result.layout_mask.sum()
    error = np.abs(result.texture[visible] - texture[visible])
    # Two bilinear resamplings and 8-bit quantisation: a few grey levels at most.
    assert np.median(error) < 0.01
    assert np.percentile(error, 99) < 0.06


def test_unwrap_visibility_matches_rasterizer(model):
    """At yaw 60 one side is hidden; texels are visible only where the z-buffer shows their triangle."""
    size = 384
    fit = synthetic_fit(model, 60.0, size)
    result = unwrap_photo(np.full((size, size, 3), 128, np.uint8), fit, model=model, uv_size=256, erosion=0.0,
                          min_confidence=0.0)
    layout = uv_layout(model, 256)
    frags = rasterize(fit.screen_vertices(), model.triangles, size, size)
    texel_screen = layout.interpolate(fit.screen_vertices())
    px = np.clip(texel_screen[..., 0].astype(int), 0, size - 1)
    py = np.clip(texel_screen[..., 1].astype(int), 0, size - 1)
    front = frags.triangle_id[py, px][result.visible]
    own = layout.triangle_id[result.visible]
    assert (front >= 0).all()
    # A visible texel lies on the triangle the z-buffer shows at its pixel, or on a neighbour of it
    # (texels near an edge whose pixel centre falls on the next triangle). The rest (< 0.5%) sit
    # within the depth tolerance at occlusion contours.
    tris = model.triangles
    adjacent = (tris[front][:, :, None] == tris[own][:, None, :]).any(axis=(1, 2))
    assert (front == own).mean() > 0.9
    assert adjacent.mean() > 0.995
    visible_tris = np.unique(own)
    # Triangles facing away from the camera contribute no visible texel.
    normals = fit.pose.rotate_normals(model.vertex_normals())
    face_normal_z = normals[model.triangles].mean(axis=1)[:, 2]
    back = np.flatnonzero(face_normal_z < -0.2)
    assert not np.isin(back, visible_tris).any()
    # Positive yaw turns the nose towards +x, so the +x cheek (u > 0.5) turns away and is mostly hidden.
    u = (np.arange(256) + 0.5) / 256
    left_cols, right_cols = u < 0.3, u > 0.7
    assert result.visible[:, left_cols].sum() > 3 * result.visible[:, right_cols].sum()


def test_erosion_drops_silhouette_texels(model):
    size = 384
    fit = synthetic_fit(model, 0.0, size)
    photo = np.full((size, size, 3), 128, np.uint8)
    plain = unwrap_photo(photo, fit, model=model, uv_size=256, erosion=0.0)
    eroded = unwrap_photo(photo, fit, model=model, uv_size=256, erosion=0.05)
    assert eroded.visible.sum() < plain.visible.sum()
    assert not (eroded.visible & ~plain.visible).any()
    # The dropped texels are near the silhouette: their screen points lie within the erosion radius of the edge.
    assert eroded.info["erosion_px"] == round(0.05 * np.ptp(fit.screen_vertices()[:, 0]))


def test_unwrap_rejects_bad_uv_size(model):
    fit = synthetic_fit(model, 0.0)
    with pytest.raises(ValueError, match="uv_size"):
        unwrap_photo(np.zeros((384, 384, 3), np.uint8), fit, model=model, uv_size=64)


def test_unwrap_save_load_round_trip(model, tmp_path):
    from stages.unwrap import UnwrapResult

    size = 256
    fit = synthetic_fit(model, 20.0, size)
    texture = smooth_random_texture(256, seed=2)
    rgb, mask = render_mesh(texture, fit.screen_vertices(), model, size, size)
    result = unwrap_photo((rgb * 255).astype(np.uint8), fit, model=model, uv_size=256)
    result.save(tmp_path)
    loaded = UnwrapResult.load(tmp_path, model)
    assert np.abs(loaded.texture - result.texture).max() <= 1 / 255 + 1e-6
    assert np.abs(loaded.confidence - result.confidence).max() <= 1 / 255 + 1e-6
    assert np.array_equal(loaded.position, result.position)
    assert not list(tmp_path.glob("*.part*"))


def test_relighting_with_sh(model):
    """Ambient-only light leaves the render unchanged; a light from +x brightens the +x side."""
    from stages.core.lighting import _C0, _C1

    size = 256
    fit = synthetic_fit(model, 0.0, size)
    texture = np.full((64, 64, 3), 0.5, np.float32)
    normals = fit.pose.rotate_normals(model.vertex_normals())
    unlit, mask = render_mesh(texture, fit.screen_vertices(), model, size, size)
    ambient = np.zeros((9, 3), np.float32)
    ambient[0] = 0.8 / _C0
    same, _ = render_mesh(texture, fit.screen_vertices(), model, size, size, normals_cam=normals, sh=ambient)
    assert np.abs(same[mask] - unlit[mask]).max() < 1e-5
    directional = ambient.copy()
    directional[3] = 0.5 / _C1  # the x-linear term: light from +x (image right)
    lit, _ = render_mesh(texture, fit.screen_vertices(), model, size, size, normals_cam=normals, sh=directional)
    cols = np.nonzero(mask.any(axis=0))[0]
    left = lit[:, cols[0]: cols[0] + 20][mask[:, cols[0]: cols[0] + 20]].mean()
    right = lit[:, cols[-1] - 19: cols[-1] + 1][mask[:, cols[-1] - 19: cols[-1] + 1]].mean()
    assert right > left + 0.1


@pytest.mark.parametrize("lit", [False, True])
def test_render_mesh_matches_the_torch_deferred_shader(model, lit):
    """The torch-free renderer (numba texture lookup, numpy SH) gives the picture of the differentiable torch
    shader training uses (stages.core.shading.render) on the same visibility, texel for texel."""
    import torch

    from stages.core import shading
    from stages.core.lighting import _C0, _C1
    from stages.render import normalised_light

    size = 200
    fit = synthetic_fit(model, 25.0, size, pitch=10.0)
    texture = smooth_random_texture(128, seed=4) * np.linspace(0.3, 1.0, 128, dtype=np.float32)[:, None, None]
    screen = fit.screen_vertices()
    normals = fit.pose.rotate_normals(model.vertex_normals())
    light = np.zeros((9, 3), np.float32)
    light[0], light[3], light[1] = 0.7 / _C0, 0.3 / _C1, -0.2 / _C1
    sh = light if lit else None
    rgb, mask = render_mesh(texture, screen, model, size, size, normals_cam=normals if lit else None, sh=sh)

    def tensor(a, dtype=np.float32):
        return torch.from_numpy(np.array(a, dtype=dtype))

    ids = tensor(rasterize(screen, model.triangles, size, size).triangle_id, np.int64)
    extra = {"vert_normals": tensor(normals), "sh_coeffs": tensor(normalised_light(light))} if lit else {}
    with torch.no_grad():
        image, covered = shading.render(tensor(screen), tensor(model.triangles, np.int64), tensor(model.uv),
                                        tensor(texture).permute(2, 0, 1)[None], ids, **extra)
    assert np.array_equal(mask, covered[0, 0].numpy() > 0.5) and mask.mean() > 0.2
    reference = image[0].permute(1, 2, 0).clamp(0, 1).numpy()
    assert np.abs(rgb - reference).max() < 1e-4
    assert (rgb[~mask] == 0).all()


def test_delight_removes_known_directional_shading(model):
    """A flat-albedo face rendered under a known directional SH light unwraps to ~flat with --delight."""
    from stages.core.lighting import _C0, _C1

    size = 384
    fit = synthetic_fit(model, 0.0, size)
    light = np.zeros((9, 3), np.float32)
    light[0] = 0.6 / _C0
    light[3] = 0.3 / _C1          # brighter towards +x
    fit.lighting = light
    albedo = np.full((64, 64, 3), 0.6, np.float32)
    normals = fit.pose.rotate_normals(model.vertex_normals())
    rgb, mask = render_mesh(albedo, fit.screen_vertices(), model, size, size, normals_cam=normals, sh=light)
    # render_mesh relights with the light normalised to ambient 1; the photo is albedo * that shading.
    photo = (np.where(mask[..., None], rgb, 0.5) * 255 + 0.5).astype(np.uint8)
    plain = unwrap_photo(photo, fit, model=model, uv_size=256)
    flat = unwrap_photo(photo, fit, model=model, uv_size=256, delight=True)
    seen = flat.confidence > 0.5
    assert plain.texture[seen].std() > 0.05
    assert flat.texture[seen].std() < 0.2 * plain.texture[seen].std()
    assert abs(flat.texture[seen].mean() - 0.6) < 0.03
    assert flat.info["delight"] is True


# ------------------------------------------------------------------ render outputs, checked by value

FLAT = np.array([40, 150, 230], np.float32) / 255  # a flat texture colour, exact in 8 bits


def _directional_light(strength: float = 0.5) -> np.ndarray:
    """SH light: ambient 0.8 plus a light from camera +x (image right)."""
    from stages.core.lighting import _C0, _C1

    light = np.zeros((9, 3), np.float32)
    light[0] = 0.8 / _C0
    light[3] = strength / _C1
    return light


def test_render_on_photo_puts_the_texture_on_the_face_only(model):
    """A flat-colour texture at a known fit: the face region has that colour, the photo elsewhere is untouched."""
    from stages.render import render_on_photo

    size = 160
    fit = synthetic_fit(model, 20.0, size)
    photo = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    texture = np.broadcast_to(FLAT, (32, 32, 3)).copy()
    out = render_on_photo(photo, texture, fit, model, subdivide=0, crop=False)
    face = rasterize(fit.screen_vertices(), model.triangles, size, size).triangle_id >= 0
    assert out.shape == photo.shape and face.mean() > 0.2
    assert (out[face] == np.round(FLAT * 255).astype(np.uint8)).all()
    assert (out[~face] == photo[~face]).all()
    # The default crop is a window of that same image around the face.
    window = render_on_photo(photo, texture, fit, model, subdivide=0, margin=0.1)
    x0, y0, x1, y1 = crop_window(fit.screen_vertices(), size, size, margin=0.1 * np.ptp(fit.screen_vertices()[:, :2],
                                                                                        axis=0).max())
    assert np.array_equal(window, out[y0:y1, x0:x1])
    # max_side: the same window rendered smaller; the face keeps its colour, the rest is the photo scaled down.
    small = render_on_photo(photo, texture, fit, model, subdivide=0, crop=False, max_side=80)
    assert small.shape == (80, 80, 3)
    small_face = cv2.resize(face.astype(np.uint8), (80, 80), interpolation=cv2.INTER_AREA) > 0
    inner = cv2.erode(small_face.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert abs(int(small_face.sum()) - int(face.sum()) // 4) < 0.1 * face.sum() / 4
    assert (small[inner] == np.round(FLAT * 255).astype(np.uint8)).all()
    outer = ~(cv2.dilate(small_face.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    photo_small = cv2.resize(photo, (80, 80), interpolation=cv2.INTER_AREA)
    assert (small[outer] == photo_small[outer]).all()


def _left_centre_right(image: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Mean brightness of the covered pixels in the left fifth, middle fifth and right fifth of the face."""
    cols = np.nonzero(mask.any(axis=0))[0]
    edges = np.linspace(cols[0], cols[-1] + 1, 6).astype(int)
    grey = image[..., :3].mean(axis=2)
    return tuple(float(grey[:, a:b][mask[:, a:b]].mean()) for a, b in ((edges[0], edges[1]), (edges[2], edges[3]),
                                                                        (edges[4], edges[5])))


def test_relit_views_darken_the_side_away_from_the_light(model):
    """Light from image right: the left side darkens, the right brightens, the middle keeps the texture level."""
    from stages.render import render_on_photo, render_views

    size = 128
    fit = synthetic_fit(model, 0.0, size)
    texture = np.full((32, 32, 3), 0.5, np.float32)
    light = _directional_light()
    (unlit,) = render_views(texture, fit, model, yaws=[0], size=size, subdivide=0)
    (lit,) = render_views(texture, fit, model, yaws=[0], size=size, subdivide=0, sh=light)
    mask = lit[..., 3] > 0.5
    assert np.allclose(unlit[..., :3][mask], 0.5, atol=1e-4)
    left, centre, right = _left_centre_right(lit, mask)
    assert left < 0.5 - 0.1 and right > 0.5 + 0.1, (left, centre, right)
    assert abs(centre - 0.5) < 0.04, "the normalised light keeps the ambient (texture) level"
    photo = np.zeros((size, size, 3), np.uint8)
    on_photo = render_on_photo(photo, texture, fit, model, subdivide=0, crop=False, sh=light) / 255.0
    face = rasterize(fit.screen_vertices(), model.triangles, size, size).triangle_id >= 0
    left, centre, right = _left_centre_right(on_photo, face)
    assert left < 0.5 - 0.1 and right > 0.5 + 0.1 and abs(centre - 0.5) < 0.04, (left, centre, right)


def test_views_sheet_shows_the_texture_centred_over_background(model):
    """compose_views: tiles in yaw order, the texture's colour at each face centre, background at the corners."""
    from stages.render import compose_views, render_views

    size = 96
    fit = synthetic_fit(model, 0.0, 256)
    # The subject's right half of the UV square (u < 0.5, image left when frontal) red, the left half blue.
    texture = np.zeros((64, 64, 3), np.float32)
    texture[:, :32, 0] = 1.0
    texture[:, 32:, 2] = 1.0
    views = render_views(texture, fit, model, yaws=[-40, 0, 40], size=size, subdivide=0)
    sheet = compose_views(views, background=0.16)
    assert sheet.shape == (size, 3 * size, 3)
    for k in range(3):
        tile = sheet[:, k * size:(k + 1) * size]
        assert np.allclose(tile[[0, 0, -1, -1], [0, -1, 0, -1]], 0.16)
        assert views[k][size // 2, size // 2, 3] == 1.0
    frontal = sheet[:, size:2 * size]
    assert np.allclose(frontal[size // 2, size // 2 - 8], [1, 0, 0], atol=0.02)   # subject's right: red
    assert np.allclose(frontal[size // 2, size // 2 + 8], [0, 0, 1], atol=0.02)   # subject's left: blue
    # Yaw +40 turns the nose to image right: the subject's left (blue) turns away, so red dominates.
    red = [float(sheet[:, k * size:(k + 1) * size, 0].sum()) for k in range(3)]
    blue = [float(sheet[:, k * size:(k + 1) * size, 2].sum()) for k in range(3)]
    assert blue[0] > 1.5 * red[0] and red[2] > 1.5 * blue[2]
