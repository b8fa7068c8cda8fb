"""``render``: show a UV texture on the fitted face, and export it as a textured mesh.

- :func:`render_on_photo`: the textured face at the fitted pose, composited over the photo.
- :func:`render_views`: the face at novel yaw (and pitch) angles, optionally relit.
- :func:`write_turntable`: an animated GIF sweeping the yaw.
- :func:`export_textured_mesh`: ``textured.obj`` + ``.mtl`` + texture PNG (with ``vt``, opens in
  Blender with the texture applied) and a binary glTF ``.glb`` via trimesh.

Rendering is deferred and torch-free (``complete``'s previews never import torch): the numba
rasterizer gives each pixel its triangle and barycentrics, :func:`_texture_kernel` interpolates the UVs
and samples the texture bilinearly (the conventions of :func:`stages.core.shading.sample_texture`, the
differentiable torch twin used for training, which gives the same picture up to float rounding), and
SH shading uses :func:`stages.core.lighting.sh_basis_np`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numba import njit

from stages.core.atomic import atomic_path
from stages.core.camera import Pose, euler_to_matrix
from stages.core.face_model import FaceModel
from stages.core.image_io import save_png, to_uint8
from stages.core.lighting import _C0, sh_basis_np
from stages.core.raster import crop_window, rasterize, run_split
from stages.fit import FitResult

DEFAULT_YAWS = (-60, -30, 0, 30, 60)


@lru_cache(maxsize=4)
def _subdivided(model: FaceModel, levels: int) -> FaceModel:
    return model if levels <= 0 else model.subdivided(levels)


def normalised_light(sh: np.ndarray) -> np.ndarray:
    """SH coefficients ``(9, 3)`` scaled per channel so the ambient term shades by exactly 1.

    Relighting with the result changes the directional shading but keeps the texture's own level
    and colour (the texture already carries the photo's mean light).
    """
    sh = np.asarray(sh, dtype=np.float32)
    if sh.shape != (9, 3):
        raise ValueError(f"SH lighting must have shape (9, 3), got {sh.shape}")
    if not np.isfinite(sh).all():
        raise ValueError("SH lighting contains NaN or infinite values")
    if (sh[0] <= 0).any():
        raise ValueError(f"SH lighting needs a positive ambient term (row 0) in every channel, got {sh[0].tolist()}")
    return sh / (sh[0] * _C0)


@njit(cache=True, nogil=True)
def _texture_kernel(row_lo, row_hi, triangle_id, bary, triangles, uv, texture, out):
    """Rows ``row_lo <= i < row_hi`` of ``out`` ``(H, W, 3)``: the texture at each covered pixel's UV.

    ``uv`` (v up) is interpolated with the rasterizer's barycentrics and sampled bilinearly with
    ``grid_sample(align_corners=False, padding_mode='border')``'s rule: texel ``(i, j)`` sits at
    ``u = (j + 0.5) / W, v = 1 - (i + 0.5) / H``, coordinates beyond the outer texel centres clamp to them.
    """
    th, tw = texture.shape[0], texture.shape[1]
    for i in range(row_lo, row_hi):
        for j in range(triangle_id.shape[1]):
            f = triangle_id[i, j]
            if f < 0:
                continue
            u = 0.0
            v = 0.0
            for k in range(3):
                u += bary[i, j, k] * uv[triangles[f, k], 0]
                v += bary[i, j, k] * uv[triangles[f, k], 1]
            x = min(max(u * tw - 0.5, 0.0), tw - 1.0)
            y = min(max((1.0 - v) * th - 0.5, 0.0), th - 1.0)
            x0 = int(np.floor(x))
            y0 = int(np.floor(y))
            x1 = min(x0 + 1, tw - 1)
            y1 = min(y0 + 1, th - 1)
            ax = x - x0
            ay = y - y0
            for c in range(3):
                top = (1.0 - ax) * texture[y0, x0, c] + ax * texture[y0, x1, c]
                bottom = (1.0 - ax) * texture[y1, x0, c] + ax * texture[y1, x1, c]
                out[i, j, c] = (1.0 - ay) * top + ay * bottom


def render_mesh(texture: np.ndarray, screen_vertices: np.ndarray, model: FaceModel, height: int, width: int,
                *, normals_cam: np.ndarray | None = None,
                sh: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render a textured mesh given in screen space.

    Args:
        texture: ``(S, S, 3)`` float RGB in ``[0, 1]`` (v up: row 0 is the top of the UV square).
        screen_vertices: ``(V, 3)`` pixel ``x, y`` and depth (smaller is closer) for ``model``.
        model: the face model whose triangles/UVs to use.
        height, width: output size.
        normals_cam: ``(V, 3)`` camera-space normals, needed with ``sh``.
        sh: ``(9, 3)`` SH lighting applied as :func:`normalised_light` (None = unlit).

    Returns:
        ``(rgb (H, W, 3) float32 in [0, 1], mask (H, W) bool)``; rgb is 0 where nothing is drawn.
    """
    if sh is not None and normals_cam is None:
        raise ValueError("relighting needs normals")
    frags = rasterize(screen_vertices, model.triangles, height, width)
    rgb = np.zeros((height, width, 3), np.float32)
    triangles = np.ascontiguousarray(model.triangles, dtype=np.int64)
    run_split(_texture_kernel, height, frags.triangle_id, frags.bary, triangles,
              np.ascontiguousarray(model.uv, dtype=np.float64), np.ascontiguousarray(texture[..., :3], np.float32), rgb)
    mask = frags.mask
    if sh is not None:
        bary = frags.bary[mask]                                                     # (N, 3)
        corners = np.asarray(normals_cam, np.float64)[triangles[frags.triangle_id[mask]]]   # (N, 3 corners, 3)
        normals = np.einsum("nk,nkc->nc", bary, corners)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        rgb[mask] *= (sh_basis_np(normals) @ normalised_light(sh)).astype(np.float32)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb, mask


def _posed(fit: FitResult, model: FaceModel, subdivide: int) -> tuple[FaceModel, np.ndarray]:
    """The (optionally subdivided) model and the fit's per-image vertices lifted onto it."""
    fine = _subdivided(model, subdivide)
    vertices = np.asarray(fit.vertices, dtype=np.float64)
    if fine is not model:
        vertices = fine.upsample_vertices(vertices)
    return fine, vertices


def render_on_photo(photo_rgb: np.ndarray, texture: np.ndarray, fit: FitResult, model: FaceModel, *,
                    sh: np.ndarray | None = None, subdivide: int = 1, margin: float = 0.3,
                    crop: bool = True, max_side: int | None = None) -> np.ndarray:
    """The textured face rendered at the fitted pose over the photo.

    Args:
        margin: with ``crop``, context kept around the face, as a fraction of the face size.
        crop: return only the face window (cheaper and easier to inspect) instead of the full photo.
        max_side: when the window is larger, render it scaled down to this longest side (a preview
            costs a fraction of a full-resolution render); None: the photo's own resolution.

    Returns:
        ``(H', W', 3)`` uint8: the face window of the photo (or the whole photo) with the render on it.
    """
    fine, vertices = _posed(fit, model, subdivide)
    height, width = photo_rgb.shape[:2]
    screen = fit.pose.to_screen(vertices)
    x0, y0, x1, y1 = 0, 0, width, height
    if crop:
        x0, y0, x1, y1 = crop_window(screen, height, width, margin=margin * np.ptp(screen[:, :2], axis=0).max())
    normals = fit.pose.rotate_normals(fine.vertex_normals(vertices)) if sh is not None else None
    window = photo_rgb[y0:y1, x0:x1]
    scale = 1.0 if max_side is None else min(1.0, max_side / max(y1 - y0, x1 - x0))
    if scale < 1.0:
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
    local = (screen - np.array([x0, y0, 0.0])) * scale   # depth scales too: only its order matters
    rgb, mask = render_mesh(texture, local, fine, window.shape[0], window.shape[1], normals_cam=normals, sh=sh)
    out = window.copy()  # composited in 8 bits: the photo's pixels as they are, the render rounded
    out[mask] = to_uint8(rgb[mask])
    return out


def view_pose(vertices: np.ndarray, yaw: float, pitch: float, size: int, fill: float = 0.8) -> Pose:
    """A pose showing ``vertices`` at ``(yaw, pitch)`` degrees, centred in a ``size`` square image."""
    rotation = euler_to_matrix(yaw, pitch, 0.0)
    cam = vertices @ rotation.T
    extent = max(np.ptp(cam[:, 0]), np.ptp(cam[:, 1]))
    scale = fill * size / max(extent, 1e-9)
    centre = (cam.max(axis=0) + cam.min(axis=0)) / 2
    translation = np.array([size / 2 - scale * centre[0], size / 2 + scale * centre[1], 10 * size])
    return Pose(rotation=rotation, scale=scale, translation=translation)


def render_views(texture: np.ndarray, fit: FitResult, model: FaceModel, *, yaws=DEFAULT_YAWS,
                 pitch: float = 0.0, size: int = 512, sh: np.ndarray | None = None,
                 subdivide: int = 1) -> list[np.ndarray]:
    """Render the per-image shape at novel angles.

    Every view uses the same scale (fitted to the frontal view), so the turntable does not pump.

    Returns:
        One ``(size, size, 4)`` float32 RGBA image per yaw (alpha = coverage).
    """
    fine, vertices = _posed(fit, model, subdivide)
    reference = view_pose(vertices, 0.0, pitch, size)
    normals_model = fine.vertex_normals(vertices) if sh is not None else None
    views = []
    for yaw in yaws:
        # The frontal view's scale and height for every angle; each view recentred horizontally.
        pose = Pose(euler_to_matrix(float(yaw), pitch, 0.0), reference.scale, reference.translation)
        screen = pose.to_screen(vertices)
        screen[:, 0] += size / 2 - (screen[:, 0].max() + screen[:, 0].min()) / 2
        rgb, mask = render_mesh(texture, screen, fine, size, size,
                                normals_cam=pose.rotate_normals(normals_model) if sh is not None else None, sh=sh)
        views.append(np.concatenate([rgb, mask[..., None].astype(np.float32)], axis=2))
    return views


def compose_views(views: list[np.ndarray], background: float = 0.16) -> np.ndarray:
    """Side-by-side sheet of RGBA views over a flat background: ``(size, n * size, 3)`` float."""
    tiles = [v[..., :3] * v[..., 3:] + background * (1 - v[..., 3:]) for v in views]
    return np.concatenate(tiles, axis=1)


def write_turntable(path: str | Path, texture: np.ndarray, fit: FitResult, model: FaceModel, *,
                    max_yaw: float = 60.0, step: float = 5.0, size: int = 320, sh: np.ndarray | None = None,
                    subdivide: int = 1, frame_ms: int = 60) -> None:
    """Write an animated GIF sweeping the yaw ``-max_yaw -> max_yaw -> -max_yaw``, atomically."""
    from PIL import Image

    forward = list(np.arange(-max_yaw, max_yaw + 1e-6, step))
    yaws = forward + forward[-2:0:-1]
    frames = render_views(texture, fit, model, yaws=yaws, size=size, sh=sh, subdivide=subdivide)
    images = [Image.fromarray(to_uint8(compose_views([f]))) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)


def mesh_label(stem: str) -> str:
    """``stem`` made safe as an OBJ/MTL/glTF name: characters other than letters, digits, ``_ - .``
    become ``_`` (OBJ and MTL statements are whitespace-separated)."""
    return re.sub(r"[^0-9A-Za-z_.-]", "_", stem) or "face"


def _lines(template: str, rows: np.ndarray) -> str:
    """``template % row`` for every row of ``rows`` ``(N, K)``, joined: one ``%`` over the whole block
    (a third of the time of an f-string per row, the same text)."""
    values = np.asarray(rows).tolist()
    return (template * len(values)) % tuple(v for row in values for v in row)


def export_textured_mesh(out_dir: str | Path, texture: np.ndarray, vertices: np.ndarray, model: FaceModel, *,
                         label: str, name: str = "textured", subdivide: int = 1, glb: bool = True,
                         texture_file: str | None = None) -> list[Path]:
    """Write ``NAME.obj`` + ``NAME.mtl`` + ``NAME.png`` (and ``NAME.glb``) into ``out_dir``.

    Coordinates are metres: model units times :meth:`FaceModel.metres_per_unit`, one constant per
    model (the mean shape's eye distance = the mean adult IPD, 63 mm). A single photo under a
    scaled-orthographic camera carries no absolute size, and the fit aligns every per-image shape to
    the mean shape by a similarity, so every face comes out at about the average adult size while its
    proportions stay its own. Axes are glTF's (and the model's): right-handed, +x the subject's left
    (image right), +y up, +z out of the face towards the viewer; OBJ and GLB use the same numbers.
    ``vt`` follow the OBJ convention (v up); faces are counter-clockwise seen from outside.

    Names carry ``label`` (sanitised by :func:`mesh_label`): the OBJ object and the glTF node and mesh
    are ``LABEL``, the material ``LABEL_face``, the glTF image ``LABEL_<texture file stem>``.

    Args:
        out_dir: output folder.
        texture: ``(S, S, 3)`` float RGB in ``[0, 1]``.
        vertices: ``(V, 3)`` model-space vertices of the base model (the per-image shape).
        model: base face model.
        label: what the mesh shows, normally the photo's stem.
        name: file stem.
        subdivide: Loop subdivision levels for a smoother mesh.
        glb: also write a binary glTF.
        texture_file: name of a PNG already in ``out_dir`` holding ``texture``; the MTL points to it
            instead of writing ``NAME.png``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    label = mesh_label(label)
    material_name = f"{label}_face"
    fine = _subdivided(model, subdivide)
    verts = np.asarray(vertices, dtype=np.float64)
    if fine is not model:
        verts = fine.upsample_vertices(verts)
    normals = fine.vertex_normals(verts)
    verts = verts * model.metres_per_unit()
    tex_name = texture_file or f"{name}.png"
    if texture_file is None:
        save_png(out_dir / tex_name, texture[..., :3])
    with atomic_path(out_dir / f"{name}.mtl") as tmp:
        tmp.write_text(f"# facetex material\nnewmtl {material_name}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 1\nd 1\n"
                       f"illum 1\nmap_Kd {tex_name}\n")
    text = (f"# facetex textured face ({fine.name}); metres, y up, z towards the viewer\n"
            f"mtllib {name}.mtl\no {label}\n"
            + _lines("v %.7f %.7f %.7f\n", verts) + _lines("vt %.6f %.6f\n", fine.uv)
            + _lines("vn %.5f %.5f %.5f\n", normals) + f"usemtl {material_name}\ns 1\n"
            + _lines("f %d/%d/%d %d/%d/%d %d/%d/%d\n", np.repeat(np.asarray(fine.triangles) + 1, 3, axis=1)))
    with atomic_path(out_dir / f"{name}.obj") as tmp:
        tmp.write_text(text)
    written = [out_dir / f"{name}.obj", out_dir / f"{name}.mtl", out_dir / tex_name]
    if glb:
        import trimesh
        from PIL import Image
        from trimesh.exchange.gltf import export_glb

        image = Image.fromarray(to_uint8(texture[..., :3]))
        # trimesh encodes the glTF image with Pillow's defaults (zlib level 6): level 1 is ~4x faster for
        # ~25% more bytes (512^2 face texture: 160 -> 200 KB), the trade save_png makes (recent Pillow
        # reads encoderinfo defaults; older ones ignore them).
        image.encoderinfo = {"compress_level": 1}
        material = trimesh.visual.material.PBRMaterial(
            name=material_name, baseColorTexture=image, metallicFactor=0.0, roughnessFactor=0.9)
        mesh = trimesh.Trimesh(vertices=verts, faces=fine.triangles, vertex_normals=normals, process=False,
                               visual=trimesh.visual.TextureVisuals(uv=fine.uv, material=material))
        scene = trimesh.Scene()
        scene.add_geometry(mesh, geom_name=label, node_name=label)

        def name_images(tree: dict) -> None:
            # trimesh leaves glTF images unnamed; tools that write the texture out by name need one.
            for image in tree.get("images", []):
                image["name"] = f"{label}_{Path(tex_name).stem}"

        with atomic_path(out_dir / f"{name}.glb") as tmp:
            tmp.write_bytes(export_glb(scene, tree_postprocessor=name_images))
        written.append(out_dir / f"{name}.glb")
    return written
