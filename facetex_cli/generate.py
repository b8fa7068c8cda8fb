"""``facetex generate``: random textured faces from a texture GAN (seed 003), each with a coupled mesh."""

from __future__ import annotations

from pathlib import Path

import typer

from facetex_cli.batch import console
from facetex_cli.common import DEBUG_OPTION, DEVICE_OPTION, build_or_exit, prepare_output_root
from stages.generate import GenerateOptions

_D = GenerateOptions()


def generate_command(
    n: int = typer.Option(_D.n, "-n", "--count", min=1, help="How many faces."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed (face i is the same for any N; same seed, same files)."),
    truncation: float = typer.Option(_D.truncation, "--truncation", min=0.01, max=2.0,
                                     help="Truncation psi of latent and shape (1: untruncated)."),
    out: Path = typer.Option(Path("facetex_generated"), "--out", "-o", help="Output folder."),
    model: Path = typer.Option(None, "--model", help="Model folder of `facetex train texture-gan`.",
                               show_default="the shipped London-trained generator"),
    shape_model: Path = typer.Option(None, "--shape-model",
                                     help="Shape PCA of `facetex build-pca --shape` (default: the face model's "
                                          "mean shape for every face).",
                                     show_default="none: the mean shape"),
    view_size: int = typer.Option(_D.view_size, "--view-size", min=64, max=2048, help="Side of each preview."),
    device: str = DEVICE_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Generate N random UV albedos with coupled meshes: OUT/face_NNN/ (uv_albedo.png, textured.obj/.mtl/.glb,
    views.png), OUT/contact_sheet.png, OUT/generate.json."""
    from stages.core.face_model import load_builtin_face_model
    from stages.generate import generate_faces

    prepare_output_root(out)
    options = GenerateOptions(n=n, seed=seed, truncation=truncation, view_size=view_size, device=device)
    from stages.completion.gan import shipped_texture_gan

    record = build_or_exit(lambda: generate_faces(model or shipped_texture_gan(), out, load_builtin_face_model(),
                                                  shape_model_path=shape_model, options=options), debug)
    console.print(f"generated {record['n']} faces ({record['geometry']}) in {record['seconds']:.1f} s -> {out} "
                  f"(contact_sheet.png)", markup=False)
