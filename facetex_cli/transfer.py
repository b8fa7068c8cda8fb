"""``facetex transfer``: move a UV texture to another face model's layout through the fitted surfaces."""

from __future__ import annotations

from pathlib import Path

import typer

from facetex_cli.batch import Done, print_summary, run_batch
from facetex_cli.common import DEBUG_OPTION, OUT_OPTION, FaceModelChoice, face_model_for, prepare_output_root


def transfer_command(
    texture: Path = typer.Argument(..., help="UV texture PNG in the layout of the fit's face model."),
    fit: Path = typer.Argument(..., help="The fit.json the texture was made from (its model_id names the source "
                                         "layout; its landmarks place both models)."),
    to: FaceModelChoice = typer.Option(..., "--to", help="Target face model: 'mediapipe', 'ict', or your own 'bfm' / "
                                                         "'flame' (after `facetex assets add`; or bfm:PATH, "
                                                         "flame:PATH,UV_FILE). The fit's own model is refused."),
    out: Path = OUT_OPTION,
    uv_size: int = typer.Option(None, "--uv-size", min=16, max=4096, help="Target texture size.",
                                show_default="the texture's size"),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Move a texture between UV layouts: OUT/<stem>/uv_<model>.png (RGBA; alpha 0 where the source surface
    has no point near the target's) and transfer.json (models, sizes, share of texels found, threshold)."""
    from stages.transfer import transfer_files

    prepare_output_root(out)
    face_model_for(to, debug=debug)  # a bad name or a model not added: one line before any work

    def process(texture_path: Path) -> Done:
        folder, result = transfer_files(texture_path, fit, to, out, uv_size)
        return Done(f"{result.found_share:.1%} of the {to.partition(':')[0]} layout found", folders=[folder])

    outcome = run_batch([texture], process, name_of=lambda p: p.name, description="transfer", debug=debug)
    raise typer.Exit(print_summary(outcome, "transfer"))
