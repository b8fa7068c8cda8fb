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
from numba import njit

from stages.core.atomic import write_json, write_npy
from stages.core.camera import Pose
from stages.core.errors import MissingArtifactError, NoFaceError
from stages.core.face_model import FaceModel, load_builtin_face_model
from stages.core.image_io import Photo, load_texture, save_png
from stages.core.lighting import shading_normalised
from stages.core.raster import crop_window, rasterize, run_split
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
#: Row length of the colour lookup's remap maps (cv2.remap allows fewer than 32767 columns).
REMAP_ROW = 4096


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

    def save(self, out_dir: str | Path, previews: bool = True) -> list[Path]:
        """Write the unwrap artifacts into ``out_dir``; ``unwrap.json`` last (marks completion). ``previews``:
        also ``uv_position.png`` (a picture of ``uv_position.npy``, which no later stage reads)."""
        out_dir = Path(out_dir)
        rgba = np.concatenate([self.texture, self.confidence[..., None]], axis=2)
        save_png(out_dir / "uv_texture.png", rgba)
        save_png(out_dir / "uv_mask.png", self.visible)
        if self.occluded is not None:
            save_png(out_dir / OCCLUDED_FILE, self.occluded)
        else:
            (out_dir / OCCLUDED_FILE).unlink(missing_ok=True)
        write_npy(out_dir / "uv_position.npy", self.position.astype(np.float32))
        if previews:
            save_png(out_dir / "uv_position.png", position_preview(self.position, self.layout_mask))
        else:
            (out_dir / "uv_position.png").unlink(missing_ok=True)
        write_json(out_dir / "unwrap.json", {"schema": "facetex.unwrap", "schema_version": SCHEMA_VERSION,
                                              "stem": self.stem, **self.info})
        return [out_dir / n for n in ("uv_texture.png", "uv_mask.png", "uv_position.npy", "unwrap.json")] + (
            [out_dir / "uv_position.png"] if previews else []) + (
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
    # Per channel: an axis-0 min/max of the (N, 3) masked texels costs ten times as much.
    lo = np.array([channel[mask].min() for channel in np.moveaxis(position, 2, 0)])
    hi = np.array([channel[mask].max() for channel in np.moveaxis(position, 2, 0)])
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


def triangle_planes(screen: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each triangle's plane in screen space as ``depth = a * x + b * y + c``.

    Args:
        screen: ``(V, 3)`` screen-space vertices.
        triangles: ``(F, 3)``.

    Returns:
        ``(abc (F, 3) float64, edge_on (F,) bool)``: triangles seen edge-on have no plane (their
        depth is taken from the z-buffer instead).
    """
    p0, p1, p2 = (screen[triangles[:, k]] for k in range(3))
    normal = np.cross(p1 - p0, p2 - p0)                       # (F, 3)
    edge_on = np.abs(normal[:, 2]) < 1e-9 * (np.abs(normal).sum(axis=1) + 1e-30)
    nz = np.where(edge_on, 1.0, normal[:, 2])
    a, b = -normal[:, 0] / nz, -normal[:, 1] / nz
    c = p0[:, 2] - a * p0[:, 0] - b * p0[:, 1]
    return np.ascontiguousarray(np.stack([a, b, c], axis=1)), edge_on


@njit(cache=True, nogil=True)
def _texel_visibility_kernel(lo, hi, texels, corners, bary, texel_tri, screen, normals, offset, front_id, front_z,
                             region, planes, edge_on, tolerance, min_confidence, out_screen, out_normal,
                             out_confidence):
    """Per layout texel ``t`` (flat index ``texels[t]``): screen position and unit normal
    (barycentric interpolation in float64, stored float32, normalised in float32) and the
    confidence of :func:`texel_visibility` (0 unless visible); texels ``lo <= t < hi`` only."""
    height, width = front_id.shape
    for t in range(lo, hi):
        row = texels[t]
        for c in range(3):
            acc_s = 0.0
            acc_n = 0.0
            for k in range(3):
                w = np.float64(bary[t, k])
                acc_s += w * screen[corners[t, k], c]
                acc_n += w * normals[corners[t, k], c]
            out_screen[row, c] = acc_s
            out_normal[row, c] = acc_n
        length = np.sqrt(out_normal[row, 0] * out_normal[row, 0] + out_normal[row, 1] * out_normal[row, 1]
                         + out_normal[row, 2] * out_normal[row, 2]) + np.float32(1e-12)
        for c in range(3):
            out_normal[row, c] = out_normal[row, c] / length
        facing = min(max(out_normal[row, 2], np.float32(0.0)), np.float32(1.0))
        if facing < min_confidence:  # turned away: unseen whatever the z-buffer says
            continue
        # Where the texel lands in the window; the front triangle there and its plane's depth.
        x = out_screen[row, 0] - offset[0]
        y = out_screen[row, 1] - offset[1]
        if not (x >= 0 and x < width and y >= 0 and y < height):
            continue
        px = min(max(int(np.floor(x)), 0), width - 1)
        py = min(max(int(np.floor(y)), 0), height - 1)
        front = front_id[py, px]
        if front < 0 or region[py, px] == 0:
            continue
        if front != texel_tri[t]:
            depth = np.float64(front_z[py, px]) if edge_on[front] else (
                planes[front, 0] * np.float64(x) + planes[front, 1] * np.float64(y) + planes[front, 2])
            if not np.float64(out_screen[row, 2]) <= depth + tolerance:
                continue
        out_confidence[row] = facing


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


def erode_ellipse(mask: np.ndarray, radius: int) -> np.ndarray:
    """``cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2r+1, 2r+1)))``, the same
    result (outside the image counts as set, as there) in time independent of the radius.

    Every offset of that kernel lies within ``r + 0.5`` of its centre and every offset within ``r``
    is in it, so a pixel whose exact Euclidean distance to the nearest unset pixel exceeds
    ``r + 1`` survives and one within ``r - 0.5`` does not; only the thin band between is tested
    against the kernel itself, row by row, through each row's distance to its nearest unset pixel.

    Args:
        mask: ``(H, W)`` uint8 0/1.
        radius: ``r >= 1`` pixels.

    Returns:
        ``(H, W)`` uint8 0/1.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    half = ((kernel.sum(axis=1) - 1) // 2).astype(np.int64)   # (2r+1,) each row's run: centre +- half
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    out = np.empty_like(mask)
    _erode_band(mask, dist, half, radius, out)
    return out


@njit(cache=True)
def _erode_band(mask, dist, half, radius, out):
    height, width = mask.shape
    far = height + width + radius  # "no unset pixel in this row"
    row_dist = np.empty((height, width), dtype=np.int64)  # distance to the nearest unset pixel in the row
    for y in range(height):
        last = -far
        for x in range(width):
            if mask[y, x] == 0:
                last = x
            row_dist[y, x] = x - last
        last = width + far
        for x in range(width - 1, -1, -1):
            if mask[y, x] == 0:
                last = x
            row_dist[y, x] = min(row_dist[y, x], last - x)
    for y in range(height):
        for x in range(width):
            d = dist[y, x]
            if d > radius + 1.0:
                out[y, x] = 1
            elif d <= radius - 0.5:
                out[y, x] = 0
            else:
                keep = 1
                for dy in range(-radius, radius + 1):
                    yy = y + dy
                    if 0 <= yy < height and row_dist[yy, x] <= half[dy + radius]:
                        keep = 0
                        break
                out[y, x] = keep


@njit(cache=True)
def _lookup_maps(texel_screen, texels, factor, maps):
    """``maps[:, i]`` = the cv2.remap source position (pixel centres at integers) of ``texels[i]``."""
    for i in range(texels.shape[0]):
        maps[0, i] = texel_screen[texels[i], 0] * factor - np.float32(0.5)
        maps[1, i] = texel_screen[texels[i], 1] * factor - np.float32(0.5)


@njit(cache=True)
def _scatter_colour(colour, texels, texture):
    """``texture[texels[i]] = colour[i] / 255`` (uint8 -> float32 in ``[0, 1]``)."""
    for i in range(texels.shape[0]):
        for c in range(3):
            texture[texels[i], c] = np.float32(colour[i, c]) / np.float32(255.0)


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
    screen = pose.to_screen(vertices)
    size = layout.size
    face_width = float(np.ptp(screen[:, 0]))
    radius = round(erosion * face_width)
    tolerance = depth_tolerance * pose.scale
    texel_screen = np.zeros((size * size, 3), dtype=np.float32)
    texel_normal = np.zeros((size * size, 3), dtype=np.float32)
    confidence = np.zeros(size * size, dtype=np.float32)

    # Image-space z-buffer of the same mesh and the eroded face-region mask, computed in a window
    # around the face (same result as the whole image, much less work for large photos).
    x0, y0, x1, y1 = crop_window(screen, height, width, margin=radius + 2)  # clipped to the image
    offset = np.array([x0, y0, 0.0])
    if x1 <= x0 or y1 <= y0:  # the face lies entirely outside the image: nothing is seen
        front_id, front_z = np.full((1, 1), -1, np.int32), np.full((1, 1), np.inf, np.float32)
        region = np.zeros((1, 1), np.uint8)
    else:
        frags = rasterize(screen - offset, model.triangles, y1 - y0, x1 - x0, barycentrics=False)
        front_id, front_z = frags.triangle_id, frags.depth
        region = frags.mask.astype(np.uint8)
        if radius > 0 and radius >= np.hypot(*region.shape):
            # A kernel covering the whole window from any pixel: same result, no kernel allocated
            # (the erosion radius follows the face, which may be far larger than the photo).
            region = np.full_like(region, int(region.size > 0 and region.all()))
        elif radius > 0:
            region = erode_ellipse(region, radius)
    planes, edge_on = triangle_planes(screen - offset, model.triangles)
    texel_tri = layout.triangle_id.reshape(-1)[layout.texels]
    # One pass over the layout texels (the float32/float64 steps of the numpy formulation this
    # replaced, so the result is the same; tests/test_unwrap_render.py compares the two).
    run_split(_texel_visibility_kernel, len(layout.texels), layout.texels, layout.corners, layout.corner_bary,
              texel_tri, screen, pose.rotate_normals(model.vertex_normals(vertices)), offset.astype(np.float32),
              front_id, front_z, region, planes, edge_on, float(tolerance), np.float32(min_confidence),
              texel_screen, texel_normal, confidence, min_part=4096)
    return TexelVisibility(confidence=confidence.reshape(size, size),
                           texel_screen=texel_screen.reshape(size, size, 3),
                           normal=texel_normal.reshape(size, size, 3), erosion_px=radius,
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
        to_fit = fit.image_size[0] / width
        confidence, occluded = apply_skin_mask(confidence, texel_screen if to_fit == 1 else texel_screen * to_fit,
                                               fit.skin, min_confidence)
    layout = uv_layout(model, uv_size)

    # Colour, with the photo pre-filtered to about one pixel per texel.
    texel_px = seen.face_width_px / max(1.0, np.ptp(model.uv[:, 0]) * uv_size)
    source, factor = _prefilter(rgb, texel_px)
    # Only the seen texels are looked up; the rest of the texture stays 0. cv2.remap takes at most
    # 32767 columns, so the N lookups are laid out as rows of REMAP_ROW (the last one padded).
    seen_texels = np.flatnonzero(confidence.reshape(-1) > 0)                # (N,) flat indices
    n_seen, row = len(seen_texels), REMAP_ROW
    maps = np.zeros((2, -(-n_seen // row) * row), dtype=np.float32)
    _lookup_maps(texel_screen.reshape(-1, 3), seen_texels, np.float32(factor), maps)
    texture = np.zeros((uv_size * uv_size, 3), dtype=np.float32)
    if n_seen:
        colour = cv2.remap(source, maps[0].reshape(-1, row), maps[1].reshape(-1, row), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        _scatter_colour(colour.reshape(-1, 3), seen_texels, texture)
    if delight:
        shade = shading_normalised(seen.normal.reshape(-1, 3)[seen_texels].astype(np.float64), np.asarray(fit.lighting))
        texture[seen_texels] = np.clip(texture[seen_texels] / np.clip(shade, 0.2, None), 0.0, 1.0)
    texture = texture.reshape(uv_size, uv_size, 3)

    position = layout.interpolate(fit.vertices)
    n_layout = len(layout.texels)
    coverage = n_seen / max(1, n_layout)
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
        "mean_confidence": round(float(confidence.reshape(-1)[seen_texels].mean()) if n_seen else 0.0, 4),
    }
    return UnwrapResult(texture=texture, confidence=confidence, position=position,
                        layout_mask=layout.mask.copy(), stem=fit.stem, info=info, occluded=occluded)
