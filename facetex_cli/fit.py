"""``facetex fit``: landmarks, pose, per-image shape and SH lighting -> ``fit.json`` + overlay."""

from __future__ import annotations

from pathlib import Path

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
    FACE_MODEL_OPTION,
    FaceModelChoice,
    face_model_for,
    LANDMARKS_OPTION,
    OCCLUSION_OPTION,
    OUT_OPTION,
    RECURSIVE_OPTION,
    SKIP_OPTION,
    LandmarksChoice,
    outputs_exist,
    prepare_output_root,
)
from stages.core.image_io import DEFAULT_MAX_SIDE, load_photo
from stages.fit import fit_photo, make_landmarker, save_fit
from stages.occlusion import default_segmenter, set_default_parser

FACE_HELP = "Which face to fit: 'largest', 'all' (writes OUT/<stem>_face<i>/), or an index (0 = largest)."
MAX_SIDE_HELP = "Photos whose long side exceeds this are downscaled on load."
SKIN_PARSER_HELP = ("A learned skin parser model folder (`facetex train parser`): its skin probability caps the "
                    "classical mask's (the minimum of the two).")


def fit_command(
    photos: list[str] = typer.Argument(..., help="Photo files, folders or globs."),
    out: Path = OUT_OPTION,
    face: str = typer.Option("largest", "--face", help=FACE_HELP),
    landmarks: LandmarksChoice = LANDMARKS_OPTION,
    max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", min=256, help=MAX_SIDE_HELP),
    recursive: bool = RECURSIVE_OPTION,
    occlusion_mask: bool = OCCLUSION_OPTION,
    skip_existing: bool = SKIP_OPTION,
    debug: bool = DEBUG_OPTION,
    face_model: FaceModelChoice = FACE_MODEL_OPTION,
    skin_parser: Path | None = typer.Option(None, "--skin-parser", help=SKIN_PARSER_HELP,
                                            show_default="none: the classical mask alone"),
    workers: int = WORKERS_OPTION,
    shard: str = SHARD_OPTION,
    executor: ExecutorChoice = EXECUTOR_OPTION,
    dask_scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Detect face landmarks (MediaPipe, offline) and fit pose, shape and lighting.

    Writes OUT/<stem>/fit.json and fit_overlay.png, and skin_mask.png + skin_overlay.png (the
    face-skin segmentation unwrap uses; not with --no-occlusion-mask).
    """
    inputs = expand_inputs(photos, recursive=recursive)
    settings = batch_settings(workers, shard, executor, dask_scheduler)
    prepare_output_root(out, clean=not settings.shared_output)
    names = output_names(inputs.files)
    report_renames(names)
    job = Job(fit_job, {"out": out, "face": face, "landmarks": landmarks, "max_side": max_side,
                        "occlusion_mask": occlusion_mask, "face_model": face_model, "names": names,
                        "skin_parser": skin_parser})
    results = run_batch(inputs.files, job, name_of=lambda p: p.name, shard_key=names.get, inputs=inputs,
                        skip=(lambda p: outputs_exist(out, names[p], "fit.json")) if skip_existing else None,
                        description="fit", debug=debug, settings=settings)
    raise typer.Exit(print_summary(results, "fit"))


def fit_job(out: Path, face: str, landmarks: str, max_side: int, occlusion_mask: bool, face_model: str,
            names: dict[Path, str], skin_parser: Path | None = None):
    """The per-photo function of ``fit`` (a :class:`~facetex_cli.batch.Job` factory): the face model,
    the landmark detector, the skin segmenter and the skin parser (if given) load here, once per process."""
    from stages.complete import renamed

    model, _ = face_model_for(face_model)
    landmarker = make_landmarker(landmarks)
    if occlusion_mask:
        default_segmenter()
        if skin_parser is not None:
            from stages.models.skin_parser import load_skin_parser   # torch: only when a parser is given

            set_default_parser(load_skin_parser(skin_parser))

    def process(path: Path) -> Done:
        photo = load_photo(path, max_side=max_side)
        fits = [renamed(fit, path, names[path])
                for fit in fit_photo(photo, landmarker, model=model, face=face, occlusion_mask=occlusion_mask,
                                     max_side=max_side)]
        for fit in fits:
            save_fit(fit, photo.rgb, out / fit.stem, model)
        yaw, pitch, _ = fits[0].pose.euler
        return Done(f"{len(fits)} of {fits[0].num_faces} face(s); yaw {yaw:+.0f} pitch {pitch:+.0f}",
                    [out / fit.stem for fit in fits],
                    warnings=[w for fit in fits for w in fit.quality.get("warnings", [])])

    return process
