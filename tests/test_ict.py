"""The built-in ICT-FaceKit head: asset topology, UVs, symmetry, landmarks, fit, texel mirror, completion."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.face_model import FaceModel, check_mirror_index, check_topology, uv_signed_areas
from stages.core.ict import fit_morphable, load_face_model, morphable_vertices
from stages.core.uv import uv_layout


@pytest.fixture(scope="module")
def ict():
    return load_face_model("ict")


def test_asset_topology(ict):
    assert (ict.n_vertices, ict.n_triangles) == (11657, 22288)
    # Welded along the UV seams, the skin is one oriented manifold sphere with 4 holes (neck, mouth, eyes).
    stats = check_topology(ict.weld_index[ict.triangles], ict.n_vertices, allow_unused_vertices=True)
    assert stats["boundary_loop_lengths"] == [74, 54, 42, 42]
    assert stats["euler_characteristic"] == 2 - 4
    # Split at the seams, every copy is still used (no orphan vertices) and no face is degenerate.
    check_topology(ict.triangles, ict.n_vertices)
    p = ict.vertices.astype(np.float64)[ict.triangles]
    area = np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1) / 2
    assert area.min() > 1e-6 * area.mean()
    # Outward orientation: the nose tip's normal points forward (+z), the back of the head's backwards.
    normals = ict.vertex_normals()
    assert normals[ict.landmarks68[30], 2] > 0.9
    back = int(np.argmin(ict.vertices[:, 2]))
    assert normals[back, 2] < -0.5


def test_uvs_valid_and_flip_free(ict):
    assert ict.uv.min() >= 0 and ict.uv.max() <= 1
    assert (uv_signed_areas(ict.uv, ict.triangles) > 0).all()
    # Tile 1001 (face) is the left half, tile 1002 (head and neck) the right half.
    face = ict.regions["face"]
    assert ict.uv[np.setdiff1d(face, ict.regions["head_neck"]), 0].max() <= 0.5
    assert not ict.uv_symmetric


def test_mirror_is_a_symmetry(ict):
    m = ict.mirror_index
    check_mirror_index(ict.triangles, m)  # involution + orientation-reversing automorphism
    v = ict.vertices.astype(np.float64)
    err = np.abs(v[m] * np.array([-1, 1, 1]) - v).max()
    assert err < 1e-3  # model units (~0.05 mm)
    # Each tile is symmetric about its own centre line.
    uv = ict.uv.astype(np.float64)
    centre = np.where(uv[:, 0] <= 0.5, 0.25, 0.75)
    assert np.abs(uv[m, 0] - (2 * centre - uv[:, 0])).max() < 1e-5


def test_landmarks_on_features(ict):
    p = ict.vertices[ict.landmarks68]
    nose_tip, r_out, l_out = p[30], p[36], p[45]
    mouth_r, mouth_l = p[48], p[54]
    assert r_out[0] < -0.5 and l_out[0] > 0.5                      # subject's right at -x
    assert abs(nose_tip[0]) < 1e-4 and nose_tip[2] == p[:, 2].max()  # the nose tip is the most forward
    assert r_out[1] > nose_tip[1] > mouth_r[1]                       # eyes above nose above mouth
    assert abs(mouth_r[1] - mouth_l[1]) < 1e-4 and mouth_r[0] < 0 < mouth_l[0]
    assert np.linalg.norm(l_out - r_out) > np.linalg.norm(mouth_l - mouth_r)
    # Eye regions: centred on the eye landmarks; metres scale from the eye distance (~1 cm of head per 0.2 unit).
    assert np.linalg.norm(ict.vertices[ict.regions["left_eye"]].mean(0) - p[42:48].mean(0)) < 0.1
    assert 0.2 < ict.metres_per_unit() * np.ptp(ict.vertices[:, 1]) < 0.45  # head + neck height, metres


def test_correspondence_rows_are_barycentric(ict):
    emb = ict.landmark_embedding
    assert emb.shape == (468, ict.n_vertices) and ict.n_landmarks == 468
    assert np.allclose(np.asarray(emb.sum(axis=1)).ravel(), 1.0)
    assert (emb.data >= -1e-9).all() and np.diff(emb.indptr).max() <= 3
    # The built-in model's iBUG-68 points land on ICT's own (the warp pins them, projection keeps them).
    from stages.core.face_model import load_builtin_face_model

    mp68 = load_builtin_face_model().landmarks68
    placed = np.asarray(emb @ ict.vertices.astype(np.float64))[mp68[17:]]
    assert np.median(np.linalg.norm(placed - ict.vertices[ict.landmarks68[17:]], axis=1)) < 0.02


def test_fit_recovers_coefficients_and_pose(ict):
    from stages.core.camera import Pose, euler_to_matrix

    rng = np.random.default_rng(0)
    k_id, k_ex = len(ict.shape_basis), len(ict.expression_basis)
    truth = np.concatenate([rng.normal(0, 1, k_id) * (np.arange(k_id) < 10), np.zeros(k_ex)])
    truth[k_id + 26] = 0.4  # jawOpen
    pose = Pose(rotation=euler_to_matrix(15.0, -5.0, 3.0), scale=180.0, translation=np.array([320, 300, 1000.0]))
    shape = morphable_vertices(ict, truth)
    points = pose.to_screen(np.asarray(ict.landmark_embedding @ shape))
    fitted_pose, vertices, residual, coeffs = fit_morphable(ict, points)
    assert np.sqrt(np.mean(residual ** 2)) < 4.0   # pixels on a ~360 px face: the priors shrink the identity
    # Yaw and roll within a degree; pitch trades off against identity modes (a few degrees).
    assert np.all(np.abs(np.subtract(fitted_pose.euler, pose.euler)) < (1.0, 4.0, 1.5))
    assert abs(fitted_pose.scale / pose.scale - 1) < 0.04  # scale trades off against identity too
    assert abs(coeffs[k_id + 26] - 0.4) < 0.1
    face = ict.regions["skin"]
    # Where the texture is sampled from: the fitted face skin lands on the true one in the image.
    err = np.linalg.norm(fitted_pose.to_screen(vertices[face])[:, :2] - pose.to_screen(shape[face])[:, :2], axis=1)
    assert np.median(err) < 3.0                                        # pixels on a ~360 px face


def test_texel_mirror_from_3d(ict):
    layout = uv_layout(ict, 256)
    mt = layout.mirror_texel
    inside = np.flatnonzero(layout.mask.ravel())
    ok = mt[inside] >= 0
    assert ok.mean() > 0.97
    back = mt[mt[inside[ok]]]
    assert (back == inside[ok]).mean() > 0.9  # an involution up to texel rounding
    # The mirrored position map is the position map with x negated.
    pos = layout.interpolate(ict.vertices)
    mirrored = layout.mirror(pos).reshape(-1, 3)[inside[ok]]
    own = pos.reshape(-1, 3)[inside[ok]]
    assert np.median(np.abs(mirrored[:, 0] + own[:, 0])) < 0.01
    assert np.median(np.abs(mirrored[:, 1] - own[:, 1])) < 0.01


def test_mirror_completion_fills_head_without_seams(ict):
    from stages.completion import get_method
    from stages.unwrap import UnwrapResult

    size = 256
    layout = uv_layout(ict, size)
    pos = layout.interpolate(ict.vertices)
    # Seen: the front of the face's right half (x < 0, z > 0), coloured by a smooth function of 3D.
    colour = np.clip(0.5 + 0.3 * np.stack([pos[..., 0], pos[..., 1], pos[..., 2]], -1), 0, 1) * layout.mask[..., None]
    seen = layout.mask & (pos[..., 0] < -0.05) & (pos[..., 2] > 0.2)
    unwrap = UnwrapResult(texture=np.where(seen[..., None], colour, 0).astype(np.float32),
                          confidence=seen.astype(np.float32), position=pos, layout_mask=layout.mask.copy(),
                          stem="synthetic", info={})
    done = get_method("mirror").load(ict).complete(unwrap)
    tex = done.texture
    assert np.isfinite(tex).all() and done.info["visible_fraction"] > 0
    # The mirrored side (x > 0) gets the colour of its partner: red channel 0.5 - 0.3x, not 0.5 + 0.3x.
    mirrored = layout.mask & (pos[..., 0] > 0.1) & (pos[..., 2] > 0.3)
    assert np.median(np.abs(tex[mirrored, 0] - (0.5 - 0.3 * pos[mirrored, 0]))) < 0.05
    # The back of the head (its own UV island, nothing seen) is filled with the visible tone.
    back = layout.mask & (pos[..., 2] < -0.5)
    tone = np.median(colour[seen], axis=0)
    assert np.abs(np.median(tex[back], axis=0) - tone).max() < 0.08
    # No seam: the copies of one surface point on two islands get nearly the same colour.
    weld = ict.weld_index
    seam = np.flatnonzero(weld != np.arange(ict.n_vertices))
    col = np.clip((ict.uv[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1 - ict.uv[:, 1]) * size).astype(int), 0, size - 1)
    diff = np.abs(tex[row[seam], col[seam]] - tex[row[weld[seam]], col[weld[seam]]]).max(axis=1)
    assert np.median(diff) < 0.03


def test_layout_bound_methods_load_on_ict_via_the_builtin_layout(ict):
    """Layout-bound methods are built on the built-in model and wrapped (tests/test_ict_methods.py);
    the layout-free ones complete ICT's layout directly."""
    from stages.completion import get_method
    from stages.completion.via_builtin import ViaBuiltinLayout

    for name in ("pca", "blend", "unet"):
        method = get_method(name).load(ict)
        assert isinstance(method, ViaBuiltinLayout) and method.name == name
        assert method.inner.model.name == "mediapipe471-v2" and method.model is ict
    assert not isinstance(get_method("telea").load(ict), ViaBuiltinLayout)


