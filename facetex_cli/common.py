"""Options and lookups shared by several commands."""

from __future__ import annotations

import dataclasses
import glob
import inspect
import os
import tempfile
import typing
from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape

from facetex_cli.batch import (
    BatchSettings,
    console,
    default_workers,
    parse_shard,
    quiet_native_stderr,
    silence_native_stderr,
)
from stages.core.atomic import clean_stale_temporaries
from stages.core.errors import FacetexError, MissingArtifactError

OUT_OPTION = typer.Option(Path("facetex_out"), "--out", "-o",
                          help="Output root; each input writes OUT/<stem>/ (inputs sharing a stem: "
                               "OUT/<stem>_<suffix>/).")
RECURSIVE_OPTION = typer.Option(False, "--recursive/--no-recursive", "-r",
                                help="Also take the photos in the subfolders of folders given as inputs.")
SKIP_OPTION = typer.Option(False, "--skip-existing/--no-skip-existing",
                           help="Skip inputs whose outputs already exist (resume a batch).")
OCCLUSION_OPTION = typer.Option(True, "--occlusion-mask/--no-occlusion-mask",
                                help="Keep only face skin (plus brows, eyes, lips, nostrils): hair, hands, glasses "
                                     "and background are never unwrapped or mirrored (skin_mask.png, "
                                     "uv_occluded.png). --no-occlusion-mask: geometry only, for comparisons.")
WORKERS_OPTION = typer.Option(None, "--workers", "-w", min=1, envvar="FACETEX_WORKERS",
                              help="Worker processes (each loads the models once and runs one thread); 1 runs in "
                                   "this process. With --executor dask: the local cluster's size when no "
                                   "--dask-scheduler is given.", show_default="the machine's cores")
SHARD_OPTION = typer.Option(None, "--shard", metavar="I/N",
                            help="Process only shard I of N (1 <= I <= N) of the inputs: those whose output name "
                                 "hashes (sha1) to I, so N array jobs over a shared filesystem split any batch "
                                 "without overlap (docs/CLUSTER.md).", show_default="all inputs")
EXECUTOR_OPTION = typer.Option("local", "--executor",
                               help="local: a process pool here (--workers); dask: a Dask cluster (--dask-scheduler; "
                                    "needs facetex's dask extra, see docs/CLUSTER.md).")
SCHEDULER_OPTION = typer.Option(None, "--dask-scheduler", metavar="ADDRESS",
                                help="--executor dask: the scheduler (e.g. tcp://head:8786).",
                                show_default="a local cluster of --workers processes")
DEBUG_OPTION = typer.Option(False, "--debug/--no-debug", help="Show tracebacks and native library logs.")
#: The papers behind the methods, named by title in the help (never by their seed number).
PAPER_FREEUV = "FreeUV"
PAPER_YIN = "Weakly-supervised photo-realistic texture generation (Yin et al.)"
PAPER_UVAPM = "UVAPM (Dai et al.)"
PAPER_SLOSSBERG = "Unsupervised high-fidelity facial texture generation and reconstruction (Slossberg et al.)"

#: Landmark backends (:func:`stages.fit.make_landmarker`).
LandmarksChoice = Literal["mediapipe", "face-alignment"]
LANDMARKS_OPTION = typer.Option("mediapipe", "--landmarks",
                                help="Landmark backend: 'mediapipe' (built in, 478 points) or 'face-alignment' "
                                     "(optional extra, 68 points, only with its weights already on disk).")


#: Face models (:func:`stages.core.ict.load_face_model`): a name, checked when the model is loaded.
FaceModelChoice = str
FACE_MODEL_OPTION = typer.Option("mediapipe", "--face-model",
                                 help="Face model: 'mediapipe' (the face mask in the MediaPipe topology), 'ict' "
                                      "(ICT-FaceKit head with ears and neck; texture in ICT's UV layout, tiles "
                                      "1001|1002 side by side), or your own 'bfm' / 'flame' (after `facetex assets "
                                      "add`; or bfm:PATH, flame:PATH,UV_FILE). Skin only: no eyeball or teeth "
                                      "textures. Morphable heads are dense already, so --subdivide does not apply. "
                                      "fit, unwrap, complete and render must agree.")


