"""``facetex train diffusion-appearance|diffusion-structure``: FreeUV's two networks.

Registered on :data:`facetex_cli.train.train_app` (imported at the end of ``facetex_cli/train.py``);
options from :class:`stages.train.diffusion_config.DiffusionTrainConfig`'s fields.
"""

from __future__ import annotations

from typing import Literal

import typer

from facetex_cli.batch import console
from facetex_cli.common import build_or_exit, config_parameters, training_folders_or_exit, with_parameters
from facetex_cli.train import (RUN_PARAMETERS, _option, config_or_exit, data_parameters, run_training,
                               split_run_options, train_app)
from stages.train.diffusion_config import ENCODERS, DiffusionTrainConfig

DATA = data_parameters("Output folders (or their root) holding fit.json (with the photo's path), the unwrap and "
                       "uv_pseudo.png (run fit, unwrap, pseudo-gt).")
ENCODER = _option("encoder", Literal[ENCODERS], typer.Option(None, "--encoder", help="Image encoder of the extractor.",
                                                              show_default="the preset's"))


def _run(kind: str, options: dict) -> None:
    from stages.core.face_model import load_builtin_face_model
    from stages.diffusion import require_diffusers
    from stages.train.diffusion import train_diffusion

    run = split_run_options(options)
    build_or_exit(require_diffusers, run["debug"])
    data, out, encoder = options.pop("data"), options.pop("out"), options.pop("encoder")
    folders = training_folders_or_exit(data, "uv_pseudo.png", "run `facetex pseudo-gt`")
    if encoder is not None:
        options["extractor"] = {"encoder": encoder}
    config = config_or_exit(DiffusionTrainConfig, kind=kind, **options)
    model = load_builtin_face_model()
    total = config.steps + (config.vae_steps if config.own_base and kind == "appearance" else 0)
    result = run_training(f"train diffusion-{kind}", total,
                          lambda **kw: train_diffusion(folders, out, config, model=model, **kw), run)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k not in ("steps", "vae_steps", "seconds",
                                                                                "seconds_per_step"))
    console.print(f"trained {result['vae_steps']} autoencoder + {result['steps']} diffusion steps in "
                  f"{result['seconds']:.1f} s ({result['seconds_per_step']:.2f} s/step) on {len(folders)} folders; "
                  f"{losses}; model written to {out}", markup=False)


@train_app.command("diffusion-appearance")
@with_parameters(DATA + [ENCODER] + config_parameters(DiffusionTrainConfig) + RUN_PARAMETERS)
def train_diffusion_appearance(**options) -> None:
    """Train the appearance network (UV -> 2D on the photos: detail extractor + landmark/position ControlNet).

    Own-base presets (tiny, small) also train the autoencoder and the base UNet here; the folder
    is then the --base of `train diffusion-structure`. Works under `accelerate launch`.
    """
    _run("appearance", options)


@train_app.command("diffusion-structure")
@with_parameters(DATA + [ENCODER] + config_parameters(DiffusionTrainConfig, exclude=("landmarks", "vae_steps",
                                                                                     "lr_vae"))
                 + RUN_PARAMETERS)
def train_diffusion_structure(**options) -> None:
    """Train the structure network (2D -> UV on renders: UV structure aligner ControlNet + extractor).

    Renders of the training folders' per-image shapes with albedos from the shipped PCA model, under
    random pose and SH light, give pixel-exact UV targets. The base (--base) stays frozen.
    """
    _run("structure", options)
