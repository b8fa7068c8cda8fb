"""``facetex render``: novel views, relighting, turntable and textured-mesh export of a UV texture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from facetex_cli.batch import Done, Job, expand_inputs, print_summary, run_batch
from facetex_cli.common import (
    EXECUTOR_OPTION,
    SCHEDULER_OPTION,
    SHARD_OPTION,
    WORKERS_OPTION,
    ExecutorChoice,
    batch_settings,
    DEBUG_OPTION,
    FACE_MODEL_OPTION,
    OUT_OPTION,
    SKIP_OPTION,
    FaceModelChoice,
    build_or_exit,
    face_model_for,
    find_artifacts,
    outputs_exist,
    prepare_output_root,
)
from stages.core.errors import BadInputError, FacetexError
from stages.core.image_io import load_texture, save_png
from stages.fit import FitResult
from stages.render import (
    compose_views,
    export_textured_mesh,
    normalised_light,
    render_on_photo,
    render_views,
    write_turntable,
)


def resolve_textures(patterns: list[str]):
    """Texture files from files, globs, result folders (``OUT/<stem>/`` -> its ``uv_complete.png``) and
    output roots (every ``OUT/*/uv_complete.png``); other folders contribute all their PNGs."""
    expanded = []
    for pattern in patterns:
        folder = Path(pattern)
        if folder.is_dir() and (folder / "uv_complete.png").is_file():
            expanded.append(str(folder / "uv_complete.png"))
        elif folder.is_dir() and any(folder.glob("*/uv_complete.png")):
            expanded.extend(str(p) for p in sorted(folder.glob("*/uv_complete.png")))
        else:
            expanded.append(pattern)
    return expand_inputs(expanded, suffixes={".png"})


def texture_stem(path: Path) -> str:
    """Output name of a texture: its folder's name for stage outputs (``<stem>/uv_*.png``), else its stem."""
    return path.parent.name if path.name.startswith("uv_") else path.stem


def load_sh(path: Path) -> np.ndarray:
    """SH lighting ``(9, 3)`` from a JSON list of 9 ``[r, g, b]`` rows, or from a fit.json's ``lighting_sh``.

    Raises:
        BadInputError: one line naming ``path`` and what is wrong (missing, unreadable, not JSON, no
            ``lighting_sh``, not 9x3 numbers, non-finite, or an ambient term that is not positive).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(path, "no such file (--sh wants a 9x3 JSON list or a fit.json)") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read --sh file ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInputError(path, "not a JSON file (--sh wants a 9x3 JSON list or a fit.json)") from None
    if isinstance(data, dict):
        if data.get("lighting_sh") is None:
            raise BadInputError(path, "has no 'lighting_sh' (--sh wants a 9x3 JSON list or a fit.json)")
        data = data["lighting_sh"]
    try:
        coeffs = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadInputError(path, "SH lighting must be a 9x3 list of numbers") from None
    if coeffs.shape != (9, 3):
        raise BadInputError(path, f"SH lighting must be a 9x3 list of numbers, got shape {coeffs.shape}")
    try:
        normalised_light(coeffs)
    except ValueError as exc:
        raise BadInputError(path, str(exc)) from None
    return coeffs


def parse_angles(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated degrees, got {text!r}") from None


def render_command(
    textures: list[str] = typer.Argument(
        None, show_default=False,
        help="UV texture PNGs or globs; a result folder OUT/<stem>/ or an output root OUT/ means their "
             "uv_complete.png."),
    fit: Path = typer.Argument(..., help="A fit.json, or an output root holding <stem>/fit.json."),
    out: Path = OUT_OPTION,
    yaws: str = typer.Option("-60,-30,0,30,60", "--yaws", help="Comma-separated novel-view yaw angles (degrees)."),
    pitch: float = typer.Option(0.0, "--pitch", help="Pitch of the novel views (degrees, + looks down)."),
    size: int = typer.Option(512, "--view-size", min=64, max=4096, help="Side of each novel view in pixels."),
    old_size: int = typer.Option(None, "--size", min=64, max=4096, hidden=True, help="Deprecated name of --view-size."),
    sh: Path = typer.Option(None, "--sh", help="Relight with these SH coefficients (9x3 JSON, or a fit.json).",
                            show_default="the fitted lighting"),
    turntable: bool = typer.Option(True, "--turntable/--no-turntable", help="Write turntable.gif."),
    subdivide: int = typer.Option(1, "--subdivide", min=0, max=3, help="Loop subdivision levels for smoother meshes."),
    glb: bool = typer.Option(True, "--glb/--no-glb", help="Also export textured.glb."),
    skip_existing: bool = SKIP_OPTION,
    face_model: FaceModelChoice = FACE_MODEL_OPTION,
    debug: bool = DEBUG_OPTION,
    workers: int = WORKERS_OPTION,
    shard: str = SHARD_OPTION,
    executor: ExecutorChoice = EXECUTOR_OPTION,
    dask_scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Render a UV texture on the fitted face and export a textured mesh.

    Writes OUT/<stem>/render_fitted.png (over the photo, if it is still where fit found it),
    render_yaw<+A>.png per angle, views.png, turntable.gif, textured.obj/.mtl/.png and textured.glb.
    """
    if not textures:
        # Click hands a lone path to FIT (the last, required argument) and would blame TEXTURES.
        missing = "UV texture" if fit.suffix.lower() == ".json" else "fit.json"
        raise typer.BadParameter(
            f"render needs TEXTURE... FIT and got one path, {fit}: the {missing} is missing. Call e.g. "
            "'facetex render out/photo/uv_complete.png out/photo/fit.json', or 'facetex render out out' "
            "(FIT may be the output root holding <stem>/fit.json)")
    size = size if old_size is None else old_size
    angles = parse_angles(yaws)
    light = build_or_exit(lambda: load_sh(sh)) if sh is not None else None
    inputs = resolve_textures(textures)
    settings = batch_settings(workers, shard, executor, dask_scheduler)
    prepare_output_root(out, clean=not settings.shared_output)
    job = Job(render_job, {"fit": fit, "out": out, "angles": angles, "pitch": pitch, "size": size, "light": light,
                           "turntable": turntable, "subdivide": subdivide, "glb": glb, "face_model": face_model})
    results = run_batch(inputs.files, job, name_of=lambda p: str(p), shard_key=texture_stem, inputs=inputs,
                        skip=(lambda p: outputs_exist(out, texture_stem(p), "textured.obj")) if skip_existing else None,
                        description="render", debug=debug, settings=settings)
    raise typer.Exit(print_summary(results, "render"))


def render_job(fit: Path, out: Path, angles: tuple[float, ...], pitch: float, size: int, light: np.ndarray | None,
               turntable: bool, subdivide: int, glb: bool, face_model: str):
    """The per-texture function of ``render`` (a :class:`~facetex_cli.batch.Job` factory)."""
    model, subdivide = face_model_for(face_model, subdivide)

    def process(path: Path) -> Done:
        stem = texture_stem(path)
        texture = load_texture(path)[..., :3]
        notes, folders = [], []
        fit_paths = find_artifacts(fit, stem, "fit.json")
        for fit_path in fit_paths:
            result = FitResult.load(fit_path)
            # One texture on several faces (`fit --face all`): one folder per face, named by the fit.
            target = out / (result.stem if len(fit_paths) > 1 else stem)
            views = render_views(texture, result, model, yaws=angles, pitch=pitch, size=size, sh=light,
                                 subdivide=subdivide)
            for yaw, view in zip(angles, views, strict=True):
                save_png(target / f"render_yaw{yaw:+04.0f}.png", view)
            save_png(target / "views.png", compose_views(views))
            if turntable:
                write_turntable(target / "turntable.gif", texture, result, model, sh=light, subdivide=subdivide)
            export_textured_mesh(target, texture, result.vertices, model, label=result.stem, subdivide=subdivide,
                                 glb=glb)
            try:
                rgb = result.load_fitted_photo()
            except FacetexError as exc:
                notes.append(f"no render_fitted.png: {exc}")
            else:
                save_png(target / "render_fitted.png",
                         render_on_photo(rgb, texture, result, model, sh=light, subdivide=subdivide))
            folders.append(target)
        return Done("; ".join(notes), folders)

    return process
