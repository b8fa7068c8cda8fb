"""``facetex unwrap``: sample the visible UV texels from the photo, through the fitted mesh (``geometric``)
or with the learned UV sampler (``learned``, no 3D fit)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from facetex_cli.batch import Done, Job, expand_inputs, output_names, print_summary, report_renames, run_batch
from facetex_cli.common import (
    EXECUTOR_OPTION,
    SCHEDULER_OPTION,
    SHARD_OPTION,
    WORKERS_OPTION,
    ExecutorChoice,
    batch_settings,
    DEBUG_OPTION,
    DEVICE_OPTION,
    FACE_MODEL_OPTION,
    FaceModelChoice,
    face_model_for,
    OCCLUSION_OPTION,
    OUT_OPTION,
    PAPER_YIN,
    RECURSIVE_OPTION,
    SKIP_OPTION,
    find_artifacts,
    outputs_exist,
    prepare_output_root,
)
from facetex_cli.fit import FACE_HELP, MAX_SIDE_HELP
from stages.core.image_io import DEFAULT_MAX_SIDE, load_photo
from stages.fit import FitResult
from stages.unwrap import EROSION_FRACTION, UV_SIZE_RANGE, unwrap_photo

METHODS = ("geometric", "learned")


def unwrap_command(
    photos: list[str] | None = typer.Argument(None, help="Photo files, folders or globs."),
    fit: Path | None = typer.Argument(None, help="A fit.json, or the output root of `facetex fit` (holds "
                                                 "<stem>/fit.json). Required by --method geometric; with --method "
                                                 "learned only its 2D landmarks are read (default: detect them; "
                                                 "anything that is not a .json or a fit root counts as a photo)."),
    out: Path = OUT_OPTION,
    method: Literal["geometric", "learned"] = typer.Option(
        "geometric", "--method", help="geometric: through the fitted mesh; learned: the learned UV sampler of "
                                      f"{PAPER_YIN}, §3.1, no 3D fit (needs --model unless one ships)."),
    model_dir: Path | None = typer.Option(None, "--model", help="Model folder of `facetex train sampler` "
                                                                "(--method learned).", show_default="the shipped one"),
    uv_size: int = typer.Option(512, "--uv-size", min=UV_SIZE_RANGE[0], max=UV_SIZE_RANGE[1],
                                help="UV texture side in texels."),
    erosion: float = typer.Option(EROSION_FRACTION, "--erosion", min=0.0, max=0.2,
                                  help="Silhouette erosion as a fraction of the face width (geometric)."),
    delight: bool = typer.Option(False, "--delight/--no-delight",
                                 help="Divide by the fitted SH shading (albedo-like; relight with render --sh; "
                                      "geometric only)."),
    face: str = typer.Option("largest", "--face", help=FACE_HELP + " (learned without FIT)"),
    max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", min=256, help=MAX_SIDE_HELP),
    device: str = DEVICE_OPTION,
    recursive: bool = RECURSIVE_OPTION,
    occlusion_mask: bool = OCCLUSION_OPTION,
    skip_existing: bool = SKIP_OPTION,
    debug: bool = DEBUG_OPTION,
    face_model: FaceModelChoice = FACE_MODEL_OPTION,
    workers: int = WORKERS_OPTION,
    shard: str = SHARD_OPTION,
    executor: ExecutorChoice = EXECUTOR_OPTION,
    dask_scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Unwrap the visible face texture into UV space.

    Writes OUT/<stem>/uv_texture.png (RGBA, alpha = confidence), uv_mask.png, uv_position.npy
    (+ .png preview) and unwrap.json. With --method learned, alpha is the predicted visibility
    probability and uv_position.npy is the face model's mean shape (no per-image fit).
    """
    photos = list(photos or [])
    if fit is not None and not photos:
        photos, fit = [str(fit)], None           # a single positional is the photo
    elif fit is not None and method == "learned" and not _is_fit_source(fit):
        # The last positional is a photo, not a fit (e.g. `unwrap --method learned a.jpg b.jpg`).
        photos.append(str(fit))
        fit = None
    if not photos:
        raise typer.BadParameter("give at least one photo", param_hint="PHOTOS")
    if method == "geometric" and fit is None:
        raise typer.BadParameter("--method geometric needs the FIT argument (run `facetex fit` first), or use "
                                 "--method learned", param_hint="FIT")
    if method == "geometric" and device != "auto":
        raise typer.BadParameter("--device goes with --method learned (the geometric unwrap runs no network)",
                                 param_hint="--device")
    if method == "learned" and face_model != "mediapipe":
        raise typer.BadParameter("the learned sampler was trained on the mediapipe UV layout; use --method "
                                 "geometric with --face-model ict", param_hint="--face-model")
    if method == "learned" and delight:
        raise typer.BadParameter("--delight needs a fitted lighting; it works with --method geometric only",
                                 param_hint="--delight")
    inputs = expand_inputs(photos, recursive=recursive)
    if fit is not None and fit.is_file() and len(inputs.files) > 1:
        raise typer.BadParameter("a single fit.json goes with a single photo; pass the fit output root instead",
                                 param_hint="FIT")
    settings = batch_settings(workers, shard, executor, dask_scheduler)
    prepare_output_root(out, clean=not settings.shared_output)
    names = output_names(inputs.files)
    report_renames(names)
    common = {"fit": fit, "out": out, "face_model": face_model, "uv_size": uv_size, "max_side": max_side,
              "names": names}
    job = Job(learned_unwrap_job, {**common, "model_dir": model_dir, "face": face, "device": device}) \
        if method == "learned" else \
        Job(unwrap_job, {**common, "erosion": erosion, "delight": delight, "occlusion_mask": occlusion_mask})
    results = run_batch(inputs.files, job, name_of=lambda p: p.name, shard_key=names.get, inputs=inputs,
                        skip=(lambda p: outputs_exist(out, names[p], "unwrap.json")) if skip_existing else None,
                        description="unwrap", debug=debug, settings=settings)
    raise typer.Exit(print_summary(results, "unwrap"))


