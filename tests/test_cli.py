"""End-to-end tests of the `facetex` command on real photos.

One test runs the real program in a subprocess (native log silencing, the console script's
environment); the rest call the typer app in-process (:func:`invoke`), which is much faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.core.uv import uv_layout


def run_facetex(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real ``facetex`` program in a subprocess."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "facetex_cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@dataclass
class Invocation:
    """What an in-process run gives back, shaped like :class:`subprocess.CompletedProcess`."""

    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str) -> Invocation:
    """Run ``facetex ARGS`` in this process (typer's CliRunner); a crash is re-raised, not hidden."""
    from typer.testing import CliRunner

    from facetex_cli.main import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Invocation(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def astronaut_result(astronaut_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("complete")
    proc = run_facetex("complete", str(astronaut_path), "-o", str(out))
    return proc, out / "astronaut"


def test_complete_astronaut_end_to_end(astronaut_result, model):
    proc, folder = astronaut_result
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "W0000" not in proc.stderr, "native MediaPipe logs must be silenced"
    for name in ("fit.json", "fit_overlay.png", "uv_texture.png", "uv_mask.png", "uv_position.npy",
                 "uv_complete.png", "uv_provenance.png", "textured.obj", "textured.mtl", "textured.glb",
                 "render_fitted.png", "views.png", "complete.json"):
        assert (folder / name).is_file(), name
    texture = np.asarray(Image.open(folder / "uv_complete.png").convert("RGB"))
    layout = uv_layout(model, texture.shape[0])
    # Complete: no unfilled (black) texel in the layout, and dark texels (pupils, brows) are rare.
    brightness = texture[layout.mask].max(axis=1)
    assert brightness.min() > 8
    assert (brightness < 60).mean() < 0.03
    fit = json.loads((folder / "fit.json").read_text())
    assert fit["schema"] == "facetex.fit" and fit["num_faces"] == 1
    yaw, pitch, roll = fit["pose"]["yaw_pitch_roll_deg"]
    assert abs(yaw) < 20 and abs(roll) < 15
    assert np.asarray(fit["lighting_sh"]).shape == (9, 3)
    assert not list(folder.glob("*.part*"))


def test_exported_obj_opens_with_texture(astronaut_result):
    import trimesh

    _, folder = astronaut_result
    obj = (folder / "textured.obj").read_text().splitlines()
    n_v = sum(line.startswith("v ") for line in obj)
    n_vt = sum(line.startswith("vt ") for line in obj)
    assert n_v == n_vt > 468
    assert any(line.startswith("f ") and line.count("/") == 6 for line in obj)
    mtl = (folder / "textured.mtl").read_text()
    texture_name = next(line.split()[1] for line in mtl.splitlines() if line.startswith("map_Kd"))
    assert (folder / texture_name).is_file()
    mesh = trimesh.load(folder / "textured.obj", process=False)
    assert mesh.visual.uv is not None and mesh.visual.material.image is not None
    scene = trimesh.load(folder / "textured.glb")
    glb = next(iter(scene.geometry.values()))
    assert glb.visual.uv is not None and len(glb.visual.uv) == n_v
    assert np.allclose(glb.visual.uv, mesh.visual.uv, atol=1e-5)


def test_stages_chain_and_render(astronaut_path, tmp_path):
    out = tmp_path / "out"
    assert invoke("fit", str(astronaut_path), "-o", str(out)).returncode == 0
    folder = out / "astronaut"
    assert (folder / "fit_overlay.png").is_file()
    proc = invoke("unwrap", str(astronaut_path), str(folder / "fit.json"), "-o", str(out), "--uv-size", "256")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(folder / "uv_texture.png").mode == "RGBA"
    assert Image.open(folder / "uv_texture.png").size == (256, 256)
    (folder / "notes.txt").write_text("kept")
    fit_bytes = (folder / "fit.json").read_bytes()
    proc = invoke("complete", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (folder / "uv_complete.png").is_file() and (folder / "render_fitted.png").is_file()
    assert f"wrote {folder}" in proc.stderr, "a single input names its output folder"
    # Completing an unwrap folder keeps its other files and records the settings it really used.
    assert (folder / "fit.json").read_bytes() == fit_bytes and (folder / "notes.txt").read_text() == "kept"
    info = json.loads((folder / "complete.json").read_text())
    assert info["uv_size"] == 256 and Image.open(folder / "uv_complete.png").size == (256, 256)
    assert info["delight"] is False
    # A result folder stands for its uv_complete.png (not every PNG in it).
    proc = invoke("render", str(folder), str(out), "-o", str(out), "--yaws", "-45,0,45",
                       "--view-size", "128", "--sh", str(folder / "fit.json"))
    assert proc.returncode == 0, proc.stderr
    for name in ("render_yaw-045.png", "render_yaw+000.png", "render_yaw+045.png", "turntable.gif", "textured.obj",
                 "textured.png", "render_fitted.png"):
        assert (folder / name).is_file(), name
    assert "1 ok, 0 skipped, 0 failed" in proc.stderr
    gif = Image.open(folder / "turntable.gif")
    assert gif.n_frames > 10
    view = np.asarray(Image.open(folder / "render_yaw+000.png"))
    assert view.shape == (128, 128, 4) and view[..., 3].max() == 255 and view[0, 0, 3] == 0


def test_unwrap_without_fit_names_the_missing_file(astronaut_path, tmp_path):
    proc = invoke("unwrap", str(astronaut_path), str(tmp_path), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "fit.json" in proc.stderr and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_face_index_out_of_range(astronaut_path, tmp_path):
    proc = invoke("fit", str(astronaut_path), "-o", str(tmp_path), "--face", "3")
    assert proc.returncode == 1
    assert "face 3 requested but 1 found" in proc.stderr


@pytest.mark.shared
def test_shared_photos_multi_face_and_large_pose(shared_faces, tmp_path):
    wild = shared_faces / "wild"
    london = sorted((shared_faces / "london" / "neutral").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    proc = invoke("complete", *map(str, london), str(wild / "deca_AFLW2000_image00181.jpg"), "-o", str(out),
                       "--no-previews", "--no-glb")
    assert proc.returncode == 0, proc.stderr
    yaw = json.loads((out / "deca_AFLW2000_image00181" / "fit.json").read_text())["pose"]["yaw_pitch_roll_deg"][0]
    assert abs(yaw) > 40, "the large-pose example is a near profile"
    info = json.loads((out / "deca_AFLW2000_image00181" / "complete.json").read_text())["completion"]
    assert info["mirrored_fraction"] > 0.2
    proc = invoke("complete", str(wild / "3ddfa_trump_hillary.jpg"), "-o", str(out), "--face", "all",
                       "--no-previews", "--no-glb")
    assert proc.returncode == 0, proc.stderr
    faces = sorted(p.name for p in out.glob("3ddfa_trump_hillary_face*"))
    assert faces == ["3ddfa_trump_hillary_face0", "3ddfa_trump_hillary_face1"]


def test_pseudo_gt_build_pca_and_blend_commands(astronaut_path, tmp_path):
    out = tmp_path / "out"
    assert invoke("fit", str(astronaut_path), "-o", str(out)).returncode == 0
    folder = out / "astronaut"
    assert invoke("unwrap", str(astronaut_path), str(folder / "fit.json"), "-o", str(out),
                       "--uv-size", "256").returncode == 0
    proc = invoke("pseudo-gt", str(out), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("uv_pseudo.png", "uv_pseudo_provenance.png", "uv_pca.png", "pseudo_gt.json"):
        assert (folder / name).is_file(), name
    info = json.loads((folder / "pseudo_gt.json").read_text())
    assert info["visible_fraction"] > 0.3 and info["pca_components"] == 40
    # Too few maps for the requested components: one clear line, no traceback.
    proc = invoke("build-pca", str(out), "-o", str(tmp_path / "m.h5"), "--components", "5")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "5" in proc.stderr and not (tmp_path / "m.h5").exists()
    proc = invoke("complete", str(astronaut_path), "-o", str(tmp_path / "blend"), "--method", "blend",
                       "--no-previews", "--no-glb", "--uv-size", "256")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "blend" / "astronaut" / "complete.json").read_text())
    assert result["method"] == "blend" and result["completion"]["visible_fraction"] > 0.3
    proc = invoke("complete", str(astronaut_path), "-o", str(tmp_path / "x"), "--method", "mirror",
                       "--pca", str(tmp_path / "m.h5"))
    assert proc.returncode == 2 and "--pca goes with --method pca or blend" in proc.stderr
