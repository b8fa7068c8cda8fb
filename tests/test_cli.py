"""End-to-end tests of the `facetex` command on real photos.

One test runs the real program in a subprocess (native log silencing, the console script's
environment); the rest call the typer app in-process (:func:`invoke`), which is much faster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.core.uv import uv_layout

REPO = Path(__file__).resolve().parents[1]


def run_facetex(*args: str, cwd: Path | None = None, modules_file: Path | None = None) -> subprocess.CompletedProcess:
    """The real ``facetex`` program of this checkout (not an installed copy) in a subprocess.

    ``modules_file``: run it as ``python -m facetex_cli.main`` does (runpy, as ``__main__``) from a wrapper
    that writes the names of every module the process imported into this file when it exits."""
    env = dict(os.environ, COLUMNS="200",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    command = [sys.executable, "-m", "facetex_cli.main", *args]
    if modules_file is not None:
        command = [sys.executable, "-c", "import atexit, runpy, sys\n"
                   f"atexit.register(lambda: open({str(modules_file)!r}, 'w').write('\\n'.join(sorted(sys.modules))))\n"
                   f"sys.argv = ['facetex', *{list(args)!r}]\n"
                   "runpy.run_module('facetex_cli.main', run_name='__main__', alter_sys=True)"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


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
    """``facetex complete`` (default method) on the astronaut in a fresh process; the modules it imported are
    listed in ``<out>/modules.txt`` (:func:`test_default_complete_does_not_import_torch`)."""
    out = tmp_path_factory.mktemp("complete")
    proc = run_facetex("complete", str(astronaut_path), "-o", str(out), "--uv-size", "256",
                       modules_file=out / "modules.txt")
    return proc, out / "astronaut"


def test_default_complete_does_not_import_torch(astronaut_result):
    """A cold `facetex complete` with the default method (mirror, previews and GLB on) never imports torch
    (about 1 s of its start): commands, completion methods and the preview renderer load lazily."""
    proc, folder = astronaut_result
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set((folder.parent / "modules.txt").read_text().split())
    assert {"facetex_cli.complete", "stages.complete", "stages.render", "stages.completion.mirror"} <= modules
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}, "torch was imported"
    assert "facetex_cli.train" not in modules and "stages.completion.unet" not in modules


def check_render_fitted(folder: Path, photo: np.ndarray, model, sh: np.ndarray | None = None) -> None:
    """``render_fitted.png`` of ``folder`` is its ``uv_complete.png`` rendered at the fitted pose over
    ``photo`` ``(H, W, 3)`` uint8 (relit with ``sh`` when given), and that render really covers the face."""
    from stages.core.image_io import load_texture
    from stages.fit import FitResult
    from stages.render import render_on_photo

    fit = FitResult.load(folder / "fit.json")
    texture = load_texture(folder / "uv_complete.png")[..., :3]
    saved = np.asarray(Image.open(folder / "render_fitted.png").convert("RGB")).astype(int)
    expected = render_on_photo(photo, texture, fit, model, sh=sh).astype(int)
    assert saved.shape == expected.shape
    assert np.abs(saved - expected).mean() < 0.5 and np.abs(saved - expected).max() <= 3
    # The render is drawn into the photo window: a red texture makes the face red, the corners stay photo.
    red = render_on_photo(photo, np.tile(np.float32([1, 0, 0]), texture.shape[:2] + (1,)), fit, model)
    h, w = red.shape[:2]
    centre = red[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8].astype(int)
    assert (centre[..., 0] > 200).all() and (centre[..., 1:] < 30).all()
    assert np.array_equal(red[:3, :3], expected[:3, :3].astype(np.uint8))


def test_complete_astronaut_end_to_end(astronaut_result, astronaut_path, model):
    proc, folder = astronaut_result
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "W0000" not in proc.stderr, "native MediaPipe logs must be silenced"
    for name in ("uv_position.npy", "textured.obj", "textured.mtl", "textured.glb"):
        assert (folder / name).is_file(), name  # their contents: test_exported_obj_opens_with_texture, test_export
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
    assert fit["settings"]["face"] == "largest" and fit["settings"]["max_side"] == 4096
    assert not list(folder.glob("*.part*"))
    info = json.loads((folder / "complete.json").read_text())
    # uv_mask.png is the seen texels (the unwrap's coverage of the layout); uv_texture.png's alpha is
    # their confidence; uv_provenance.png colours the kept ones green, mirrored blue, smooth-filled orange.
    seen = np.asarray(Image.open(folder / "uv_mask.png").convert("L")) > 127
    assert seen[layout.mask].mean() == pytest.approx(info["unwrap"]["coverage"], abs=2e-3)
    assert not seen[~layout.mask].any()
    alpha = np.asarray(Image.open(folder / "uv_texture.png"))[..., 3]
    assert (alpha[~seen] == 0).all() and alpha[seen].mean() > 100
    green, blue, orange = (70, 200, 90), (70, 130, 240), (235, 120, 60)   # the README's legend
    provenance = np.asarray(Image.open(folder / "uv_provenance.png").convert("RGB"))
    fractions = info["completion"]
    filled = 1.0 - fractions["visible_fraction"] - fractions["mirrored_fraction"]   # mirror's smooth fill
    for colour, share in ((green, fractions["visible_fraction"]), (blue, fractions["mirrored_fraction"]),
                          (orange, filled)):
        assert (provenance[layout.mask] == colour).all(axis=1).mean() == pytest.approx(share, abs=2e-3), colour
    kept = (provenance == green).all(axis=2)
    # Kept texels are seen ones (a weakly seen texel with a better-seen mirror partner takes the partner's).
    assert not (kept & ~seen).any() and kept.sum() > 0.9 * seen.sum()
    photo = np.asarray(Image.open(astronaut_path).convert("RGB")).astype(int)
    # fit_overlay.png: the face's window of the photo (512 px, not downscaled) with the mesh drawn over the face only.
    from stages.fit import FitResult, overlay_window

    overlay = np.asarray(Image.open(folder / "fit_overlay.png").convert("RGB")).astype(int)
    wx0, wy0, wx1, wy1 = overlay_window(FitResult.load(folder / "fit.json"), *photo.shape[:2])
    window = photo[wy0:wy1, wx0:wx1]
    assert overlay.shape == window.shape and window.size < photo.size
    x0, y0, x1, y1 = (round(v) for v in np.asarray(fit["face_box"]) - [wx0, wy0, wx0, wy0])
    assert np.abs(overlay[-20:, :20] - window[-20:, :20]).max() <= 1
    assert (np.abs(overlay[y0:y1, x0:x1] - window[y0:y1, x0:x1]).max(axis=2) > 20).mean() > 0.1
    check_render_fitted(folder, photo.astype(np.uint8), model)
    # views.png: the default five yaws side by side, the face over the flat grey background.
    views = np.asarray(Image.open(folder / "views.png").convert("RGB")).astype(int)
    side = views.shape[0]
    assert views.shape[1] == 5 * side
    for k in range(5):
        tile = views[:, k * side:(k + 1) * side]
        assert np.abs(tile[:4, :4] - round(0.16 * 255)).max() <= 1, "background corner"
        assert np.abs(tile[side // 2, side // 2] - round(0.16 * 255)).max() > 20, "face in the middle"


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


@pytest.fixture(scope="module")
def unwrapped_root(astronaut_path, tmp_path_factory) -> Path:
    """``fit`` (``--face 0 --max-side 384``) then ``unwrap`` (``--uv-size 256 --erosion 0.03``) of the
    astronaut, in-process; tests copy it (:func:`copy_root`) before writing into it."""
    out = tmp_path_factory.mktemp("unwrapped")
    proc = invoke("fit", str(astronaut_path), "-o", str(out), "--face", "0", "--max-side", "384")
    assert proc.returncode == 0, proc.stderr
    proc = invoke("unwrap", str(astronaut_path), str(out / "astronaut" / "fit.json"), "-o", str(out),
                  "--uv-size", "256", "--erosion", "0.03", "--max-side", "384")
    assert proc.returncode == 0, proc.stderr
    return out


def copy_root(root: Path, tmp_path: Path) -> Path:
    shutil.copytree(root, tmp_path / "out")
    return tmp_path / "out"


def test_fit_and_unwrap_record_the_settings_they_used(unwrapped_root):
    fit = json.loads((unwrapped_root / "astronaut" / "fit.json").read_text())
    assert fit["settings"] == {"face": "0", "max_side": 384, "min_face_px": 40, "seed": 0, "occlusion_mask": True}
    assert fit["image_size"] == [384, 384] and fit["quality"]["load_scale"] == pytest.approx(0.75)
    from stages.fit import FitResult

    assert FitResult.load(unwrapped_root / "astronaut" / "fit.json").settings == fit["settings"]
    info = json.loads((unwrapped_root / "astronaut" / "unwrap.json").read_text())
    face_width = fit["quality"]["face_width_px"]
    assert info["uv_size"] == 256 and info["erosion"] == 0.03
    # The erosion radius is the fraction of the face's width in the photo as fitted.
    assert abs(info["erosion_px"] - 0.03 * face_width) <= 0.03 * face_width * 0.25 + 1
    assert Image.open(unwrapped_root / "astronaut" / "uv_texture.png").size == (256, 256)


def test_complete_from_unwrap_folder_then_render(unwrapped_root, astronaut_path, model, tmp_path):
    out = copy_root(unwrapped_root, tmp_path)
    folder = out / "astronaut"
    (folder / "notes.txt").write_text("kept")
    fit_bytes = (folder / "fit.json").read_bytes()
    proc = invoke("complete", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {folder}" in proc.stderr, "a single input names its output folder"
    # Completing an unwrap folder keeps its other files and records the settings it really used.
    assert (folder / "fit.json").read_bytes() == fit_bytes and (folder / "notes.txt").read_text() == "kept"
    info = json.loads((folder / "complete.json").read_text())
    assert info["uv_size"] == 256 and Image.open(folder / "uv_complete.png").size == (256, 256)
    assert info["delight"] is False and info["unwrap"]["erosion"] == 0.03
    from stages.core.image_io import load_photo

    photo = load_photo(astronaut_path, max_side=384).rgb
    check_render_fitted(folder, photo, model)

    # A result folder stands for its uv_complete.png (not every PNG in it); --sh relights every output.
    sh = np.asarray(json.loads((folder / "fit.json").read_text())["lighting_sh"], dtype=np.float32)
    proc = invoke("render", str(folder), str(out), "-o", str(out), "--yaws", "-45,0,45",
                  "--view-size", "64", "--sh", str(folder / "fit.json"), "--no-turntable")
    assert proc.returncode == 0, proc.stderr
    assert "render: 1 ok, 0 skipped, 0 failed; 1 output folder written" in proc.stderr
    assert f"wrote {folder}" in proc.stderr
    assert not (folder / "turntable.gif").exists()
    check_render_fitted(folder, photo, model, sh=sh)
    views = [np.asarray(Image.open(folder / f"render_yaw{y}.png")) for y in ("-045", "+000", "+045")]
    for view in views:
        assert view.shape == (64, 64, 4) and view[..., 3].max() == 255 and view[0, 0, 3] == 0
    # Turned 45 degrees, the face's silhouette moves off-centre to opposite sides.
    centres = [np.argwhere(v[..., 3] > 127)[:, 1].mean() for v in views]
    assert centres[0] < centres[1] - 1 and centres[2] > centres[1] + 1 or \
        centres[0] > centres[1] + 1 and centres[2] < centres[1] - 1
    texture = np.asarray(Image.open(folder / "textured.png").convert("RGB")).astype(int)
    completed = np.asarray(Image.open(folder / "uv_complete.png").convert("RGB")).astype(int)
    assert np.abs(texture - completed).max() <= 1, "the exported mesh carries the rendered texture"


def test_render_turntable_sweeps_the_yaw(unwrapped_root, model, tmp_path):
    from stages.fit import FitResult
    from stages.render import render_views, write_turntable
    from tests.conftest import smooth_random_texture

    fit = FitResult.load(unwrapped_root / "astronaut" / "fit.json")
    texture = smooth_random_texture(64, seed=1)
    write_turntable(tmp_path / "t.gif", texture, fit, model, max_yaw=30, step=30, size=48)
    gif = Image.open(tmp_path / "t.gif")
    frames = []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    assert len(frames) == 4       # -30, 0, +30, then back through 0
    assert np.abs(frames[1] - frames[3]).max() <= 8 and np.abs(frames[0] - frames[2]).mean() > 2
    from stages.render import compose_views

    front = (compose_views(render_views(texture, fit, model, yaws=(0.0,), size=48)) * 255).astype(int)
    assert np.abs(frames[1] - front).mean() < 6      # GIF palette quantisation only


def test_render_checks_the_output_folder_first(unwrapped_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    folder = unwrapped_root / "astronaut"
    proc = invoke("render", str(folder / "uv_texture.png"), str(folder / "fit.json"), "-o", str(blocker))
    assert proc.returncode == 2
    assert f"{blocker}: the output folder (-o) exists and is not a folder" in " ".join(proc.stderr.split())
    assert blocker.read_text() == "not a folder"


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


def test_pseudo_gt_build_pca_and_blend_commands(unwrapped_root, astronaut_path, tmp_path):
    from stages.completion.pca import BUILTIN_PCA
    from stages.core.checksums import file_sha256

    out = copy_root(unwrapped_root, tmp_path)
    folder = out / "astronaut"
    pca_copy = tmp_path / "my_pca.h5"
    shutil.copy(BUILTIN_PCA, pca_copy)
    proc = invoke("pseudo-gt", str(out), "-o", str(out), "--pca", str(pca_copy))
    assert proc.returncode == 0, proc.stderr
    info = json.loads((folder / "pseudo_gt.json").read_text())
    assert info["visible_fraction"] > 0.3 and info["pca_components"] == 40
    # Which PCA file made it: its path and checksum.
    assert info["pca_file"] == {"path": str(pca_copy.resolve()), "sha256": file_sha256(BUILTIN_PCA)}
    fractions = info["visible_fraction"] + info["mirrored_fraction"] + info["model_fraction"]
    assert fractions == pytest.approx(1.0, abs=2e-3)
    layout = uv_layout_mask(256)
    pseudo = np.asarray(Image.open(folder / "uv_pseudo.png").convert("RGB")).astype(int)
    unwrap = np.asarray(Image.open(folder / "uv_texture.png")).astype(int)
    pca = np.asarray(Image.open(folder / "uv_pca.png").convert("RGB")).astype(int)
    assert pseudo.shape == pca.shape == (256, 256, 3)
    # Seen texels keep the photo's detail, shifted by a smooth field (Eq. 9): their texel-to-texel
    # differences are the unwrap's, which the smooth PCA fit's are not; the whole layout is filled.
    import cv2

    seen = cv2.erode(((unwrap[..., 3] > 200) & layout).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    pairs = seen[:, 1:] & seen[:, :-1]

    def detail_error(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image, axis=1)[pairs] - np.diff(unwrap[..., :3], axis=1)[pairs]).mean())

    assert detail_error(pseudo) < 1.0 and detail_error(pca) > 4 * detail_error(pseudo)
    assert pseudo[layout].max(axis=1).min() > 8
    # Too few maps for the requested components: one clear line, no traceback.
    proc = invoke("build-pca", str(out), "-o", str(tmp_path / "m.h5"), "--components", "5")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "only 1 readable" in " ".join(proc.stderr.split()) and not (tmp_path / "m.h5").exists()
    proc = invoke("complete", str(astronaut_path), "-o", str(tmp_path / "blend"), "--method", "blend",
                  "--no-previews", "--no-glb", "--uv-size", "256", "--max-side", "384")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "blend" / "astronaut" / "complete.json").read_text())
    assert result["method"] == "blend" and result["completion"]["visible_fraction"] > 0.3
    proc = invoke("complete", str(astronaut_path), "-o", str(tmp_path / "x"), "--method", "mirror",
                  "--pca", str(tmp_path / "m.h5"))
    assert proc.returncode == 2 and "--pca goes with --method pca, blend or uvapm" in proc.stderr


def uv_layout_mask(size: int) -> np.ndarray:
    from stages.core.face_model import load_builtin_face_model

    return uv_layout(load_builtin_face_model(), size).mask