def _is_fit_source(path: Path) -> bool:
    """True for a ``.json`` file or a folder holding ``fit.json`` or ``<stem>/fit.json`` (a fit output root)."""
    if path.suffix.lower() == ".json":
        return True
    return path.is_dir() and ((path / "fit.json").is_file() or any(path.glob("*/fit.json")))


def unwrap_job(fit: Path, out: Path, face_model: str, uv_size: int, max_side: int, names: dict[Path, str],
               erosion: float, delight: bool, occlusion_mask: bool):
    """The per-photo function of the geometric ``unwrap`` (a :class:`~facetex_cli.batch.Job` factory)."""
    model, _ = face_model_for(face_model)

    def process(path: Path) -> Done:
        fit_paths = find_artifacts(fit, names[path], "fit.json")
        photo = load_photo(path, max_side=max_side)
        coverage, folders = [], []
        for fit_path in fit_paths:
            result = unwrap_photo(photo, FitResult.load(fit_path), model=model, uv_size=uv_size,
                                  erosion=erosion, delight=delight, occlusion_mask=occlusion_mask)
            result.save(out / result.stem)
            coverage.append(f"{result.info['coverage']:.0%}")
            folders.append(out / result.stem)
        return Done("coverage " + ", ".join(coverage), folders)

    return process


def learned_unwrap_job(fit: Path | None, out: Path, face_model: str, uv_size: int, max_side: int,
                       names: dict[Path, str], model_dir: Path | None, face: str, device: str = "auto"):
    """The per-photo function of ``--method learned`` (a :class:`~facetex_cli.batch.Job` factory); the
    sampler (and detector) load here, once per process."""
    from stages.complete import renamed
    from stages.learned_unwrap import LearnedUnwrapper

    model, _ = face_model_for(face_model)
    unwrapper = LearnedUnwrapper(model_dir, face_model=model, device=device)
    landmarker = None
    if fit is None:
        from stages.fit import make_landmarker

        landmarker = make_landmarker("mediapipe")

    def process(path: Path) -> Done:
        photo = load_photo(path, max_side=max_side)
        if landmarker is None:
            results = [unwrapper.unwrap_with_fit(photo, p, uv_size=uv_size)
                       for p in find_artifacts(fit, names[path], "fit.json")]
        else:
            results = [renamed(r, path, names[path])
                       for r in unwrapper.unwrap_photo(photo, landmarker, uv_size=uv_size, face=face)]
        for result in results:
            result.save(out / result.stem)
        return Done("learned, coverage " + ", ".join(f"{r.info['coverage']:.0%}" for r in results),
                    [out / r.stem for r in results])

    return process
