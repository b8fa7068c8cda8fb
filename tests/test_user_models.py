"""BFM and FLAME from the user's own files (issue 14): readers on small synthetic files in the real
formats, the conversion (registration, UVs), the fit, the data folder, one-line errors, transfer."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.user_model_files import N_EX, N_ID, write_bfm2009, write_bfm2017, write_flame


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    """Every test gets an empty user data folder (never the real one)."""
    folder = tmp_path / "facetex_data"
    monkeypatch.setenv("FACETEX_DATA", str(folder))
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_models")
    out = {"mat": root / "01_MorphableModel.mat", "h5": root / "model2017-1_face12_nomouth.h5",
           "pkl": root / "generic_model.pkl", "uv": root / "FLAME_texture.npz"}
    out["mat_truth"] = write_bfm2009(out["mat"])
    out["h5_truth"] = write_bfm2017(out["h5"])
    out["pkl_truth"] = write_flame(out["pkl"], out["uv"])
    return out


@pytest.fixture(scope="module")
def bfm(files):
    from stages.core.user_assets import convert_user_model

    return convert_user_model("bfm", files["h5"])


def test_bfm2009_mat_reads_back(files):
    from stages.core.bfm import read_bfm

    v, f, identity = files["mat_truth"]
    src = read_bfm(files["mat"])
    assert src.variant == "bfm2009" and src.expression is None
    np.testing.assert_allclose(src.vertices, v * 1e6, atol=0.05)          # micrometres, float32 in the file
    np.testing.assert_array_equal(src.triangles, f)                        # tl is 1-based
    np.testing.assert_allclose(src.identity, identity * 1e6, atol=0.05, rtol=1e-4)  # shapePC x shapeEV


def test_bfm2017_h5_reads_back(files):
    from stages.core.bfm import read_bfm

    v, f, identity, expression = files["h5_truth"]
    src = read_bfm(files["h5"])
    assert src.variant == "bfm2017"
    np.testing.assert_allclose(src.vertices, v * 1e3, atol=1e-3)
    np.testing.assert_array_equal(src.triangles, f)                        # cells (3, F) 0-based
    np.testing.assert_allclose(src.identity, identity * 1e3, atol=1e-4, rtol=1e-4)  # pcaBasis x sqrt(var)
    np.testing.assert_allclose(src.expression, expression * 1e3, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chumpy", [True, False])
def test_flame_pickle_reads_back_without_chumpy(files, tmp_path, chumpy):
    import sys

    from stages.core.flame import read_flame

    pkl = tmp_path / "generic_model.pkl"
    v, f, identity, expression = write_flame(pkl, tmp_path / "tex.npz", chumpy=chumpy)
    assert "chumpy" not in sys.modules
    src = read_flame(pkl, tmp_path / "tex.npz")
    np.testing.assert_allclose(src.vertices, v)
    np.testing.assert_array_equal(src.triangles, f)
    # Fewer than FLAME's 300 identity modes: all of them are identity.
    np.testing.assert_allclose(src.identity, np.concatenate([identity, expression]))
    assert src.uv.shape[1] == 2 and src.uv_triangles.shape == f.shape


def test_flame_pickle_cannot_run_code(tmp_path):
    from stages.core.errors import BadInputError
    from stages.core.flame import read_flame

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    pkl = tmp_path / "generic_model.pkl"
    pkl.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(BadInputError, match="system is not a class a FLAME model file holds"):
        read_flame(pkl, tmp_path / "none.npz")
    assert not (tmp_path / "owned").exists()


@pytest.mark.parametrize("kind", ["bfm", "flame"])
def test_registration_finds_the_landmarks_without_any(kind, bfm, files):
    """The synthetic models are ICT's face (BFM) and whole skin (FLAME): the landmark-free registration
    must put the 468 points where ICT's landmark-based one (51 iBUG points + thin-plate warp) does."""
    from stages.core.ict import load_face_model
    from stages.core.user_assets import convert_user_model
    from tests.user_model_files import ict_parts

    model, record = bfm if kind == "bfm" else convert_user_model("flame", files["pkl"], files["uv"])
    ict = load_face_model("ict")
    *_, used = ict_parts(face_only=kind == "bfm")
    # Both surfaces in ICT's model frame: the model's (welded) vertices are ICT's welded vertices `used`.
    weld = np.arange(model.n_vertices) if model.weld_index is None else model.weld_index
    ours = np.asarray(model.landmark_embedding @ ict.vertices.astype(np.float64)[used[_source_ids(model, weld)]])
    theirs = np.asarray(ict.landmark_embedding @ ict.vertices.astype(np.float64))
    err_mm = np.linalg.norm(ours - theirs, axis=1) * ict.metres_per_unit() * 1000
    # Measured: median 2.2 mm, 90th percentile 5.3 mm, face-only and whole-head sources alike (the nose
    # and lips, where the two means differ most, are off most).
    assert np.median(err_mm) < 3.0 and np.quantile(err_mm, 0.9) < 7.0
    # Real scale kept: the converted model's eye distance gives the source's metres back.
    assert record["conversion"]["source_metres_per_unit"] == (1e-3 if kind == "bfm" else 1.0)
    assert model.metres_per_unit() == pytest.approx(ict.metres_per_unit(), rel=0.03)
    # Features land on features: iBUG nose tip forward, eye corners left/right of it.
    p = model.vertices[model.landmarks68]
    assert p[30, 2] > p[36, 2] and p[30, 2] > p[45, 2] and p[36, 0] < p[30, 0] < p[45, 0]


