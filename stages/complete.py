"""``complete``: photo -> complete UV texture and textured mesh, in one process.

:class:`Completer` holds everything that is expensive to build (face model, landmark detector,
the completion method and its weights) and runs fit -> unwrap -> fill -> export + previews for
each photo, writing every intermediate artifact into ``OUT/<stem>/`` so a person can inspect it:

    fit.json, skin_mask.png                        (fit; previews: fit_overlay.png, skin_overlay.png)
    uv_texture.png, uv_mask.png, uv_position.npy   (unwrap; preview: uv_position.png)
    uv_complete.png, uv_provenance.png             (completion; provenance: green visible,
                                                    blue mirrored, orange smooth-filled)
    textured.obj/.mtl (+ .glb)                     (mesh with the completed texture)
    render_fitted.png, views.png                   (previews; --no-previews writes no preview)
    complete.json                                  (settings and numbers; written last)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.completion import Completion, get_method
from stages.core.atomic import staged_folder, write_json
from stages.core.errors import FacetexError
from stages.core.face_model import FaceModel, load_builtin_face_model
from stages.core.image_io import DEFAULT_MAX_SIDE, load_photo, save_png
from stages.fit import FitResult, MediaPipeLandmarker, fit_photo, make_landmarker, save_fit
from stages.occlusion import default_segmenter
from stages.unwrap import UnwrapResult, unwrap_photo

DEFAULT_METHOD = "mirror"
#: Longest side of render_fitted.png (a preview: the photo's full resolution costs several times more).
PREVIEW_SIDE = 640
#: What a completion writes into a folder (``complete`` on an unwrap folder replaces exactly these).
#: ``uv_albedo.png`` and ``lighting.json`` are the extra outputs of ``--method uvapm`` (Completion.extra_*).
COMPLETION_FILES = ("uv_complete.png", "uv_provenance.png", "textured.obj", "textured.mtl", "textured.glb",
                    "render_fitted.png", "views.png", "complete.json", "uv_albedo.png", "lighting.json")


def renamed(result, photo_path: str | Path, name: str | None):
    """``result`` (a :class:`FitResult` or :class:`UnwrapResult` of ``photo_path``) written under
    ``name`` instead of the photo's stem (``<name>_face<i>`` with ``--face all``); as is if ``name`` is None."""
    if name is None:
        return result
    return dataclasses.replace(result, stem=name + result.stem[len(Path(photo_path).stem):])


@dataclass
class CompleteOptions:
    """Settings of a ``complete`` run (all have CLI flags of the same name)."""

    method: str = DEFAULT_METHOD
    uv_size: int = 512
    face: str = "largest"
    landmarks: str = "mediapipe"
    delight: bool = False
    occlusion_mask: bool = True
    max_side: int = DEFAULT_MAX_SIDE
    subdivide: int = 1
    #: Yaws of ``views.png``; None: ``stages.render.DEFAULT_YAWS``.
    yaws: tuple[float, ...] | None = None
    view_size: int = 256
    glb: bool = True
    previews: bool = True
    method_options: dict = field(default_factory=dict)


