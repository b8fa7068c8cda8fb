"""``evaluate``: score result folders and write metrics.json / metrics.csv / report.html.

Per result folder (``OUT/<stem>/`` from ``complete``: fit.json, unwrap artifacts, uv_complete.png):

- reprojection fidelity: the completed texture rendered at the fitted pose against the photo, on
  the visible face region (the rasterized face, eroded at the silhouette like the unwrap), data
  range 1.0: ``reproj_l1``, ``reproj_psnr``, ``reproj_ssim``; plus the variant seed 003's code uses
  (outside the mask zeroed in both images, data range from the reconstruction, whole image):
  ``reproj_masked_psnr_inflated`` / ``reproj_masked_ssim_inflated``, inflated by the shared zero
  background and reported only so numbers can sit next to that paper's;
- hidden-texel completion (near-frontal photos only, see :mod:`stages.evaluate.protocol`);
- symmetry: mean |texture - mirror| over skin texels (``symmetry_l1``);
- optional, from user-supplied models: identity cosine (dlib), CLIP-I, DINO-I, LPIPS per image and
  FID over the set (skipped with a one-line reason when the model is not available).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stages.completion import CompletionMethod
from stages.core.atomic import atomic_path, write_json
from stages.core.errors import MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import load_photo, load_texture, save_png, to_uint8
from stages.core.raster import crop_window, rasterize
from stages.core.uv import uv_layout
from stages.evaluate import metrics as M
from stages.evaluate.protocol import HIDDEN_VIEWS, is_near_frontal, run_hidden_texel_protocol
from stages.evaluate.report import ImageRow, write_report
from stages.fit import FitResult
from stages.render import render_mesh, render_on_photo, render_views
from stages.unwrap import EROSION_FRACTION, UnwrapResult

#: Heat-map scale: an absolute error of this much (per channel mean, [0, 1] range) is full colour.
HEATMAP_MAX_ERROR = 0.25


@dataclass
class OptionalModels:
    """The optional metric networks, each loaded once, or the reason it is skipped."""

    identity: object | None = None
    clip: object | None = None
    dino: object | None = None
    inception: object | None = None
    lpips: object | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, *, clip: str | None = None, dino: str | None = None, inception: str | None = None,
             lpips: str | None = None, identity: bool = True) -> "OptionalModels":
        """Load what is available; record ``skipped[metric] = reason`` for the rest (never raises)."""
        out = cls()
        if identity:
            try:
                out.identity = M.IdentityModel.load()
            except M.MetricUnavailable as exc:
                out.skipped["identity_cos"] = str(exc)
        else:
            out.skipped["identity_cos"] = "disabled with --no-identity"
        for kind, path, metric in (("clip", clip, "clip_i"), ("dino", dino, "dino_i"), ("inception", inception, "fid")):
            try:
                model = M.feature_extractor_from_env(kind, path)
                setattr(out, kind, model)
                out.files[kind] = model.describe()
            except M.MetricUnavailable as exc:
                out.skipped[metric] = str(exc)
        try:
            out.lpips = M.lpips_model_from_env(lpips)
            out.files["lpips"] = out.lpips.describe()
        except M.MetricUnavailable as exc:
            out.skipped["lpips"] = str(exc)
        return out


@dataclass
class ImageEvaluation:
    """Metrics and report images of one result folder."""

    stem: str
    metrics: dict[str, float | None]
    images: dict[str, Path]
    notes: list[str]
    photo_crop: np.ndarray | None = None     # for FID over the set
    render_crop: np.ndarray | None = None


def skin_uv_mask(model: FaceModel, size: int) -> np.ndarray:
    """``(S, S)`` bool texels whose triangle corners are all skin vertices."""
    indicator = np.zeros((model.n_vertices, 1))
    indicator[model.regions["skin"]] = 1.0
    return uv_layout(model, size).interpolate(indicator)[..., 0] > 0.999


def error_heatmap(render: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute error in the mask as an inferno colour map over the darkened photo."""
    import matplotlib

    error = np.abs(render - photo).mean(axis=2) / HEATMAP_MAX_ERROR
    colours = matplotlib.colormaps["inferno"](np.clip(error, 0, 1))[..., :3].astype(np.float32)
    return np.where(mask[..., None], colours, photo * 0.35)