def _source_ids(model, weld):
    """Source (welded) vertex of every model vertex: split copies are numbered in source order."""
    canonical = np.unique(weld)
    return np.searchsorted(canonical, weld)


def test_disk_layout_is_valid_and_flip_free(bfm):
    from stages.core.face_model import uv_signed_areas
    from stages.core.uv import uv_layout

    model, record = bfm
    assert record["conversion"]["uv"] == "disk (mean-value)"
    assert model.uv.min() >= 0.0 and model.uv.max() <= 1.0
    assert (uv_signed_areas(model.uv, model.triangles) > 0).all()
    assert uv_layout(model, 128).mask.mean() > 0.5                       # the disk covers ~pi/4 of the square
    # Mirror partners are mirror images (the source topology need not be symmetric).
    v = model.vertices.astype(np.float64)
    assert np.abs(v[model.mirror_index] * [-1, 1, 1] - v).max() * model.metres_per_unit() < 1e-3


def test_fit_recovers_known_coefficients(bfm):
    from stages.core.camera import Pose, euler_to_matrix
    from stages.core.ict import fit_morphable, morphable_vertices

    model, _ = bfm
    truth = np.array([1.2, -0.8, 0.5, 0.0, 0.6, 0.0])          # 4 identity + 2 expression (N(0, 1) each)
    assert len(truth) == N_ID + N_EX == len(model.shape_basis)
    pose = Pose(rotation=euler_to_matrix(20.0, 5.0, -4.0), scale=200.0, translation=np.array([300, 280, 900.0]))
    points = pose.to_screen(np.asarray(model.landmark_embedding @ morphable_vertices(model, truth)))
    fitted, vertices, residual, coeffs = fit_morphable(model, points)
    # Measured (4 alternations): 2.2 px rms on a ~400 px face; coefficients [0.85, -0.23, 0.16, 0.02, 0.56,
    # -0.04]: the priors shrink identity, and mode 0 (mostly size) trades against the pose's scale.
    assert np.sqrt(np.mean(residual ** 2)) < 3.0
    assert abs(coeffs[4] - truth[4]) < 0.1                     # the expression mode
    assert np.abs(coeffs - truth).max() < 0.7 and np.sign(coeffs[0]) == 1
    assert np.all(np.abs(np.subtract(fitted.euler, pose.euler)) < (1.0, 2.0, 1.0))
    skin = model.regions["skin"]
    err = np.linalg.norm(fitted.to_screen(vertices[skin])[:, :2]
                         - pose.to_screen(morphable_vertices(model, truth)[skin])[:, :2], axis=1)
    assert np.median(err) < 3.0                                # pixels: the texture is sampled from here


