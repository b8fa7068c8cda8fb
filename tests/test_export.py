"""Textured-mesh export (metres, glTF axes, names) and the ``render`` command's argument errors."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facetex_cli.main import app
from stages.core.face_model import MEAN_ADULT_IPD_M
from stages.core.lighting import _C0
from stages.render import export_textured_mesh, mesh_label
from tests.test_unwrap_render import synthetic_fit

# MediaPipe face-mesh indices of the built-in model: nose tip, mid-forehead, chin (menton),
# nasion (between the eyes), outer eye corners (exocanthion), subject's left / right.
NOSE_TIP, FOREHEAD, CHIN, NASION, EX_LEFT, EX_RIGHT = 1, 10, 152, 168, 263, 33


def glb_json(path) -> dict:
    """The JSON chunk of a binary glTF file."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack("<4sII", data[:12])
    length, kind = struct.unpack("<I4s", data[12:20])
    assert (magic, version, kind) == (b"glTF", 2, b"JSON")
    return json.loads(data[20:20 + length])


def obj_vertices(path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()[1:4]] for line in path.read_text().splitlines()
                     if line.startswith("v ")])


def test_metric_scale_matches_adult_anthropometry(model):
    """One constant per model: the mean shape's eye distance is 63 mm; other distances land in adult ranges."""
    m = model.metres_per_unit()
    v = model.vertices.astype(np.float64) * m
    eyes = v[model.regions["left_eye"]].mean(0) - v[model.regions["right_eye"]].mean(0)
    assert np.linalg.norm(eyes) == pytest.approx(MEAN_ADULT_IPD_M)
    # Cross-checks against independent adult norms (Farkas 1994: biocular width ex-ex ~ 88-91 mm,
    # morphological face height n-gn ~ 112-121 mm); the mesh spans mid-forehead to chin.
    assert 0.080 < np.linalg.norm(v[EX_LEFT] - v[EX_RIGHT]) < 0.100
    assert 0.105 < np.linalg.norm(v[NASION] - v[CHIN]) < 0.130
    assert 0.15 < v[FOREHEAD, 1] - v[CHIN, 1] < 0.20


def test_exported_meshes_are_in_metres_with_gltf_axes(model, tmp_path):
    import trimesh

    texture = np.full((64, 64, 3), 0.5, np.float32)
    export_textured_mesh(tmp_path, texture, model.vertices, model, label="astronaut", subdivide=0)
    scene = trimesh.load(tmp_path / "textured.glb")
    height = scene.extents[1]
    assert 0.15 < height < 0.3, f"GLB face is {height:.3f} m tall"
    (glb,) = scene.geometry.values()
    obj = obj_vertices(tmp_path / "textured.obj")
    # OBJ and GLB carry the same coordinates (GLB stores float32).
    assert np.allclose(obj, glb.vertices, atol=1e-6)
    assert np.allclose(obj, model.vertices * model.metres_per_unit(), atol=1e-6)
    # glTF axes: +y up (forehead above chin), +z towards the viewer (nose tip the most forward),
    # +x the subject's left (image right), right-handed with outward counter-clockwise faces.
    assert obj[FOREHEAD, 1] > obj[CHIN, 1]
    assert obj[NOSE_TIP, 2] == pytest.approx(obj[:, 2].max(), abs=0.005)
    assert obj[EX_LEFT, 0] > 0 > obj[EX_RIGHT, 0]
    tri = model.triangles[np.argmin(np.abs(obj[model.triangles].mean(1) - obj[NOSE_TIP]).sum(1))]
    normal = np.cross(obj[tri[1]] - obj[tri[0]], obj[tri[2]] - obj[tri[0]])
    assert normal[2] > 0


def test_metric_scale_is_per_model_not_per_face(model, tmp_path):
    """A per-image shape 10% larger than the mean (in model units) exports 10% larger: no per-face rescale."""
    texture = np.full((16, 16, 3), 0.5, np.float32)
    export_textured_mesh(tmp_path / "a", texture, model.vertices, model, label="a", subdivide=0, glb=False)
    export_textured_mesh(tmp_path / "b", texture, 1.1 * model.vertices, model, label="b", subdivide=0, glb=False)
    a, b = obj_vertices(tmp_path / "a" / "textured.obj"), obj_vertices(tmp_path / "b" / "textured.obj")
    assert np.ptp(b[:, 1]) == pytest.approx(1.1 * np.ptp(a[:, 1]), rel=1e-5)


def test_mesh_label_is_safe_for_obj():
    assert mesh_label("IMG 0042 (copy)") == "IMG_0042__copy_"
    assert mesh_label("face-01.v2_face0") == "face-01.v2_face0"
    assert mesh_label("") == "face"


