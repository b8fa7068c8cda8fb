"""Shared fixtures: the built-in model, one landmark detector per session, test photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests compare against the numba reference rasterizer (the pytorch3d parity test selects its own).
os.environ.setdefault("FACETEX_RASTERIZER", "numba")

REPO = Path(__file__).resolve().parents[1]
SHARED_FACES = REPO.parent / "shared" / "faces"


@pytest.fixture(scope="session")
def model():
    from stages.core.face_model import load_builtin_face_model

    return load_builtin_face_model()


@pytest.fixture(scope="session")
def landmarker():
    from stages.fit import MediaPipeLandmarker

    detector = MediaPipeLandmarker()
    yield detector
    detector.close()


@pytest.fixture(scope="session")
def astronaut_path(tmp_path_factory) -> Path:
    """``skimage.data.astronaut()`` (public domain, ships with scikit-image) saved as a PNG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    if not SHARED_FACES.is_dir():
        pytest.skip("../shared/faces is not present on this machine")
    return SHARED_FACES


def smooth_random_texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful ``(size, size, 3)`` float texture (low-frequency noise), for round trips."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.15, 0.85, (8, 8, 3)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
