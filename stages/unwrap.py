"""``unwrap``: sample the visible texels of the UV map from the photo through the fitted mesh.

For every texel of the model's UV layout (seed 001, §3.1, the "traditional" sampler):

1. its position on the fitted mesh in the photo (barycentric interpolation of the posed vertices);
2. visibility from an image-space z-buffer of the same mesh: the texel is visible when it lies on
   the front triangle at its pixel, or in front of that triangle's plane (evaluated at the texel's
   exact position, so grazing surfaces whose depth changes fast within a pixel are not rejected);
3. confidence = cos(angle between the surface normal and the view ray) (orthographic camera, so
   the view ray is +z in camera space), i.e. texels seen at grazing angles count less;
4. the face-region mask (the rasterized mesh silhouette) eroded by a few percent of the face size,
   so texels near the silhouette, where landmark error smears background and hair into the
   texture (seed 001, Fig. 4), are dropped;
5. colour: bilinear lookup in the photo, pre-filtered to the UV map's texel density so a large
   face does not alias.

Outputs (``UnwrapResult.save``): ``uv_texture.png`` (RGBA, alpha = confidence), ``uv_mask.png``
(visible texels), ``uv_position.npy`` (``(S, S, 3)`` float32 model-space position of each texel on
the per-image shape) with a ``uv_position.png`` preview, and ``unwrap.json`` (settings, coverage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.core.atomic import write_json, write_npy
from stages.core.camera import Pose
from stages.core.errors import MissingArtifactError, NoFaceError
from stages.core.face_model import FaceModel, load_builtin_face_model
from stages.core.image_io import Photo, load_texture, save_png
from stages.core.lighting import shading_normalised
from stages.core.raster import crop_window, rasterize
from stages.core.uv import uv_layout
from stages.fit import FitResult
from stages.occlusion import OCCLUDED_FILE, apply_skin_mask

SCHEMA_VERSION = 1
UV_SIZE_RANGE = (256, 2048)
#: Depth tolerance of the visibility test, as a fraction of the model's RMS radius.
DEPTH_TOLERANCE = 0.01
#: Silhouette erosion, as a fraction of the face width in pixels (seed 001, Fig. 4).
EROSION_FRACTION = 0.03
#: Texels whose confidence falls below this count as not visible.
MIN_CONFIDENCE = 0.05
#: An unwrap seeing less than this fraction of the UV layout is refused: completion would invent
#: (nearly) the whole face, e.g. an all-black texture from an all-zero alpha. A fitted face in its
#: own photo shows far more (near-frontal ~0.6, a profile ~0.3).
MIN_COVERAGE = 0.02


@dataclass
class UnwrapResult:
    """A partial UV texture sampled from one photo.

    Attributes:
        texture: ``(S, S, 3)`` float32 RGB in ``[0, 1]`` (zero where not visible).
        confidence: ``(S, S)`` float32 in ``[0, 1]``: 0 where not visible.
        position: ``(S, S, 3)`` float32 model-space position of each texel on the per-image shape.
        layout_mask: ``(S, S)`` bool texels that belong to the face model's UV layout.
        stem: the photo's output name.
        info: settings and coverage numbers.
        occluded: ``(S, S)`` bool texels seen geometrically but rejected by the skin mask
            (:mod:`stages.occlusion`; confidence 0), or None when unwrapped without a mask.
    """

    texture: np.ndarray
    confidence: np.ndarray
    position: np.ndarray
    layout_mask: np.ndarray
    stem: str
    info: dict
    occluded: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.texture.shape[0])

    @property
    def visible(self) -> np.ndarray:
        """``(S, S)`` bool: texels with usable colour."""
        return self.confidence > 0

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write the unwrap artifacts into ``out_dir``; ``unwrap.json`` last (marks completion)."""
        out_dir = Path(out_dir)
        rgba = np.concatenate([self.texture, self.confidence[..., None]], axis=2)
        save_png(out_dir / "uv_texture.png", rgba)
        save_png(out_dir / "uv_mask.png", self.visible)
        if self.occluded is not None:
            save_png(out_dir / OCCLUDED_FILE, self.occluded)
        else:
            (out_dir / OCCLUDED_FILE).unlink(missing_ok=True)
        write_npy(out_dir / "uv_position.npy", self.position.astype(np.float32))
        save_png(out_dir / "uv_position.png", position_preview(self.position, self.layout_mask))
        write_json(out_dir / "unwrap.json", {"schema": "facetex.unwrap", "schema_version": SCHEMA_VERSION,
                                              "stem": self.stem, **self.info})
        return [out_dir / n for n in ("uv_texture.png", "uv_mask.png", "uv_position.npy",
                                      "uv_position.png", "unwrap.json")] + (
            [out_dir / OCCLUDED_FILE] if self.occluded is not None else [])

    @classmethod
    def load(cls, out_dir: str | Path, model: FaceModel | None = None) -> UnwrapResult:
        """Read the artifacts :meth:`save` wrote; raises :class:`MissingArtifactError` if incomplete."""
        out_dir = Path(out_dir)
        meta_path = out_dir / "unwrap.json"
        if not meta_path.is_file():
            raise MissingArtifactError(out_dir, "no unwrap.json here (run `facetex unwrap` first)")
        try:
            info = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MissingArtifactError(meta_path, f"unreadable ({exc})") from None
        model = model or load_builtin_face_model()
        if info.get("model_id", model.name) != model.name:  # e.g. an ICT unwrap read as the built-in mask
            raise MissingArtifactError(meta_path, f"model_id: unwrapped with face model {info['model_id']!r}, "
                                                  f"not {model.name!r} (the --face-model of every stage must agree)")
        rgba = load_texture(out_dir / "uv_texture.png")
        if rgba.shape[2] != 4:
            raise MissingArtifactError(out_dir / "uv_texture.png", "expected RGBA (alpha = confidence)")
        position_path = out_dir / "uv_position.npy"
        try:
            position = np.load(position_path)
        except (OSError, ValueError) as exc:
            raise MissingArtifactError(position_path, f"unreadable ({exc})") from None
        size = rgba.shape[0]
        if position.shape != (size, size, 3):
            raise MissingArtifactError(position_path, f"shape {position.shape} does not match the {size}^2 texture")
        layout = uv_layout(model, size)
        coverage = float((rgba[..., 3][layout.mask] > 0).mean()) if layout.mask.any() else 0.0
        if coverage < MIN_COVERAGE:
            raise MissingArtifactError(out_dir / "uv_texture.png",
                                       f"only {coverage:.1%} of the UV layout is visible (alpha; need "
                                       f"{MIN_COVERAGE:.0%}): nothing to complete from; re-run `facetex unwrap`")
        occluded = None
        if (out_dir / OCCLUDED_FILE).is_file():
            occluded = load_texture(out_dir / OCCLUDED_FILE)[..., 0] > 0.5
        return cls(texture=rgba[..., :3], confidence=rgba[..., 3], position=position,
                   layout_mask=layout.mask.copy(), stem=str(info.get("stem", out_dir.name)), info=info,
                   occluded=occluded)


