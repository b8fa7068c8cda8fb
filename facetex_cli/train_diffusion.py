"""``facetex train diffusion-appearance|diffusion-structure``: FreeUV's two networks.

Registered on :data:`facetex_cli.train.train_app` (imported at the end of ``facetex_cli/train.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from facetex_cli.batch import console
from facetex_cli.common import DEBUG_OPTION, build_or_exit, training_folders_or_exit
from facetex_cli.train import train_app
from stages.train.diffusion_config import PRESETS, DiffusionTrainConfig

_D = DiffusionTrainConfig()
Preset = Literal[tuple(PRESETS)]
Encoder = Literal["cnn", "clip"]
Attention = Literal["channel", "self"]
Precision = Literal["no", "fp16", "bf16"]

DATA_OPTION = typer.Option(..., "--data", help="Output folders (or their root) holding fit.json (with the photo's "
                                              "path), the unwrap and uv_pseudo.png (run fit, unwrap, pseudo-gt).")
OUT_OPTION = typer.Option(..., "--out", "-o", help="Model folder to write.")
PRESET_OPTION = typer.Option(_D.preset, "--preset", help="tiny (tests), small (from scratch, CPU or small GPU), "
                                                       "sd15 (a local Stable Diffusion 1.5 folder as --base).")
BASE_HELP = ("Base model folder (unet/ + vae/): a local Stable Diffusion 1.5 diffusers folder for --preset sd15; "
             "for the structure network of tiny/small, the diffusion-appearance model folder.")
ENCODER_OPTION = typer.Option(None, "--encoder", help="Image encoder of the extractor.", show_default="the preset's")
IMAGE_ENCODER_OPTION = typer.Option(None, "--image-encoder", help="Local CLIP vision model folder (--encoder clip).",
                                    show_default="none")
STEPS_OPTION = typer.Option(_D.steps, "--steps", min=1, help="Diffusion training steps (paper: 80000).")
BATCH_OPTION = typer.Option(_D.batch_size, "--batch-size", min=1, help="Samples per step (paper: 4).")
LR_OPTION = typer.Option(None, "--lr", min=0.0, help="Learning rate (paper: 3e-5 with SD).",
                         show_default="the preset's")
SEED_OPTION = typer.Option(_D.seed, "--seed", help="Seed of initialisation and sampling (same seed, same run).")
SAMPLE_OPTION = typer.Option(_D.sample_every, "--sample-every", min=0,
                             help="Write a sample sheet every N steps (0: never).")
CHECKPOINT_OPTION = typer.Option(_D.checkpoint_every, "--checkpoint-every", min=0, help="Checkpoint every N steps.")
RESUME_OPTION = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/training_state if present.")
CPU_OPTION = typer.Option(False, "--cpu/--no-cpu", help="Force CPU even when CUDA is available.")
PRECISION_OPTION = typer.Option(_D.mixed_precision, "--mixed-precision", help="accelerate mixed precision (GPU).")


def _run(kind: str, data: list[str], out: Path, debug: bool, **settings) -> None:
    from stages.core.face_model import load_builtin_face_model
    from stages.diffusion import require_diffusers
    from stages.train.diffusion import train_diffusion

    build_or_exit(require_diffusers, debug)
    folders = training_folders_or_exit(data, "uv_pseudo.png", "run `facetex pseudo-gt`")
    resume, cpu = settings.pop("resume"), settings.pop("cpu")
    encoder = settings.pop("encoder")
    if encoder is not None:
        settings["extractor"] = {"encoder": encoder}
    try:
        config = DiffusionTrainConfig(kind=kind, **settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    model = load_builtin_face_model()
    total = config.steps + (config.vae_steps if config.own_base and kind == "appearance" else 0)
    progress = Progress(TextColumn(f"[bold]train diffusion-{kind}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[losses]}"), console=console,
                        disable=not console.is_terminal)
    with progress:
        task = progress.add_task("train", total=total, losses="")

        def update(step: int, _total: int, losses: dict) -> None:
            progress.update(task, completed=step, losses=" ".join(f"{k} {v:.4f}" for k, v in losses.items()))

        result = build_or_exit(lambda: train_diffusion(folders, out, config, model=model, resume=resume,
                                                       cpu=cpu or None, progress=update), debug)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k not in ("steps", "vae_steps", "seconds",
                                                                                "seconds_per_step"))
    console.print(f"trained {result['vae_steps']} autoencoder + {result['steps']} diffusion steps in "
                  f"{result['seconds']:.1f} s ({result['seconds_per_step']:.2f} s/step) on {len(folders)} folders; "
                  f"{losses}; model written to {out}", markup=False)


@train_app.command("diffusion-appearance")
def train_diffusion_appearance(
    data: list[str] = DATA_OPTION,
    out: Path = OUT_OPTION,
    preset: Preset = PRESET_OPTION,
    base: str = typer.Option(None, "--base", help=BASE_HELP, show_default="none"),
    encoder: Encoder = ENCODER_OPTION,
    image_encoder: str = IMAGE_ENCODER_OPTION,
    attention: Attention = typer.Option(None, "--attention", help="Extractor attention: channel (paper) or self "
                                                                  "(ablation).", show_default="channel"),
    landmarks: bool = typer.Option(_D.landmarks, "--landmarks/--no-landmarks",
                                   help="2D landmark image as a condition."),
    steps: int = STEPS_OPTION,
    vae_steps: int = typer.Option(None, "--vae-steps", min=0,
                                  help="Own-base presets: autoencoder steps first.", show_default="the preset's"),
    batch_size: int = BATCH_OPTION,
    lr: float = LR_OPTION,
    seed: int = SEED_OPTION,
    sample_every: int = SAMPLE_OPTION,
    checkpoint_every: int = CHECKPOINT_OPTION,
    resume: bool = RESUME_OPTION,
    cpu: bool = CPU_OPTION,
    mixed_precision: Precision = PRECISION_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train the appearance network (UV -> 2D on the photos: detail extractor + landmark/position ControlNet).

    Own-base presets (tiny, small) also train the autoencoder and the base UNet here; the folder
    is then the --base of `train diffusion-structure`. Works under `accelerate launch`.
    """
    _run("appearance", data, out, debug, preset=preset, base=base, encoder=encoder, image_encoder=image_encoder,
         attention=attention, landmarks=landmarks, steps=steps, vae_steps=vae_steps, batch_size=batch_size, lr=lr,
         seed=seed, sample_every=sample_every, checkpoint_every=checkpoint_every, resume=resume, cpu=cpu,
         mixed_precision=mixed_precision)


