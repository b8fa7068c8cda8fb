"""``unwrap --method learned``: the incomplete UV map from the learned UV sampler (seed 001, §3.1), no 3D fit.

For one face:

1. 2D landmarks (MediaPipe's 478 points, from the detector or from a ``fit.json``; only their
   image ``x, y`` are read) give the 2D similarity alignment and the face hull
   (:func:`stages.models.alignment.aligned_crop`);
2. the sampler network predicts, for every UV texel, where to sample the aligned crop and whether
   the texel is visible (:class:`stages.models.uv_sampler.UVSampler`), at the requested UV size
   (its coarse maps are upsampled bilinearly);
3. the sampling positions are mapped back through the inverse alignment into the full-resolution
   photo, which is sampled bilinearly after an area pre-filter to about one pixel per texel (as
   the geometric unwrap does), so the texture is as sharp as the photo allows, not limited to the
   network's crop size.

The result is an :class:`stages.unwrap.UnwrapResult` with the same artifacts as the geometric
unwrap, except: ``confidence`` (the alpha of ``uv_texture.png``) is the predicted visibility
probability (``>= threshold`` on visible texels, 0 elsewhere) rather than a viewing-angle cosine,
and ``position`` (``uv_position.npy``) is the face model's *mean* shape, since no per-image shape
is fitted.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from stages.core.errors import BadInputError, MissingArtifactError, NoFaceError
from stages.core.face_model import FaceModel, load_builtin_face_model
from stages.core.image_io import Photo
from stages.core.uv import uv_layout
from stages.models.alignment import (HULL_POINTS, aligned_crop, apply_affine, grid_to_pixels, invert_affine,
                                     network_input)
from stages.models.device import resolve_device
from stages.models.uv_sampler import load_sampler
from stages.unwrap import UV_SIZE_RANGE, UnwrapResult

#: Where a shipped sampler would live (used when ``--model`` is not given and the folder exists).
DEFAULT_SAMPLER_DIR = Path(__file__).resolve().parent / "assets" / "uv_sampler_london_v1"
#: Texels whose predicted visibility probability is below this are not visible.
VISIBILITY_THRESHOLD = 0.5


def default_sampler_dir() -> Path | None:
    """The shipped sampler folder when it is installed, else None."""
    return DEFAULT_SAMPLER_DIR if (DEFAULT_SAMPLER_DIR / "config.json").is_file() else None


class LearnedUnwrapper:
    """A loaded UV sampler, reused for a whole batch.

    Args:
        model_dir: the sampler's model folder (``facetex train sampler``); None: the shipped one,
            if installed.
        face_model: the face model (default built-in); must be the one the sampler was trained with.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        threshold: visibility probability threshold.

    Raises:
        MissingArtifactError: no model folder (one line saying how to train one), or a missing /
            corrupt folder, or a sampler trained for another face model.
    """

    def __init__(self, model_dir: str | Path | None = None, *, face_model: FaceModel | None = None,
                 device: str | torch.device = "auto", threshold: float = VISIBILITY_THRESHOLD):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.face_model = face_model or load_builtin_face_model()
        model_dir = model_dir if model_dir is not None else default_sampler_dir()
        device = resolve_device(device)
        self.net, self.config = load_sampler(model_dir, map_location=device)
        self.model_dir = Path(model_dir)
        trained_for = self.config.get("face_model")
        if trained_for != self.face_model.name:
            raise MissingArtifactError(self.model_dir / "config.json", f"sampler was trained for face model "
                                                                       f"{trained_for!r}, not {self.face_model.name!r}")
        self.device = torch.device(device)
        self.threshold = float(threshold)
        self.crop_size = self.net.config.crop_size

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, landmarks: np.ndarray, uv_size: int) -> dict:
        """Run the network on one face.

        Args:
            rgb: ``(H, W, 3)`` uint8 photo.
            landmarks: ``(L, 2+)`` MediaPipe points (``L >= 468``) in the photo's pixels.
            uv_size: ``S``.

        Returns:
            dict with ``photo_xy`` ``(S, S, 2)`` float32 sampling positions in photo pixels
            (continuous coordinates), ``probability`` ``(S, S)`` float32 visibility, ``in_hull``
            ``(S, S)`` bool (position inside the landmark hull), ``matrix`` ``(2, 3)`` photo -> crop,
            ``crop`` ``(C, C, 3)`` the network's input crop.
        """
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.ndim != 2 or landmarks.shape[0] < HULL_POINTS or landmarks.shape[1] < 2:
            raise ValueError(f"landmarks must be (>= {HULL_POINTS}, 2+) MediaPipe points, got {landmarks.shape}")
        crop, mask, matrix = aligned_crop(rgb, landmarks, self.face_model, self.crop_size)
        x = torch.from_numpy(network_input(crop, mask))[None].to(self.device)
        grid, vis = self.net.predict(x, uv_size)
        grid_np = grid[0].float().cpu().numpy()
        crop_xy = grid_to_pixels(grid_np.astype(np.float64), self.crop_size)
        cx = np.clip(np.floor(crop_xy[..., 0]).astype(np.int64), 0, self.crop_size - 1)
        cy = np.clip(np.floor(crop_xy[..., 1]).astype(np.int64), 0, self.crop_size - 1)
        inside = ((crop_xy >= 0) & (crop_xy < self.crop_size)).all(axis=-1)
        in_hull = inside & (mask[cy, cx] > 0)
        photo_xy = apply_affine(invert_affine(matrix), crop_xy).astype(np.float32)
        return {"photo_xy": photo_xy, "probability": torch.sigmoid(vis)[0, 0].float().cpu().numpy(),
                "in_hull": in_hull, "matrix": matrix, "crop": crop}

    def unwrap(self, rgb: np.ndarray, landmarks: np.ndarray, *, uv_size: int = 512, stem: str = "photo",
               source: str = "") -> UnwrapResult:
        """The incomplete UV texture of one face, sampled from the full-resolution photo.

        Args:
            rgb: ``(H, W, 3)`` uint8 photo.
            landmarks: ``(L, 2+)`` MediaPipe points in the photo's pixels.
            uv_size: ``S`` (256..2048).
            stem: output name.
            source: the photo's path (recorded in ``unwrap.json``).

        Returns:
            An :class:`UnwrapResult` (``position`` is the mean shape, see the module docstring).
        """
        if not UV_SIZE_RANGE[0] <= uv_size <= UV_SIZE_RANGE[1]:
            raise ValueError(f"uv_size must be in {UV_SIZE_RANGE}, got {uv_size}")
        from stages.unwrap import _prefilter

        model = self.face_model
        out = self.predict(rgb, landmarks, uv_size)
        layout = uv_layout(model, uv_size)
        height, width = rgb.shape[:2]
        xy = out["photo_xy"]
        in_photo = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
        visible = layout.mask & out["in_hull"] & in_photo & (out["probability"] >= self.threshold)
        confidence = np.where(visible, out["probability"], 0.0).astype(np.float32)

        face_width = float(np.ptp(np.asarray(landmarks)[:HULL_POINTS, 0]))
        texel_px = face_width / max(1.0, float(np.ptp(model.uv[:, 0])) * uv_size)
        photo, factor = _prefilter(rgb, texel_px)
        map_x = (xy[..., 0] * factor - 0.5).astype(np.float32)
        map_y = (xy[..., 1] * factor - 0.5).astype(np.float32)
        colour = cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        texture = colour.astype(np.float32) / 255.0
        texture[~visible] = 0.0
        n_layout = int(layout.mask.sum())
        info = {
            "uv_size": uv_size, "model_id": model.name, "source": source, "method": "learned",
            "sampler": str(self.model_dir), "visibility_threshold": self.threshold,
            "texel_px": round(float(texel_px), 3), "delight": False,
            "position": "face model mean shape (no per-image fit)",
            "coverage": round(float(visible.sum()) / max(1, n_layout), 4),
            "mean_confidence": round(float(confidence[visible].mean()) if visible.any() else 0.0, 4),
        }
        return UnwrapResult(texture=texture, confidence=confidence,
                            position=layout.interpolate(np.asarray(model.vertices, dtype=np.float64)),
                            layout_mask=layout.mask.copy(), stem=stem, info=info)

    def unwrap_photo(self, photo: Photo, landmarker, *, uv_size: int = 512, face: str = "largest",
                     min_face_px: int | None = None) -> list[UnwrapResult]:
        """Detect faces with ``landmarker`` (MediaPipe, 478 points) and unwrap the selected ones.

        Args:
            photo: a loaded photo.
            landmarker: e.g. :class:`stages.fit.MediaPipeLandmarker` (dense points only).
            uv_size: ``S``.
            face: ``"largest"``, ``"all"`` or an index into the faces sorted by size.
            min_face_px: refuse faces narrower than this (default :data:`stages.fit.MIN_FACE_PX`).

        Raises:
            NoFaceError: no (large enough) face; BadInputError: bad ``face`` or a sparse detector.
        """
        from stages.fit import MIN_FACE_PX, detect_faces

        if getattr(landmarker, "kind", "dense") != "dense":
            raise BadInputError(photo.path, "the learned sampler needs MediaPipe's dense landmarks "
                                            "(--landmarks mediapipe)")
        min_face_px = MIN_FACE_PX if min_face_px is None else min_face_px
        faces, chosen = detect_faces(photo, landmarker, face)
        results = []
        for index in chosen:
            width = float(np.ptp(faces[index][:, 0]))
            if width < min_face_px:
                if face == "all":
                    continue
                raise NoFaceError(photo.path, f"face too small ({width:.0f} px wide; need {min_face_px})")
            stem = photo.path.stem if face != "all" else f"{photo.path.stem}_face{index}"
            results.append(self.unwrap(photo.rgb, faces[index], uv_size=uv_size, stem=stem, source=str(photo.path)))
        if not results:
            raise NoFaceError(photo.path, f"all {len(faces)} faces are too small (need {min_face_px} px)")
        return results

    def unwrap_with_fit(self, photo: Photo, fit_path: str | Path, *, uv_size: int = 512) -> UnwrapResult:
        """Unwrap using the 2D landmarks stored in a ``fit.json`` (its pose and shape are not used)."""
        from stages.fit import FitResult

        fit = FitResult.load(fit_path)
        if fit.landmarks.shape[0] < HULL_POINTS:
            raise MissingArtifactError(fit_path, f"has {fit.landmarks.shape[0]} landmarks; the learned sampler needs "
                                                 f"MediaPipe's {HULL_POINTS}+")
        fit.check_photo(photo.width, photo.height, photo.sha256)  # refuses a fit of another photo
        k = photo.width / fit.image_size[0]
        return self.unwrap(photo.rgb, fit.landmarks[:, :2] * k, uv_size=uv_size, stem=fit.stem, source=str(photo.path))
