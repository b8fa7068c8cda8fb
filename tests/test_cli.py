"""End-to-end tests of the `facetex` command on real photos, and every bad-input case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.core.uv import uv_layout


def run_facetex(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "facetex_cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


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


def _bad_inputs(folder: Path, astronaut_path: Path) -> dict[str, str]:
    """Write bad and awkward photos; return name -> expected error fragment ('' = must succeed)."""
    astro = Image.open(astronaut_path).convert("RGB")
    raw = (folder / "truncated.jpg")
    astro.save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    raw.write_bytes(data[: len(data) // 3])
    (folder / "full.jpg").unlink()
    (folder / "notes.jpg").write_text("this is not an image\n")
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (300, 300), (120, 120, 120)).save(folder / "noface.png")
    Image.new("RGB", (12, 12), (120, 120, 120)).save(folder / "tiny.png")
    astro.convert("L").save(folder / "gray.png")
    astro.convert("CMYK").save(folder / "cmyk.jpg")
    rgba = astro.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "alpha.png")
    gray16 = (np.asarray(astro.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(folder / "deep16.png")
    # Stored rotated 90 degrees counter-clockwise, with EXIF orientation 6 ("rotate 90 CW to view").
    exif = Image.Exif()
    exif[0x0112] = 6
    astro.rotate(90, expand=True).save(folder / "exif_rotated.jpg", exif=exif, quality=92)
    return {"truncated.jpg": "corrupt or truncated", "notes.jpg": "not an image", "empty.png": "not an image",
            "noface.png": "no face found", "tiny.png": "too small", "gray.png": "", "cmyk.jpg": "",
            "alpha.png": "", "deep16.png": "", "exif_rotated.jpg": ""}


def test_batch_with_bad_inputs(astronaut_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    expected = _bad_inputs(photos, astronaut_path)
    out = tmp_path / "out"
    proc = run_facetex("complete", str(photos), str(tmp_path / "missing.jpg"), "-o", str(out), "--no-previews",
                       "--no-glb")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" not in text
    error_lines = [line for line in text.splitlines() if line.startswith("error ")]
    for name, fragment in expected.items():
        stem = Path(name).stem
        if fragment:
            matching = [line for line in error_lines if name in line]
            assert len(matching) == 1, (name, error_lines)
            assert fragment in matching[0], matching[0]
            assert not (out / stem).exists(), f"{name} failed but left {out / stem}"
        else:
            assert (out / stem / "complete.json").is_file(), (name, text)
    assert any("missing.jpg" in line for line in error_lines)
    assert not [p for p in out.rglob("*") if ".part" in p.name]
    # The EXIF orientation was applied: the face is upright (small roll), as in the original.
    roll = json.loads((out / "exif_rotated" / "fit.json").read_text())["pose"]["yaw_pitch_roll_deg"][2]
    assert abs(roll) < 15

    # Resume: everything that succeeded is skipped, the failures are tried (and fail) again.
    again = run_facetex("complete", str(photos), "-o", str(out), "--skip-existing", "--no-previews", "--no-glb")
    assert again.returncode == 1
    assert f"{sum(1 for f in expected.values() if not f)} skipped" in again.stderr


def test_stages_chain_and_render(astronaut_path, tmp_path):
    out = tmp_path / "out"
    assert run_facetex("fit", str(astronaut_path), "-o", str(out)).returncode == 0
    folder = out / "astronaut"
    assert (folder / "fit_overlay.png").is_file()
    proc = run_facetex("unwrap", str(astronaut_path), str(folder / "fit.json"), "-o", str(out), "--uv-size", "256")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(folder / "uv_texture.png").mode == "RGBA"
    assert Image.open(folder / "uv_texture.png").size == (256, 256)
    proc = run_facetex("complete", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (folder / "uv_complete.png").is_file() and (folder / "render_fitted.png").is_file()
    # A result folder stands for its uv_complete.png (not every PNG in it).
    proc = run_facetex("render", str(folder), str(out), "-o", str(out), "--yaws", "-45,0,45",
                       "--size", "128", "--sh", str(folder / "fit.json"))
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
    proc = run_facetex("unwrap", str(astronaut_path), str(tmp_path), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "fit.json" in proc.stderr and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_face_index_out_of_range(astronaut_path, tmp_path):
    proc = run_facetex("fit", str(astronaut_path), "-o", str(tmp_path), "--face", "3")
    assert proc.returncode == 1
    assert "face 3 requested but 1 found" in proc.stderr


@pytest.mark.shared
def test_shared_photos_multi_face_and_large_pose(shared_faces, tmp_path):
    wild = shared_faces / "wild"
    london = sorted((shared_faces / "london" / "neutral").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    proc = run_facetex("complete", *map(str, london), str(wild / "deca_AFLW2000_image00181.jpg"), "-o", str(out),
                       "--no-previews", "--no-glb")
    assert proc.returncode == 0, proc.stderr
    yaw = json.loads((out / "deca_AFLW2000_image00181" / "fit.json").read_text())["pose"]["yaw_pitch_roll_deg"][0]
    assert abs(yaw) > 40, "the large-pose example is a near profile"
    info = json.loads((out / "deca_AFLW2000_image00181" / "complete.json").read_text())["completion"]
    assert info["mirrored_fraction"] > 0.2
    proc = run_facetex("complete", str(wild / "3ddfa_trump_hillary.jpg"), "-o", str(out), "--face", "all",
                       "--no-previews", "--no-glb")
    assert proc.returncode == 0, proc.stderr
    faces = sorted(p.name for p in out.glob("3ddfa_trump_hillary_face*"))
    assert faces == ["3ddfa_trump_hillary_face0", "3ddfa_trump_hillary_face1"]


def test_pseudo_gt_build_pca_and_blend_commands(astronaut_path, tmp_path):
    out = tmp_path / "out"
    assert run_facetex("fit", str(astronaut_path), "-o", str(out)).returncode == 0
    folder = out / "astronaut"
    assert run_facetex("unwrap", str(astronaut_path), str(folder / "fit.json"), "-o", str(out),
                       "--uv-size", "256").returncode == 0
    proc = run_facetex("pseudo-gt", str(out), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("uv_pseudo.png", "uv_pseudo_provenance.png", "uv_pca.png", "pseudo_gt.json"):
        assert (folder / name).is_file(), name
    info = json.loads((folder / "pseudo_gt.json").read_text())
    assert info["visible_fraction"] > 0.3 and info["pca_components"] == 40
    # Too few maps for the requested components: one clear line, no traceback.
    proc = run_facetex("build-pca", str(out), "-o", str(tmp_path / "m.h5"), "--components", "5")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "5" in proc.stderr and not (tmp_path / "m.h5").exists()
    proc = run_facetex("complete", str(astronaut_path), "-o", str(tmp_path / "blend"), "--method", "blend",
                       "--no-previews", "--no-glb", "--uv-size", "256")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "blend" / "astronaut" / "complete.json").read_text())
    assert result["method"] == "blend" and result["completion"]["visible_fraction"] > 0.3
    proc = run_facetex("complete", str(astronaut_path), "-o", str(tmp_path / "x"), "--method", "mirror",
                       "--pca", str(tmp_path / "m.h5"))
    assert proc.returncode == 2 and "--pca goes with --method pca or blend" in proc.stderr