def test_assets_add_records_checksum_and_loads(files, data_folder):
    from facetex_cli.main import app
    from stages.core.ict import face_model_by_id, load_face_model
    from stages.core.user_assets import sha256_of

    result = CliRunner().invoke(app, ["assets", "add", "bfm", str(files["h5"])])
    assert result.exit_code == 0, result.output
    record = json.loads((data_folder / "models" / "bfm.json").read_text())
    assert record["source_sha256"] == sha256_of(files["h5"]) and record["variant"] == "bfm2017"
    model = load_face_model("bfm")
    assert model.name == record["name"] and face_model_by_id(model.name, "fit.json") is model
    # bfm:PATH of the same file reuses the conversion; it does not replace the default.
    assert load_face_model(f"bfm:{files['h5']}").name == model.name
    load_face_model(f"bfm:{files['mat']}")
    assert json.loads((data_folder / "models" / "bfm.json").read_text())["name"] == model.name
    listed = CliRunner().invoke(app, ["assets", "list"])
    assert "bfm: bfm2017-" in listed.output and "flame: not added" in listed.output
    listed = json.loads(CliRunner().invoke(app, ["assets", "list", "--json"]).output)
    assert listed["bfm"]["source_sha256"] == record["source_sha256"] and listed["flame"] is None


@pytest.mark.parametrize("kind,url", [("bfm", "https://faces.dmi.unibas.ch/bfm/"),
                                      ("flame", "https://flame.is.tue.mpg.de/")])
def test_missing_model_one_line(kind, url, astronaut_path, tmp_path):
    from facetex_cli.main import app
    from stages.core.errors import MissingArtifactError
    from stages.core.ict import load_face_model

    with pytest.raises(MissingArtifactError, match=f"facetex assets add {kind} PATH.*{url}"):
        load_face_model(kind)
    result = CliRunner().invoke(app, ["fit", str(astronaut_path), "--face-model", kind, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"no {kind.upper()} model added" in result.output and url in result.output
    assert not (tmp_path / "o" / "astronaut").exists()


def _corrupt(case, files, tmp_path):
    import h5py
    import scipy.io

    if case == "truncated_h5":
        path = tmp_path / "model.h5"
        path.write_bytes(files["h5"].read_bytes()[:4000])
        return "bfm", path, None, "cannot read as HDF5"
    if case == "h5_without_cells":
        path = tmp_path / "model.h5"
        with h5py.File(files["h5"], "r") as src, h5py.File(path, "w") as dst:
            src.copy("shape/model", dst, name="shape/model")
        return "bfm", path, None, "/shape/representer/cells: missing"
    if case == "mat_without_tl":
        path = tmp_path / "01_MorphableModel.mat"
        d = scipy.io.loadmat(files["mat"])
        scipy.io.savemat(path, {k: d[k] for k in ("shapeMU", "shapePC", "shapeEV")})
        return "bfm", path, None, "tl: missing"
    if case == "not_a_model":
        path = tmp_path / "model.mat"
        path.write_text("hello")
        return "bfm", path, None, "not a BFM file"
    if case == "pickle_without_shapedirs":
        path = tmp_path / "generic_model.pkl"
        path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "f": np.zeros((1, 3), int)}))
        return "flame", path, files["uv"], "shapedirs: missing"
    if case == "flame_without_uv":
        return "flame", files["pkl"], None, "FLAME needs its texture-space file"
    if case == "uv_wrong_triangles":
        path = tmp_path / "tex.npz"
        np.savez(path, vt=np.zeros((3, 2)), ft=np.zeros((5, 3), int))
        return "flame", files["pkl"], path, "ft: 5 triangles, the model has"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated_h5", "h5_without_cells", "mat_without_tl", "not_a_model",
                                  "pickle_without_shapedirs", "flame_without_uv", "uv_wrong_triangles"])
