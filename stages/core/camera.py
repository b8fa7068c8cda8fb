"""Pose and the scaled-orthographic camera.

Conventions (see docs/CONVENTIONS.md): model space is right-handed with x to the image right for a
frontal face, y up, z towards the camera. A pose maps a model point ``X`` to

    x_img = s * (R X)_x + tx,   y_img = -s * (R X)_y + ty,   depth = -s * (R X)_z + tz

in continuous pixel coordinates (pixel centres at +0.5), smaller depth = closer.

Euler angles: ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` in degrees. Positive yaw turns the nose
towards the image right (the subject's left). Positive pitch moves the top of the head towards
the camera (the face looks down). Positive roll rotates the face counter-clockwise as seen in the
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rot_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``(3, 3)`` rotation ``Rz(roll) @ Rx(pitch) @ Ry(yaw)`` from degrees."""
    return rot_z(roll) @ rot_x(pitch) @ rot_y(yaw)


def matrix_to_euler(rotation: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix`: ``(yaw, pitch, roll)`` in degrees.

    With ``R = Rz Rx Ry``: ``R[2,1] = sin(pitch)``, ``R[2,0] = -cos(pitch) sin(yaw)``,
    ``R[2,2] = cos(pitch) cos(yaw)``, ``R[0,1] = -sin(roll) cos(pitch)``, ``R[1,1] = cos(roll) cos(pitch)``.
    """
    r = np.asarray(rotation, dtype=np.float64)
    pitch = np.arcsin(np.clip(r[2, 1], -1.0, 1.0))
    yaw = np.arctan2(-r[2, 0], r[2, 2])
    roll = np.arctan2(-r[0, 1], r[1, 1])
    return float(np.rad2deg(yaw)), float(np.rad2deg(pitch)), float(np.rad2deg(roll))


@dataclass(frozen=True)
class Pose:
    """Similarity pose of the face model in a scaled-orthographic camera.

    Attributes:
        rotation: ``(3, 3)`` rotation matrix, model -> camera axes.
        scale: pixels per model unit.
        translation: ``(3,)`` ``(tx, ty, tz)``: image position of the model origin and its depth.
    """

    rotation: np.ndarray
    scale: float
    translation: np.ndarray

    def to_screen(self, vertices: np.ndarray) -> np.ndarray:
        """Model-space ``(V, 3)`` -> screen ``(V, 3)``: pixel ``x, y`` and depth (smaller is closer)."""
        cam = np.asarray(vertices, dtype=np.float64) @ self.rotation.T * self.scale
        tx, ty, tz = self.translation
        return np.stack([cam[:, 0] + tx, -cam[:, 1] + ty, -cam[:, 2] + tz], axis=1)

    def rotate_normals(self, normals: np.ndarray) -> np.ndarray:
        """Model-space normals ``(V, 3)`` -> camera-space normals (x right, y up, z to camera)."""
        return np.asarray(normals, dtype=np.float64) @ self.rotation.T

    @property
    def euler(self) -> tuple[float, float, float]:
        """``(yaw, pitch, roll)`` in degrees."""
        return matrix_to_euler(self.rotation)

    def with_rotation(self, rotation: np.ndarray) -> Pose:
        return Pose(rotation=np.asarray(rotation, dtype=np.float64), scale=self.scale,
                    translation=np.asarray(self.translation, dtype=np.float64))

    def to_dict(self) -> dict:
        yaw, pitch, roll = self.euler
        return {
            "rotation": np.asarray(self.rotation).round(8).tolist(),
            "scale": float(self.scale),
            "translation": np.asarray(self.translation, dtype=float).round(4).tolist(),
            "yaw_pitch_roll_deg": [round(yaw, 3), round(pitch, 3), round(roll, 3)],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Pose:
        rotation = np.asarray(data["rotation"], dtype=np.float64)
        translation = np.asarray(data["translation"], dtype=np.float64)
        if rotation.shape != (3, 3) or translation.shape != (3,):
            raise ValueError("pose needs a 3x3 rotation and a 3-vector translation")
        return cls(rotation=rotation, scale=float(data["scale"]), translation=translation)


def umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity ``target ≈ s * R @ source + t`` (Umeyama 1991), optionally weighted.

    Args:
        source: ``(N, 3)`` points.
        target: ``(N, 3)`` corresponding points.
        weights: ``(N,)`` non-negative weights, or None for uniform.

    Returns:
        ``(s, R, t)``: scale, ``(3, 3)`` proper rotation (det +1), ``(3,)`` translation.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    s0 = src - mu_s
    d0 = dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[2, 2] = -1.0
    rot = u @ fix @ vt
    var_s = (w * (s0**2).sum(1)).sum()
    scale = float((sig * np.diag(fix)).sum() / var_s)
    trans = mu_d - scale * rot @ mu_s
    return scale, rot, trans


def image_points_to_camera(points: np.ndarray) -> np.ndarray:
    """Pixel ``(x, y, depth)`` ``(N, 3)`` -> right-handed camera coordinates ``(x, -y, -depth)``."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([p[:, 0], -p[:, 1], -p[:, 2]], axis=1)


def fit_pose(model_vertices: np.ndarray, image_points: np.ndarray,
             weights: np.ndarray | None = None) -> Pose:
    """Similarity pose that maps model vertices onto landmark points given in screen space.

    Args:
        model_vertices: ``(N, 3)`` model-space points.
        image_points: ``(N, 3)`` screen points: pixel ``x, y`` and depth (smaller is closer), with
            depth in the same pixel units as ``x`` (MediaPipe's ``z * width``).
        weights: optional ``(N,)`` weights (e.g. to trust rigid points more).

    Returns:
        The :class:`Pose` with ``pose.to_screen(model_vertices) ≈ image_points``.
    """
    s, rot, t = umeyama(model_vertices, image_points_to_camera(image_points), weights)
    return Pose(rotation=rot, scale=s, translation=np.array([t[0], -t[1], -t[2]]))


def screen_to_model(pose: Pose, screen_points: np.ndarray) -> np.ndarray:
    """Inverse of :meth:`Pose.to_screen`: screen ``(N, 3)`` -> model space ``(N, 3)``."""
    tx, ty, tz = pose.translation
    p = np.asarray(screen_points, dtype=np.float64)
    cam = np.stack([p[:, 0] - tx, -(p[:, 1] - ty), -(p[:, 2] - tz)], axis=1) / pose.scale
    return cam @ pose.rotation


def fit_pose_2d(model_points: np.ndarray, image_xy: np.ndarray, weights: np.ndarray | None = None) -> Pose:
    """Scaled-orthographic pose from 2D landmarks (no depth), e.g. 68-point detectors.

    Fits an affine camera ``xy ≈ A X + b`` by least squares, then takes the closest scaled
    rotation: the two rows of ``A`` (y flipped) are orthonormalised by SVD, the third axis is
    their cross product, the scale is their mean length. Depth translation is 0.

    Args:
        model_points: ``(N, 3)`` model-space points, ``N >= 4`` and not coplanar for a full pose.
        image_xy: ``(N, 2)`` pixel coordinates.
        weights: optional ``(N,)`` weights.

    Returns:
        The :class:`Pose`.
    """
    src = np.asarray(model_points, dtype=np.float64)
    dst = np.asarray(image_xy, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    design = np.concatenate([src, np.ones((len(src), 1))], axis=1) * np.sqrt(w)[:, None]
    solution, *_ = np.linalg.lstsq(design, dst * np.sqrt(w)[:, None], rcond=None)   # (4, 2)
    affine = solution[:3].T                                                          # (2, 3)
    rows = np.stack([affine[0], -affine[1]])                                         # camera x, y axes * s
    u, sig, vt = np.linalg.svd(rows, full_matrices=False)
    r12 = u @ vt
    rotation = np.stack([r12[0], r12[1], np.cross(r12[0], r12[1])])
    scale = float(sig.mean())
    return Pose(rotation=rotation, scale=scale, translation=np.array([solution[3, 0], solution[3, 1], 0.0]))