def face_model_for(name: str, subdivide: int = 0, debug: bool = False):
    """The face model for ``--face-model NAME`` and the subdivision levels it takes (0 for a morphable
    head: dense already, and split at UV seams); a bad name or a missing user model is one line, exit 2."""
    from stages.core.ict import load_face_model

    try:
        model = build_or_exit(lambda: load_face_model(name), debug)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--face-model") from None
    return model, (0 if model.landmark_embedding is not None else subdivide)


ExecutorChoice = Literal["local", "dask"]


def batch_settings(workers: int | None, shard: str | None, executor: str = "local",
                   scheduler: str | None = None) -> BatchSettings:
    """The :class:`BatchSettings` of a command's ``--workers --shard --executor --dask-scheduler``."""
    try:
        parsed = parse_shard(shard)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None
    if scheduler is not None and executor != "dask":
        raise typer.BadParameter("--dask-scheduler goes with --executor dask", param_hint="--dask-scheduler")
    return BatchSettings(workers=workers or default_workers(), shard=parsed, executor=executor, scheduler=scheduler)


def build_or_exit(factory, debug: bool = False):
    """Build a model/detector before a batch; an expected failure is one line and exit code 2."""
    silence_native_stderr(debug)
    try:
        with quiet_native_stderr(not debug):
            return factory()
    except FacetexError as exc:
        console.print(f"[red]error[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def prepare_output_root(out: Path, clean: bool = True) -> None:
    """Check once, before any work, that the output root ``out`` is a writable folder (creating it),
    and (with ``clean``) remove the temporaries interrupted runs left there; an unusable root is one line
    and exit 2.

    ``clean=False`` for runs that share ``out`` with other machines (``--shard``, ``--executor dask``):
    a temporary is stale when its process id is not running *here*, so a cleanup would delete the
    temporaries other nodes are writing."""
    try:
        if out.exists() and not out.is_dir():
            raise FacetexError(out, "the output folder (-o) exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".facetex-write-test.p{os.getpid()}.", suffix=".part", dir=out)
        os.close(fd)
        os.unlink(probe)
    except FacetexError as exc:
        console.print(f"[red]error[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        console.print(f"[red]error[/red] {escape(str(out))}: the output folder (-o) is not writable "
                      f"({escape(exc.strerror or str(exc))})", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    removed = clean_stale_temporaries(out) if clean else []
    if removed:
        console.print(f"removed {len(removed)} temporary file(s)/folder(s) left in {out} by an interrupted run",
                      markup=False, highlight=False, soft_wrap=True)


def outputs_exist(out: Path, stem: str, marker: str) -> bool:
    """True when ``OUT/<stem>/<marker>`` (or, for multi-face runs, ``OUT/<stem>_face*/<marker>``) exists."""
    return (out / stem / marker).is_file() or any(out.glob(f"{glob_escape(stem)}_face*/{marker}"))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def find_artifacts(root: Path, stem: str, name: str) -> list[Path]:
    """Locate an earlier stage's artifact for a photo stem.

    ``root`` is either the artifact file itself or an output root holding ``<stem>/<name>`` (or
    ``<stem>_face<i>/<name>`` for multi-face fits).
    """
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise MissingArtifactError(root, "no such file or folder")
    direct = root / stem / name
    if direct.is_file():
        return [direct]
    if (root / name).is_file() and root.name == stem:
        return [root / name]
    faces = sorted(root.glob(f"{glob_escape(stem)}_face*/{name}"))
    if faces:
        return faces
    raise MissingArtifactError(root / stem / name, f"not found (run the stage that writes {name} first)")



def artifact_folders(patterns: list[str], marker: str) -> tuple[list[Path], list[str]]:
    """Stage output folders holding ``marker`` (e.g. ``unwrap.json``), named by the folders themselves,
    by output roots (every ``ROOT/*/marker``), by the marker file, or by globs of any of these; also
    the patterns that matched nothing."""
    found: dict[Path, None] = {}
    missing: list[str] = []
    for pattern in patterns:
        candidates = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))] if glob.has_magic(pattern) \
            else [Path(pattern)]
        matched = False
        for path in candidates:
            if (path / marker).is_file():
                found.setdefault(path, None)
                matched = True
            elif path.is_file() and path.name == marker:
                found.setdefault(path.parent, None)
                matched = True
            elif path.is_dir():
                children = sorted(p.parent for p in path.glob(f"*/{marker}"))
                for child in children:
                    found.setdefault(child, None)
                matched = matched or bool(children)
        if not matched:
            missing.append(pattern)
    return list(found), missing


