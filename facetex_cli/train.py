"""``facetex train``: models learned from the artifacts on disk (``unet``: the UV generator of Yin et al.,
"Weakly-supervised photo-realistic texture generation").

Every ``train`` command is built the same way: ``--data`` and ``-o``, one option per field of the
model's config dataclass (:func:`facetex_cli.common.config_parameters`, defaults and help written once
next to the fields), the runner's options (:data:`RUN_PARAMETERS`), and :func:`run_training` for the
progress bar and one-line errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facetex_cli.batch import console
from facetex_cli.common import (DEBUG_OPTION, DEVICE_OPTION, build_or_exit, config_parameters,
                                training_folders_or_exit, with_parameters)
from stages.train.trainer import TrainConfig

train_app = typer.Typer(no_args_is_help=True, help="Train models from fit/unwrap/pseudo-gt outputs.")


def _option(name: str, annotation, option) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def data_parameters(data_help: str) -> list[inspect.Parameter]:
    """``--data`` (what the command reads, ``data_help``) and ``--out/-o``."""
    return [_option("data", list[str], typer.Option(..., "--data", help=data_help)),
            _option("out", Path, typer.Option(..., "--out", "-o", help="Model folder to write (config.json + "
                                                                      "weights, samples/, training_state/)."))]


#: The options of the training runner every ``train`` command has (not saved with the model).
RUN_PARAMETERS = [
    _option("resume", bool, typer.Option(True, "--resume/--no-resume",
                                         help="Continue from OUT/training_state if present.")),
    _option("device", str, DEVICE_OPTION),
    _option("workers", int, typer.Option(0, "--workers", min=0, help="DataLoader worker processes preparing "
                                                                     "samples (rasterization) in parallel.")),
    _option("cpu", bool, typer.Option(False, "--cpu", hidden=True, help="Old spelling of --device cpu.")),
    _option("debug", bool, DEBUG_OPTION),
]


def config_or_exit(cls, **settings):
    """The config dataclass from the options; its validation error is a usage error (exit 2)."""
    try:
        return cls(**settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def run_training(label: str, total: int, train: Callable[..., dict], run: dict, shown: tuple[str, ...] = ()) -> dict:
    """Call ``train(resume=, device=, num_workers=, progress=)`` under a rich progress bar showing the
    losses (``shown``, or all of them); a FacetexError is one line and exit 2."""
    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[losses]}"), console=console, disable=not console.is_terminal)
    with progress:
        task = progress.add_task("train", total=total, losses="")

        def update(step: int, _total: int, losses: dict) -> None:
            progress.update(task, completed=step, losses=" ".join(f"{k} {losses[k]:.4f}" for k in shown or losses))

        return build_or_exit(lambda: train(resume=run["resume"], device="cpu" if run["cpu"] else run["device"],
                                           num_workers=run["workers"], progress=update), run["debug"])


def split_run_options(options: dict) -> dict:
    """Remove the runner's options (:data:`RUN_PARAMETERS`) from ``options`` and return them."""
    return {p.name: options.pop(p.name) for p in RUN_PARAMETERS}


def training_inputs(options: dict, marker: str, make_it: str) -> tuple[dict, list, Path]:
    """Remove the runner's options and ``--data`` / ``--out`` from ``options``; returns ``(runner options,
    the training folders under --data holding ``marker`` (one line and exit 2 if none; hold-out people
    skipped), the output folder)``. ``make_it``: the command that writes ``marker``."""
    run = split_run_options(options)
    folders = training_folders_or_exit(options.pop("data"), marker, make_it)
    return run, folders, options.pop("out")


@train_app.command("unet")
@with_parameters(data_parameters("Output folders (or their root) holding fit.json, the unwrap and uv_pseudo.png "
                                 "(run fit, unwrap, pseudo-gt first).")
                 + config_parameters(TrainConfig)
                 + [_option("augment", bool, typer.Option(True, "--augment/--no-augment",
                                                          help="Random relighting and recolouring of every sample "
                                                               "(stages/train/augment.py)."))]
                 + RUN_PARAMETERS)
def train_unet_command(**options) -> None:
    """Train the UV generator of Yin et al.'s weakly-supervised texture generation (no ground truth).

    Writes a model folder.

    Works under `accelerate launch` unchanged for multi-GPU / multi-node training.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.train.trainer import train_uv_generator

    run, folders, out = training_inputs(options, "uv_pseudo.png", "run `facetex pseudo-gt`")
    identity, augment = options.pop("identity_model"), options.pop("augment")
    config = config_or_exit(TrainConfig, **options, identity_model=str(identity) if identity is not None else None,
                            augment={} if augment else {"probability": 0.0})
    model = load_builtin_face_model()
    result = run_training("train unet", config.steps,
                          lambda **kw: train_uv_generator(folders, out, config, model=model, **kw), run)
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"reconstruction L1 {result.get('rec', float('nan')):.4f}; model written to {out}", markup=False)


from facetex_cli import train_sampler  # noqa: E402,F401  (registers its commands)
from facetex_cli import train_diffusion  # noqa: E402,F401  (registers its commands)
from facetex_cli import train_detail_vae  # noqa: E402,F401  (registers its commands)
from facetex_cli import train_texture_gan  # noqa: E402,F401  (registers its commands)
from facetex_cli import train_parser  # noqa: E402,F401  (registers its commands)
