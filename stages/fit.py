"""``fit``: detect faces and landmarks, then estimate pose, per-image shape and SH lighting.

Pipeline for one photo:

1. MediaPipe face mesh (offline; the models ship inside the pinned wheel) gives 478 points per
   face: 468 mesh points plus 10 iris points, as pixel ``x, y`` and a relative depth in ``x``'s
   scale. The built-in model's vertices are the 468 mesh points plus three cap centres (eyes,
   mouth) derived from them (``FaceModel.vertices_from_landmarks``).
2. A similarity pose (rotation, scale, translation) of the built-in mean shape onto those points
   (Umeyama least squares) in a scaled-orthographic camera: MediaPipe's points are themselves
   weak-perspective, so a perspective camera would add unknowns without information.
3. The per-image shape: the landmark-derived vertices mapped back into model space. Texture sampling uses the
   detected geometry itself, which aligns with the photo better than any mean shape could.
4. Second-order SH lighting (9 x 3) fitted to the visible skin pixels (eyes, brows and lips
   excluded, robust to hair and highlights). A morphable head (ICT) takes the lighting of the
   built-in model's fit to the same points, which also scores the fit.

The result is a :class:`FitResult`, saved as ``fit.json`` (schema-versioned) plus
``fit_overlay.png`` (landmarks and mesh wireframe on the photo).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from stages.core.atomic import write_json
from stages.core.camera import Pose, fit_pose, fit_pose_2d, screen_to_model
from stages.core.errors import BadInputError, FacetexError, MissingArtifactError, NoFaceError
from stages.core.face_model import FaceModel, load_builtin_face_model
from stages.core.image_io import Photo, load_photo, save_png
from stages.core.lighting import fit_sh_lighting
from stages.occlusion import SkinMask, save_skin_mask, segment_skin

#: 2: records the photo's sha256 and its path relative to the fit.json folder.
SCHEMA_VERSION = 2
#: A face narrower than this (pixels) carries too little texture to unwrap.
MIN_FACE_PX = 40
#: Fit-quality score: rigid-fit residual (relative to the face scale) times the lighting-fit rms.
#: Wrong landmarks raise both: the mesh no longer follows the face, so the "skin" it covers mixes
#: skin with hair or background. Measured (MediaPipe 0.10.14): upright London photos 0.0010-0.0051,
#: the same photos upside down 0.0062-0.038 (MediaPipe fits those as if upright); in-the-wild
#: photos 0.0017-0.0147.
#: Above this score the photo is also fitted rotated by 180 degrees and the better-scoring
#: orientation is kept (one extra detection, never needed for the upright London photos).
ORIENTATION_CHECK_SCORE = 0.0056
#: Above this score the fit is kept but flagged (``quality["warnings"]``): the pose and texture
#: are likely wrong (large pose, heavy occlusion, an extreme expression).
WARN_SCORE = 0.0095
#: Beyond this |yaw| MediaPipe's landmarks underestimate the pose (a 90-degree profile comes out
#: near 60 or less) and the far half of the mesh covers background: flagged.
WARN_YAW_DEG = 45.0
#: Skin samples used for the lighting fit (random subset of visible skin pixels).
LIGHTING_SAMPLES = 20000


@dataclass
class FitResult:
    """Everything ``unwrap``/``render`` need to know about one face in one photo.

    Attributes:
        source: path of the photo.
        stem: name of the output folder (photo stem, plus ``_face<i>`` with ``--face all``).
        image_size: ``(width, height)`` of the photo as loaded (after EXIF rotation/downscale).
        face_index: which detected face (0 = largest).
        num_faces: how many faces the detector found.
        landmarks: ``(L, 3)`` detector points in screen space: pixel ``x, y`` and depth (smaller is
            closer); MediaPipe gives 478 (468 mesh + 10 iris).
        face_box: ``(x0, y0, x1, y1)`` pixel box around the landmarks.
        pose: similarity pose of the model in the camera.
        vertices: ``(V, 3)`` the per-image shape in model space.
        lighting: ``(9, 3)`` SH coefficients (mean skin albedo folded in).
        model_id: name of the face model (``FaceModel.name``).
        detector: which landmark backend produced the points.
        quality: diagnostics (landmark residual of the rigid fit, lighting fit rms, fit score,
            ``warnings``: one-line notes on an unreliable fit, ...).
        source_sha256: sha256 of the photo file's bytes ("" when unknown).
        source_relative: the photo's path relative to the folder of the ``fit.json`` it was
            loaded from or saved to (None when not expressible, e.g. another drive).
        fit_path: the ``fit.json`` this was loaded from (not saved; names the file in errors).
        skin: per-pixel face-skin probability (:mod:`stages.occlusion`), saved beside ``fit.json``
            as ``skin_mask.png``; None when fitted with ``occlusion_mask=False``.
        settings: the settings the fit was made with (``face`` selection, ``max_side`` the photo
            was loaded with, ``min_face_px``, ``seed``, ``occlusion_mask``); optional in
            ``fit.json`` (``{}`` when an older file lacks it).
    """

    source: str
    stem: str
    image_size: tuple[int, int]
    face_index: int
    num_faces: int
    landmarks: np.ndarray
    face_box: tuple[float, float, float, float]
    pose: Pose
    vertices: np.ndarray
    lighting: np.ndarray
    model_id: str
    detector: str
    quality: dict = field(default_factory=dict)
    source_sha256: str = ""
    source_relative: str | None = None
    fit_path: Path | None = None
    skin: SkinMask | None = field(default=None, repr=False)
    settings: dict = field(default_factory=dict)

    def screen_vertices(self) -> np.ndarray:
        """``(V, 3)`` the per-image shape in screen space (equals the detected mesh points)."""
        return self.pose.to_screen(self.vertices)

    def to_dict(self) -> dict:
        return {
            "schema": "facetex.fit",
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "source_relative": self.source_relative,
            "source_sha256": self.source_sha256,
            "stem": self.stem,
            "image_size": list(self.image_size),
            "face_index": self.face_index,
            "num_faces": self.num_faces,
            "model_id": self.model_id,
            "detector": self.detector,
            "camera": {"type": "scaled_orthographic",
                       "convention": "x_img = s*(R X)_x + tx; y_img = -s*(R X)_y + ty; "
                                     "depth = -s*(R X)_z + tz"},
            "pose": self.pose.to_dict(),
            "face_box": [round(float(v), 2) for v in self.face_box],
            "lighting_sh": np.asarray(self.lighting, dtype=float).round(6).tolist(),
            "quality": self.quality,
            "settings": self.settings,
            "landmarks": np.asarray(self.landmarks, dtype=float).round(3).tolist(),
            "vertices": np.asarray(self.vertices, dtype=float).round(6).tolist(),
        }

    def save(self, path: str | Path) -> None:
        """Write ``fit.json``; the photo's path is also recorded relative to its folder, so the
        output folder can be moved together with the photos."""
        path = Path(path)
        try:
            self.source_relative = Path(os.path.relpath(Path(self.source).resolve(),
                                                         path.parent.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            self.source_relative = None
        self.fit_path = path
        write_json(path, self.to_dict())

    def photo_path(self, fit_json: str | Path | None = None) -> Path:
        """The photo this fit was made from, for a ``fit.json`` at ``fit_json`` (default: the file
        it was loaded from): the recorded relative path first (the folders may have moved
        together), then the recorded path as given.

        Raises:
            MissingArtifactError: neither exists (both named).
        """
        fit_json = Path(fit_json) if fit_json is not None else self.fit_path
        candidates = []
        if fit_json is not None and self.source_relative:
            candidates.append(fit_json.parent / self.source_relative)
        candidates.append(Path(self.source))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        also = f" (nor at {candidates[0]}, relative to the fit.json)" if len(candidates) > 1 else ""
        raise MissingArtifactError(fit_json, f"its source photo {self.source} is not found{also}")

    def load_fitted_photo(self, fit_json: str | Path | None = None) -> np.ndarray:
        """``(H, W, 3)`` uint8 pixels of the photo this fit was made from, at the size it was fitted
        at (:meth:`photo_path`, loaded with the fit's own downscale, checked by :meth:`check_photo`).

        Raises:
            MissingArtifactError / BadInputError: the photo is not found, unreadable, or not the
                fitted one (one line each, for a note such as "render_fitted.png not written").
        """
        path = self.photo_path(fit_json)
        photo = load_photo(path, max_side=max(self.image_size))
        self.check_photo(photo.width, photo.height, photo.sha256)
        if (photo.width, photo.height) != tuple(self.image_size):
            raise MissingArtifactError(path, f"loads at {photo.width}x{photo.height}, but the fit was made at "
                                             f"{self.image_size[0]}x{self.image_size[1]}")
        return photo.rgb

    def check_photo(self, width: int, height: int, sha256: str = "") -> Pose:
        """Check a photo given to ``unwrap`` against the one this fit was made from and return the
        pose for it.

        A photo with another checksum is refused: all London photos share one size, so a fit of
        another person, or of the photo before an edit, would pass a size check and sample the
        wrong pixels; re-running ``fit`` costs less than a wrong texture. The same file loaded at
        another size (``--max-side``) gets the pose rescaled; a photo of another aspect ratio is
        refused. ``sha256=""`` (pixels without a file) skips the checksum test.
        """
        where = self.fit_path or Path(self.source)
        if sha256 and self.source_sha256 and sha256 != self.source_sha256:
            raise MissingArtifactError(where, f"was made from another photo (file checksum differs from "
                                              f"{self.source}'s); re-run `facetex fit` on this photo")
        fit_w, fit_h = self.image_size
        if (width, height) == (fit_w, fit_h):
            return self.pose
        k = width / fit_w
        if abs(fit_h * k - height) > max(1.0, 0.002 * height):
            raise MissingArtifactError(where, f"was made on a {fit_w}x{fit_h} photo, this one is {width}x{height} "
                                              "(another photo?); re-run `facetex fit` on this photo")
        return Pose(rotation=self.pose.rotation, scale=self.pose.scale * k, translation=self.pose.translation * k)

    def check_model(self, model: FaceModel) -> None:
        """Refuse a fit made with another face model or with another vertex count."""
        where = self.fit_path or Path(self.source)
        if self.model_id != model.name:
            raise MissingArtifactError(where, f"model_id: fit was made with model {self.model_id!r}, "
                                              f"not {model.name!r}")
        if len(self.vertices) != model.n_vertices:
            raise MissingArtifactError(where, f"vertices: {len(self.vertices)} rows, model {model.name} has "
                                              f"{model.n_vertices} vertices")

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        """Read ``fit.json``; raises :class:`MissingArtifactError` naming the file on any problem."""
        path = Path(path)
        if not path.is_file():
            raise MissingArtifactError(path, "fit file not found (run `facetex fit` first)")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MissingArtifactError(path, f"not a readable fit.json ({exc})") from None
        if not isinstance(data, dict) or data.get("schema") != "facetex.fit":
            raise MissingArtifactError(path, "not a facetex fit.json")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise MissingArtifactError(
                path, f"fit.json schema version {data.get('schema_version')} is not {SCHEMA_VERSION}; "
                      "re-run `facetex fit`")
        _validate_fit_dict(path, data)
        try:
            result = cls(
                source=str(data["source"]), stem=str(data["stem"]),
                image_size=tuple(int(v) for v in data["image_size"]),
                face_index=int(data["face_index"]), num_faces=int(data["num_faces"]),
                landmarks=np.asarray(data["landmarks"], dtype=np.float64),
                face_box=tuple(float(v) for v in data["face_box"]),
                pose=Pose.from_dict(data["pose"]),
                vertices=np.asarray(data["vertices"], dtype=np.float64),
                lighting=np.asarray(data["lighting_sh"], dtype=np.float32),
                model_id=str(data["model_id"]), detector=str(data["detector"]),
                quality=dict(data.get("quality", {})),
                settings=dict(data.get("settings", {})),
                source_sha256=str(data["source_sha256"]),
                source_relative=None if data["source_relative"] is None else str(data["source_relative"]),
                fit_path=path,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MissingArtifactError(path, f"fit.json is incomplete or malformed ({exc!r})") from None
        result.skin = SkinMask.load_beside(path, result.image_size)
        return result


#: Largest photo side a fit.json may describe (load_photo downscales to 4096 by default).
MAX_FIT_IMAGE_SIDE = 65536


def _validate_fit_dict(path: Path, data: dict) -> None:
    """One-line :class:`MissingArtifactError` naming the file and the field for any value that is
    missing, not finite, of the wrong shape or out of range. Bounds every later allocation: the
    projected face must be at most a few times the photo's size and lie near it."""

    def fail(name: str, reason: str):
        raise MissingArtifactError(path, f"{name}: {reason}")

    def array(name: str, value, shape: tuple) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            fail(name, "not an array of numbers")
        if arr.ndim != len(shape) or any(want is not None and got != want
                                         for got, want in zip(arr.shape, shape, strict=True)):
            want = "x".join("N" if w is None else str(w) for w in shape)
            fail(name, f"shape {'x'.join(map(str, arr.shape)) or 'scalar'}, expected {want}")
        if not np.isfinite(arr).all():
            fail(name, "contains NaN or infinity")
        return arr

    for key in ("source", "stem", "image_size", "pose", "vertices", "landmarks", "lighting_sh", "face_box",
                "model_id", "detector", "face_index", "num_faces", "source_sha256", "source_relative"):
        if key not in data:
            fail(key, "missing")
    size = array("image_size", data["image_size"], (2,))
    if (size != np.round(size)).any() or size.min() < 1 or size.max() > MAX_FIT_IMAGE_SIDE:
        fail("image_size", f"{size.tolist()} is not a photo size (whole pixels, 1..{MAX_FIT_IMAGE_SIDE})")
    width, height = size
    pose = data["pose"] if isinstance(data["pose"], dict) else fail("pose", "not an object")
    for key in ("rotation", "scale", "translation"):
        if key not in pose:
            fail(f"pose.{key}", "missing")
    rotation = array("pose.rotation", pose["rotation"], (3, 3))
    if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) < 0:
        fail("pose.rotation", "not a rotation matrix")
    scale = float(array("pose.scale", pose["scale"], ()))
    vertices = array("vertices", data["vertices"], (None, 3))
    if len(vertices) < 3:
        fail("vertices", f"{len(vertices)} rows")
    extent = float(np.ptp(vertices[:, :2], axis=0).max())
    if not 0 < scale or not 0 < extent:
        fail("pose.scale", f"{scale} (must be positive)")
    if scale * extent > 4 * max(width, height):
        fail("pose.scale", f"{scale:g} makes the face {scale * extent:.0f} px wide in a {width:.0f}x{height:.0f} "
                           "photo (at most 4x the photo)")
    tx, ty, tz = array("pose.translation", pose["translation"], (3,))
    if not (-2 * width <= tx <= 3 * width and -2 * height <= ty <= 3 * height and abs(tz) <= 10 * max(width, height)):
        fail("pose.translation", f"{[round(float(v), 1) for v in (tx, ty, tz)]} puts the face far outside the "
                                 f"{width:.0f}x{height:.0f} photo")
    array("landmarks", data["landmarks"], (None, 3))
    array("lighting_sh", data["lighting_sh"], (9, 3))
    array("face_box", data["face_box"], (4,))
    if not isinstance(data.get("settings", {}), dict):
        fail("settings", "not an object")