def training_folders_or_exit(patterns: list[str], marker: str, hint: str) -> list[Path]:
    """The training folders of a ``facetex train`` command: :func:`artifact_folders` holding
    ``marker``, minus the London hold-out people (:func:`stages.core.splits.split_holdout_folders`);
    warns about patterns that matched nothing (``hint`` says which command makes ``marker``) and
    exits with status 2 when nothing is left."""
    from facetex_cli.batch import console
    from stages.core.splits import split_holdout_folders

    found, missing = artifact_folders(patterns, marker)
    for pattern in missing:
        console.print(f"warning {pattern}: no folder with {marker} ({hint})", markup=False)
    folders, held = split_holdout_folders(found)
    if held:
        console.print(f"skipped {len(held)} London hold-out folders (person % 5 == 0, kept for benchmarks), "
                      f"e.g. {held[0]}", markup=False)
    if not folders:
        console.print("error no training folders found", markup=False)
        raise typer.Exit(2)
    return folders

#: ``--device`` of every command that runs a network (see :func:`stages.models.device.resolve_device`).
DEVICE_OPTION = typer.Option("auto", "--device", help="Where networks run: auto (CUDA when available, else CPU), "
                                                     "cpu, cuda or cuda:N.")


def config_parameters(cls, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One typer option per field of the config dataclass ``cls`` that has a help text
    (``stages.train.runner.run_field``): ``--field-name`` (``--x/--no-x`` for booleans), the field's
    default, its help and typer settings (``min``, ``max``, ``show_default``; ``choices`` makes a
    choice, ``path=True`` a path). A subclass that only changes a default inherits the help of the
    field it redeclares. So each default and help text exists once, next to the field."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        meta = next((base.__dataclass_fields__[f.name].metadata for base in cls.__mro__
                     if f.name in getattr(base, "__dataclass_fields__", {})
                     and base.__dataclass_fields__[f.name].metadata.get("help")), None)
        if meta is None or f.name in exclude:
            continue
        cli = dict(meta.get("cli", {}))
        choices, is_path = cli.pop("choices", None), cli.pop("path", False)
        annotation = hints[f.name]
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if inner and type(None) in typing.get_args(annotation):
            annotation = inner[0]                     # Optional[X]: default None, typed X
        if choices is not None:
            annotation = Literal[tuple(choices)]
        elif is_path:
            annotation = Path
        flag = "--" + f.name.replace("_", "-")
        decl = f"{flag}/--no-{flag[2:]}" if annotation is bool else flag
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                        default=typer.Option(f.default, decl, help=meta["help"], **cli)))
    return params


def with_parameters(params: list[inspect.Parameter]):
    """Give a ``def command(**options)`` function the typer signature ``params`` (typer reads
    ``inspect.signature`` and the annotations)."""
    def decorate(func):
        func.__signature__ = inspect.Signature(params)
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func
    return decorate