def test_bad_files_one_line(case, files, tmp_path, data_folder):
    from facetex_cli.main import app

    kind, path, uv, expect = _corrupt(case, files, tmp_path)
    args = ["assets", "add", kind, str(path)] + ([] if uv is None else ["--uv", str(uv)])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    named = uv if case == "uv_wrong_triangles" else path           # the file at fault
    assert len(lines) == 1 and f"{named.name}: " in lines[0] and expect in lines[0], result.output
    assert not (data_folder / "models").exists() or not list((data_folder / "models").iterdir())


def test_transfer_to_bfm_and_back(files, astronaut_path, landmarker):
    from stages.core.image_io import load_photo
    from stages.core.user_assets import convert_user_model
    from stages.fit import fit_photo
    from stages.transfer import transfer_texture
    from tests.conftest import smooth_random_texture

    from stages.core.ict import load_face_model

    fit = fit_photo(load_photo(astronaut_path), landmarker, occlusion_mask=False)[0]
    mp = load_face_model("mediapipe")
    flame, _ = convert_user_model("flame", files["pkl"], files["uv"])
    texture = smooth_random_texture(256, seed=5)
    there = transfer_texture(texture, fit, mp, flame)
    assert 0.1 < there.found_share < 0.5              # the face part of a whole-head layout
    back = transfer_texture(there.texture, fit, flame, mp)
    assert back.found_share > 0.95
    error = np.abs(back.texture[..., :3] - texture)[back.found]
    assert error.mean() < 0.02


def test_cli_complete_render_transfer_with_flame(files, astronaut_path, tmp_path):
    """The whole path on a user model with UV seams: add, complete, render, transfer back to mediapipe."""
    from facetex_cli.main import app
    from stages.core.image_io import load_texture
    from stages.core.uv import uv_layout

    runner = CliRunner()
    assert runner.invoke(app, ["assets", "add", "flame", str(files["pkl"]), "--uv", str(files["uv"])]).exit_code == 0
    out = tmp_path / "out"
    result = runner.invoke(app, ["complete", str(astronaut_path), "--face-model", "flame", "--uv-size", "256",
                                 "-o", str(out), "--no-previews"])
    assert result.exit_code == 0, result.output
    folder = out / "astronaut"
    fit = json.loads((folder / "fit.json").read_text())
    assert fit["model_id"].startswith("flame-")
    from stages.core.ict import load_face_model

    model = load_face_model("flame")
    texture = load_texture(folder / "uv_complete.png")
    mask = uv_layout(model, 256).mask
    assert texture.shape == (256, 256, 3) and (texture[mask].sum(axis=-1) > 0.1).all()  # no black hole
    skin = np.median(texture[..., :3][mask], axis=0)
    assert skin[0] > skin[1] > skin[2]                                  # skin-toned, not grey or black
    result = runner.invoke(app, ["render", str(folder / "uv_complete.png"), str(folder / "fit.json"),
                                 "--face-model", "flame", "--yaws=0,90", "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["transfer", str(folder / "uv_complete.png"), str(folder / "fit.json"),
                                 "--to", "mediapipe", "-o", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    back = load_texture(tmp_path / "t" / "astronaut" / "uv_mediapipe.png")
    assert (back[..., 3] > 0.5).mean() / uv_layout(load_face_model("mediapipe"), 256).mask.mean() > 0.9


def test_unknown_face_model_name_is_a_usage_error(astronaut_path, tmp_path):
    from facetex_cli.main import app

    result = CliRunner().invoke(app, ["fit", str(astronaut_path), "--face-model", "basel", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "unknown face model 'basel'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "astronaut").exists()


def test_unusable_data_folder_one_line(files, tmp_path, monkeypatch):
    from facetex_cli.main import app

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("FACETEX_DATA", str(blocker))
    result = CliRunner().invoke(app, ["assets", "add", "bfm", str(files["mat"])])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "cannot write" in lines[0] and "not_a_folder" in lines[0]