def reprojection(photo: np.ndarray, texture: np.ndarray, fit: FitResult, model: FaceModel,
                 erosion_px: int) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Render at the fitted pose (base mesh, as unwrapped) and compare with the photo in the face window.

    Returns:
        ``(metrics, photo_crop, render_crop, mask)`` with float images in [0, 1].
    """
    height, width = photo.shape[:2]
    screen = fit.pose.to_screen(fit.vertices)
    x0, y0, x1, y1 = crop_window(screen, height, width, margin=erosion_px + 2)
    local = screen - np.array([x0, y0, 0.0])
    render, covered = render_mesh(texture, local, model, y1 - y0, x1 - x0)
    frags = rasterize(local, model.triangles, y1 - y0, x1 - x0)
    mask = frags.mask.astype(np.uint8)
    if erosion_px > 0:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erosion_px + 1,) * 2))
    mask = (mask > 0) & covered
    crop = photo[y0:y1, x0:x1].astype(np.float32) / 255.0
    values = {"reproj_l1": M.l1(render, crop, mask), "reproj_psnr": M.psnr(render, crop, mask),
              "reproj_ssim": M.ssim(render, crop, mask)}
    variant = M.masked_variant_ssim_psnr(render, crop, mask)
    values["reproj_masked_psnr_inflated"] = variant["psnr"]
    values["reproj_masked_ssim_inflated"] = variant["ssim"]
    return values, crop, render, mask


def evaluate_result(result_dir: Path, model: FaceModel, images_dir: Path, *, method: CompletionMethod | None,
                    optional: OptionalModels) -> ImageEvaluation:
    """Score one ``complete`` result folder; writes its report images into ``images_dir``.

    Raises:
        MissingArtifactError: the folder lacks fit.json, the unwrap or uv_complete.png.
    """
    fit = FitResult.load(result_dir / "fit.json")
    unwrap = UnwrapResult.load(result_dir, model)
    texture = load_texture(result_dir / "uv_complete.png")[..., :3]
    if texture.shape[0] != unwrap.size:
        raise MissingArtifactError(result_dir / "uv_complete.png", "size differs from the unwrap's")
    stem = result_dir.name
    values: dict[str, float | None] = {}
    notes: list[str] = []
    images = {"unwrap": result_dir / "uv_texture.png", "completed_uv": result_dir / "uv_complete.png"}
    photo_crop = render_crop = None

    yaw, pitch, _ = fit.pose.euler
    values["yaw"], values["pitch"] = yaw, pitch
    values["coverage"] = float(unwrap.info.get("coverage", float("nan")))
    if Path(fit.source).is_file():
        photo = load_photo(fit.source).rgb
        if (photo.shape[1], photo.shape[0]) != tuple(fit.image_size):
            notes.append(f"photo size differs from fit.json's; reprojection skipped ({fit.source})")
        else:
            default_px = round(EROSION_FRACTION * np.ptp(fit.screen_vertices()[:, 0]))
            erosion_px = int(unwrap.info.get("erosion_px", default_px))
            repro, photo_crop, render_crop, mask = reprojection(photo, texture, fit, model, erosion_px)
            values.update(repro)
            # Feature metrics compare the photo with the render composited over it: only the face differs.
            render_crop = np.where(mask[..., None], render_crop, photo_crop)
            images["photo"] = _save(images_dir / f"{stem}_photo.png", photo_crop)
            images["render_fitted"] = _save(images_dir / f"{stem}_render_fitted.png",
                                            render_on_photo(photo, texture, fit, model))
            images["error_heatmap"] = _save(images_dir / f"{stem}_error.png",
                                            error_heatmap(render_crop, photo_crop, mask))
    else:
        notes.append(f"photo not found at {fit.source}: reprojection metrics skipped")

    views = render_views(texture, fit, model, yaws=(0, -45, 45), size=256)
    for name, view in zip(("render_frontal", "render_left45", "render_right45"), views, strict=True):
        images[name] = _save(images_dir / f"{stem}_{name}.png", view)
    values["symmetry_l1"] = M.symmetry_score(texture, skin_uv_mask(model, unwrap.size))

    if method is not None:
        if is_near_frontal(fit):
            values.update(run_hidden_texel_protocol(unwrap, fit, model, method))
        else:
            notes.append(f"hidden-texel benchmark needs a near-frontal photo (yaw {yaw:+.0f}, pitch {pitch:+.0f})")

    if photo_crop is not None:
        _optional_metrics(values, optional, photo_crop, render_crop, views[0], load_photo(fit.source).rgb)
    return ImageEvaluation(stem=stem, metrics=values, images=images, notes=notes, photo_crop=photo_crop,
                           render_crop=render_crop)


def _optional_metrics(values: dict, optional: OptionalModels, photo_crop: np.ndarray, render_crop: np.ndarray,
                      frontal: np.ndarray, photo_full: np.ndarray) -> None:
    pair = np.stack([_square(photo_crop), _square(render_crop)])
    for kind, metric in (("clip", "clip_i"), ("dino", "dino_i")):
        model = getattr(optional, kind)
        if model is not None:
            emb = model.embed(pair)
            values[metric] = float(M.cosine_similarity(emb[0], emb[1]))
    if optional.lpips is not None:
        values["lpips"] = float(optional.lpips.distance(pair[:1], pair[1:])[0])
    if optional.identity is not None:
        frontal_rgb = to_uint8(frontal[..., :3] * frontal[..., 3:] + 0.5 * (1 - frontal[..., 3:]))
        similarity = optional.identity.similarity(photo_full, frontal_rgb)
        values["identity_cos"] = None if similarity is None else float(similarity)


def _square(image: np.ndarray, size: int = 256) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _save(path: Path, image: np.ndarray) -> Path:
    save_png(path, image)
    return path


def aggregate(evaluations: list[ImageEvaluation]) -> dict[str, dict[str, float]]:
    """Per metric: mean, median, std and count over the images where it is finite."""
    names = sorted({k for e in evaluations for k in e.metrics})
    out = {}
    for name in names:
        values = [e.metrics.get(name) for e in evaluations]
        finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        if len(finite):
            out[name] = {"mean": float(finite.mean()), "median": float(np.median(finite)),
                         "std": float(finite.std()), "count": int(len(finite))}
    return out


def _json_number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else str(value)


def write_outputs(out_dir: Path, evaluations: list[ImageEvaluation], settings: dict, optional: OptionalModels,
                  failures: dict[str, str]) -> dict:
    """metrics.json, metrics.csv and report.html (+ report_files/) for a set of evaluations."""
    skipped = dict(optional.skipped)
    agg = aggregate(evaluations)
    if optional.inception is not None:
        crops = [e for e in evaluations if e.photo_crop is not None]
        if len(crops) >= 2:
            photos = optional.inception.embed(np.stack([_square(e.photo_crop) for e in crops]))
            renders = optional.inception.embed(np.stack([_square(e.render_crop) for e in crops]))
            agg["fid"] = {"mean": float(M.frechet_distance_from_features(photos, renders)), "median": float("nan"),
                          "std": float("nan"), "count": len(crops)}
        else:
            skipped["fid"] = "FID needs at least 2 images with photos"
    data = {
        "schema": "facetex.metrics", "schema_version": 1, "settings": settings,
        "models": optional.files, "skipped": skipped, "failures": failures,
        "aggregate": {k: {kk: _json_number(vv) for kk, vv in v.items()} for k, v in agg.items()},
        "per_image": {e.stem: {"metrics": {k: _json_number(v) for k, v in e.metrics.items()}, "notes": e.notes}
                      for e in evaluations},
    }
    write_json(out_dir / "metrics.json", data)
    columns = sorted({k for e in evaluations for k in e.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["stem", *columns])
    for e in evaluations:
        writer.writerow([e.stem, *("" if e.metrics.get(c) is None else f"{e.metrics[c]:.6g}" for c in columns)])
    with atomic_path(out_dir / "metrics.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    rows = [ImageRow(stem=e.stem, images=e.images, metrics=e.metrics, notes=e.notes) for e in evaluations]
    write_report(out_dir, rows, agg, settings, skipped)
    return data


def default_settings(method_name: str | None, uv_size: int | None) -> dict:
    return {
        "reprojection": {"mask": "rasterized face at the fitted pose, eroded like the unwrap; covered pixels",
                         "data_range": 1.0, "ssim": "11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03, mean over mask",
                         "inflated_variant": "outside mask zeroed in both, data range from render, whole window"},
        "hidden_texel": {"method": method_name, "views": {k: list(v) for k, v in HIDDEN_VIEWS.items()},
                         "near_frontal_deg": 15.0, "scored": "texels seen in the photo, hidden by the view"},
        "symmetry": "mean |texture - mirror| over skin texels (all triangle corners in the skin region)",
        "uv_size": uv_size, "heatmap_max_error": HEATMAP_MAX_ERROR,
    }

