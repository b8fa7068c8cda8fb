"""Tests for stages.core.camera (Euler angles, Umeyama, pose fitting, scaled-orthographic camera)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.core.camera import (
    Pose,
    euler_to_matrix,
    fit_pose,
    matrix_to_euler,
    rot_x,
    rot_y,
    rot_z,
    screen_to_model,
    umeyama,
)


def _random_rotation(rng) -> np.ndarray:
    yaw, pitch, roll = rng.uniform(-80, 80, size=3)
    return euler_to_matrix(yaw, pitch, roll)


def _random_pose(rng) -> Pose:
    return Pose(rotation=_random_rotation(rng), scale=float(rng.uniform(50, 300)),
                translation=rng.uniform(-200, 600, size=3))


def test_elementary_rotations_are_proper():
    for fn in (rot_x, rot_y, rot_z):
        r = fn(37.0)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rot_z(90) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rot_x(90) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rot_y(90) @ [0, 0, 1], [1, 0, 0], atol=1e-12)


def test_euler_composition_order():
    r = euler_to_matrix(10, 20, 30)
    np.testing.assert_allclose(r, rot_z(30) @ rot_x(20) @ rot_y(10), atol=1e-14)


def test_euler_round_trip_random():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-80, 80, size=(200, 3))
    for yaw, pitch, roll in angles:
        r = euler_to_matrix(yaw, pitch, roll)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        back = matrix_to_euler(r)
        np.testing.assert_allclose(back, [yaw, pitch, roll], atol=1e-9)
        # Plain Python floats (not numpy scalars): they go into fit.json and summaries as they are.
        assert all(type(v) is float for v in back)


def test_matrix_to_euler_identity():
    np.testing.assert_allclose(matrix_to_euler(np.eye(3)), [0.0, 0.0, 0.0], atol=1e-12)


def _frontal_pose(yaw=0.0, pitch=0.0, roll=0.0) -> Pose:
    return Pose(rotation=euler_to_matrix(yaw, pitch, roll), scale=100.0,
                translation=np.array([200.0, 150.0, 0.0]))


def test_yaw_sign_moves_nose_to_image_right():
    nose = np.array([[0.0, 0.0, 1.0]])
    centre = _frontal_pose().to_screen(nose)[0]
    turned = _frontal_pose(yaw=30).to_screen(nose)[0]
    np.testing.assert_allclose(centre[:2], [200.0, 150.0], atol=1e-12)
    assert turned[0] == pytest.approx(200.0 + 100.0 * np.sin(np.deg2rad(30)))
    assert turned[1] == pytest.approx(150.0)
    assert _frontal_pose(yaw=-30).to_screen(nose)[0][0] < 200.0
    assert _frontal_pose(yaw=30).euler[0] == pytest.approx(30.0)


def test_pitch_sign_face_looks_down():
    nose = np.array([[0.0, 0.0, 1.0]])
    head_top = np.array([[0.0, 1.0, 0.0]])
    pose = _frontal_pose(pitch=20)
    # The nose tip moves down in the image (larger y) ...
    assert pose.to_screen(nose)[0][1] == pytest.approx(150.0 + 100.0 * np.sin(np.deg2rad(20)))
    # ... and the top of the head comes towards the camera (smaller depth).
    assert pose.to_screen(head_top)[0][2] < 0.0


def test_roll_sign_counter_clockwise_in_image():
    right = np.array([[1.0, 0.0, 0.0]])
    pose = _frontal_pose(roll=30)
    # A point on the image right moves up (smaller y) under a counter-clockwise turn.
    assert pose.to_screen(right)[0][1] < 150.0
    assert pose.to_screen(right)[0][0] == pytest.approx(200.0 + 100.0 * np.cos(np.deg2rad(30)))


def test_to_screen_projection_formula():
    pose = _frontal_pose()
    pts = np.array([[1.0, 2.0, 3.0], [-0.5, 0.25, -1.0]])
    screen = pose.to_screen(pts)
    # Identity rotation: x_img = s x + tx, y_img = -s y + ty, depth = -s z + tz (closer = smaller).
    np.testing.assert_allclose(screen, [[300.0, -50.0, -300.0], [150.0, 125.0, 100.0]])


def test_rotate_normals():
    pose = _frontal_pose(yaw=90)
    np.testing.assert_allclose(pose.rotate_normals(np.array([[0.0, 0.0, 1.0]])), [[1.0, 0.0, 0.0]],
                               atol=1e-12)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    rot = _random_rotation(rng)
    s_true, t_true = 3.7, np.array([1.0, -2.0, 5.0])
    dst = s_true * src @ rot.T + t_true
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(s_true, rel=1e-10)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(t, t_true, atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_umeyama_weights():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(60, 3))
    rot = _random_rotation(rng)
    s_true, t_true = 0.4, np.array([-3.0, 0.5, 2.0])
    dst = s_true * src @ rot.T + t_true
    # Corrupt some points; zero weight on them must give the exact similarity back.
    dst_bad = dst.copy()
    dst_bad[:10] += rng.normal(scale=5.0, size=(10, 3))
    weights = np.ones(60)
    weights[:10] = 0.0
    weights[10:] = rng.uniform(0.5, 2.0, size=50)
    s, r, t = umeyama(src, dst_bad, weights)
    assert s == pytest.approx(s_true, rel=1e-10)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(t, t_true, atol=1e-9)
    # Without the weights the corruption shows.
    s_u, _, _ = umeyama(src, dst_bad)
    assert abs(s_u - s_true) > 1e-3


def test_umeyama_never_returns_reflection():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    _, r, _ = umeyama(src, mirrored)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_fit_pose_inverts_to_screen():
    rng = np.random.default_rng(4)
    verts = rng.normal(size=(100, 3))
    for _ in range(5):
        pose = _random_pose(rng)
        screen = pose.to_screen(verts)
        fitted = fit_pose(verts, screen)
        assert fitted.scale == pytest.approx(pose.scale, rel=1e-10)
        np.testing.assert_allclose(fitted.rotation, pose.rotation, atol=1e-10)
        np.testing.assert_allclose(fitted.translation, pose.translation, atol=1e-7)
        np.testing.assert_allclose(fitted.to_screen(verts), screen, atol=1e-7)
        np.testing.assert_allclose(screen_to_model(fitted, screen), verts, atol=1e-10)
        np.testing.assert_allclose(fitted.euler, pose.euler, atol=1e-8)


def test_fit_pose_with_weights_ignores_zero_weight_outliers():
    rng = np.random.default_rng(5)
    verts = rng.normal(size=(80, 3))
    pose = _random_pose(rng)
    screen = pose.to_screen(verts)
    screen[:8] += rng.normal(scale=50.0, size=(8, 3))
    weights = np.ones(80)
    weights[:8] = 0.0
    fitted = fit_pose(verts, screen, weights)
    np.testing.assert_allclose(fitted.rotation, pose.rotation, atol=1e-10)
    assert fitted.scale == pytest.approx(pose.scale, rel=1e-10)
    np.testing.assert_allclose(fitted.translation, pose.translation, atol=1e-7)


def test_screen_to_model_round_trip():
    rng = np.random.default_rng(6)
    pose = _random_pose(rng)
    pts = rng.normal(size=(20, 3))
    np.testing.assert_allclose(screen_to_model(pose, pose.to_screen(pts)), pts, atol=1e-10)


def test_pose_dict_round_trip_through_json():
    rng = np.random.default_rng(7)
    pose = _random_pose(rng)
    data = json.loads(json.dumps(pose.to_dict()))
    assert set(data) == {"rotation", "scale", "translation", "yaw_pitch_roll_deg"}
    np.testing.assert_allclose(data["yaw_pitch_roll_deg"], pose.euler, atol=1e-3)
    back = Pose.from_dict(data)
    np.testing.assert_allclose(back.rotation, pose.rotation, atol=1e-8)
    assert back.scale == pose.scale
    np.testing.assert_allclose(back.translation, pose.translation, atol=1e-4)
    assert back.rotation.shape == (3, 3) and back.translation.shape == (3,)
    pts = rng.normal(size=(10, 3))
    np.testing.assert_allclose(back.to_screen(pts), pose.to_screen(pts), atol=1e-4)


@pytest.mark.parametrize(("rotation", "translation"), [
    (np.eye(2).tolist(), [0.0, 0.0, 0.0]),
    (np.eye(3)[:, :2].tolist(), [0.0, 0.0, 0.0]),
    (np.eye(3).tolist(), [0.0, 0.0]),
    (np.eye(3).tolist(), [[0.0, 0.0, 0.0]]),
    (np.eye(3).ravel().tolist(), [0.0, 0.0, 0.0]),
])
def test_from_dict_rejects_wrong_shapes(rotation, translation):
    with pytest.raises(ValueError):
        Pose.from_dict({"rotation": rotation, "scale": 1.0, "translation": translation})


def test_with_rotation_keeps_scale_and_translation():
    pose = _frontal_pose()
    new = pose.with_rotation(euler_to_matrix(10, 0, 0))
    assert new.scale == pose.scale
    np.testing.assert_array_equal(new.translation, pose.translation)
    assert new.euler[0] == pytest.approx(10.0)
