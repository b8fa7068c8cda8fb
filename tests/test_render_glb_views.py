"""scripts/render_glb_views.py: a glTF file read back with trimesh and drawn with glTF's axes and units."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import render_glb_views  # noqa: E402

# Texture quadrants (v up): front red, back blue, top green, +X side yellow.
COLOURS = {"front": (255, 0, 0), "back": (0, 0, 255), "top": (0, 255, 0), "right": (255, 255, 0)}


def quad(centre, normal, up, half, uv_box):
    """Two counter-clockwise (seen from ``normal``) triangles of a square, UVs over ``uv_box``."""
    centre, normal, up = (np.asarray(a, float) for a in (centre, normal, up))
    side = np.cross(up, normal)
    corners = [centre + half * (sx * side + sy * up) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    u0, v0, u1, v1 = uv_box
    uv = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    return np.array(corners), np.array(uv), np.array([[0, 1, 2], [0, 2, 3]])


@pytest.fixture
def marker_glb(tmp_path):
    """A 0.2 m box-like marker in metres: a quad on each of +Z (front), -Z (back) and +X, and a small
    front-facing quad above it (+Y, "top")."""
    import trimesh
    from PIL import Image
    from trimesh.exchange.gltf import export_glb

    texture = np.zeros((64, 64, 3), np.uint8)
    texture[32:, :32], texture[32:, 32:] = COLOURS["front"], COLOURS["back"]    # v < 0.5 (bottom rows)
    texture[:32, :32], texture[:32, 32:] = COLOURS["top"], COLOURS["right"]
    parts = [quad((0, 0, 0.1), (0, 0, 1), (0, 1, 0), 0.1, (0.05, 0.05, 0.45, 0.45)),
             quad((0, 0, -0.1), (0, 0, -1), (0, 1, 0), 0.1, (0.55, 0.05, 0.95, 0.45)),
             quad((0, 0.15, 0.1), (0, 0, 1), (0, 1, 0), 0.03, (0.05, 0.55, 0.45, 0.95)),
             quad((0.1, 0, 0), (1, 0, 0), (0, 1, 0), 0.1, (0.55, 0.55, 0.95, 0.95))]
    vertices = np.concatenate([p[0] for p in parts])
    uv = np.concatenate([p[1] for p in parts])
    faces = np.concatenate([p[2] + 4 * i for i, p in enumerate(parts)])
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(texture))
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv, material=material))
    path = tmp_path / "marker.glb"
    path.write_bytes(export_glb(trimesh.Scene(mesh)))
    return path


def colour_at(view, mask):
    pixels = view[..., :3][mask & (view[..., 3] > 0)]
    return np.median(pixels, axis=0) * 255 if len(pixels) else None


def test_views_follow_gltf_axes(marker_glb):
    meshes = render_glb_views.load_glb(marker_glb)
    size = 96
    centre = np.zeros(3)
    rows, cols = np.indices((size, size))
    middle = (abs(rows - size / 2) < 4) & (abs(cols - size / 2) < 4)
    front = render_glb_views.render_view(meshes, 0.0, size, 0.005, centre)
    back = render_glb_views.render_view(meshes, 180.0, size, 0.005, centre)
    # +Z faces the viewer at yaw 0, -Z at yaw 180; texture colours survive the round trip (v up).
    assert np.allclose(colour_at(front, middle), COLOURS["front"], atol=3)
    assert np.allclose(colour_at(back, middle), COLOURS["back"], atol=3)
    # The front view is lit head-on (shading 1 at n_z = 1), metres at 0.005 m/px: 0.2 m = 40 px.
    covered = np.flatnonzero(front[size // 2, :, 3] > 0)
    assert covered[-1] - covered[0] + 1 == pytest.approx(40, abs=1)
    # Yaw 90 turns the face (+Z) to the image's right and brings the -X side round; the +X quad is
    # then behind, and at yaw -90 it faces the viewer.
    assert np.allclose(colour_at(render_glb_views.render_view(meshes, -90.0, size, 0.005, centre), middle),
                       COLOURS["right"], atol=3)
    # +Y is up: the top marker lies 0.15 m = 30 px above the centre. The +X quad comes round on the
    # image's right of the front quad at yaw -45.
    green = np.all(np.abs(front[..., :3] * 255 - COLOURS["top"]) < 3, axis=2) & (front[..., 3] > 0)
    assert green.any() and rows[green].mean() == pytest.approx(size / 2 - 30, abs=1)
    turned = render_glb_views.render_view(meshes, -45.0, size, 0.005, centre)
    yellow = np.all(np.abs(turned[..., :3] * 255 - COLOURS["right"]) < 60, axis=2) & (turned[..., 3] > 0)
    red = np.all(np.abs(turned[..., :3] * 255 - COLOURS["front"]) < 60, axis=2) & (turned[..., 3] > 0)
    assert yellow.any() and red.any() and cols[yellow].mean() > cols[red].mean() + 10


def test_sheet_reports_metres_and_refuses_an_untextured_file(marker_glb, tmp_path):
    import trimesh

    sheet, info = render_glb_views.render_glb_views(marker_glb, size=64)
    assert sheet.shape == (64 + 40, 4 * 64, 3) and sheet.dtype == np.uint8
    assert np.allclose(info["size_m"], [0.2, 0.28, 0.2], atol=1e-3)
    plain = tmp_path / "plain.glb"
    plain.write_bytes(trimesh.creation.box().export(file_type="glb"))
    with pytest.raises(ValueError, match="plain.glb: mesh .* no UVs or no base-colour texture"):
        render_glb_views.load_glb(plain)