def position_preview(position: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalise a ``(S, S, 3)`` position map to RGB ``[0, 1]`` for viewing (black outside ``mask``)."""
    if not mask.any():
        return np.zeros_like(position)
    lo = position[mask].min(axis=0)
    hi = position[mask].max(axis=0)
    out = (position - lo) / np.maximum(hi - lo, 1e-9)
    out[~mask] = 0
    return np.clip(out, 0, 1)


def _prefilter(rgb: np.ndarray, texel_px: float) -> tuple[np.ndarray, float]:
    """Downscale the photo when one texel spans several pixels (anti-aliasing).

    Returns the (possibly smaller) image and the factor to multiply pixel coordinates by.
    """
    if texel_px <= 1.5:
        return rgb, 1.0
    factor = 1.0 / texel_px
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    # Use the realised factor per axis (rounding), x and y separately would be exact; the
    # difference is below a tenth of a pixel for photos larger than a few hundred pixels.
    return small, small.shape[1] / w


def triangle_plane_depth(screen: np.ndarray, triangles: np.ndarray, triangle_id: np.ndarray, x: np.ndarray,
                         y: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Depth of each given triangle's plane at screen points ``(x, y)``.

    Args:
        screen: ``(V, 3)`` screen-space vertices.
        triangles: ``(F, 3)``.
        triangle_id: ``(...)`` triangle per query (-1 = none).
        x, y: ``(...)`` continuous pixel coordinates of the queries.
        fallback: ``(...)`` depth used where the triangle is missing or seen edge-on.

    Returns:
        ``(...)`` float depth.
    """
    p0, p1, p2 = (screen[triangles[:, k]] for k in range(3))
    normal = np.cross(p1 - p0, p2 - p0)                       # (F, 3)
    edge_on = np.abs(normal[:, 2]) < 1e-9 * (np.abs(normal).sum(axis=1) + 1e-30)
    nz = np.where(edge_on, 1.0, normal[:, 2])
    a, b = -normal[:, 0] / nz, -normal[:, 1] / nz
    c = p0[:, 2] - a * p0[:, 0] - b * p0[:, 1]
    ids = np.where(triangle_id >= 0, triangle_id, 0)
    depth = a[ids] * x + b[ids] * y + c[ids]
    return np.where((triangle_id >= 0) & ~edge_on[ids], depth, fallback)


@dataclass
class TexelVisibility:
    """Where every texel lands in an image and how well it is seen there.

    Attributes:
        confidence: ``(S, S)`` float32 cosine between normal and view ray for visible texels, else 0.
        texel_screen: ``(S, S, 3)`` float32 screen position (pixel ``x, y``, depth) of each texel.
        erosion_px: silhouette erosion radius used, in pixels.
        depth_tolerance_px: z-buffer tolerance used, in pixels.
        face_width_px: width of the projected mesh.
        normal: ``(S, S, 3)`` float32 unit camera-space normal of each texel.
    """

    confidence: np.ndarray
    texel_screen: np.ndarray
    normal: np.ndarray
    erosion_px: int
    depth_tolerance_px: float
    face_width_px: float


def texel_visibility(model: FaceModel, vertices: np.ndarray, pose: Pose, height: int, width: int, uv_size: int, *,
                     erosion: float = EROSION_FRACTION, depth_tolerance: float = DEPTH_TOLERANCE,
                     min_confidence: float = MIN_CONFIDENCE) -> TexelVisibility:
    """Visibility and confidence of every UV texel for a posed shape in an image, no photo needed.

    The geometric half of :func:`unwrap_photo`, also used to simulate what other head poses
    would hide (the hidden-texel benchmark of ``evaluate``).

    Args:
        model: face model.
        vertices: ``(V, 3)`` model-space shape.
        pose: its pose in the image.
        height, width: image size in pixels.
        uv_size: ``S``.
        erosion, depth_tolerance, min_confidence: as :func:`unwrap_photo`.
    """
    layout = uv_layout(model, uv_size)
    tris = model.triangles
    screen = pose.to_screen(vertices)

    # Per-texel screen position and camera-space normal.
    texel_screen = layout.interpolate(screen)                                    # (S, S, 3)
    texel_normal = layout.interpolate(pose.rotate_normals(model.vertex_normals(vertices)))
    texel_normal /= np.linalg.norm(texel_normal, axis=2, keepdims=True) + 1e-12
    facing = np.clip(texel_normal[..., 2], 0.0, 1.0)

    # Image-space z-buffer of the same mesh and the eroded face-region mask, computed in a window
    # around the face (same result as the whole image, much less work for large photos).
    face_width = float(np.ptp(screen[:, 0]))
    radius = round(erosion * face_width)
    x0, y0, x1, y1 = crop_window(screen, height, width, margin=radius + 2)  # clipped to the image
    offset = np.array([x0, y0, 0.0])
    if x1 <= x0 or y1 <= y0:  # the face lies entirely outside the image: nothing is seen
        return TexelVisibility(confidence=np.zeros(layout.mask.shape, np.float32),
                               texel_screen=texel_screen.astype(np.float32), normal=texel_normal.astype(np.float32),
                               erosion_px=radius, depth_tolerance_px=float(depth_tolerance * pose.scale),
                               face_width_px=face_width)
    frags = rasterize(screen - offset, tris, y1 - y0, x1 - x0)
    region = frags.mask.astype(np.uint8)
    if radius > 0 and radius >= np.hypot(*region.shape):
        # A kernel covering the whole window from any pixel: same result, no kernel allocated
        # (the erosion radius follows the face, which may be far larger than the photo).
        region = np.full_like(region, int(region.size > 0 and region.all()))
    elif radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        region = cv2.erode(region, kernel)

    local = texel_screen - offset.astype(np.float32)
    inside = ((local[..., 0] >= 0) & (local[..., 0] < x1 - x0) & (local[..., 1] >= 0) & (local[..., 1] < y1 - y0))
    px = np.clip(np.floor(local[..., 0]).astype(np.int64), 0, max(0, x1 - x0 - 1))
    py = np.clip(np.floor(local[..., 1]).astype(np.int64), 0, max(0, y1 - y0 - 1))
    tolerance = depth_tolerance * pose.scale
    if frags.triangle_id.size:
        front = np.where(inside, frags.triangle_id[py, px], -1)
        front_depth = triangle_plane_depth(screen - offset, tris, front, local[..., 0], local[..., 1],
                                           fallback=frags.depth[py, px])
        in_region = region[py, px] > 0
    else:  # the face lies entirely outside the image
        front = np.full(layout.mask.shape, -1)
        front_depth = np.full(layout.mask.shape, np.inf)
        in_region = np.zeros(layout.mask.shape, dtype=bool)
    unoccluded = (front == layout.triangle_id) | (texel_screen[..., 2] <= front_depth + tolerance)
    visible = layout.mask & inside & in_region & (front >= 0) & unoccluded

    confidence = np.where(visible, facing, 0.0).astype(np.float32)
    confidence[confidence < min_confidence] = 0.0
    return TexelVisibility(confidence=confidence, texel_screen=texel_screen, normal=texel_normal, erosion_px=radius,
                           depth_tolerance_px=float(tolerance), face_width_px=face_width)


def unwrap_photo(photo: Photo | np.ndarray, fit: FitResult, *, model: FaceModel | None = None, uv_size: int = 512,
                 erosion: float = EROSION_FRACTION, depth_tolerance: float = DEPTH_TOLERANCE,
                 min_confidence: float = MIN_CONFIDENCE, delight: bool = False,
                 occlusion_mask: bool = True) -> UnwrapResult:
    """Sample the visible part of the face's UV texture from the photo.

    Args:
        photo: the loaded photo (its checksum and size are checked against ``fit``:
            :meth:`FitResult.check_photo`), or its ``(H, W, 3)`` uint8 pixels (size check only).
        fit: the fit of one face in that photo.
        model: face model (default built-in); must match ``fit.model_id``.
        uv_size: ``S``, texture side in texels (256..2048).
        erosion: silhouette erosion as a fraction of the face width (0 disables it).
        depth_tolerance: z-buffer tolerance as a fraction of the model's RMS radius.
        min_confidence: confidences below this are set to 0 (not visible).
        delight: divide each texel by the fitted SH shading at its normal, normalised by the
            light's ambient term (:func:`stages.core.lighting.shading_normalised`): removes the
            directional part of the photo's light, keeps its colour level (an albedo-like texture
            up to a global colour; relight it with ``render --sh``).
        occlusion_mask: fold ``fit.skin`` (when the fit has one) into the confidence and record the
            texels it rejects (:func:`stages.occlusion.apply_skin_mask`); False: geometry only.

    Returns:
        An :class:`UnwrapResult`.

    Raises:
        MissingArtifactError: the fit does not belong to this photo or model;
        NoFaceError: under :data:`MIN_COVERAGE` of the layout is visible.
    """
    model = model or load_builtin_face_model()
    if not UV_SIZE_RANGE[0] <= uv_size <= UV_SIZE_RANGE[1]:
        raise ValueError(f"uv_size must be in {UV_SIZE_RANGE}, got {uv_size}")
    fit.check_model(model)
    rgb = photo.rgb if isinstance(photo, Photo) else photo
    height, width = rgb.shape[:2]
    pose = fit.check_photo(width, height, photo.sha256 if isinstance(photo, Photo) else "")
    seen = texel_visibility(model, fit.vertices, pose, height, width, uv_size, erosion=erosion,
                            depth_tolerance=depth_tolerance, min_confidence=min_confidence)
    confidence, texel_screen = seen.confidence, seen.texel_screen
    occluded = None
    if occlusion_mask and fit.skin is not None:  # the mask is at the fit's photo size
        confidence, occluded = apply_skin_mask(confidence, texel_screen[..., :2] * (fit.image_size[0] / width),
                                               fit.skin, min_confidence)
    layout = uv_layout(model, uv_size)

    # Colour, with the photo pre-filtered to about one pixel per texel.
    texel_px = seen.face_width_px / max(1.0, np.ptp(model.uv[:, 0]) * uv_size)
    source, factor = _prefilter(rgb, texel_px)
    map_x = (texel_screen[..., 0] * factor - 0.5).astype(np.float32)  # cv2.remap: pixel centres at integers
    map_y = (texel_screen[..., 1] * factor - 0.5).astype(np.float32)
    colour = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    texture = colour.astype(np.float32) / 255.0
    if delight:
        seen_texels = confidence > 0
        shade = shading_normalised(seen.normal[seen_texels].astype(np.float64), np.asarray(fit.lighting))
        texture[seen_texels] = np.clip(texture[seen_texels] / np.clip(shade, 0.2, None), 0.0, 1.0)
    texture[confidence <= 0] = 0.0

    position = layout.interpolate(fit.vertices)
    n_layout = int(layout.mask.sum())
    coverage = float((confidence > 0).sum()) / max(1, n_layout)
    if coverage < MIN_COVERAGE:
        raise NoFaceError(photo.path if isinstance(photo, Photo) else fit.source,
                          f"only {coverage:.1%} of the UV layout is visible (need {MIN_COVERAGE:.0%}): "
                          + ("the skin mask rejects almost the whole face (try --no-occlusion-mask)"
                             if occluded is not None and occluded.any() else
                             "the fit does not place the face on this photo"))
    info = {
        "uv_size": uv_size, "model_id": model.name, "source": fit.source,
        "erosion": erosion, "erosion_px": seen.erosion_px, "depth_tolerance": depth_tolerance,
        "depth_tolerance_px": round(seen.depth_tolerance_px, 3),
        "min_confidence": min_confidence, "texel_px": round(float(texel_px), 3), "delight": delight,
        "occlusion_mask": occluded is not None,
        "occluded_fraction": round(float(occluded.sum()) / max(1, n_layout), 4) if occluded is not None else 0.0,
        "coverage": round(coverage, 4),
        "mean_confidence": round(float(confidence[confidence > 0].mean()) if (confidence > 0).any() else 0.0, 4),
    }
    return UnwrapResult(texture=texture, confidence=confidence, position=position,
                        layout_mask=layout.mask.copy(), stem=fit.stem, info=info, occluded=occluded)
