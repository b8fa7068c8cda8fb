"""``facetex evaluate``: metrics of result folders -> metrics.json, metrics.csv, report.html."""

from __future__ import annotations

import functools
import glob
from pathlib import Path
from typing import Literal

import typer

from facetex_cli.batch import Done, Job, console, print_summary, run_batch
from facetex_cli.common import (
    DEBUG_OPTION,
    DEVICE_OPTION,
    EXECUTOR_OPTION,
    SCHEDULER_OPTION,
    WORKERS_OPTION,
    ExecutorChoice,
    artifact_folders,
    batch_settings,
    build_or_exit,
)
from stages.completion import method_names
from stages.core.errors import MissingArtifactError


def evaluate_command(
    results: list[str] = typer.Argument(..., help="Result folders of `facetex complete` (OUT/<stem>/), or roots."),
    out: Path = typer.Option(Path("facetex_eval"), "--out", "-o", help="Where metrics.json/.csv and report.html go."),
    method: Literal[("none", *method_names())] = typer.Option(
        None, "--method", "-m",
        help="Completion method of the hidden-texel benchmark: a name overrides the one each folder's "
             "complete.json records ('none' skips the benchmark).",
        show_default="the method recorded in complete.json"),
    occlusion: bool = typer.Option(False, "--occlusion/--no-occlusion",
                                   help="Also run the occlusion protocol (synthetic occluders pasted on the photo, "
                                        "5 extra completions a photo): occlusion_psnr and leak_rate."),
    identity: bool = typer.Option(True, "--identity/--no-identity",
                                  help="Identity cosine with dlib's ResNet when face-recognition-models is installed."),
    clip_model: str = typer.Option(None, "--clip-model", help="TorchScript CLIP image encoder.",
                                   show_default="$FACETEX_CLIP_MODEL, else skipped"),
    dino_model: str = typer.Option(None, "--dino-model", help="TorchScript DINO encoder.",
                                   show_default="$FACETEX_DINO_MODEL, else skipped"),
    inception_model: str = typer.Option(None, "--inception-model", help="TorchScript Inception for FID.",
                                        show_default="$FACETEX_INCEPTION_MODEL, else skipped"),
    lpips_model: str = typer.Option(None, "--lpips-model", help="TorchScript LPIPS.",
                                    show_default="$FACETEX_LPIPS_MODEL, else skipped"),
    device: str = DEVICE_OPTION,
    debug: bool = DEBUG_OPTION,
    workers: int = WORKERS_OPTION,
    executor: ExecutorChoice = EXECUTOR_OPTION,
    dask_scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Score completed textures: reprojection, hidden-texel completion, symmetry, optional feature metrics.

    Each folder is scored with the face model its fit.json records (model_id: mediapipe or ict).

    Optional metrics whose model is not available are reported as "skipped: <reason>", never faked.
    Folders are scored in --workers processes; the set metrics (FID) and the report are made here.
    """
    from stages.evaluate.stage import run_settings, write_outputs

    if method is not None and method != "none" and method not in method_names():
        choices = ", ".join(["none", *method_names()])
        raise typer.BadParameter(f"unknown method {method!r}; choose from {choices}", param_hint="--method")
    from stages.models.device import resolve_device

    build_or_exit(lambda: resolve_device(device), debug)       # a bad --device: one line, before any work
    folders, missing = artifact_folders(results, "complete.json")
    # An input that exists but holds no finished result is not "no such file": say what is wrong with it.
    empty = [Path(p) for p in missing if _exists(p)]
    missing = [p for p in missing if not _exists(p)]
    models = {"clip": clip_model, "dino": dino_model, "inception": inception_model, "lpips": lpips_model,
              "identity": identity}
    optional = build_or_exit(lambda: _optional_models(**models), debug)
    for metric, reason in optional.skipped.items():
        console.print(f"skipped {metric}: {reason}", highlight=False, markup=False, soft_wrap=True)
    job = Job(evaluate_job, {"out": out, "method": method, "occlusion": occlusion, "device": device,
                             "models": models, "empty": empty})
    outcome = run_batch(empty + folders, job, name_of=lambda p: p.name, missing=missing, description="evaluate",
                        debug=debug, settings=batch_settings(workers, None, executor, dask_scheduler))
    evaluations = [r.value for r in outcome if r.status == "ok"]
    failures = {r.name: r.detail for r in outcome if r.status == "failed"}
    if evaluations:
        settings = run_settings(evaluations, None if method == "none" else (method or "recorded"), occlusion)
        write_outputs(out, evaluations, settings, optional, failures)
        console.print(f"wrote {out / 'metrics.json'}, {out / 'metrics.csv'}, {out / 'report.html'}", highlight=False)
    raise typer.Exit(print_summary(outcome, "evaluate"))


@functools.lru_cache(maxsize=1)
def _optional_models(**models):
    """:meth:`OptionalModels.load`, once per process for the same settings (the command and an in-process
    job share them)."""
    from stages.evaluate.stage import OptionalModels

    return OptionalModels.load(**models)


def evaluate_job(out: Path, method: str | None, occlusion: bool, device: str, models: dict, empty: list[Path]):
    """The per-folder function of ``evaluate`` (a :class:`~facetex_cli.batch.Job` factory): the optional
    metric networks load here and each face model's completion methods on first use, once per process.
    Each folder's :class:`~stages.evaluate.stage.ImageEvaluation` comes back as ``Done.value``."""
    from stages.evaluate.stage import MethodResolver, evaluate_result

    optional = _optional_models(**models)
    resolvers: dict[str, MethodResolver] = {}    # one per face model, each loading its methods once

    def process(folder: Path) -> Done:
        if folder in empty:
            raise MissingArtifactError(folder, _no_results_reason(folder))
        model = _face_model_of(folder)
        resolver = None if method == "none" else resolvers.setdefault(
            model.name, MethodResolver(model, override=method, device=device))
        scored = None if resolver is None else resolver.resolve(folder)
        evaluation = evaluate_result(folder, model, out / "images", method=scored, optional=optional,
                                     occlusion=occlusion)
        m = evaluation.metrics
        parts = [f"reproj PSNR {m['reproj_psnr']:.2f}" if m.get("reproj_psnr") is not None else "no photo"]
        if m.get("hidden_psnr") is not None:
            parts.append(f"hidden PSNR {m['hidden_psnr']:.2f} ({evaluation.hidden_texel['method']})")
        if m.get("leak_rate") is not None:
            parts.append(f"occlusion PSNR {m['occlusion_psnr']:.2f}, leak {m['leak_rate']:.1%}")
        return Done(", ".join(parts), value=evaluation)

    return process


def _face_model_of(folder: Path):
    """The built-in face model a result was made with, from its fit.json's ``model_id``."""
    from stages.core.ict import face_model_by_id
    from stages.fit import FitResult

    fit = FitResult.load(folder / "fit.json")
    return face_model_by_id(fit.model_id, folder / "fit.json")


def _exists(pattern: str) -> bool:
    return Path(pattern).exists() or (glob.has_magic(pattern) and bool(glob.glob(pattern, recursive=True)))


def _no_results_reason(path: Path) -> str:
    """Why an existing input is not something ``evaluate`` can score (one line, with the fix)."""
    make = "make result folders with `facetex complete PHOTOS -o OUT`, then evaluate OUT"
    if path.is_file():
        return f"is a file, not a `facetex complete` result folder (OUT/<stem>/ with complete.json); {make}"
    return f"exists but holds no `facetex complete` results (no complete.json in it or its subfolders); {make}"
