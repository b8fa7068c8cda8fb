"""``facetex unwrap``: sample the visible UV texels from the photo through the fitted mesh."""

from __future__ import annotations

from pathlib import Path

import typer

from facetex_cli.batch import expand_inputs, print_summary, run_batch
from facetex_cli.common import DEBUG_OPTION, OUT_OPTION, SKIP_OPTION, find_artifacts, outputs_exist
from facetex_cli.fit import MAX_SIDE_HELP
from stages.core.face_model import load_builtin_face_model
from stages.core.image_io import DEFAULT_MAX_SIDE, load_photo
from stages.fit import FitResult
from stages.unwrap import EROSION_FRACTION, UV_SIZE_RANGE, unwrap_photo


def unwrap_command(
    photos: list[str] = typer.Argument(..., help="Photo files, folders or globs."),
    fit: Path = typer.Argument(..., help="A fit.json, or the output root of `facetex fit` (holds <stem>/fit.json)."),
    out: Path = OUT_OPTION,
    uv_size: int = typer.Option(512, "--uv-size", min=UV_SIZE_RANGE[0], max=UV_SIZE_RANGE[1],
                                help="UV texture side in texels."),
    erosion: float = typer.Option(EROSION_FRACTION, "--erosion", min=0.0, max=0.2,
                                  help="Silhouette erosion as a fraction of the face width."),
    delight: bool = typer.Option(False, "--delight/--no-delight",
                                 help="Divide by the fitted SH shading (albedo-like; relight with render --sh)."),
    max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", min=256, help=MAX_SIDE_HELP),
    skip_existing: bool = SKIP_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Unwrap the visible face texture into UV space.

    Writes OUT/<stem>/uv_texture.png (RGBA, alpha = confidence), uv_mask.png, uv_position.npy
    (+ .png preview) and unwrap.json.
    """
    inputs = expand_inputs(photos)
    if fit.is_file() and len(inputs.files) > 1:
        raise typer.BadParameter("a single fit.json goes with a single photo; pass the fit output root instead",
                                 param_hint="FIT")
    model = load_builtin_face_model()

    def process(path: Path) -> str:
        fit_paths = find_artifacts(fit, path.stem, "fit.json")
        photo = load_photo(path, max_side=max_side)
        coverage = []
        for fit_path in fit_paths:
            result = unwrap_photo(photo.rgb, FitResult.load(fit_path), model=model, uv_size=uv_size, erosion=erosion,
                                  delight=delight)
            result.save(out / result.stem)
            coverage.append(f"{result.info['coverage']:.0%}")
        return "coverage " + ", ".join(coverage)

    results = run_batch(inputs.files, process, name_of=lambda p: p.name, missing=inputs.missing,
                        skip=(lambda p: outputs_exist(out, p.stem, "unwrap.json")) if skip_existing else None,
                        description="unwrap", debug=debug)
    raise typer.Exit(print_summary(results, "unwrap"))
