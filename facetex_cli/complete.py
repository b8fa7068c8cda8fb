"""``facetex complete``: photo -> complete UV texture + textured mesh + previews, in one process."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from typing import Literal

import typer

from facetex_cli.batch import Done, Job, expand_inputs, output_names, print_summary, report_renames, run_batch
from facetex_cli.common import (
    DEBUG_OPTION,
    DEVICE_OPTION,
    EXECUTOR_OPTION,
    SCHEDULER_OPTION,
    SHARD_OPTION,
    WORKERS_OPTION,
    ExecutorChoice,
    FACE_MODEL_OPTION,
    FaceModelChoice,
    face_model_for,
    LANDMARKS_OPTION,
    OCCLUSION_OPTION,
    OUT_OPTION,
    RECURSIVE_OPTION,
    SKIP_OPTION,
    LandmarksChoice,
    batch_settings,
    outputs_exist,
    prepare_output_root,
)
from facetex_cli.fit import FACE_HELP, MAX_SIDE_HELP
from stages.complete import CompleteOptions, Completer
from stages.completion import METHODS, method_names
from stages.completion.diffusion import DEFAULT_GUIDANCE, DEFAULT_STEPS
from stages.unwrap import UV_SIZE_RANGE

DEFAULTS = CompleteOptions()
#: The registered completion methods, as a choice type of the CLI.
MethodChoice = Literal[method_names()]


def _method_help() -> str:
    return "Completion method: " + "; ".join(f"'{name}': {METHODS[name].description}" for name in method_names())


def complete_command(
    photos: list[str] = typer.Argument(
        ..., help="Photo files, folders or globs; or `facetex unwrap` output folders (OUT/<stem>/ holding "
                  "unwrap.json and fit.json), which are filled without re-fitting."),
    out: Path = OUT_OPTION,
    method: MethodChoice = typer.Option(DEFAULTS.method, "--method", "-m", help=_method_help()),
    uv_size: int = typer.Option(DEFAULTS.uv_size, "--uv-size", min=UV_SIZE_RANGE[0], max=UV_SIZE_RANGE[1],
                                help="UV texture side in texels (an unwrap folder input keeps its own size)."),
    face: str = typer.Option(DEFAULTS.face, "--face", help=FACE_HELP),
    landmarks: LandmarksChoice = LANDMARKS_OPTION,
    pca: Path = typer.Option(None, "--pca", help="PCA albedo model for --method pca/blend/uvapm.",
                             show_default="built in"),
    iterations: int = typer.Option(None, "--iterations", min=1, max=10000,
                                   help="--method uvapm: optimiser steps of the albedo/light fit.", show_default="40"),
    albedo_space: bool = typer.Option(None, "--albedo-space/--no-albedo-space",
                                      help="--method mirror: mirror in albedo space (divide by the fitted "
                                           "shading, mirror, multiply by the target side's shading; "
                                           "--no-albedo-space mirrors the colours as they are).",
                                      show_default="on"),
    detail: bool = typer.Option(None, "--detail/--no-detail",
                                help="--method uvapm: stage 3, skin detail from the detail VAE (--model, default "
                                     "the shipped one) where the photo saw nothing; --no-detail: the smooth albedo.",
                                show_default="on"),
    detail_strength: float = typer.Option(None, "--detail-strength", min=0.0,
                                          help="--method uvapm: detail energy of the filled skin over the photo's "
                                               "own (band-matched per photo).", show_default="0.7"),
    model_dir: Path = typer.Option(None, "--model", help="Trained model folder for --method unet (`facetex train "
                                                         "unet`) or the appearance model for --method diffusion "
                                                         "(`facetex train diffusion-appearance`) or the detail VAE "
                                                         "for --method uvapm (`facetex train detail-vae`) or the "
                                                         "texture GAN for --method gan (`facetex train texture-gan`).",
                                   show_default="the shipped model of the method"),
    structure_dir: Path = typer.Option(None, "--structure-model",
                                       help="--method diffusion: the structure model (`facetex train "
                                            "diffusion-structure`) cross-assembled with --model.",
                                       show_default="the one in --model"),
    steps: int = typer.Option(None, "--steps", min=1, max=1000, help="--method diffusion: denoising steps.",
                              show_default=f"{DEFAULT_STEPS}, as the paper"),
    guidance: float = typer.Option(None, "--guidance", min=1.0,
                                   help="--method diffusion: classifier-free guidance scale.",
                                   show_default=str(DEFAULT_GUIDANCE)),
    seed: int = typer.Option(None, "--seed", help="--method diffusion: sampling seed (same seed, same texture).",
                             show_default="0"),
    scheduler: Literal["ddim", "dpm"] = typer.Option(None, "--scheduler",
                                  help="--method diffusion: DDIM or DPM-Solver++ (fewer steps).", show_default="ddim"),
    colour_match: bool = typer.Option(None, "--colour-match/--no-colour-match",
                                      help="--method diffusion: Lab mean-variance colour matching.",
                                      show_default="on"),
    delight: bool = typer.Option(DEFAULTS.delight, "--delight/--no-delight",
                                 help="Remove the fitted directional shading before completing (albedo-like)."),
    subdivide: int = typer.Option(DEFAULTS.subdivide, "--subdivide", min=0, max=3,
                                  help="Loop subdivision levels of the exported mesh."),
    glb: bool = typer.Option(DEFAULTS.glb, "--glb/--no-glb", help="Also export textured.glb."),
    previews: bool = typer.Option(DEFAULTS.previews, "--previews/--no-previews",
                                  help="Write the preview pictures: render_fitted.png, views.png, fit_overlay.png, "
                                       "skin_overlay.png, uv_position.png (no later stage reads them)."),
    max_side: int = typer.Option(DEFAULTS.max_side, "--max-side", min=256, help=MAX_SIDE_HELP),
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
    """Recover a complete UV texture from each photo and export a textured mesh.

    Writes into OUT/<stem>/: fit.json, fit_overlay.png, uv_texture.png, uv_mask.png, uv_position.npy,
    uv_complete.png, uv_provenance.png, textured.obj/.mtl/.glb, render_fitted.png, views.png and
    complete.json. Each folder is written aside and swapped in whole when done, replacing an
    earlier run's folder; an unwrap folder input keeps its fit and unwrap files.
    """
    unwrap_dirs = [Path(p) for p in photos if (Path(p) / "unwrap.json").is_file()]
    inputs = expand_inputs([p for p in photos if Path(p) not in unwrap_dirs], recursive=recursive)
    method_options = {"pca_path": str(pca)} if pca is not None else {}
    if pca is not None and method not in ("pca", "blend", "uvapm"):
        raise typer.BadParameter("--pca goes with --method pca, blend or uvapm", param_hint="--pca")
    for flag, value, key, owner in (("--iterations", iterations, "iterations", "uvapm"),
                                    ("--detail", detail, "detail", "uvapm"),
                                    ("--detail-strength", detail_strength, "detail_strength", "uvapm"),
                                    ("--albedo-space", albedo_space, "albedo_space", "mirror")):
        if value is not None:
            if method != owner:
                raise typer.BadParameter(f"{flag} goes with --method {owner}", param_hint=flag)
            method_options[key] = value
    if model_dir is not None:
        if method not in ("unet", "diffusion", "uvapm", "gan"):
            raise typer.BadParameter("--model goes with --method unet, diffusion, uvapm or gan", param_hint="--model")
        if detail is False:
            raise typer.BadParameter("--model (a detail VAE) goes with --detail, not --no-detail", param_hint="--model")
        method_options["model_path"] = str(model_dir)
    diffusion_options = {"structure_path": None if structure_dir is None else str(structure_dir), "steps": steps,
                         "guidance": guidance, "seed": seed, "scheduler": scheduler, "colour_match": colour_match}
    for key, value in diffusion_options.items():
        if value is None:
            continue
        if method != "diffusion":
            flag = {"structure_path": "--structure-model", "colour_match": "--colour-match"}.get(key, f"--{key}")
            if key == "seed" and method == "uvapm":  # the albedo fit is seeded too
                method_options[key] = value
                continue
            raise typer.BadParameter(f"{flag} goes with --method diffusion", param_hint=flag)
        method_options[key] = value
    if method in ("unet", "diffusion", "gan", "uvapm"):
        method_options["device"] = device
    elif device != "auto":
        raise typer.BadParameter("--device goes with --method unet, diffusion, gan or uvapm", param_hint="--device")
    options = CompleteOptions(method=method, uv_size=uv_size, face=face, landmarks=landmarks, subdivide=subdivide,
                              glb=glb, previews=previews, max_side=max_side, method_options=method_options,
                              delight=delight, occlusion_mask=occlusion_mask)
    settings = batch_settings(workers, shard, executor, dask_scheduler)
    prepare_output_root(out, clean=not settings.shared_output)
    names = output_names(inputs.files)
    report_renames(names)
    job = Job(complete_job, {"out": out, "options": options, "face_model": face_model, "unwrap_dirs": unwrap_dirs,
                             "names": names})

    def name_of(path: Path) -> str:
        return path.name if path in unwrap_dirs else names[path]

    results = run_batch(unwrap_dirs + inputs.files, job, name_of=lambda p: p.name, shard_key=name_of, inputs=inputs,
                        skip=(lambda p: outputs_exist(out, name_of(p), "complete.json")) if skip_existing else None,
                        description="complete", debug=debug, settings=settings)
    raise typer.Exit(print_summary(results, "complete"))


def complete_job(out: Path, options: CompleteOptions, face_model: str, unwrap_dirs: list[Path],
                 names: dict[Path, str]):
    """The per-input function of ``complete`` (a :class:`~facetex_cli.batch.Job` factory): the face model
    and the :class:`Completer` load here, once per process."""
    model, subdivide = face_model_for(face_model, options.subdivide)
    completer = Completer(dataclasses.replace(options, subdivide=subdivide), model=model)

    def process(path: Path) -> Done:
        folders = [completer.run_from_unwrap(path, out)] if path in unwrap_dirs else \
            completer.run(path, out, name=names[path])
        return Done(folders=folders, warnings=[f"{folder.name}: {note}" if len(folders) > 1 else note
                                               for folder in folders for note in Completer.notes(folder)])

    return process
