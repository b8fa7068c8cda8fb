"""``facetex assets``: face models from the user's own files (BFM, FLAME), kept in the user data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape

from facetex_cli.common import DEBUG_OPTION, build_or_exit, console

assets_app = typer.Typer(no_args_is_help=True, help="Add face models from your own files (BFM, FLAME): checked, "
                                                    "converted once into the user data folder, never downloaded.")


@assets_app.command("add")
def add_command(
    kind: Literal["bfm", "flame"] = typer.Argument(..., help="bfm (01_MorphableModel.mat or model2017-1_*.h5) or "
                                                             "flame (generic_model.pkl)."),
    path: Path = typer.Argument(..., help="The model file you obtained from its authors."),
    uv: Path = typer.Option(None, "--uv", help="Texture coordinates: FLAME_texture.npz (vt, ft) or an OBJ with vt "
                                               "over the model's vertices (head_template_mesh.obj). Required for "
                                               "FLAME; for BFM without it the mean is flattened onto a disk.",
                    show_default="none"),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Check PATH, record its sha256, convert it (landmark correspondence included) into the data folder
    ($FACETEX_DATA or ~/.local/share/facetex) and make it what --face-model KIND loads."""
    from stages.core.user_assets import add_user_model, models_dir

    record = build_or_exit(lambda: add_user_model(kind, path, uv), debug)
    info = record["conversion"]
    console.print(f"added {record['variant']} as {escape(record['name'])}: {info['n_vertices']} vertices, "
                  f"{info['n_modes']} modes, UV {info['uv']}; landmark embedding median "
                  f"{info['embedding_distance_p50_mm']:.1f} mm off the surface; "
                  f"{escape(str(models_dir() / record['model_file']))}", highlight=False, soft_wrap=True)
    console.print(f"use it with --face-model {kind}", highlight=False)


@assets_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json/--no-json", help="Print the full records (source path and sha256, "
                                                                  "UV file, conversion statistics) as JSON."),
) -> None:
    """The user models added (kind, name, source file and sha256)."""
    import json

    from stages.core.user_assets import KINDS, models_dir

    records = {}
    for kind in KINDS:
        path = models_dir() / f"{kind}.json"
        if not path.exists():
            records[kind] = None
            if not as_json:
                console.print(f"{kind}: not added", highlight=False)
            continue
        try:
            record = records[kind] = json.loads(path.read_text())
            if as_json:
                continue
            console.print(f"{kind}: {escape(record['name'])} from {escape(record['source'])} "
                          f"(sha256 {record['source_sha256'][:12]}...)", highlight=False, soft_wrap=True)
        except (OSError, ValueError, KeyError):
            records[kind] = "unreadable"
            console.print(f"{kind}: unreadable record {escape(str(path))}", highlight=False)
    if as_json:
        typer.echo(json.dumps(records, indent=2))
