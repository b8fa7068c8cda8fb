"""Shared fixtures: the built-in model, one landmark detector per session, test photos."""

from __future__ import annotations

import dataclasses
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


def rendered_face_folders(model, root: Path, yaws, *, photo_size: int, texture_size: int, seed: int,
                          pseudo: bool = True) -> list[Path]:
    """facetex-like output folders of faces rendered with a known smooth texture, one per yaw:
    ``photo.png`` (named by fit.json's ``source``), ``fit.json`` (mean shape at the yaw; landmarks =
    the projected mesh vertices), the geometric unwrap at 256^2 and, with ``pseudo``, the true texture
    as ``uv_pseudo.png``. Texture ``k`` uses seed ``seed + k``."""
    from stages.core.image_io import save_png
    from stages.render import render_mesh
    from stages.unwrap import unwrap_photo
    from tests.test_unwrap_render import synthetic_fit

    out = []
    for k, yaw in enumerate(yaws):
        fit = synthetic_fit(model, yaw, photo_size)
        texture = smooth_random_texture(texture_size, seed=seed + k)
        rgb, mask = render_mesh(texture, fit.screen_vertices(), model, photo_size, photo_size)
        photo = (np.where(mask[..., None], rgb, 0.5) * 255 + 0.5).astype(np.uint8)
        folder = root / f"face{k}"
        save_png(folder / "photo.png", photo)        # the render losses read the photo named in fit.json
        fit = dataclasses.replace(fit, source=str(folder / "photo.png"), stem=folder.name)
        unwrap_photo(photo, fit, model=model, uv_size=256).save(folder)
        fit.save(folder / "fit.json")
        if pseudo:
            save_png(folder / "uv_pseudo.png", texture)
        out.append(folder)
    return out


@pytest.fixture(scope="session")
def train_folders(model, tmp_path_factory):
    """Three facetex-like output folders (fit.json, unwrap at 256^2, uv_pseudo.png, photo) of rendered
    faces at yaw 0, 25, -30: enough for the training code to run for real in seconds."""
    return rendered_face_folders(model, tmp_path_factory.mktemp("train"), (0.0, 25.0, -30.0), photo_size=384,
                                 texture_size=256, seed=10)
