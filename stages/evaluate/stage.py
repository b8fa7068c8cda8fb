"""``evaluate``: score result folders and write metrics.json / metrics.csv / report.html.

Per result folder (``OUT/<stem>/`` from ``complete``: fit.json, unwrap artifacts, uv_complete.png):

- reprojection fidelity: the completed texture rendered at the fitted pose against the photo, on
  the visible face region (the rasterized face, eroded at the silhouette like the unwrap), data
  range 1.0: ``reproj_l1``, ``reproj_psnr``, ``reproj_ssim``; plus the variant seed 003's code uses
  (outside the mask zeroed in both images, whole image, data range 1):
  ``reproj_masked_psnr_inflated`` / ``reproj_masked_ssim_inflated``, inflated by the shared zero
  background and reported only so numbers can sit next to that paper's;
- hidden-texel completion (near-frontal photos only, see :mod:`stages.evaluate.protocol`) with the
  completion method recorded in the folder's ``complete.json`` (:class:`MethodResolver`), pictured
  for one simulated view (:func:`hidden_texel_pictures`);
- symmetry: mean |texture - mirror| over skin texels (``symmetry_l1``);
- optional, from user-supplied models: identity cosine (dlib), CLIP-I, DINO-I, LPIPS per image and
  FID over the set (skipped with a one-line reason when the model is not available).
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stages.completion import MODEL_FILES_KEY, CompletionMethod, available_methods, get_method
from stages.core.atomic import atomic_path, write_json
from stages.core.errors import FacetexError, MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import load_texture, save_png, to_uint8
from stages.core.raster import crop_window, rasterize
from stages.core.uv import uv_layout
from stages.evaluate import metrics as M
from stages.evaluate.detail import detail_ratio
from stages.evaluate.occlusion import OCCLUDERS, run_occlusion_protocol
from stages.evaluate.protocol import (
    HIDDEN_VIEWS,
    NEAR_FRONTAL_DEG,
    HiddenTexelCase,
    is_near_frontal,
    run_hidden_texel_protocol,
)
from stages.evaluate.report import ImageRow, write_report
from stages.fit import FitResult
from stages.render import render_mesh, render_on_photo, render_views
from stages.unwrap import EROSION_FRACTION, UnwrapResult

#: Scale of the hidden-texel error heat map: a per-texel error (mean over RGB of |completed - photo|,
#: textures in [0, 1]: the units of ``hidden_l1``) of this much or more gets the top colour.
HEATMAP_MAX_ERROR = 0.25
HEATMAP_COLOURMAP = "viridis"
#: Colour of the hidden texels in the "which texels were hidden" picture.
HIDDEN_TINT = (1.0, 0.0, 1.0)
#: Grey of texels not under test (outside the layout) in the hidden-texel pictures.
BACKDROP_GREY = 0.12
#: Per-image numbers that describe the photo or the run rather than its quality (pose, coverage,
#: timing, hidden fractions): listed per image, never aggregated as metrics.
DESCRIPTIVE = ("yaw", "pitch", "roll", "coverage", "seconds_per_fill")
DESCRIPTIVE_PREFIXES = ("hidden_fraction_",)


def is_quality_metric(name: str) -> bool:
    """True for the metrics that are aggregated (mean/median/std); False for :data:`DESCRIPTIVE` numbers."""
    return name not in DESCRIPTIVE and not name.startswith(DESCRIPTIVE_PREFIXES)


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


# --------------------------------------------------------------------------------------------
# which completion method the hidden-texel test runs



def read_complete_json(result_dir: Path) -> dict:
    """The ``complete.json`` of a result folder.

    Raises:
        MissingArtifactError: missing, unreadable, or without a ``method``.
    """
    path = Path(result_dir) / "complete.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingArtifactError(path, "missing (not a finished `facetex complete` result)") from None
    except (OSError, ValueError) as exc:
        raise MissingArtifactError(path, f"unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise MissingArtifactError(path, "records no completion method ('method')")
    return data


@dataclass
class ScoredMethod:
    """The completion method the hidden-texel test runs on one folder, and what to say about it.

    Attributes:
        method: the loaded method.
        description: for metrics.json and the report: ``method``, ``source`` ("complete.json" or
            "--method override"), ``made_by`` (the method in complete.json), ``options`` (load options
            taken from complete.json), ``model_files`` (option -> path and sha256, verified), ``note``.
    """

    method: CompletionMethod
    description: dict


class MethodResolver:
    """Builds the method of each result folder's ``complete.json`` (once per method and options).

    The method named in ``complete.json["method"]`` is rebuilt with the options recorded in
    ``complete.json["completion"]``: the model files under :data:`MODEL_FILES_KEY` (each must still
    exist with the recorded sha256, else the folder fails with one line: another model is never
    scored in its place) and any other recorded value whose key is a parameter of the method (e.g.
    diffusion's ``steps``, ``seed``). A method that takes model files but whose ``complete.json``
    records none (results of older facetex) runs with its default model, and says so in ``note``.
    ``override`` (``evaluate --method NAME``) runs NAME with its defaults on every folder instead,
    and the description says so together with what made the folder.
    """

    def __init__(self, model: FaceModel, override: str | None = None, device: str | None = None):
        self.model = model
        self.override = override
        self.device = device    # --device: where a method that runs a network runs (not a recorded option)
        self._loaded: dict[tuple, CompletionMethod | FacetexError] = {}
        self._sha: dict[tuple, str] = {}

    def resolve(self, result_dir: Path) -> ScoredMethod:
        """The method for ``result_dir``. Raises :class:`FacetexError` (one line) when it cannot be built."""
        record_path = Path(result_dir) / "complete.json"
        record = read_complete_json(result_dir)
        made_by = record["method"]
        if self.override is not None:
            return ScoredMethod(self._load(self.override, {}, record_path), {
                "method": self.override, "source": "--method override", "made_by": made_by, "options": {},
                "model_files": None, "note": f"--method {self.override} overrides {made_by!r}, the method "
                                             f"recorded in complete.json (run with its default options)"})
        methods = available_methods()
        if made_by not in methods:
            raise MissingArtifactError(record_path, f"records method {made_by!r}, which this facetex does not have "
                                                    f"(available: {', '.join(sorted(methods))})")
        info = record.get("completion") if isinstance(record.get("completion"), dict) else {}
        params = inspect.signature(methods[made_by].__init__).parameters
        file_params = sorted(p for p in params if p.endswith("_path"))
        options = {k: v for k, v in info.items() if k in params and k not in file_params and k != "model"}
        files = info.get(MODEL_FILES_KEY)
        note = None
        if files:
            files = self._verified_files(files, made_by, record_path)
            options.update({option: entry["path"] for option, entry in files.items()})
        elif file_params:
            files = None
            note = (f"complete.json does not record the model file(s) {made_by!r} used ('{MODEL_FILES_KEY}'): "
                    f"scored with the method's default model")
        description = {"method": made_by, "source": "complete.json", "made_by": made_by,
                       "options": {k: v for k, v in options.items() if k not in (files or {})},
                       "model_files": files, "note": note}
        return ScoredMethod(self._load(made_by, options, record_path), description)

    def _verified_files(self, files, method: str, record_path: Path) -> dict:
        """``{option: {"path", "sha256"}}`` after checking each file exists and has its recorded sha256."""
        if not isinstance(files, dict):
            raise MissingArtifactError(record_path, f"'completion.{MODEL_FILES_KEY}' is not an object")
        out = {}
        for option, entry in sorted(files.items()):
            if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                    and isinstance(entry.get("sha256"), str)):
                raise MissingArtifactError(record_path, f"'completion.{MODEL_FILES_KEY}.{option}' needs a path "
                                                        f"and a sha256")
            path, recorded = Path(entry["path"]), entry["sha256"]
            if not path.exists():
                raise MissingArtifactError(record_path, f"method {method!r} was made with {path} ({option}), which "
                                                        f"no longer exists: not scoring another model in its place "
                                                        f"(pass --method to override)")
            actual = self._checksum(path)
            if actual != recorded:
                raise MissingArtifactError(record_path, f"method {method!r} was made with {path} ({option}) of "
                                                        f"sha256 {recorded[:12]}, but that file now has "
                                                        f"{actual[:12]}: not scoring another model in its place "
                                                        f"(pass --method to override)")
            out[option] = {"path": str(path), "sha256": recorded}
        return out

    def _checksum(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._sha:
            self._sha[key] = M.model_sha256(path)
        return self._sha[key]

    def _load(self, name: str, options: dict, record_path: Path) -> CompletionMethod:
        if self.device is not None and "device" in inspect.signature(get_method(name).__init__).parameters:
            options = {**options, "device": self.device}
        key = (name, json.dumps(options, sort_keys=True, default=str))
        if key not in self._loaded:
            try:
                self._loaded[key] = get_method(name).load(self.model, **options)
            except FacetexError as exc:  # e.g. a model folder that does not load: every such folder fails
                self._loaded[key] = exc
            except (TypeError, ValueError) as exc:
                self._loaded[key] = MissingArtifactError(record_path, f"cannot rebuild method {name!r} with the "
                                                                      f"recorded options {options} ({exc})")
        loaded = self._loaded[key]
        if isinstance(loaded, FacetexError):
            raise loaded
        return loaded


def describe_method(description: dict) -> str:
    """One line for the report: which method was scored, from where, with which model file."""
    text = f"{description['method']} ({description['source']}"
    if description["source"] != "complete.json":
        text += f"; folder made by {description['made_by']}"
    text += ")"
    for option, entry in (description.get("model_files") or {}).items():
        text += f"; {option} {entry['path']} (sha256 {entry['sha256'][:12]})"
    if description.get("options"):
        text += "; " + ", ".join(f"{k}={v}" for k, v in description["options"].items())
    return text


# --------------------------------------------------------------------------------------------
# one result folder


@dataclass
class ImageEvaluation:
    """Metrics and report images of one result folder.

    ``metrics`` holds the quality metrics and the descriptive numbers (:func:`is_quality_metric`);
    ``hidden_texel`` says which method the hidden-texel test scored (``ScoredMethod.description``
    plus ``example_view``), None when the test did not run.
    """

    stem: str
    metrics: dict[str, float | None]
    images: dict[str, Path]
    notes: list[str]
    photo_crop: np.ndarray | None = None     # for FID over the set
    render_crop: np.ndarray | None = None
    uv_size: int | None = None
    hidden_texel: dict | None = None
    captions: dict[str, str] = field(default_factory=dict)


def skin_uv_mask(model: FaceModel, size: int) -> np.ndarray:
    """``(S, S)`` bool texels whose triangle corners are all skin vertices."""
    indicator = np.zeros((model.n_vertices, 1))
    indicator[model.regions["skin"]] = 1.0
    return uv_layout(model, size).interpolate(indicator)[..., 0] > 0.999


# --------------------------------------------------------------------------------------------
# pictures of the hidden-texel test


def hidden_error_map(completed: np.ndarray, reference: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """``(S, S)`` float64: mean over RGB of ``|completed - reference|`` on the ``hidden`` texels, nan
    elsewhere. Its mean over the hidden texels is the view's ``hidden_l1``."""
    error = np.abs(completed[..., :3].astype(np.float64) - reference[..., :3]).mean(axis=2)
    return np.where(hidden, error, np.nan)


def heatmap_colours(error: np.ndarray, vmax: float = HEATMAP_MAX_ERROR) -> np.ndarray:
    """``(..., 3)`` float RGB of :data:`HEATMAP_COLOURMAP` at ``clip(error / vmax, 0, 1)``."""
    import matplotlib

    return matplotlib.colormaps[HEATMAP_COLOURMAP](np.clip(np.nan_to_num(error) / vmax, 0, 1))[..., :3]


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def colour_bar(width: int, vmax: float = HEATMAP_MAX_ERROR, title: str = "per-texel L1 error") -> np.ndarray:
    """``(H, width, 3)`` uint8 horizontal colour bar of :func:`heatmap_colours` from 0 (left) to ``vmax``
    (right), with its title above and tick labels 0, vmax/2, >= vmax below, on white."""
    from PIL import Image, ImageDraw

    font_px = max(10, width // 15)
    margin = font_px
    bar_h = max(6, width // 20)
    top = int(font_px * 1.6)
    height = top + bar_h + int(font_px * 1.8)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    ramp = heatmap_colours(np.linspace(0, vmax, width - 2 * margin)[None], vmax)
    image.paste(Image.fromarray((ramp * 255 + 0.5).astype(np.uint8)).resize((width - 2 * margin, bar_h)),
                (margin, top))
    draw = ImageDraw.Draw(image)
    font = _font(font_px)
    draw.text((width / 2, top - font_px * 0.3), title, fill=(0, 0, 0), font=font, anchor="md")
    for fraction, label in ((0.0, "0"), (0.5, f"{vmax / 2:g}"), (1.0, f">= {vmax:g}")):
        x = margin + fraction * (width - 2 * margin - 1)
        draw.line([(x, top + bar_h), (x, top + bar_h + font_px * 0.3)], fill=(0, 0, 0), width=1)
        anchor = "la" if fraction == 0 else ("ra" if fraction == 1 else "ma")
        draw.text((x, top + bar_h + font_px * 0.4), label, fill=(0, 0, 0), font=font, anchor=anchor)
    return np.asarray(image)


def hidden_texel_pictures(case: HiddenTexelCase, completed: np.ndarray, reference: np.ndarray,
                          layout: np.ndarray, vmax: float = HEATMAP_MAX_ERROR) -> dict[str, np.ndarray]:
    """The report's pictures of one simulated view of the hidden-texel test.

    Args:
        case: the view (its ``hidden`` and ``kept`` texels).
        completed: ``(S, S, 3)`` the method's completion of ``case.partial``.
        reference: ``(S, S, 3)`` the photo's unwrap (what the photo showed), in [0, 1].
        layout: ``(S, S)`` bool UV layout.

    Returns:
        ``hidden_view`` (the photo's texels, hidden ones in :data:`HIDDEN_TINT`), ``hidden_completed``
        and ``hidden_photo`` (the completed / photo colours on the hidden texels, the kept texels as dim
        grey), each ``(S, S, 3)`` float in [0, 1]; ``hidden_error``: ``(S + bar, S, 3)`` uint8, the
        :func:`hidden_error_map` in :func:`heatmap_colours` on the hidden texels over the same dim
        backdrop, above its :func:`colour_bar` (0 .. ``vmax``, hidden_l1 units).
    """
    hidden = case.hidden[..., None]
    grey = reference[..., :3].mean(axis=2, keepdims=True)
    backdrop = np.where(case.kept[..., None], BACKDROP_GREY + 0.35 * grey, np.where(layout[..., None],
                                                                                 0.5 * BACKDROP_GREY, 0.0))
    backdrop = np.repeat(backdrop, 3, axis=2)
    seen = (case.hidden | case.kept)[..., None]
    view = np.where(seen, reference[..., :3], backdrop)
    view = np.where(hidden, 0.5 * view + 0.5 * np.array(HIDDEN_TINT), view)
    heat = np.where(hidden, heatmap_colours(hidden_error_map(completed, reference, case.hidden), vmax), backdrop)
    heat_u8 = (np.clip(heat, 0, 1) * 255 + 0.5).astype(np.uint8)
    return {"hidden_view": view, "hidden_completed": np.where(hidden, completed[..., :3], backdrop),
            "hidden_photo": np.where(hidden, reference[..., :3], backdrop),
            "hidden_error": np.concatenate([heat_u8, colour_bar(heat_u8.shape[1], vmax)], axis=0)}


def reprojection(photo: np.ndarray, texture: np.ndarray, fit: FitResult, model: FaceModel,
                 erosion_px: int) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Render at the fitted pose (base mesh, as unwrapped) and compare with the photo in the face window,
    on the rasterized face eroded like the unwrap, minus what the fit's skin mask rejects.

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
    if fit.skin is not None:
        # Hair, hands and glasses in front of the face are not the texture's to reproduce (unwrap
        # rejected them): score the visible face skin only.
        mask &= fit.skin.prob[y0:y1, x0:x1] >= 0.5
    crop = photo[y0:y1, x0:x1].astype(np.float32) / 255.0
    values = {"reproj_l1": M.l1(render, crop, mask), "reproj_psnr": M.psnr(render, crop, mask),
              "reproj_ssim": M.ssim(render, crop, mask)}
    variant = M.masked_variant_ssim_psnr(render, crop, mask)
    values["reproj_masked_psnr_inflated"] = variant["psnr"]
    values["reproj_masked_ssim_inflated"] = variant["ssim"]
    return values, crop, render, mask


def evaluate_result(result_dir: Path, model: FaceModel, images_dir: Path, *, method: ScoredMethod | None,
                    optional: OptionalModels, occlusion: bool = False) -> ImageEvaluation:
    """Score one ``complete`` result folder; writes its report images into ``images_dir``.

    ``method``: what the hidden-texel test runs (:meth:`MethodResolver.resolve`); None skips the test.
    ``occlusion``: also run the occlusion protocol (:mod:`stages.evaluate.occlusion`) with that
    method on the photo (near-frontal only): ``occlusion_psnr`` and ``leak_rate``, means over the
    occluders, with the skin mask on or off as the folder's unwrap was made.

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
    captions: dict[str, str] = {}
    photo_crop = render_crop = None

    subdivide = 0 if model.weld_index is not None else 1  # the ICT head: dense, split at UV seams
    yaw, pitch, roll = fit.pose.euler
    values["yaw"], values["pitch"], values["roll"] = float(yaw), float(pitch), float(roll)
    values["coverage"] = float(unwrap.info.get("coverage", float("nan")))
    try:
        photo = fit.load_fitted_photo()
    except FacetexError as exc:
        photo = None
        notes.append(f"reprojection metrics skipped: {exc}")
    if photo is not None:
        default_px = round(EROSION_FRACTION * np.ptp(fit.screen_vertices()[:, 0]))
        erosion_px = int(unwrap.info.get("erosion_px", default_px))
        repro, photo_crop, render_crop, mask = reprojection(photo, texture, fit, model, erosion_px)
        values.update(repro)
        # Feature metrics compare the photo with the render composited over it: only the face differs.
        render_crop = np.where(mask[..., None], render_crop, photo_crop)
        images["photo"] = _save(images_dir / f"{stem}_photo.png", photo_crop)
        images["render_fitted"] = _save(images_dir / f"{stem}_render_fitted.png",
                                        render_on_photo(photo, texture, fit, model, subdivide=subdivide))

    views = render_views(texture, fit, model, yaws=(0, -45, 45), size=256, subdivide=subdivide)
    for name, view in zip(("render_frontal", "render_left45", "render_right45"), views, strict=True):
        images[name] = _save(images_dir / f"{stem}_{name}.png", view)
    values["symmetry_l1"] = M.symmetry_score(texture, skin_uv_mask(model, unwrap.size),
                                             mirror=uv_layout(model, unwrap.size).mirror)  # ICT: mirror in 3D
    # Detail where the photo saw nothing vs the photo's own skin (stages.evaluate.detail).
    values["detail_ratio"] = detail_ratio(texture, unwrap.confidence > 0, unwrap.layout_mask & (unwrap.confidence <= 0),
                                          skin_uv_mask(model, unwrap.size))

    hidden_texel = None
    if method is not None:
        if is_near_frontal(fit):
            examples: dict = {}
            values.update(run_hidden_texel_protocol(unwrap, fit, model, method.method, examples=examples,
                                                    photo=photo))
            hidden_texel = dict(method.description)
            if method.description.get("note"):
                notes.append(method.description["note"])
            if examples:
                # Picture the view that hides the most texels (the first in HIDDEN_VIEWS order on ties).
                view = max(examples, key=lambda v: int(examples[v][0].hidden.sum()))
                case, completed = examples[view]
                hidden_texel["example_view"] = view
                for name, picture in hidden_texel_pictures(case, completed, unwrap.texture,
                                                           unwrap.layout_mask).items():
                    images[name] = _save(images_dir / f"{stem}_{name}.png", picture)
                l1_view = values.get(f"hidden_l1_{view}")
                captions = {"hidden_view": f"{view}: hidden texels (magenta)",
                            "hidden_completed": f"{view}: completed ({method.description['method']})",
                            "hidden_photo": f"{view}: photo (truth)",
                            "hidden_error": f"{view}: per-texel L1 on hidden texels, colour bar 0 to "
                                            f"{HEATMAP_MAX_ERROR:g} (mean = hidden_l1 {l1_view:.4f})"}
        else:
            notes.append(f"hidden-texel benchmark needs a near-frontal photo (|yaw|, |pitch| <= "
                         f"{NEAR_FRONTAL_DEG:g}; this one: yaw {yaw:+.0f}, pitch {pitch:+.0f})")

    if occlusion:
        note = _occlusion_metrics(values, photo, fit, unwrap, model, method)
        if note:
            notes.append(note)
    if photo_crop is not None:
        _optional_metrics(values, optional, photo_crop, render_crop, views[0], photo)
    return ImageEvaluation(stem=stem, metrics=values, images=images, notes=notes, photo_crop=photo_crop,
                           render_crop=render_crop, uv_size=int(unwrap.size), hidden_texel=hidden_texel,
                           captions=captions)


def _occlusion_metrics(values: dict, photo: np.ndarray | None, fit: FitResult, unwrap: UnwrapResult,
                       model: FaceModel, method: ScoredMethod | None) -> str | None:
    """Add ``occlusion_psnr`` and ``leak_rate`` (means over :data:`OCCLUDERS`) to ``values``; returns
    a note saying why they were not computed, or None."""
    if method is None:
        return "occlusion protocol skipped: it needs a completion method (--method none was given)"
    if photo is None:
        return "occlusion protocol skipped: the photo is not available"
    if not is_near_frontal(fit):
        return "occlusion protocol skipped: it needs a near-frontal photo"
    mask = bool(unwrap.info.get("occlusion_mask", unwrap.occluded is not None))
    scores = run_occlusion_protocol(photo, fit, model, method.method, mask=mask, uv_size=unwrap.size)
    for metric, name in (("occlusion_psnr", "occlusion_psnr"), ("leak", "leak_rate")):
        finite = [scores[k][metric] for k in OCCLUDERS if math.isfinite(scores[k][metric])]
        values[name] = float(np.mean(finite)) if finite else float("nan")
    return None


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
    """Per quality metric (:func:`is_quality_metric`): mean, median, std and count (an int) over the
    images where it is finite."""
    names = sorted({k for e in evaluations for k in e.metrics if is_quality_metric(k)})
    out = {}
    for name in names:
        values = [e.metrics.get(name) for e in evaluations]
        finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        if len(finite):
            out[name] = {"mean": float(finite.mean()), "median": float(np.median(finite)),
                         "std": float(finite.std()), "count": int(len(finite))}
    return out


def _json_number(value):
    """A number for metrics.json: ints stay ints, inf/nan become strings, None stays None."""
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else str(value)


def write_outputs(out_dir: Path, evaluations: list[ImageEvaluation], settings: dict, optional: OptionalModels,
                  failures: dict[str, str]) -> dict:
    """metrics.json, metrics.csv and report.html (+ report_files/) for a set of evaluations.

    metrics.json: ``settings``, ``models`` (user-supplied metric networks), ``skipped``, ``failures``,
    ``aggregate`` (quality metrics only), and ``per_image[stem]`` with ``metrics`` (quality),
    ``descriptive`` (pose, coverage, timing, hidden fractions), ``hidden_texel`` (the method scored,
    :class:`ScoredMethod` description) and ``notes``.
    """
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

    def numbers(e: ImageEvaluation, quality: bool) -> dict:
        return {k: _json_number(v) for k, v in e.metrics.items() if is_quality_metric(k) == quality}

    data = {
        "schema": "facetex.metrics", "schema_version": 2, "settings": settings,
        "models": optional.files, "skipped": skipped, "failures": failures,
        "aggregate": {k: {kk: _json_number(vv) for kk, vv in v.items()} for k, v in agg.items()},
        "per_image": {e.stem: {"metrics": numbers(e, True), "descriptive": numbers(e, False),
                               "hidden_texel": e.hidden_texel, "notes": e.notes}
                      for e in evaluations},
    }
    write_json(out_dir / "metrics.json", data)
    columns = sorted({k for e in evaluations for k in e.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["stem", "hidden_texel_method", *columns])
    for e in evaluations:
        scored = "" if e.hidden_texel is None else e.hidden_texel["method"]
        writer.writerow([e.stem, scored,
                         *("" if e.metrics.get(c) is None else f"{e.metrics[c]:.6g}" for c in columns)])
    with atomic_path(out_dir / "metrics.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    rows = [ImageRow(stem=e.stem, images=e.images, metrics=e.metrics, notes=e.notes, captions=e.captions,
                     details=_row_details(e)) for e in evaluations]
    write_report(out_dir, rows, agg, settings, skipped)
    return data


def _row_details(e: ImageEvaluation) -> dict[str, str]:
    if e.hidden_texel is None:
        return {}
    details = {"hidden-texel method": describe_method(e.hidden_texel)}
    if "example_view" in e.hidden_texel:
        details["pictured view"] = e.hidden_texel["example_view"]
    return details


def run_settings(evaluations: list[ImageEvaluation], method_choice: str | None, occlusion: bool = False) -> dict:
    """The exact settings of an evaluate run, for metrics.json and the report.

    ``method_choice``: None (hidden-texel test off), ``"recorded"`` (each folder's complete.json) or
    the name given with ``--method``. ``occlusion``: the occlusion protocol ran (``--occlusion``).
    """
    sizes = sorted({e.uv_size for e in evaluations if e.uv_size is not None})
    scored: dict[str, int] = {}
    for e in evaluations:
        if e.hidden_texel is not None:
            scored[e.hidden_texel["method"]] = scored.get(e.hidden_texel["method"], 0) + 1
    choice = {None: "off (--method none)", "recorded": "the method recorded in each folder's complete.json"}.get(
        method_choice, f"--method {method_choice} (override of the recorded methods)")
    return {
        "reprojection": {"mask": "rasterized face at the fitted pose, eroded like the unwrap; covered pixels "
                                 "the skin mask keeps (probability >= 0.5)",
                         "data_range": 1.0, "ssim": "11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03, mean over mask",
                         "inflated_variant": "outside mask zeroed in both, data range 1, whole window "
                                             "(= reproj_psnr - 10 log10(mask fraction of the window))"},
        "hidden_texel": {"method": choice, "images_per_method": scored,
                         "views": {k: list(v) for k, v in HIDDEN_VIEWS.items()},
                         "near_frontal_deg": NEAR_FRONTAL_DEG, "scored": "texels seen in the photo, hidden by the view",
                         "heatmap": f"one view per image: mean over RGB of |completed - photo| on its hidden "
                                    f"texels, {HEATMAP_COLOURMAP} from 0 to {HEATMAP_MAX_ERROR:g} (hidden_l1 units)"},
        "occlusion": ({"occluders": list(OCCLUDERS), "method": "the hidden-texel method",
                       "occlusion_psnr": "mean over occluders of the PSNR of the occluded photo's completion vs "
                                         "the clean photo's, on the occluder's texels",
                       "leak_rate": "mean over occluders of the share of occluder texels kept or mirrored",
                       "occluder_region": "drawn shape, a pixel counted when covered >= 50 %"}
                      if occlusion else "off (--no-occlusion)"),
        "symmetry": "mean |texture - mirror| over skin texels (all triangle corners in the skin region)",
        "uv_size": sizes[0] if len(sizes) == 1 else sizes,
        "heatmap_max_error": HEATMAP_MAX_ERROR,
        "aggregated": "quality metrics only; yaw, pitch, roll, coverage, seconds_per_fill and hidden_fraction_* "
                      "are per image",
    }