def test_exported_names_carry_the_photo_stem(model, tmp_path):
    """OBJ object/material and glTF node/mesh/material/image are named after the (sanitised) stem."""
    import trimesh

    texture = np.zeros((32, 32, 3), np.float32)
    texture[..., 0] = 1.0
    from stages.core.image_io import save_png

    save_png(tmp_path / "uv_complete.png", texture)
    written = export_textured_mesh(tmp_path, texture, model.vertices, model, label="my photo", subdivide=0,
                                   texture_file="uv_complete.png")
    assert [p.name for p in written] == ["textured.obj", "textured.mtl", "uv_complete.png", "textured.glb"]
    obj = (tmp_path / "textured.obj").read_text().splitlines()
    mtl = (tmp_path / "textured.mtl").read_text().splitlines()
    assert "o my_photo" in obj and "usemtl my_photo_face" in obj
    assert "newmtl my_photo_face" in mtl and "map_Kd uv_complete.png" in mtl
    tree = glb_json(tmp_path / "textured.glb")
    assert [n["name"] for n in tree["nodes"]] == ["my_photo"]
    assert [m["name"] for m in tree["meshes"]] == ["my_photo"]
    assert [m["name"] for m in tree["materials"]] == ["my_photo_face"]
    assert tree["images"] == [{"bufferView": tree["images"][0]["bufferView"], "mimeType": "image/png",
                               "name": "my_photo_uv_complete"}]
    # trimesh reads the names back, and the OBJ (name with no spaces) still finds its texture.
    scene = trimesh.load(tmp_path / "textured.glb")
    assert list(scene.geometry) == ["my_photo"]
    assert scene.geometry["my_photo"].visual.material.name == "my_photo_face"
    mesh = trimesh.load(tmp_path / "textured.obj", process=False)
    assert mesh.visual.material.name == "my_photo_face"
    assert np.asarray(mesh.visual.material.image.convert("RGB"))[..., 0].min() == 255


# ------------------------------------------------------------------------------ render CLI arguments


@pytest.fixture()
def render_inputs(model, tmp_path):
    """A texture PNG and a fit.json (mean shape, frontal) whose photo does not exist."""
    from stages.core.image_io import save_png

    fit = synthetic_fit(model, 0.0, 128)
    fit.lighting = np.zeros((9, 3), np.float32)
    fit.lighting[0] = 0.8 / _C0
    fit.save(tmp_path / "fit.json")
    save_png(tmp_path / "tex.png", np.full((64, 64, 3), 0.5, np.float32))
    return tmp_path / "tex.png", tmp_path / "fit.json"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    # Rich wraps long messages in a box: compare on the text with the box and line breaks removed.
    return result, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


def bad_sh_files(folder, fit_path) -> dict[str, str]:
    """name -> expected reason fragment, for every kind of bad --sh file."""
    fit = json.loads(fit_path.read_text())
    files = {
        "missing.json": (None, "no such file"),
        "folder.json": ("dir", "cannot read --sh file"),
        "garbage.json": ("[[1, 2, 3],", "not a JSON file"),
        "binary.json": (b"\xff\xfe\x00", "not a JSON file"),
        "short.json": ([[1, 0, 0]] * 4, "got shape (4, 3)"),
        "ragged.json": ([[1, 0, 0]] * 8 + [[1, 0]], "9x3 list of numbers"),
        "words.json": ([["a", "b", "c"]] * 9, "9x3 list of numbers"),
        "nan.json": ([[float("nan")] * 3] * 9, "NaN or infinite"),
        "dark.json": ([[0.0] * 3] * 9, "positive ambient"),
        "fit_without_lighting.json": ({k: v for k, v in fit.items() if k != "lighting_sh"}, "no 'lighting_sh'"),
    }
    out = {}
    for name, (content, reason) in files.items():
        path = folder / name
        if content == "dir":
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        elif content is not None:
            path.write_text(json.dumps(content))
        out[name] = reason
    return out


def test_render_bad_sh_is_one_line_naming_the_file(render_inputs, tmp_path):
    texture, fit = render_inputs
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, reason in bad_sh_files(bad, fit).items():
        result, text = invoke("render", texture, fit, "-o", tmp_path / "out", "--sh", bad / name)
        assert result.exit_code == 2, (name, result.output)
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, (name, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error {bad / name}: "), (name, result.output)
        assert reason in text, (name, result.output)
    assert not (tmp_path / "out").exists(), "nothing is written when --sh is bad"


def test_render_with_good_sh_list_and_fit_json(render_inputs, tmp_path):
    texture, fit = render_inputs
    light = np.zeros((9, 3))
    light[0] = 1.0
    light[3] = 0.5
    (tmp_path / "light.json").write_text(json.dumps(light.tolist()))
    views = []
    for sh in (None, tmp_path / "light.json", fit):
        result, _ = invoke("render", texture, fit, "-o", tmp_path / "out", *(("--sh", sh) if sh else ()),
                           "--size", "64", "--yaws", "0", "--no-turntable", "--no-glb")
        assert result.exit_code == 0, result.output
        views.append(np.asarray(Image.open(tmp_path / "out" / "tex" / "render_yaw+000.png")).astype(float))
    face = views[0][..., 3] > 250
    assert face.mean() > 0.2 and all(np.array_equal(v[..., 3], views[0][..., 3]) for v in views)
    plain, lit, fitted = (v[..., :3] for v in views)
    # The fit's light is ambient only: relit with it (normalised to its ambient level), the grey
    # texture looks as unlit. light.json adds a linear term: one side of the face brighter than the other.
    assert np.abs(fitted[face] - plain[face]).max() <= 1
    assert np.abs(lit[face] - plain[face]).mean() > 2
    left, right = face.copy(), face.copy()
    left[:, 32:] = False
    right[:, :32] = False
    assert abs(lit[left].mean() - lit[right].mean()) > 10 and abs(plain[left].mean() - plain[right].mean()) <= 1


@pytest.mark.parametrize("which", ["texture", "fit"])
def test_render_with_one_path_says_what_is_missing(render_inputs, which):
    texture, fit = render_inputs
    result, text = invoke("render", texture if which == "texture" else fit)
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "Missing argument" not in result.output
    missing = "the fit.json is missing" if which == "texture" else "the UV texture is missing"
    assert missing in text, result.output
    assert "facetex render out/photo/uv_complete.png out/photo/fit.json" in text
