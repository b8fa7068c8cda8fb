"""``facetex train texture-gan``: seed 003's texture GAN (Slossberg et al., §3), the generator of
``facetex generate`` and ``complete --method gan --model DIR``.

Registered on :data:`facetex_cli.train.train_app` (imported at the end of ``facetex_cli/train.py``);
options from :class:`stages.train.texture_gan.TextureGANTrainConfig`'s fields.
"""

from __future__ import annotations

from facetex_cli.batch import console
from facetex_cli.common import config_parameters, with_parameters
from facetex_cli.train import (RUN_PARAMETERS, config_or_exit, data_parameters, run_training, train_app,
                               training_inputs)
from stages.train.texture_gan import TextureGANTrainConfig


@train_app.command("texture-gan")
@with_parameters(data_parameters("Output folders (or their root) of `facetex fit` (fit.json; the photos must be "
                                 "findable from it).")
                 + config_parameters(TextureGANTrainConfig) + RUN_PARAMETERS)
def train_texture_gan_command(**options) -> None:
    """Train the texture GAN of Slossberg et al. ("Unsupervised high-fidelity facial texture generation
    and reconstruction") from photos alone: generated UV albedos, lit by each photo's fitted
    light and rendered on its fitted mesh, blended into the photo and discriminated against real crops.

    Writes a model folder for `facetex generate` and `complete --method gan --model DIR`. London Set
    hold-out people (person % 5 == 0) are never trained on: such folders are skipped. Works under
    `accelerate launch` unchanged.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.train.texture_gan import train_texture_gan

    run, folders, out = training_inputs(options, "fit.json", "run `facetex fit`")
    config = config_or_exit(TextureGANTrainConfig, **options)
    model = load_builtin_face_model()
    result = run_training("train texture-gan", config.steps,
                          lambda **kw: train_texture_gan(folders, out, config, model=model, **kw), run,
                          shown=("d_loss", "g_loss"))
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"D loss {result.get('d_loss', float('nan')):.4f}, G loss {result.get('g_loss', float('nan')):.4f}; "
                  f"model written to {out}", markup=False)