class LandmarkBackendUnavailable(FacetexError):
    """The requested landmark backend cannot run here (package or weights missing)."""


class MediaPipeLandmarker:
    """MediaPipe face mesh with iris refinement, loaded once and reused for a whole batch.

    ``kind = "dense"``: its points are the built-in model's landmark points (plus iris).

    Args:
        max_faces: how many faces to look for per photo.
        min_confidence: detector threshold.
    """

    name = "mediapipe-facemesh"
    kind = "dense"

    def __init__(self, max_faces: int = 8, min_confidence: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # mediapipe 0.10.14 calls a protobuf API that warns on every process() call.
        warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
        import mediapipe as mp  # heavy import: only when a landmarker is built

        self.version = getattr(mp, "__version__", "?")
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Find faces in ``(H, W, 3)`` uint8 RGB; returns a list of ``(478, 3)`` screen points."""
        height, width = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            # Normalised -> continuous pixels; MediaPipe's z is in x's scale, smaller = closer.
            faces.append(pts * np.array([width, height, width]))
        return faces

    def close(self) -> None:
        self._mesh.close()


#: Weight files face-alignment (2D FAN + S3FD detector) loads from torch's hub cache.
FACE_ALIGNMENT_FILES = ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar")


class FaceAlignmentLandmarker:
    """Optional backend: face-alignment's 2D FAN, 68 iBUG points, used only when its weights are on disk.

    ``kind = "ibug68"``: 68 sparse points carry a pose but not a dense shape, so the fit uses the
    model's mean shape (through ``FaceModel.landmarks68``). facetex never downloads the weights;
    see ``data_manifests/face_alignment.md``.

    Raises:
        LandmarkBackendUnavailable: package not installed, or weights not in the torch hub cache.
    """

    name = "face-alignment-2dfan4"
    kind = "ibug68"

    def __init__(self, device: str = "cpu"):
        try:
            import face_alignment
        except ImportError:
            raise LandmarkBackendUnavailable(
                None, "landmark backend face-alignment is not installed "
                      "(pip install 'facetex[face-alignment]', or use --landmarks mediapipe)") from None
        import torch

        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        missing = [name for name in FACE_ALIGNMENT_FILES if not (checkpoints / name).is_file()]
        if missing:
            raise LandmarkBackendUnavailable(
                checkpoints, f"face-alignment weights not on disk ({', '.join(missing)}); facetex never downloads: "
                             "put them there first (sources in data_manifests/face_alignment.md) "
                             "or use --landmarks mediapipe")
        self.version = getattr(face_alignment, "__version__", "?")
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                                face_detector="sfd")

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """``(H, W, 3)`` uint8 RGB -> list of ``(68, 3)`` points (pixel ``x, y``; depth 0, unknown)."""
        found = self._fa.get_landmarks_from_image(np.ascontiguousarray(rgb)) or []
        return [np.column_stack([np.asarray(p)[:, :2], np.zeros(len(p))]).astype(np.float64) for p in found]

    def close(self) -> None:
        pass


LANDMARK_BACKENDS = {"mediapipe": MediaPipeLandmarker, "face-alignment": FaceAlignmentLandmarker}


def make_landmarker(name: str = "mediapipe"):
    """Build a landmark backend by name (``mediapipe`` or ``face-alignment``)."""
    if name not in LANDMARK_BACKENDS:
        raise LandmarkBackendUnavailable(None, f"unknown landmark backend {name!r}; choose from "
                                               f"{', '.join(LANDMARK_BACKENDS)}")
    return LANDMARK_BACKENDS[name]()


def face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """Axis-aligned ``(x0, y0, x1, y1)`` box of ``(N, 2+)`` pixel points."""
    return (float(points[:, 0].min()), float(points[:, 1].min()),
            float(points[:, 0].max()), float(points[:, 1].max()))


def select_faces(faces: list[np.ndarray], which: str) -> list[int]:
    """Indices of the faces to fit, after sorting largest first.

    Args:
        faces: detected point sets.
        which: ``"largest"``, ``"all"`` or a 0-based index into the size-sorted list.
    """
    if which == "largest":
        return [0] if faces else []
    if which == "all":
        return list(range(len(faces)))
    try:
        index = int(which)
    except ValueError:
        raise ValueError(f"--face must be 'largest', 'all' or an index, got {which!r}") from None
    if not 0 <= index < len(faces):
        raise IndexError(f"face {index} requested but {len(faces)} found")
    return [index]


def detect_faces(photo: Photo, landmarker, which: str) -> tuple[list[np.ndarray], list[int]]:
    """Detect the landmarks of every face, largest first, and pick the ones ``which`` asks for.

    A photo where nothing is found is looked at once more rotated by 180 degrees (points mapped
    back to the photo).

    Returns:
        ``(faces, chosen)``: the point sets sorted by bounding-box area, and the selected indices.

    Raises:
        NoFaceError: nothing detected; BadInputError: a bad ``which`` (named in the message).
    """
    faces = landmarker.detect(photo.rgb)
    if not faces:
        # MediaPipe misses some upside-down faces entirely: one more look, only when none was found.
        rotated = landmarker.detect(_rotated_180(photo).rgb)
        faces = [_unrotate_180(points, photo.width, photo.height) for points in rotated]
    if not faces:
        raise NoFaceError(photo.path, "no face found")
    faces.sort(key=lambda pts: -(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1])))
    try:
        return faces, select_faces(faces, which)
    except (ValueError, IndexError) as exc:
        raise BadInputError(photo.path, str(exc)) from None


def estimate_lighting(rgb: np.ndarray, screen_vertices: np.ndarray, normals_cam: np.ndarray,
                      model: FaceModel, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Fit SH lighting to the visible skin pixels of a posed face.

    Args:
        rgb: ``(H, W, 3)`` uint8 photo.
        screen_vertices: ``(V, 3)`` posed vertices in screen space.
        normals_cam: ``(V, 3)`` unit vertex normals in camera space.
        model: the face model (its ``regions["skin"]`` selects the triangles used).
        rng: random generator for the pixel subset.

    Returns:
        ``(coeffs (9, 3), info)`` as from :func:`stages.core.lighting.fit_sh_lighting`.
    """
    from stages.core.raster import crop_window, rasterize

    height, width = rgb.shape[:2]
    skin = np.zeros(model.n_vertices, dtype=bool)
    skin[model.regions["skin"]] = True
    skin_tris = np.flatnonzero(skin[model.triangles].all(axis=1))
    # Skin pixels lie within the skin triangles' window: rasterizing (all triangles, as occluders)
    # only there gives the same skin pixels in the same order (a whole head's window is ~2x larger).
    x0, y0, x1, y1 = crop_window(screen_vertices[model.triangles[skin_tris].ravel()], height, width)
    frags = rasterize(screen_vertices - np.array([x0, y0, 0.0]), model.triangles, y1 - y0, x1 - x0,
                      cull_backfaces=True)
    ids = frags.triangle_id
    on_skin = np.zeros(len(model.triangles) + 1, dtype=bool)
    on_skin[skin_tris] = True
    pixels = np.flatnonzero(on_skin[ids].reshape(-1))  # ids == -1 indexes the trailing False
    if len(pixels) > LIGHTING_SAMPLES:
        pixels = pixels[rng.choice(len(pixels), LIGHTING_SAMPLES, replace=False)]
    normals = np.empty((len(pixels), 3))
    colors = np.empty((len(pixels), 3))
    _skin_samples(pixels, ids, frags.bary, model.triangles, np.ascontiguousarray(normals_cam, dtype=np.float64),
                  rgb, y0, x0, normals, colors)
    return fit_sh_lighting(colors, normals)


@njit(cache=True)
def _skin_samples(pixels, ids, bary, triangles, normals_cam, rgb, y0, x0, normals, colors):
    """For each window pixel ``pixels[i]`` (flat index into ``ids``): the unit camera-space normal
    interpolated at it (float64, corners summed in order) and the photo's colour in ``[0, 1]``."""
    width = ids.shape[1]
    for i in range(pixels.shape[0]):
        r = pixels[i] // width
        c = pixels[i] - r * width
        f = ids[r, c]
        for a in range(3):
            acc = 0.0
            for k in range(3):
                acc += normals_cam[triangles[f, k], a] * np.float64(bary[r, c, k])
            normals[i, a] = acc
        length = np.sqrt(normals[i, 0] * normals[i, 0] + normals[i, 1] * normals[i, 1]
                         + normals[i, 2] * normals[i, 2]) + 1e-12
        for a in range(3):
            normals[i, a] /= length
            colors[i, a] = rgb[r + y0, c + x0, a] / 255.0


def _fit_sparse68(points: np.ndarray, model: FaceModel, path: Path):
    """Pose of the mean shape from 68 iBUG points (2D); the jaw line (points 0-16) is left out
    because a 2D detector puts it on the visible contour, which is no fixed mesh vertex."""
    if model.landmarks68 is None:
        raise BadInputError(path, f"face model {model.name} has no 68-point landmark indices")
    inner = np.arange(17, 68)
    anchors = np.asarray(model.vertices, dtype=np.float64)[model.landmarks68[inner]]
    pose = fit_pose_2d(anchors, points[inner, :2])
    vertices = np.asarray(model.vertices, dtype=np.float64)
    residual = np.linalg.norm(pose.to_screen(anchors)[:, :2] - points[inner, :2], axis=1)
    return pose, vertices, residual


def fit_dense_shape(model: FaceModel, points: np.ndarray) -> tuple[Pose, np.ndarray, np.ndarray]:
    """Pose and per-image shape of ``model`` from dense MediaPipe points ``(>= L, 3)``.

    A morphable head (``landmark_embedding``: ICT) fits its coefficients and pose
    (:func:`stages.core.ict.fit_morphable`); the built-in topology takes the landmarks' mesh points
    as its shape and a similarity pose. Returns ``(pose, vertices (V, 3) model space, residual (N,)
    pixels)``.
    """
    points = points[: model.n_landmarks]
    if model.landmark_embedding is not None:
        from stages.core.ict import fit_morphable

        pose, vertices, residual, _ = fit_morphable(model, points)
        return pose, vertices, residual
    mesh_points = model.vertices_from_landmarks(points)
    pose = fit_pose(model.vertices, mesh_points)
    vertices = screen_to_model(pose, mesh_points)
    residual = np.linalg.norm(pose.to_screen(model.vertices)[:, :2] - mesh_points[:, :2], axis=1)
    return pose, vertices, residual


def _fit_shape(photo: Photo, points: np.ndarray, model: FaceModel, kind: str):
    """``(pose, vertices (V, 3), residual (N,) pixels)`` of ``model`` for one face's detector points."""
    if kind == "ibug68":
        return _fit_sparse68(points, model, photo.path)
    return fit_dense_shape(model, points)


def _fit_points(photo: Photo, points: np.ndarray, model: FaceModel, kind: str, seed: int) -> dict:
    """Pose, per-image shape and lighting for one face's detector points; also the fit score."""
    pose, vertices, residual = _fit_shape(photo, points, model, kind)
    normals_cam = pose.rotate_normals(model.vertex_normals(vertices))
    lighting, light_info = estimate_lighting(
        photo.rgb, pose.to_screen(vertices), normals_cam, model, np.random.default_rng(seed))
    rms_rel = float(np.sqrt(np.mean(residual**2)) / pose.scale)
    return {"points": points, "pose": pose, "vertices": vertices, "residual": residual, "lighting": lighting,
            "light_info": light_info, "rms_rel": rms_rel, "score": rms_rel * light_info["rms"]}


def _rotated_180(photo: Photo) -> Photo:
    return Photo(rgb=np.ascontiguousarray(photo.rgb[::-1, ::-1]), path=photo.path, scale=photo.scale,
                 original_size=photo.original_size, sha256=photo.sha256)


def _unrotate_180(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points found in the 180-degree rotated photo, in the photo's own pixel coordinates."""
    out = points.copy()
    out[:, 0] = width - points[:, 0]   # continuous coordinates: pixel i's centre i + 0.5 -> W - (i + 0.5)
    out[:, 1] = height - points[:, 1]
    return out


def _fit_upside_down_if_better(photo: Photo, fitted: dict, landmarker, model: FaceModel, kind: str,
                               seed: int) -> tuple[dict, bool]:
    """MediaPipe fits an upside-down face as if upright (landmarks upright on an inverted face).
    When the fit score is suspicious, detect on the photo rotated by 180 degrees; if the face found
    there, mapped back, scores better, keep that fit (its roll is then near 180 degrees).

    Returns ``(fit, rotated)``.
    """
    if fitted["score"] <= ORIENTATION_CHECK_SCORE:
        return fitted, False
    rotated = _rotated_180(photo)
    faces = landmarker.detect(rotated.rgb)
    x0, y0, x1, y1 = face_box(fitted["points"])
    best = fitted
    for points in faces:
        points = _unrotate_180(points, photo.width, photo.height)
        if not (x0 <= points[:, 0].mean() <= x1 and y0 <= points[:, 1].mean() <= y1):
            continue  # another face of a group photo
        candidate = _fit_points(photo, points, model, kind, seed)
        if candidate["score"] < best["score"]:
            best = candidate
    return best, best is not fitted


def fit_warnings(pose: Pose, score: float) -> list[str]:
    """One-line notes on a fit that is kept but probably wrong (recorded in ``quality["warnings"]``)."""
    notes = []
    yaw = pose.euler[0]
    if abs(yaw) > WARN_YAW_DEG:
        notes.append(f"large pose (yaw {yaw:+.0f} deg): landmarks are unreliable beyond {WARN_YAW_DEG:.0f} deg, "
                     "the pose may be underestimated and the far side of the texture may hold background")
    if score > WARN_SCORE:
        notes.append(f"unreliable fit (score {score:.4f} > {WARN_SCORE}): the mesh does not follow the face "
                     "well (large pose, occlusion, extreme expression?); check fit_overlay.png")
    return notes


def fit_photo(photo: Photo, landmarker: MediaPipeLandmarker, *, model: FaceModel | None = None,
              face: str = "largest", min_face_px: int = MIN_FACE_PX, seed: int = 0,
              occlusion_mask: bool = True, max_side: int | None = None) -> list[FitResult]:
    """Fit the face model to one photo.

    Args:
        photo: a loaded photo.
        landmarker: a reusable landmark detector.
        model: face model (default: the built-in MediaPipe-topology model).
        face: ``"largest"``, ``"all"`` or an index into the faces sorted by size.
        min_face_px: refuse faces narrower than this.
        seed: seed for the lighting-fit pixel subset (results are deterministic).
        occlusion_mask: segment face skin vs hair/hands/glasses/background (``FitResult.skin``;
            needs the dense MediaPipe landmarks, so not with face-alignment's 68 points).
        max_side: the long-side limit ``photo`` was loaded with (:func:`load_photo`); only
            recorded in ``FitResult.settings`` (None: not known to the caller).

    Returns:
        One :class:`FitResult` per selected face. A face whose fit scores badly is checked upside
        down (kept rotated when that scores better); one still scoring badly, or at a large yaw,
        carries one-line ``quality["warnings"]``.

    Raises:
        NoFaceError: no face, or only faces that are too small.
    """
    model = model or load_builtin_face_model()
    kind = getattr(landmarker, "kind", "dense")
    faces, chosen = detect_faces(photo, landmarker, face)
    results = []
    for index in chosen:
        box = face_box(faces[index])
        if box[2] - box[0] < min_face_px:
            if face == "all":
                continue
            raise NoFaceError(photo.path, f"face too small ({box[2] - box[0]:.0f} px wide; need {min_face_px})")
        # Orientation and fit quality are judged with the built-in rigid model, whose scores the
        # thresholds were measured with: a morphable head bends to fit even upside-down landmarks.
        reference = model if model.landmark_embedding is None else load_builtin_face_model()
        fitted = _fit_points(photo, faces[index], reference, kind, seed)
        fitted, rotated = _fit_upside_down_if_better(photo, fitted, landmarker, reference, kind, seed)
        if reference is not model:
            # The head takes the reference's lighting, estimated once: both are SH fits to the face's
            # skin pixels in the camera frame, and the reference's detected mesh follows the photo
            # closer (README "A full head": delighting the head with either leaves the same spread).
            pose, vertices, residual = _fit_shape(photo, fitted["points"], model, kind)
            fitted = {**fitted, "pose": pose, "vertices": vertices, "residual": residual}
        points, pose, residual = fitted["points"], fitted["pose"], fitted["residual"]
        box = face_box(points)
        stem = photo.path.stem if face != "all" else f"{photo.path.stem}_face{index}"
        results.append(FitResult(
            source=str(photo.path), stem=stem, image_size=(photo.width, photo.height),
            face_index=index, num_faces=len(faces), landmarks=points, face_box=box, pose=pose,
            vertices=fitted["vertices"], lighting=fitted["lighting"], model_id=model.name,
            detector=f"{landmarker.name}-{landmarker.version}",
            quality={
                "rigid_fit_rms_px": round(float(np.sqrt(np.mean(residual**2))), 3),
                "rigid_fit_rms_rel": round(fitted["rms_rel"], 5),
                "fit_score": round(fitted["score"], 6),
                "orientation_checked": bool(fitted["score"] > ORIENTATION_CHECK_SCORE or rotated),
                "upside_down": bool(abs(pose.euler[2]) > 90.0),
                "face_width_px": round(box[2] - box[0], 1),
                "load_scale": photo.scale,
                "lighting": fitted["light_info"],
                "warnings": fit_warnings(pose, fitted["score"]),
            },
            source_sha256=photo.sha256,
            settings={"face": face, "max_side": max_side, "min_face_px": min_face_px, "seed": seed,
                      "occlusion_mask": bool(occlusion_mask and kind == "dense")}))
        if occlusion_mask and kind == "dense":
            results[-1].skin = segment_skin(photo.rgb, points)
            results[-1].quality["skin"] = results[-1].skin.info
    if not results:
        raise NoFaceError(photo.path, f"all {len(faces)} faces are too small (need {min_face_px} px)")
    return results


#: The overlay is drawn on the face's window of the photo downscaled to at most this long side (it is for looking at).
OVERLAY_MAX_SIDE = 1024
#: Context around the face in fit_overlay.png, as a fraction of the face box's size.
OVERLAY_MARGIN = 0.3


@functools.lru_cache(maxsize=4)
def _mesh_edges(model: FaceModel) -> np.ndarray:
    """``(E, 2)`` the mesh's edges, each once (the overlay's wireframe; worked out once per model)."""
    edges = np.concatenate([model.triangles[:, [0, 1]], model.triangles[:, [1, 2]], model.triangles[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def overlay_window(fit: FitResult, height: int, width: int,
                   margin: float = OVERLAY_MARGIN) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the part of the ``height x width`` photo :func:`draw_overlay` shows, the face box
    and the fitted mesh with ``margin`` times the face box's size around them."""
    from stages.core.raster import crop_window

    box = np.asarray(fit.face_box, dtype=np.float64)
    points = np.vstack([fit.screen_vertices()[:, :2], box.reshape(2, 2)])
    return crop_window(points, height, width, margin=margin * max(box[2] - box[0], box[3] - box[1]))


def draw_overlay(rgb: np.ndarray, fit: FitResult, model: FaceModel, max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """The face's window of the photo (:func:`overlay_window`) with the fitted mesh wireframe, iris points,
    face box and pose drawn on it.

    Only the window: the rest of the photo shows nothing of the fit, and a smaller picture is cheaper to
    write (a 1350^2 London photo: the face at full resolution in about 720^2 pixels, where the whole photo
    took 1024^2 at 0.76 scale).

    Returns:
        ``(H', W', 3)`` uint8: that window, downscaled so its long side is at most ``max_side``.
    """
    import cv2

    x0, y0, x1, y1 = overlay_window(fit, *rgb.shape[:2])
    window = rgb[y0:y1, x0:x1]
    factor = min(1.0, max_side / max(window.shape[:2]))
    canvas = window.copy() if factor == 1.0 else cv2.resize(
        window, (round(window.shape[1] * factor), round(window.shape[0] * factor)), interpolation=cv2.INTER_AREA)
    origin = np.array([x0, y0], dtype=np.float64)

    def to_canvas(xy: np.ndarray) -> np.ndarray:
        """Photo pixel coordinates ``(N, 2)`` -> the canvas's (continuous: pixel centres at + 0.5)."""
        return (xy - origin) * factor

    box = to_canvas(np.asarray(fit.face_box, dtype=np.float64).reshape(2, 2)).ravel()
    size = max(box[2] - box[0], box[3] - box[1])
    thick = max(1, round(size / 400))
    shift = 4  # sub-pixel precision for cv2 drawing
    pts = np.round((to_canvas(fit.screen_vertices()[:, :2]) - 0.5) * (1 << shift)).astype(np.int32)
    lines = canvas.copy()
    cv2.polylines(lines, list(pts[_mesh_edges(model)]), False, (90, 220, 255), thick, cv2.LINE_AA, shift)
    canvas = cv2.addWeighted(lines, 0.5, canvas, 0.5, 0)
    for p in np.round((to_canvas(fit.landmarks[model.n_landmarks:, :2]) - 0.5) * (1 << shift)).astype(np.int32):
        cv2.circle(canvas, tuple(int(v) for v in p), (thick + 1) << shift, (255, 80, 80), -1, cv2.LINE_AA, shift)
    bx0, by0, bx1, by1 = (round(float(v)) for v in box)
    cv2.rectangle(canvas, (bx0, by0), (bx1, by1), (80, 255, 120), thick, cv2.LINE_AA)
    yaw, pitch, roll = fit.pose.euler
    label = f"face {fit.face_index}  yaw {yaw:+.0f}  pitch {pitch:+.0f}  roll {roll:+.0f}"
    cv2.putText(canvas, label, (bx0, max(12, by0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, size / 700),
                (80, 255, 120), thick, cv2.LINE_AA)
    return canvas


def save_fit(fit: FitResult, rgb: np.ndarray, out_dir: str | Path, model: FaceModel,
             previews: bool = True) -> list[Path]:
    """Write ``fit.json`` and the skin mask if any into ``out_dir``, and with ``previews`` the pictures no
    later stage reads: ``fit_overlay.png`` and ``skin_overlay.png`` (drawn on ``rgb``)."""
    out_dir = Path(out_dir)
    if previews:
        save_png(out_dir / "fit_overlay.png", draw_overlay(rgb, fit, model))
    else:
        (out_dir / "fit_overlay.png").unlink(missing_ok=True)
    save_skin_mask(fit.skin, out_dir, rgb, overlay=previews)  # skin_mask.png (+ overlay), or removes stale ones
    fit.save(out_dir / "fit.json")  # last: its presence marks the stage as done
    return [out_dir / "fit.json"] + ([out_dir / "fit_overlay.png"] if previews else []) + (
        [out_dir / "skin_mask.png"] + ([out_dir / "skin_overlay.png"] if previews else [])
        if fit.skin is not None else [])
