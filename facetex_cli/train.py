"""``facetex train``: models learned from the artifacts on disk (``unet``: the UV generator of Yin et al.,
"Weakly-supervised photo-realistic texture generation")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facetex_cli.batch import console
from facetex_cli.common import DEBUG_OPTION, build_or_exit, training_folders_or_exit
from stages.train.trainer import PRESETS, TrainConfig

_D = TrainConfig()

train_app = typer.Typer(no_args_is_help=True, help="Train models from fit/unwrap/pseudo-gt outputs.")


@train_app.command("unet")
def train_unet_command(
    data: list[str] = typer.Option(..., "--data", help="Output folders (or their root) holding fit.json, the unwrap "
                                                      "and uv_pseudo.png (run fit, unwrap, pseudo-gt first)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (config.json + weights.safetensors)."),
    preset: Literal[tuple(PRESETS)] = typer.Option(_D.preset, "--preset",
                                                   help="Model size: tiny (tests), small (CPU), base (GPU)."),
    steps: int = typer.Option(_D.steps, "--steps", min=1, help="Training steps."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", min=1, help="Samples per step."),
    uv_size: int = typer.Option(_D.uv_size, "--uv-size", min=32, max=1024, help="Training UV side in texels."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of initialisation and sampling (same seed, same run)."),
    view_size: int = typer.Option(_D.view_size, "--view-size", min=0, max=1024,
                                  help="Side of the face renders for the render L1 / face discriminator / identity "
                                       "losses (0: UV losses only; then the photos are not read)."),
    w_render: float = typer.Option(_D.w_render, "--w-render", min=0.0, help="Weight of the render L1 loss."),
    w_face_adv: float = typer.Option(_D.w_face_adv, "--w-face-adv", min=0.0, help="Weight of the face discriminator."),
    identity_model: Path = typer.Option(None, "--identity-model", help="TorchScript face-embedding network for the "
                                        "identity loss (see data_manifests/evaluation_models.md).",
                                        show_default="none: no identity loss"),
    w_id: float = typer.Option(_D.w_id, "--w-id", min=0.0, help="Weight of the identity loss."),
    augment: bool = typer.Option(True, "--augment/--no-augment",
                                 help="Random relighting and recolouring of every sample (stages/train/augment.py)."),
    sample_every: int = typer.Option(_D.sample_every, "--sample-every", min=0,
                                     help="Write a sample sheet every N steps."),
    checkpoint_every: int = typer.Option(_D.checkpoint_every, "--checkpoint-every", min=0,
                                         help="Checkpoint every N steps."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/training_state if present."),
    cpu: bool = typer.Option(False, "--cpu/--no-cpu", help="Force CPU even when CUDA is available."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train the UV generator of Yin et al.'s weakly-supervised texture generation (no ground truth).

    Writes a model folder.

    Works under `accelerate launch` unchanged for multi-GPU / multi-node training.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.train.trainer import train_uv_generator

    folders = training_folders_or_exit(data, "uv_pseudo.png", "run `facetex pseudo-gt`")
    try:
        config = TrainConfig(preset=preset, steps=steps, batch_size=batch_size, uv_size=uv_size, seed=seed,
                             sample_every=sample_every, checkpoint_every=checkpoint_every, view_size=view_size,
                             w_render=w_render, w_face_adv=w_face_adv, w_id=w_id,
                             identity_model=str(identity_model) if identity_model is not None else None,
                             augment={} if augment else {"probability": 0.0})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    model = load_builtin_face_model()
    progress = Progress(TextColumn("[bold]train unet"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[losses]}"), console=console, disable=not console.is_terminal)
    with progress:
        task = progress.add_task("train", total=steps, losses="")

        def update(step: int, total: int, losses: dict) -> None:
            progress.update(task, completed=step,
                            losses=" ".join(f"{k} {v:.4f}" for k, v in losses.items()))

        result = build_or_exit(lambda: train_uv_generator(folders, out, config, model=model, resume=resume,
                                                          cpu=cpu or None, progress=update), debug)
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"reconstruction L1 {result.get('rec', float('nan')):.4f}; model written to {out}", markup=False)
from facetex_cli import train_sampler  # noqa: E402,F401  (registers its commands)
from facetex_cli import train_diffusion  # noqa: E402,F401  (registers its commands)
