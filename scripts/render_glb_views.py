"""Render a ``textured.glb`` as a user's viewer opens it: front, three-quarter, side and back views.

A headless check of the exported file itself (no Blender or OpenGL here): the file is read with
trimesh's glTF importer (node transforms applied, every mesh primitive, each with its own base-colour
texture), and drawn with facetex's z-buffer rasterizer (:func:`stages.core.raster.rasterize`) from
that mesh and its embedded texture only, nothing from the facetex run that wrote it. glTF's axes and
units are taken as they are: metres, +Y up, +Z towards the viewer; the camera looks down -Z
(orthographic) and the head turns about +Y: yaw 90 turns the face to the image's right and shows
the head's right side. A 10 cm bar under each view shows the scale.
Shading: the texture times a head-light Lambert term ``0.45 + 0.55 max(n_z, 0)`` from the file's normals.

    python scripts/render_glb_views.py OUT/astronaut/textured.glb -o docs/ict_head_astronaut_glb.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: (yaw in degrees about +Y, label) of the default views.
VIEWS = ((0.0, "front"), (45.0, "three-quarter"), (90.0, "side"), (180.0, "back"))
BACKGROUND = 0.16


def load_glb(path: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Every textured mesh of a glTF file in world space (node transforms applied).

    Returns:
        One ``(vertices (V, 3) metres, triangles (F, 3), uv (V, 2) v up, normals (V, 3) unit,
        texture (T, T', 3) float32 in [0, 1])`` per mesh primitive.

    Raises:
        ValueError: the file holds no mesh, or a mesh without UVs or base-colour texture (named).
    """
    import trimesh

    scene = trimesh.load(str(path), force="scene")
    meshes = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        mesh = scene.geometry[name].copy()
        mesh.apply_transform(transform)
        visual = mesh.visual
        texture = getattr(getattr(visual, "material", None), "baseColorTexture", None)
        if getattr(visual, "uv", None) is None or texture is None:
            raise ValueError(f"{path}: mesh {name!r} has no UVs or no base-colour texture")
        rgb = np.asarray(texture.convert("RGB"), dtype=np.float32) / 255.0
        meshes.append((np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64),
                       np.asarray(visual.uv, dtype=np.float64), np.asarray(mesh.vertex_normals, dtype=np.float64),
                       rgb))
    if not meshes:
        raise ValueError(f"{path}: no mesh in the file")
    return meshes


def yaw_matrix(yaw: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``yaw`` degrees about +Y (glTF up): yaw 90 turns +X to -Z (away)."""
    c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def render_view(meshes, yaw: float, size: int, metres_per_px: float, centre: np.ndarray) -> np.ndarray:
    """One orthographic view down -Z of the meshes turned by ``yaw`` about +Y through ``centre``.

    Returns:
        ``(size, size, 4)`` float32 RGBA (alpha = coverage).
    """
    from stages.core.raster import rasterize

    rotation = yaw_matrix(yaw)
    screens, triangles, offset = [], [], 0
    for vertices, tris, _, _, _ in meshes:
        world = (vertices - centre) @ rotation.T
        # x right, y down (image), depth = -z (smaller is closer: +Z points at the viewer).
        screens.append(np.column_stack([size / 2 + world[:, 0] / metres_per_px, size / 2 - world[:, 1] / metres_per_px,
                                        -world[:, 2] / metres_per_px]))
        triangles.append(tris + offset)
        offset += len(vertices)
    frags = rasterize(np.concatenate(screens), np.concatenate(triangles), size, size)
    out = np.zeros((size, size, 4), np.float32)
    first = 0
    for _vertices, tris, uv, normals, texture in meshes:
        ids = frags.triangle_id - first
        hit = (ids >= 0) & (ids < len(tris))
        first += len(tris)
        if not hit.any():
            continue
        corners = tris[ids[hit]]                                       # (P, 3)
        bary = frags.bary[hit].astype(np.float64)[..., None]           # (P, 3, 1)
        texel = (uv[corners] * bary).sum(axis=1)                       # (P, 2), v up
        normal = ((normals[corners] * bary).sum(axis=1)) @ rotation.T
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        height, width = texture.shape[:2]
        maps = np.zeros((2, size, size), np.float32)   # image-sized: cv2.remap takes maps under 32767 a side
        maps[0][hit] = texel[:, 0] * width - 0.5
        maps[1][hit] = (1.0 - texel[:, 1]) * height - 0.5
        colour = cv2.remap(texture, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[hit]
        out[hit, :3] = colour * (0.45 + 0.55 * np.clip(normal[:, 2:3], 0.0, 1.0))
        out[hit, 3] = 1.0
    return out


def render_glb_views(path: str | Path, views=VIEWS, size: int = 384) -> tuple[np.ndarray, dict]:
    """The labelled sheet of views of a glTF file, one scale for all, with a 10 cm bar.

    Returns:
        ``(sheet (size + 40, n * size, 3) uint8, info)`` with the file's bounding-box size in metres.
    """
    meshes = load_glb(path)
    points = np.concatenate([m[0] for m in meshes])
    low, high = points.min(axis=0), points.max(axis=0)
    centre = (low + high) / 2
    radius = float(np.linalg.norm(points - centre, axis=1).max())   # fits every yaw
    metres_per_px = 2.0 * radius / (0.92 * size)
    tiles = []
    for yaw, label in views:
        rgba = render_view(meshes, yaw, size, metres_per_px, centre)
        tile = rgba[..., :3] * rgba[..., 3:] + BACKGROUND * (1.0 - rgba[..., 3:])
        tile = np.concatenate([tile, np.full((40, size, 3), BACKGROUND, np.float32)])
        tile = np.ascontiguousarray((np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8))
        bar = round(0.1 / metres_per_px)
        cv2.line(tile, (12, size + 24), (12 + bar, size + 24), (235, 235, 235), 3)
        cv2.putText(tile, f"{label} (yaw {yaw:.0f})   10 cm", (12, size + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (235, 235, 235), 1, cv2.LINE_AA)
        tiles.append(tile)
    info = {"size_m": (high - low).round(3).tolist(), "meshes": len(meshes),
            "triangles": int(sum(len(m[1]) for m in meshes))}
    return np.concatenate(tiles, axis=1), info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("glb", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--size", type=int, default=384, help="side of each view in pixels")
    args = parser.parse_args()
    from stages.core.image_io import save_png

    try:
        sheet, info = render_glb_views(args.glb, size=args.size)
    except (OSError, ValueError) as exc:
        print(f"{args.glb}: {exc}", file=sys.stderr)
        return 2
    save_png(args.out, sheet)
    w, h, d = info["size_m"]
    print(f"{args.glb}: {info['meshes']} mesh(es), {info['triangles']} triangles, {w:.3f} x {h:.3f} x {d:.3f} m "
          f"(x, y up, z); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
