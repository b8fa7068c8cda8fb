"""``facetex build-pca``: learn the per-channel PCA albedo model from many unwraps -> ``albedo_pca.h5``."""

from __future__ import annotations

import inspect
import time
import traceback
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from facetex_cli.batch import console
from facetex_cli.common import DEBUG_OPTION, artifact_folders
from stages.core.errors import FacetexError
from stages.pca import build_albedo_pca

#: The defaults of :func:`stages.pca.build_albedo_pca`, shown by the options.
_DEFAULTS = {name: p.default for name, p in inspect.signature(build_albedo_pca).parameters.items()}
UNWRAPS_HELP = "Unwrap folders (each holding unwrap.json), or roots holding <stem>/unwrap.json; globs work."


def _error(message: str) -> None:
    console.print(f"[red]error[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _warning(message: str) -> None:
    console.print(f"[yellow]warning[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def build_pca_command(
    unwraps: list[str] = typer.Argument(..., help=UNWRAPS_HELP),
    out: Path = typer.Option(Path("albedo_pca.h5"), "--out", "-o",
                             help="Model file to write; the component sheet goes next to it as <stem>.png."),
    uv_size: int = typer.Option(_DEFAULTS["resolution"], "--uv-size", min=64, max=512,
                                help="UV side of the model in texels."),
    resolution: int = typer.Option(None, "--resolution", min=64, max=512, hidden=True,
                                   help="Deprecated name of --uv-size."),
    components: int = typer.Option(_DEFAULTS["n_components"], "--components", min=1,
                                   help="Principal components per colour channel."),
    iterations: int = typer.Option(_DEFAULTS["iterations"], "--iterations", min=0,
                                   help="EM rounds re-estimating the missing texels after the initial PCA."),
    seed: int = typer.Option(_DEFAULTS["seed"], "--seed", help="Seed of the randomized SVD (same seed, same model)."),
    shape: bool = typer.Option(False, "--shape", help="Build a shape PCA of the fitted meshes instead (folders "
                                                      "holding fit.json; -o shape.npz) for `facetex generate`."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Learn a per-channel PCA albedo model (UVAPM, Dai et al.) from incomplete unwraps (EM-PCA over missing texels).

    Writes OUT (HDF5: mean, bases, variances, provenance) and OUT's <stem>.png, the mean and the
    first components at +-2 sigma. Unreadable unwrap folders are skipped with a warning; the model
    is still written from the rest, and the exit code is then 1.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import save_png
    from stages.pca import component_sheet

    if shape:
        _build_shape(unwraps, out, components)
        return
    if resolution is not None:
        _warning("--resolution is deprecated; it is now called --uv-size")
        uv_size = resolution
    folders, missing = artifact_folders(unwraps, "unwrap.json")
    for pattern in missing:
        _warning(f"{pattern}: no unwrap folder (no unwrap.json here or in its subfolders)")
    if not folders:
        _error("no unwrap folders found in " + ", ".join(unwraps))
        raise typer.Exit(1)

    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]build-pca"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeElapsedColumn(), TextColumn("{task.description}"), console=console, transient=True,
                        disable=not console.is_terminal)
    try:
        with progress:
            task = progress.add_task("", total=1000)

            def update(message: str, fraction: float) -> None:
                progress.update(task, completed=round(1000 * min(max(fraction, 0.0), 1.0)), description=message)

            pca = build_albedo_pca(folders, out, model=load_builtin_face_model(), resolution=uv_size,
                                   n_components=components, iterations=iterations, seed=seed, progress=update,
                                   warn=_warning)
        sheet_path = out.parent / f"{out.stem}.png"
        save_png(sheet_path, component_sheet(pca))
    except FacetexError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None

    info = pca.info
    explained = " ".join(f"{name} {ratio:.1%}" for name, ratio in zip("RGB", info["explained_variance_ratio"],
                                                                      strict=False))
    skipped = f", {len(info['skipped'])} skipped" if info["skipped"] else ""
    console.print(f"build-pca: {info['sources']} maps from {len(folders)} folders{skipped}, R={pca.resolution}, "
                  f"K={pca.n_components}, missing {info['missing_fraction']:.0%}; explained variance {explained} "
                  f"-> {out}, {sheet_path} ({time.perf_counter() - start:.1f} s)",
                  highlight=False, markup=False, soft_wrap=True)
    if info["skipped"] or missing:
        raise typer.Exit(1)  # something named on the command line was not used


def _build_shape(patterns: list[str], out: Path, components: int) -> None:
    """``build-pca --shape``: :func:`stages.shape_model.build_shape_model` over the fits (London hold-out
    people skipped, as for every model facetex builds); a bad fit is a warning and exit 1, as above."""
    from stages.core.face_model import load_builtin_face_model
    from stages.core.splits import split_holdout_folders
    from stages.shape_model import build_shape_model

    if out.suffix != ".npz":
        _error(f"{out}: a shape model is an .npz file (use -o shape.npz)")
        raise typer.Exit(2)
    found, missing = artifact_folders(patterns, "fit.json")
    for pattern in missing:
        _warning(f"{pattern}: no fit folder (no fit.json here or in its subfolders)")
    folders, held = split_holdout_folders(found)
    if held:
        _warning(f"skipped {len(held)} London hold-out folders (person % 5 == 0, kept for benchmarks)")
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        _warning(message)

    try:
        model = build_shape_model(folders, load_builtin_face_model(), n_components=components, warn=warn)
        model.save(out)
    except FacetexError as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    total = float((model.stddev ** 2).sum())
    console.print(f"build-pca --shape: {len(model.sources)} fits, K={model.n_components}, first component "
                  f"{model.stddev[0] ** 2 / total:.0%} of the variance in K -> {out}", highlight=False, markup=False)
    if warnings or missing:
        raise typer.Exit(1)
