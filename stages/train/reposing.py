"""Simulated head poses: what a photo of the same face at another pose would have seen.

Used to make training inputs without ground truth (seed 001, §3.2): an unwrap is further masked
by the visibility of a randomly re-posed head, so the network learns to complete what a new pose
hides while the hidden texels' real colours (seen by the original photo) supervise it.

Poses follow ``docs/CONVENTIONS.md``: ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` in degrees; positive
yaw turns the nose towards the image right, i.e. hides the model's +x side (UV columns ``> S/2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.core.camera import Pose, euler_to_matrix
from stages.core.face_model import FaceModel
from stages.unwrap import DEPTH_TOLERANCE, EROSION_FRACTION, MIN_CONFIDENCE, texel_visibility

#: Fraction of the image side the face spans in a simulated view (as :func:`stages.render.view_pose`).
VIEW_FILL = 0.8


@dataclass(frozen=True)
class PoseRange:
    """Half-widths (degrees) of the uniform pose distribution: each angle in ``[-max, +max]``."""

    max_yaw: float = 75.0
    max_pitch: float = 25.0
    max_roll: float = 20.0


def sample_pose(rng: np.random.Generator, ranges: PoseRange = PoseRange()) -> tuple[float, float, float]:
    """A random ``(yaw, pitch, roll)`` in degrees, each uniform in ``[-max, max]`` of ``ranges``."""
    yaw, pitch, roll = rng.uniform(-1.0, 1.0, 3) * np.array([ranges.max_yaw, ranges.max_pitch, ranges.max_roll])
    return float(yaw), float(pitch), float(roll)


def view_pose_rolled(vertices: np.ndarray, yaw: float, pitch: float, roll: float, size: int,
                     fill: float = VIEW_FILL) -> Pose:
    """:func:`stages.render.view_pose` with a roll: ``vertices`` at ``(yaw, pitch, roll)`` degrees,
    centred in a ``size`` square image, the larger side of their projection ``fill * size`` pixels."""
    rotation = euler_to_matrix(yaw, pitch, roll)
    cam = np.asarray(vertices, dtype=np.float64) @ rotation.T
    extent = max(np.ptp(cam[:, 0]), np.ptp(cam[:, 1]))
    scale = fill * size / max(extent, 1e-9)
    centre = (cam.max(axis=0) + cam.min(axis=0)) / 2
    translation = np.array([size / 2 - scale * centre[0], size / 2 + scale * centre[1], 10 * size])
    return Pose(rotation=rotation, scale=float(scale), translation=translation)


def reposed_confidence(model: FaceModel, vertices: np.ndarray, yaw: float, pitch: float, roll: float, uv_size: int,
                       *, image_size: int = 384) -> np.ndarray:
    """The confidence map a photo of this shape at ``(yaw, pitch, roll)`` would give.

    The per-image shape is posed by :func:`view_pose_rolled` in an ``image_size`` square (the face
    about ``0.8 * image_size`` pixels across) and run through :func:`stages.unwrap.texel_visibility`
    with the real unwrap's silhouette erosion, depth tolerance and minimum confidence.

    Args:
        model: face model.
        vertices: ``(V, 3)`` model-space per-image shape (``fit.vertices``).
        yaw, pitch, roll: degrees.
        uv_size: ``S``.
        image_size: side of the simulated square photo in pixels.

    Returns:
        ``(S, S)`` float32: cosine between normal and view ray where visible, 0 where hidden.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    pose = view_pose_rolled(vertices, yaw, pitch, roll, image_size)
    seen = texel_visibility(model, vertices, pose, image_size, image_size, uv_size, erosion=EROSION_FRACTION,
                            depth_tolerance=DEPTH_TOLERANCE, min_confidence=MIN_CONFIDENCE)
    return seen.confidence.astype(np.float32)