def test_morphable_fields_roundtrip(ict, tmp_path):
    path = tmp_path / "m.npz"
    ict.save(path, basis_dtype=np.float16)
    back = FaceModel.load(path)
    assert back.weld_index is not None and np.array_equal(back.weld_index, ict.weld_index)
    assert np.array_equal(back.expression_basis, ict.expression_basis)  # the asset is float16 already
    assert (back.landmark_embedding != ict.landmark_embedding).nnz == 0
    with pytest.raises(ValueError, match="Loop subdivision would open cracks"):
        ict.subdivided(1)


def test_ict_fit_of_a_real_photo_keeps_it_upright(ict, landmarker, astronaut_path):
    """Orientation and fit quality are judged with the built-in rigid model: the morphable head bends
    to fit the landmarks of the photo turned upside down too, and its own score once preferred that
    (roll ~180 on the upright astronaut, a scrambled texture)."""
    from stages.core.image_io import load_photo
    from stages.fit import WARN_SCORE, fit_photo

    fit = fit_photo(load_photo(astronaut_path), landmarker, model=ict)[0]
    assert abs(fit.pose.euler[2]) < 20 and not fit.quality["upside_down"]
    assert fit.quality["fit_score"] < WARN_SCORE and not fit.quality["warnings"]
    assert fit.vertices.shape == (ict.n_vertices, 3)