@train_app.command("diffusion-structure")
def train_diffusion_structure(
    data: list[str] = DATA_OPTION,
    out: Path = OUT_OPTION,
    preset: Preset = PRESET_OPTION,
    base: str = typer.Option(None, "--base", help=BASE_HELP, show_default="none"),
    encoder: Encoder = ENCODER_OPTION,
    image_encoder: str = IMAGE_ENCODER_OPTION,
    attention: Attention = typer.Option(None, "--attention", help="Extractor attention: self (paper) or channel "
                                                                  "(ablation).", show_default="self"),
    steps: int = STEPS_OPTION,
    batch_size: int = BATCH_OPTION,
    lr: float = LR_OPTION,
    seed: int = SEED_OPTION,
    sample_every: int = SAMPLE_OPTION,
    checkpoint_every: int = CHECKPOINT_OPTION,
    resume: bool = RESUME_OPTION,
    cpu: bool = CPU_OPTION,
    mixed_precision: Precision = PRECISION_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train the structure network (2D -> UV on renders: UV structure aligner ControlNet + extractor).

    Renders of the training folders' per-image shapes with albedos from the shipped PCA model, under
    random pose and SH light, give pixel-exact UV targets. The base (--base) stays frozen.
    """
    _run("structure", data, out, debug, preset=preset, base=base, encoder=encoder, image_encoder=image_encoder,
         attention=attention, steps=steps, batch_size=batch_size, lr=lr, seed=seed, sample_every=sample_every,
         checkpoint_every=checkpoint_every, resume=resume, cpu=cpu, mixed_precision=mixed_precision)