class Completer:
    """Runs ``complete`` on many photos with models loaded once.

    Args:
        options: run settings.
        model: face model (default: built-in).
        landmarker: landmark detector (default: the ``options.landmarks`` backend).
    """

    def __init__(self, options: CompleteOptions | None = None, *, model: FaceModel | None = None,
                 landmarker: MediaPipeLandmarker | None = None):
        self.options = options or CompleteOptions()
        self.model = model or load_builtin_face_model()
        self.method = get_method(self.options.method).load(self.model, **self.options.method_options)
        self.landmarker = landmarker or make_landmarker(self.options.landmarks)
        if self.options.occlusion_mask:
            default_segmenter()  # the skin mask's MediaPipe graphs load here, with the detector

    def complete_unwrap(self, unwrap: UnwrapResult, fit: FitResult | None = None,
                        rgb: np.ndarray | None = None) -> Completion:
        """Fill one partial texture with the configured method (given its fit and photo when known)."""
        if fit is None:
            return self.method.complete(unwrap)
        return self.method.complete_fitted(unwrap, fit, rgb)

    def run(self, photo_path: str | Path, out_root: str | Path, name: str | None = None) -> list[Path]:
        """Process one photo; returns the output folder of each face processed.

        Each face's folder ``OUT/<name>/`` (``<name>_face<i>`` with ``--face all``; ``name``
        defaults to the photo's stem) is written into a temporary sibling and swapped in whole
        when done, replacing an earlier run's folder.

        Raises:
            FacetexError: bad photo or no usable face (nothing is written for that photo);
                OutputError when the folder cannot be written.
        """
        opts = self.options
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        photo = load_photo(photo_path, max_side=opts.max_side)
        fits = fit_photo(photo, self.landmarker, model=self.model, face=opts.face, occlusion_mask=opts.occlusion_mask,
                         max_side=opts.max_side)
        timings["load+fit"] = time.perf_counter() - t0
        out_dirs = []
        for fit in fits:
            fit = renamed(fit, photo_path, name)
            out_dirs.append(Path(out_root) / fit.stem)
            face_timings = dict(timings)
            t = time.perf_counter()
            unwrap = unwrap_photo(photo, fit, model=self.model, uv_size=opts.uv_size, delight=opts.delight,
                                  occlusion_mask=opts.occlusion_mask)
            face_timings["unwrap"] = time.perf_counter() - t
            # The whole folder is written aside and swapped in: it never mixes two runs' files.
            with staged_folder(out_dirs[-1]) as out_dir:
                save_fit(fit, photo.rgb, out_dir, self.model, previews=opts.previews)
                unwrap.save(out_dir, previews=opts.previews)
                self._complete_face(photo.rgb, fit, unwrap, out_dir, face_timings)
        return out_dirs

    @staticmethod
    def notes(result_dir: str | Path) -> list[str]:
        """The one-line notes a finished result records in its ``complete.json`` (fit warnings such as a
        doubtful pose, previews that could not be made), for the CLI to print."""
        import json

        return list(json.loads((Path(result_dir) / "complete.json").read_text()).get("notes", []))

    def run_from_unwrap(self, unwrap_dir: str | Path, out_root: str | Path) -> Path:
        """Fill an existing ``unwrap`` folder (which also holds its ``fit.json``), as the Makefile does.

        The photo (:meth:`FitResult.photo_path`: relative to the folder first, then the recorded
        path) is read for the ``render_fitted.png`` preview; if it is in neither place, that one
        preview is skipped and ``complete.json`` says why. The completion's files
        (:data:`COMPLETION_FILES`) are replaced together; the folder's other files are kept.
        """
        unwrap_dir = Path(unwrap_dir)
        fit = FitResult.load(unwrap_dir / "fit.json")
        unwrap = UnwrapResult.load(unwrap_dir, self.model)
        rgb = None
        notes = []
        try:
            rgb = fit.load_fitted_photo()
        except FacetexError as exc:  # photo not found, or not the fitted one: no render_fitted.png
            notes.append(f"render_fitted.png not written: {exc}")
        target = Path(out_root) / unwrap.stem
        # Redo the completion as a whole; keep whatever else the folder holds (fit, unwrap, pseudo-gt).
        keep = [p.name for p in target.iterdir() if p.name not in COMPLETION_FILES] if target.is_dir() else []
        with staged_folder(target, keep=keep) as out_dir:
            self._complete_face(rgb, fit, unwrap, out_dir, {}, notes=notes)
        return target

    def _complete_face(self, rgb: np.ndarray | None, fit: FitResult, unwrap: UnwrapResult, out_dir: Path,
                       timings: dict, notes: list[str] | None = None) -> None:
        """Fill ``unwrap``, write the completion, mesh, previews and ``complete.json`` (last) into ``out_dir``.

        ``notes``: what the user should know about this result (e.g. a preview that could not be
        made), recorded in ``complete.json``."""
        # Imported here, not at the top: stages.render imports torch, and `fit`/`unwrap` workers import this
        # module (for `renamed`) without writing a completion.
        from stages.render import DEFAULT_YAWS, compose_views, export_textured_mesh, render_on_photo, render_views

        opts = self.options
        t = time.perf_counter()
        completion = self.complete_unwrap(unwrap, fit, rgb)
        timings["fill"] = time.perf_counter() - t

        t = time.perf_counter()
        save_png(out_dir / "uv_complete.png", completion.texture)
        save_png(out_dir / "uv_provenance.png", completion.provenance_image())
        for name in [*completion.extra_images, *completion.extra_json]:
            if name not in COMPLETION_FILES:  # a run on an unwrap folder must replace it: list it there
                raise ValueError(f"method {opts.method!r} writes {name!r}, which is not in COMPLETION_FILES")
        for name, image in completion.extra_images.items():
            save_png(out_dir / name, image)
        for name, data in completion.extra_json.items():
            write_json(out_dir / name, data)
        export_textured_mesh(out_dir, completion.texture, fit.vertices, self.model, label=fit.stem,
                             subdivide=opts.subdivide, glb=opts.glb, texture_file="uv_complete.png")
        timings["write"] = time.perf_counter() - t
        if opts.previews:
            t = time.perf_counter()
            if rgb is not None:
                save_png(out_dir / "render_fitted.png",
                         render_on_photo(rgb, completion.texture, fit, self.model, subdivide=opts.subdivide,
                                         max_side=PREVIEW_SIDE))
            yaws = DEFAULT_YAWS if opts.yaws is None else opts.yaws
            views = render_views(completion.texture, fit, self.model, yaws=yaws, size=opts.view_size,
                                 subdivide=opts.subdivide)
            save_png(out_dir / "views.png", compose_views(views))
            timings["previews"] = time.perf_counter() - t
        write_json(out_dir / "complete.json", {
            "schema": "facetex.complete", "schema_version": 1, "source": fit.source, "stem": fit.stem,
            # The settings actually used: an unwrap folder brings its own texture size and delighting.
            "method": opts.method, "uv_size": unwrap.size, "delight": bool(unwrap.info.get("delight", False)),
            "subdivide": opts.subdivide, "glb": opts.glb, "previews": opts.previews,
            "method_options": dict(opts.method_options),
            "completion": completion.info,
            "unwrap": {k: v for k, v in unwrap.info.items() if not k.startswith("schema")},
            "seconds": {k: round(v, 4) for k, v in timings.items()},
            "notes": [*fit.quality.get("warnings", []), *(notes or [])],
        })

