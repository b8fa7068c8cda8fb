"""``facetex train sampler``: the learned UV sampler of Yin et al. (photo -> UV texel positions, no 3D
fit at inference)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facetex_cli.batch import console
from facetex_cli.common import DEBUG_OPTION, build_or_exit, training_folders_or_exit
from facetex_cli.train import train_app
from stages.train.sampler import PRESETS, SamplerTrainConfig

_D = SamplerTrainConfig()


@train_app.command("sampler")
def train_sampler_command(
    data: list[str] = typer.Option(..., "--data", help="Output folders (or their root) of `facetex fit` + `facetex "
                                                      "unwrap` (fit.json, unwrap.json, uv_texture.png; the photo "
                                                      "named by fit.json must be on disk)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (config.json + weights.safetensors)."),
    preset: Literal[tuple(PRESETS)] = typer.Option(_D.preset, "--preset",
                                                   help="Model size: tiny (tests), small (CPU), base (GPU)."),
    steps: int = typer.Option(_D.steps, "--steps", min=1, help="Training steps."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", min=1, help="Samples per step."),
    uv_size: int = typer.Option(_D.uv_size, "--uv-size", min=16, max=1024, help="Training UV side in texels."),
    lr: float = typer.Option(_D.lr, "--lr", min=0.0, help="Adam learning rate."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of initialisation and sampling (same seed, same run)."),
    sample_every: int = typer.Option(_D.sample_every, "--sample-every", min=0,
                                     help="Write a sample sheet every N steps."),
    checkpoint_every: int = typer.Option(_D.checkpoint_every, "--checkpoint-every", min=0,
                                         help="Checkpoint every N steps."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/training_state if present."),
    cpu: bool = typer.Option(False, "--cpu/--no-cpu", help="Force CPU even when CUDA is available."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train the UV sampler against the geometric unwrap (Yin et al., weakly-supervised texture generation, Eq. 5).

    Writes a model folder.

    London Set hold-out people (person % 5 == 0) are never trained on: such folders are skipped.
    Works under `accelerate launch` unchanged.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.train.sampler import train_uv_sampler

    folders = training_folders_or_exit(data, "unwrap.json", "run `facetex fit` and `facetex unwrap`")
    try:
        config = SamplerTrainConfig(preset=preset, steps=steps, batch_size=batch_size, uv_size=uv_size, lr=lr,
                                    seed=seed, sample_every=sample_every, checkpoint_every=checkpoint_every)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    model = load_builtin_face_model()
    progress = Progress(TextColumn("[bold]train sampler"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[losses]}"), console=console, disable=not console.is_terminal)
    shown = ("loss", "uv", "render", "coord", "err_px", "iou")
    with progress:
        task = progress.add_task("train", total=steps, losses="")

        def update(step: int, total: int, losses: dict) -> None:
            progress.update(task, completed=step, losses=" ".join(f"{k} {losses[k]:.4f}" for k in shown))

        result = build_or_exit(lambda: train_uv_sampler(folders, out, config, model=model, resume=resume,
                                                        cpu=cpu or None, progress=update), debug)
    if "loss" not in result:   # resumed at or past --steps: nothing to train, the folder is (re)written
        console.print(f"already trained to step {result['steps']} (training_state); model written to {out}",
                      markup=False)
        return
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"UV L1 {result.get('uv', float('nan')):.4f}, render L1 {result.get('render', float('nan')):.4f}, "
                  f"coordinate error {result.get('err_px', float('nan')):.2f} px, visibility IoU "
                  f"{result.get('iou', float('nan')):.3f}; model written to {out}", markup=False)