def test_ict_fit_estimates_the_lighting_once(ict, landmarker, astronaut_path, monkeypatch):
    """The head takes the SH lighting (and the fit score) of the built-in model's fit to the same
    landmarks: one lighting estimate per photo, the built-in fit's, bit for bit."""
    import stages.fit as fit_module
    from stages.core.image_io import load_photo

    photo = load_photo(astronaut_path)
    calls = []
    estimate = fit_module.estimate_lighting
    monkeypatch.setattr(fit_module, "estimate_lighting",
                        lambda rgb, screen, normals, model, rng: calls.append(model.name) or
                        estimate(rgb, screen, normals, model, rng))
    builtin = fit_module.fit_photo(photo, landmarker)[0]
    builtin_calls, calls[:] = list(calls), []
    fit = fit_module.fit_photo(photo, landmarker, model=ict)[0]
    # The same estimates as the built-in fit (its orientation check included), none on the head.
    assert calls == builtin_calls and set(calls) == {builtin.model_id} and fit.model_id == ict.name
    assert np.array_equal(fit.lighting, builtin.lighting)
    assert fit.quality["fit_score"] == builtin.quality["fit_score"]
    assert fit.quality["lighting"] == builtin.quality["lighting"]


def test_evaluate_scores_an_ict_result_with_the_ict_model(ict, astronaut_path, tmp_path):
    """`evaluate` reads the face model from fit.json (no option to disagree with the files); the
    symmetry score pairs texels through the 3D mirror; a stage given the wrong model refuses in one line."""
    import json

    from typer.testing import CliRunner

    from facetex_cli.main import app
    from stages.core.errors import MissingArtifactError
    from stages.core.image_io import load_texture
    from stages.core.uv import uv_layout
    from stages.evaluate.metrics import symmetry_score
    from stages.evaluate.stage import skin_uv_mask
    from stages.unwrap import UnwrapResult

    runner = CliRunner()
    out = tmp_path / "out"
    done = runner.invoke(app, ["complete", str(astronaut_path), "--face-model", "ict", "--uv-size", "256",
                               "-o", str(out)])
    assert done.exit_code == 0, done.output
    result = out / "astronaut"
    scored = runner.invoke(app, ["evaluate", str(out), "--no-identity", "-o", str(tmp_path / "eval")])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_image"]["astronaut"]["metrics"]
    assert 18 < metrics["reproj_psnr"] < 40 and 10 < metrics["hidden_psnr"] < 40
    texture = load_texture(result / "uv_complete.png")[..., :3]
    layout = uv_layout(ict, 256)
    mirrored = symmetry_score(texture, skin_uv_mask(ict, 256), mirror=layout.mirror)
    assert metrics["symmetry_l1"] == pytest.approx(mirrored)
    # A column flip pairs the face tile's skin (u < 0.5) with the head tile (u > 0.5): no pair, no score.
    assert 0 < mirrored < 0.2 and np.isnan(symmetry_score(texture, skin_uv_mask(ict, 256)))
    with pytest.raises(MissingArtifactError, match="model_id: unwrapped with face model 'ict-facekit-v1'"):
        UnwrapResult.load(result)          # read as the built-in mask: refused, not resampled
    refused = runner.invoke(app, ["pseudo-gt", str(out), "--face-model", "ict", "-o", str(tmp_path / "pgt")])
    assert refused.exit_code == 2 and "Invalid value for --face-model: pseudo-gt fits a PCA" in refused.output
    assert not (tmp_path / "pgt").exists()
