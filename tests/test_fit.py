"""fit: pose from dense and 68-point landmarks, face selection, fit.json round trip and errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from stages.core.camera import Pose, euler_to_matrix, fit_pose_2d
from stages.core.errors import MissingArtifactError, NoFaceError
from stages.core.image_io import Photo
from stages.fit import FitResult, fit_photo


class FakeLandmarker:
    """Returns given point sets, as a detector would."""

    name, version = "fake", "0"

    def __init__(self, faces, kind="dense"):
        self.faces, self.kind = faces, kind

    def detect(self, rgb):
        return [f.copy() for f in self.faces]


def gray_photo(size=512) -> Photo:
    return Photo(rgb=np.full((size, size, 3), 150, np.uint8), path=Path("gray.png"), scale=1.0,
                 original_size=(size, size))


def posed(model, yaw, pitch, roll, scale=120.0, centre=(256.0, 256.0)) -> Pose:
    return Pose(rotation=euler_to_matrix(yaw, pitch, roll), scale=scale, translation=np.array([*centre, 0.0]))


def test_fit_pose_2d_recovers_a_known_pose():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3))
    truth = Pose(rotation=euler_to_matrix(25, -10, 5), scale=80.0, translation=np.array([100.0, 200.0, 0.0]))
    pose = fit_pose_2d(points, truth.to_screen(points)[:, :2])
    assert np.allclose(pose.rotation, truth.rotation, atol=1e-9)
    assert pose.scale == pytest.approx(80.0)
    assert np.allclose(pose.translation[:2], [100.0, 200.0])


def test_dense_fit_recovers_pose_and_shape(model):
    truth = posed(model, 30, 10, -5)
    landmarks = truth.to_screen(model.vertices[: model.n_landmarks])
    iris = np.zeros((10, 3))
    fit = fit_photo(gray_photo(), FakeLandmarker([np.concatenate([landmarks, iris])]), model=model)[0]
    assert np.allclose(fit.pose.rotation, truth.rotation, atol=1e-6)
    assert fit.pose.scale == pytest.approx(truth.scale, rel=1e-6)
    assert np.allclose(fit.vertices, model.vertices, atol=1e-4)
    assert fit.quality["rigid_fit_rms_px"] < 1e-3
    yaw, pitch, roll = fit.pose.euler
    assert (yaw, pitch, roll) == pytest.approx((30, 10, -5), abs=1e-4)


def test_sparse68_fit_uses_mean_shape_and_recovers_pose(model):
    assert model.landmarks68 is not None
    truth = posed(model, -20, 5, 8)
    points = truth.to_screen(model.vertices[model.landmarks68])
    points[:, 2] = 0.0  # a 2D detector knows no depth
    fit = fit_photo(gray_photo(), FakeLandmarker([points], kind="ibug68"), model=model)[0]
    assert np.allclose(fit.pose.rotation, truth.rotation, atol=1e-6)
    assert np.array_equal(fit.vertices, np.asarray(model.vertices, dtype=np.float64))


def test_face_selection_largest_all_and_too_small(model):
    big = posed(model, 0, 0, 0, scale=120.0, centre=(150.0, 256.0)).to_screen(model.vertices[:468])
    small = posed(model, 0, 0, 0, scale=60.0, centre=(400.0, 256.0)).to_screen(model.vertices[:468])
    tiny = posed(model, 0, 0, 0, scale=8.0, centre=(400.0, 60.0)).to_screen(model.vertices[:468])
    detector = FakeLandmarker([small, big])
    largest = fit_photo(gray_photo(), detector, model=model)[0]
    assert largest.face_index == 0 and largest.pose.scale == pytest.approx(120.0)
    both = fit_photo(gray_photo(), detector, model=model, face="all")
    assert [f.stem for f in both] == ["gray_face0", "gray_face1"]
    assert fit_photo(gray_photo(), detector, model=model, face="1")[0].pose.scale == pytest.approx(60.0)
    with pytest.raises(NoFaceError, match="too small"):
        fit_photo(gray_photo(), FakeLandmarker([tiny]), model=model)
    with pytest.raises(NoFaceError, match="no face found"):
        fit_photo(gray_photo(), FakeLandmarker([]), model=model)
    # With --face all, a too-small face is skipped and the others kept.
    assert len(fit_photo(gray_photo(), FakeLandmarker([big, tiny]), model=model, face="all")) == 1


def test_fit_json_round_trip_and_errors(model, tmp_path):
    landmarks = posed(model, 15, 0, 0).to_screen(model.vertices[:468])
    fit = fit_photo(gray_photo(), FakeLandmarker([landmarks]), model=model)[0]
    path = tmp_path / "fit.json"
    fit.save(path)
    loaded = FitResult.load(path)
    assert np.allclose(loaded.screen_vertices(), fit.screen_vertices(), atol=1e-3)
    assert loaded.image_size == fit.image_size and loaded.model_id == model.name
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(MissingArtifactError, match="schema version 99"):
        FitResult.load(path)
    path.write_text("{ not json")
    with pytest.raises(MissingArtifactError, match=str(path).replace("\\", "\\\\")):
        FitResult.load(path)
    with pytest.raises(MissingArtifactError, match="run `facetex fit` first"):
        FitResult.load(tmp_path / "absent.json")


@pytest.mark.skipif(importlib.util.find_spec("face_alignment") is not None, reason="face-alignment is installed")
def test_face_alignment_backend_missing_is_one_clear_line(astronaut_path, tmp_path):
    from tests.test_cli import run_facetex

    proc = run_facetex("fit", str(astronaut_path), "-o", str(tmp_path), "--landmarks", "face-alignment")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error landmark backend face-alignment is not installed "
                     "(pip install 'facetex[face-alignment]', or use --landmarks mediapipe)"]
