"""Tests for the built-in face model (reads only the committed asset; fast, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.face_model import (
    BUILTIN_ASSET,
    REGION_NAMES,
    FaceModel,
    boundary_loops,
    check_mirror_index,
    check_topology,
    load_builtin_face_model,
    uv_distortion,
    uv_signed_areas,
)


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_builtin_face_model()


N_MP = 468  # MediaPipe mesh vertices (= landmarks)
N_V, N_F = 471, 904  # with the three caps
CAPS = {"left_eye": 468, "right_eye": 469, "mouth": 470}  # cap centre vertex per hole


def test_counts_and_dtypes(model):
    assert model.name == "mediapipe471-v2"
    assert model.n_vertices == N_V and model.n_triangles == N_F
    assert model.n_landmarks == N_MP
    assert model.vertices.shape == (N_V, 3) and model.vertices.dtype == np.float32
    assert model.triangles.shape == (N_F, 3) and model.triangles.dtype == np.int32
    assert model.uv.shape == (N_V, 2) and model.uv.dtype == np.float32
    assert model.mirror_index.shape == (N_V,) and model.mirror_index.dtype == np.int32
    assert model.landmark_map.shape == (N_V, N_MP)
    assert not model.vertices.flags.writeable  # shared cached instance is read-only


def test_topology(model):
    stats = check_topology(model.triangles, model.n_vertices, vertices=model.vertices,
                           expected_boundary_loops=1)
    assert stats["n_faces"] == N_F
    assert stats["n_boundary_edges"] == 36
    assert stats["boundary_loop_lengths"] == [36]  # the face oval; eyes and mouth are capped
    assert stats["euler_characteristic"] == 1  # a disk
    assert stats["mean_normal_z"] > 0.9
    # the MediaPipe part alone (first 852 faces) still has the 4 original loops
    mp = check_topology(model.triangles[:852], N_MP, expected_boundary_loops=4)
    assert mp["boundary_loop_lengths"] == [36, 20, 16, 16]


def test_boundary_loops_are_contours(model):
    loops = boundary_loops(model.triangles)
    assert len(loops) == 1
    assert set(loops[0].tolist()) == set(model.regions["face_oval"].tolist())
    inner = boundary_loops(model.triangles[:852])
    eyes = {frozenset(lp.tolist()) for lp in inner[2:]}
    assert eyes == {frozenset(model.regions["left_eye"].tolist()),
                    frozenset(model.regions["right_eye"].tolist())}
    assert set(inner[1].tolist()) <= set(model.regions["lips"].tolist())


def _cap_loop(model, name):
    return np.setdiff1d(model.regions[f"{name}_cap"], [CAPS[name]])


def test_caps(model):
    t = model.triangles.astype(np.int64)
    v = model.vertices.astype(np.float64)
    inner = boundary_loops(t[:852])
    assert set(_cap_loop(model, "left_eye").tolist()) == set(model.regions["left_eye"].tolist())
    assert set(_cap_loop(model, "right_eye").tolist()) == set(model.regions["right_eye"].tolist())
    assert set(_cap_loop(model, "mouth").tolist()) == set(inner[1].tolist())
    start = 852
    for name, n in (("left_eye", 16), ("right_eye", 16), ("mouth", 20)):
        c = CAPS[name]
        region = model.regions[f"{name}_cap"]
        assert region.size == n + 1 and c in region
        fan = t[start:start + n]
        start += n
        assert (fan == c).any(axis=1).all() and ((t == c).any(axis=1).sum() == n)
        loop = _cap_loop(model, name)
        assert set(fan.ravel().tolist()) == set(loop.tolist()) | {c}
        # the centre is the mean of the loop
        np.testing.assert_allclose(v[c], v[loop].mean(axis=0), atol=1e-6)
        # faces point out of the face (+z) and are counter-clockwise in UV
        fn = np.cross(v[fan[:, 1]] - v[fan[:, 0]], v[fan[:, 2]] - v[fan[:, 0]])
        assert fn.sum(axis=0)[2] > 0
        assert (uv_signed_areas(model.uv, fan) > 0).all()
    assert start == N_F
    assert v[CAPS["left_eye"], 0] > 0 > v[CAPS["right_eye"], 0]
    assert v[CAPS["mouth"], 0] == 0.0
    assert v[CAPS["left_eye"], 1] > v[CAPS["mouth"], 1]
    m = model.mirror_index
    assert m[468] == 469 and m[469] == 468 and m[470] == 470
    uv = model.uv
    assert uv[468, 0] == pytest.approx(1.0 - uv[469, 0], abs=1e-7)
    assert uv[468, 1] == uv[469, 1] and uv[470, 0] == 0.5
    assert uv[468, 0] > 0.5 and uv[470, 1] < uv[468, 1]


def test_landmark_map(model):
    lm = model.landmark_map
    assert lm.shape == (N_V, N_MP)
    np.testing.assert_allclose(np.asarray(lm.sum(axis=1)).ravel(), 1.0)
    np.testing.assert_array_equal(lm[:N_MP].toarray(), np.eye(N_MP))
    pts = model.vertices[:N_MP]
    out = model.vertices_from_landmarks(pts)
    assert out.shape == (N_V, 3)
    np.testing.assert_allclose(out, model.vertices, atol=1e-5)
    np.testing.assert_array_equal(out[:N_MP], pts)
    for name, c in CAPS.items():
        np.testing.assert_allclose(out[c], pts[_cap_loop(model, name)].astype(np.float64)
                                   .mean(axis=0), atol=1e-12)
    # batch and other channel counts (e.g. 2D pixel positions)
    rng = np.random.default_rng(1)
    b = rng.normal(size=(3, N_MP, 2))
    ob = model.vertices_from_landmarks(b)
    assert ob.shape == (3, N_V, 2)
    for i in range(3):
        np.testing.assert_allclose(ob[i], model.vertices_from_landmarks(b[i]), atol=1e-12)
    # a similarity transform of the landmarks transforms the vertices the same way
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    posed = 2.5 * pts.astype(np.float64) @ R.T + [1.0, -2.0, 3.0]
    np.testing.assert_allclose(model.vertices_from_landmarks(posed),
                               2.5 * model.vertices.astype(np.float64) @ R.T + [1.0, -2.0, 3.0],
                               atol=1e-5)
    with pytest.raises(ValueError, match="468"):
        model.vertices_from_landmarks(np.zeros((478, 3)))  # iris points must be dropped
    with pytest.raises(ValueError):
        model.vertices_from_landmarks(np.zeros(N_MP))


def test_no_landmark_map_means_identity(model):
    m = FaceModel(name="t", vertices=model.vertices, triangles=model.triangles, uv=model.uv,
                  mirror_index=model.mirror_index, regions={})
    assert m.landmark_map is None and m.n_landmarks == N_V
    np.testing.assert_array_equal(m.vertices_from_landmarks(model.vertices), model.vertices)
    with pytest.raises(ValueError, match="landmark_map"):
        FaceModel(name="t", vertices=model.vertices, triangles=model.triangles, uv=model.uv,
                  mirror_index=model.mirror_index, regions={},
                  landmark_map=model.landmark_map[:N_MP])


def test_mean_shape_normalization(model):
    v = model.vertices.astype(np.float64)
    np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=1e-6)
    assert np.sqrt((v ** 2).sum(axis=1).mean()) == pytest.approx(1.0, abs=1e-5)
    # y up: forehead above chin; z out: nose tip in front of the cheeks
    assert v[10, 1] > v[152, 1]
    assert v[1, 2] > v[234, 2] and v[1, 2] > v[454, 2]
    # subject's left eye on +x
    assert v[model.regions["left_eye"], 0].mean() > 0 > v[model.regions["right_eye"], 0].mean()


def test_mirror_index(model):
    m = model.mirror_index.astype(np.int64)
    np.testing.assert_array_equal(m[m], np.arange(model.n_vertices))
    check_mirror_index(model.triangles, m)
    v = model.vertices.astype(np.float64)
    np.testing.assert_allclose(v[m] * [-1, 1, 1], v, atol=1e-6)
    mid = m == np.arange(model.n_vertices)
    assert {10, 152, 1, 0, 17, 470}.issubset(set(np.flatnonzero(mid).tolist()))
    np.testing.assert_array_equal(np.sort(m[model.regions["left_eye"]]),
                                  model.regions["right_eye"])
    np.testing.assert_array_equal(np.sort(m[model.regions["left_eye_cap"]]),
                                  model.regions["right_eye_cap"])
    np.testing.assert_array_equal(np.sort(m[model.regions["mouth_cap"]]),
                                  model.regions["mouth_cap"])


def test_check_mirror_index_rejects_bad_map(model):
    m = model.mirror_index.astype(np.int64).copy()
    with pytest.raises(ValueError, match="involution"):
        bad = m.copy()
        bad[0] = 1
        check_mirror_index(model.triangles, bad)
    with pytest.raises(ValueError, match="automorphism"):
        check_mirror_index(model.triangles, np.arange(model.n_vertices))


def test_uv_range_flips_symmetry(model):
    uv = model.uv.astype(np.float64)
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert uv.min() > 0.01 and uv.max() < 0.99  # margin of about 2%
    areas = uv_signed_areas(uv, model.triangles)
    assert (areas > 0).all()  # counter-clockwise in UV (v up), like the model from the front
    m = model.mirror_index
    np.testing.assert_allclose(uv[m, 0], 1.0 - uv[:, 0], atol=1e-6)
    np.testing.assert_allclose(uv[m, 1], uv[:, 1], atol=1e-6)


def test_uv_layout_orientation(model):
    uv = model.uv
    assert uv[10, 1] > uv[152, 1]  # forehead above chin
    v = model.vertices
    lateral = np.flatnonzero(np.abs(v[:, 0]) > 0.05)
    assert (np.sign(uv[lateral, 0] - 0.5) == np.sign(v[lateral, 0])).all()
    assert np.corrcoef(v[:, 0], uv[:, 0])[0, 1] > 0.95
    assert np.corrcoef(v[:, 1], uv[:, 1])[0, 1] > 0.95


def test_uv_distortion_bounds(model):
    d = uv_distortion(model.vertices, model.triangles, model.uv)
    assert d["n_flipped"] == 0
    assert d["area_ratio_p05"] > 0.5 and d["area_ratio_p95"] < 1.5
    assert d["angle_error_mean_deg"] < 10.0


def test_regions(model):
    assert set(REGION_NAMES) <= set(model.regions)
    for name, r in model.regions.items():
        assert r.dtype == np.int32 and r.size > 0, name
        assert np.all(np.diff(r) > 0), name
    skin = set(model.regions["skin"].tolist())
    for name in ("left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "lips", "face_oval",
                 "left_eye_cap", "right_eye_cap", "mouth_cap"):
        assert not skin & set(model.regions[name].tolist()), name
    assert not skin & set(CAPS.values())
    assert len(skin) > 100
    # regions other than the caps hold MediaPipe vertices only
    for name in REGION_NAMES:
        if not name.endswith("_cap"):
            assert model.regions[name].max() < N_MP, name


def test_landmarks68(model):
    lm = model.landmarks68
    assert lm is not None and lm.shape == (68,) and len(np.unique(lm)) == 68
    v = model.vertices
    assert lm[8] == 152  # chin
    assert lm[51] == 0 and lm[57] == 17 and lm[62] == 13 and lm[66] == 14  # lip midline
    assert v[lm[36], 0] < 0 < v[lm[45], 0]  # iBUG right eye = subject's right = -x
    # iBUG points come in mirror pairs: 0 <-> 16, 36 <-> 45, 48 <-> 54
    m = model.mirror_index
    assert m[lm[0]] == lm[16] and m[lm[36]] == lm[45] and m[lm[48]] == lm[54]


def test_vertex_normals(model):
    n = model.vertex_normals()
    assert n.shape == (N_V, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (n[:, 2] > 0).mean() > 0.9
    assert n[1, 2] > 0.8  # nose tip faces the camera
    # rotation equivariance and batch support
    c, s = np.cos(0.3), np.sin(0.3)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    nb = model.vertex_normals(np.stack([model.vertices, model.vertices @ R.T]))
    np.testing.assert_allclose(nb[0], n, atol=1e-5)
    np.testing.assert_allclose(nb[1], n @ R.T, atol=1e-5)


def test_save_load_roundtrip(model, tmp_path):
    p = tmp_path / "m.npz"
    model.save(p)
    back = FaceModel.load(p)
    assert back.name == model.name
    for k in ("vertices", "triangles", "uv", "mirror_index", "landmarks68"):
        np.testing.assert_array_equal(getattr(back, k), getattr(model, k))
    assert set(back.regions) == set(model.regions)
    for k in model.regions:
        np.testing.assert_array_equal(back.regions[k], model.regions[k])
    assert back.shape_basis is None
    assert back.landmark_map.shape == model.landmark_map.shape
    assert (back.landmark_map != model.landmark_map).nnz == 0
    with np.load(p) as z:
        assert int(z["format_version"]) == 2
    # deterministic bytes
    p2 = tmp_path / "m2.npz"
    back.save(p2)
    assert p.read_bytes() == p2.read_bytes()


def test_roundtrip_with_basis_and_upsample(model, tmp_path):
    basis = np.random.default_rng(0).normal(size=(2, N_V, 3)).astype(np.float32)
    m = FaceModel(name="t", vertices=model.vertices, triangles=model.triangles, uv=model.uv,
                  mirror_index=model.mirror_index, regions=dict(model.regions),
                  landmarks68=None, shape_basis=basis, landmark_map=model.landmark_map)
    fine = m.subdivided(1, scheme="midpoint")
    p = tmp_path / "f.npz"
    fine.save(p)
    back = FaceModel.load(p)
    np.testing.assert_allclose(back.shape_basis, fine.shape_basis)
    assert (back.upsample != fine.upsample).nnz == 0
    assert (back.landmark_map != fine.landmark_map).nnz == 0
    assert back.n_landmarks == N_MP
    assert back.landmarks68 is None
    # a model without landmark map round-trips without one
    p3 = tmp_path / "n.npz"
    FaceModel(name="t", vertices=model.vertices, triangles=model.triangles, uv=model.uv,
              mirror_index=model.mirror_index, regions={}).save(p3)
    assert FaceModel.load(p3).landmark_map is None


def test_load_corrupt_file_names_path(tmp_path):
    p = tmp_path / "corrupt.npz"
    p.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="corrupt.npz"):
        FaceModel.load(p)
    # a valid npz with wrong shapes
    q = tmp_path / "badshape.npz"
    np.savez(q, format_version=np.array(1), name=np.array("x"),
             vertices=np.zeros((4, 2), np.float32), triangles=np.zeros((1, 3), np.int32),
             uv=np.zeros((4, 2), np.float32), mirror_index=np.arange(4),
             region_names=np.array([], dtype=str))
    with pytest.raises(ValueError, match="badshape.npz.*vertices"):
        FaceModel.load(q)
    r = tmp_path / "old.npz"
    np.savez(r, format_version=np.array(99))
    with pytest.raises(ValueError, match="old.npz.*format_version"):
        FaceModel.load(r)


def _arrays(model):
    d = {"format_version": np.array(2), "name": np.array("x"), "vertices": model.vertices,
         "triangles": model.triangles, "uv": model.uv, "mirror_index": model.mirror_index,
         "region_names": np.array([], dtype=str)}
    lm = model.landmark_map
    d.update(landmark_map_data=lm.data, landmark_map_indices=lm.indices.astype(np.int64),
             landmark_map_indptr=lm.indptr.astype(np.int64),
             landmark_map_shape=np.array(lm.shape, dtype=np.int64))
    return d


def test_load_rejects_bad_landmark_map(model, tmp_path):
    ok = tmp_path / "ok.npz"
    np.savez(ok, **_arrays(model))
    assert FaceModel.load(ok).n_landmarks == N_MP
    d = _arrays(model)
    d["landmark_map_shape"] = np.array([N_MP, N_MP])  # wrong number of rows
    p = tmp_path / "rows.npz"
    np.savez(p, **d)
    with pytest.raises(ValueError, match="rows.npz.*landmark_map"):
        FaceModel.load(p)
    d = _arrays(model)
    del d["landmark_map_indptr"]
    q = tmp_path / "partial.npz"
    np.savez(q, **d)
    with pytest.raises(ValueError, match="partial.npz.*landmark_map"):
        FaceModel.load(q)
    d = _arrays(model)
    d["landmark_map_indices"] = d["landmark_map_indices"] + 10_000  # out of range columns
    r = tmp_path / "cols.npz"
    np.savez(r, **d)
    with pytest.raises(ValueError, match="cols.npz.*landmark_map"):
        FaceModel.load(r)
    d = _arrays(model)
    d["landmark_map_data"] = np.full_like(d["landmark_map_data"], np.nan)
    s = tmp_path / "nan.npz"
    np.savez(s, **d)
    with pytest.raises(ValueError, match="nan.npz.*landmark_map"):
        FaceModel.load(s)
    d = _arrays(model)
    d["format_version"] = np.array(1)  # version 1 files cannot carry a landmark map
    v1 = tmp_path / "v1.npz"
    np.savez(v1, **d)
    with pytest.raises(ValueError, match="v1.npz.*landmark_map"):
        FaceModel.load(v1)


def test_builtin_asset_is_the_loaded_model(model):
    assert BUILTIN_ASSET.is_file()
    assert load_builtin_face_model() is model  # cached


@pytest.mark.parametrize("scheme", ["loop", "midpoint"])
def test_subdivision(model, scheme):
    fine = model.subdivided(1, scheme=scheme)
    E = N_V + N_F - 1  # disk: V - E + F = 1
    assert fine.n_vertices == N_V + E and fine.n_triangles == 4 * N_F
    check_topology(fine.triangles, fine.n_vertices, vertices=fine.vertices,
                   expected_boundary_loops=1)
    check_mirror_index(fine.triangles, fine.mirror_index)
    assert (uv_signed_areas(fine.uv, fine.triangles) > 0).all()
    m = fine.mirror_index
    np.testing.assert_allclose(fine.uv[m, 0], 1.0 - fine.uv[:, 0], atol=1e-6)
    np.testing.assert_allclose(fine.uv[m, 1], fine.uv[:, 1], atol=1e-6)
    np.testing.assert_allclose(fine.vertices[m] * [-1, 1, 1], fine.vertices, atol=1e-5)
    np.testing.assert_array_equal(fine.uv[:N_V], model.uv)  # old vertices keep uv
    if scheme == "midpoint":
        np.testing.assert_array_equal(fine.vertices[:N_V], model.vertices)
    # lifting posed vertices equals subdividing them
    posed = model.vertices @ np.diag([2.0, 1.0, 0.5]).astype(np.float32) + 3.0
    np.testing.assert_allclose(fine.upsample_vertices(posed),
                               fine.upsample @ posed.astype(np.float64), atol=1e-6)
    np.testing.assert_allclose(fine.upsample_vertices(model.vertices), fine.vertices, atol=1e-5)
    batch = fine.upsample_vertices(np.stack([posed, posed]))
    assert batch.shape == (2, fine.n_vertices, 3)
    # landmark map composes: 468 landmark points straight to the fine mesh
    assert fine.landmark_map.shape == (fine.n_vertices, N_MP) and fine.n_landmarks == N_MP
    pts = posed[:N_MP]
    np.testing.assert_allclose(fine.vertices_from_landmarks(pts),
                               fine.upsample_vertices(model.vertices_from_landmarks(pts)),
                               atol=1e-9)
    np.testing.assert_allclose(fine.vertices_from_landmarks(model.vertices[:N_MP]),
                               fine.vertices, atol=1e-5)
    pb = np.stack([pts, 2 * pts])
    np.testing.assert_allclose(fine.vertices_from_landmarks(pb),
                               fine.upsample_vertices(model.vertices_from_landmarks(pb)),
                               atol=1e-9)
    # regions keep old members and stay mirror consistent
    for k in ("lips", "nose", "skin", "mouth_cap"):
        r = fine.regions[k]
        assert set(model.regions[k].tolist()) <= set(r.tolist())
        np.testing.assert_array_equal(np.sort(m[r]), r)


def test_subdivision_two_levels_and_builtin(model):
    fine2 = load_builtin_face_model(2)
    assert fine2.name == "mediapipe471-v2-sub2"
    assert fine2.n_triangles == 16 * N_F and fine2.n_vertices == 7305
    assert fine2.upsample.shape == (fine2.n_vertices, N_V)
    assert fine2.landmark_map.shape == (fine2.n_vertices, N_MP)
    assert (uv_signed_areas(fine2.uv, fine2.triangles) > 0).all()
    np.testing.assert_allclose(fine2.upsample_vertices(model.vertices), fine2.vertices,
                               atol=1e-5)
    pts = model.vertices[:N_MP] * 3.0 + 1.0
    np.testing.assert_allclose(fine2.vertices_from_landmarks(pts),
                               fine2.upsample_vertices(model.vertices_from_landmarks(pts)),
                               atol=1e-9)
    assert load_builtin_face_model(1).n_vertices == 1845
    assert model.subdivided(0) is model
    with pytest.raises(ValueError):
        model.upsample_vertices(model.vertices)


def test_check_topology_rejects_broken_meshes(model):
    t = model.triangles.astype(np.int64)[:852]  # the MediaPipe part (4 boundary loops)
    with pytest.raises(ValueError, match="duplicate"):
        check_topology(np.concatenate([t, t[:1, [1, 2, 0]]]), 468)
    flipped = t.copy()
    flipped[5] = flipped[5, [0, 2, 1]]
    with pytest.raises(ValueError, match="orientation"):
        check_topology(flipped, 468)
    with pytest.raises(ValueError, match="degenerate"):
        check_topology(np.concatenate([t, [[0, 0, 1]]]), 468)
    with pytest.raises(ValueError, match="out of range"):
        check_topology(t, 100)
    with pytest.raises(ValueError, match="used by no face"):
        check_topology(t, 470)
    with pytest.raises(ValueError, match="boundary loops"):
        check_topology(t, 468, expected_boundary_loops=1)
    with pytest.raises(ValueError, match="inwards"):
        check_topology(t[:, [0, 2, 1]], 468, vertices=model.vertices[:468])
    full = model.triangles.astype(np.int64)
    with pytest.raises(ValueError, match="inwards"):
        check_topology(full[:, [0, 2, 1]], N_V, vertices=model.vertices)
    with pytest.raises(ValueError, match="used by no face"):  # a cap removed
        check_topology(full[:-20], N_V)
    # a third face on an existing edge
    a, b = int(t[0, 0]), int(t[0, 1])
    far = int(np.setdiff1d(np.arange(468), t[(t == a).any(1) | (t == b).any(1)].ravel())[0])
    with pytest.raises(ValueError, match="non-manifold"):
        check_topology(np.concatenate([t, [[a, b, far]]]), 468)
    # two fans meeting at one vertex (bow tie)
    bow = np.array([[0, 1, 2], [0, 3, 4]])
    with pytest.raises(ValueError, match="manifold"):
        check_topology(bow, 5)
