"""``facetex train detail-vae``: UVAPM's detail VAE (seed 002, §3.4), the decoder of
``complete --method uvapm --model DIR``.

Registered on :data:`facetex_cli.train.train_app` (imported at the end of ``facetex_cli/train.py``);
options from :class:`stages.train.detail_vae.DetailVAETrainConfig`'s fields.
"""

from __future__ import annotations

from facetex_cli.batch import console
from facetex_cli.common import config_parameters, with_parameters
from facetex_cli.train import (RUN_PARAMETERS, config_or_exit, data_parameters, run_training, train_app,
                               training_inputs)
from stages.train.detail_vae import DetailVAETrainConfig


@train_app.command("detail-vae")
@with_parameters(data_parameters("Output folders (or their root) of `facetex unwrap` (unwrap.json, uv_texture.png).")
                 + config_parameters(DetailVAETrainConfig) + RUN_PARAMETERS)
def train_detail_vae_command(**options) -> None:
    """Train UVAPM's detail VAE on the V-channel residual between real unwraps and their PCA fit.

    Writes a model folder for `complete --method uvapm --model DIR`. Losses only on the photos' seen
    texels. London Set hold-out people (person % 5 == 0) are never trained on: such folders are skipped.
    Works under `accelerate launch` unchanged.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.train.detail_vae import train_detail_vae

    run, folders, out = training_inputs(options, "unwrap.json", "run `facetex unwrap`")
    pca = options.pop("pca")
    config = config_or_exit(DetailVAETrainConfig, **options, pca=None if pca is None else str(pca))
    model = load_builtin_face_model()
    result = run_training("train detail-vae", config.steps,
                          lambda **kw: train_detail_vae(folders, out, config, model=model, **kw), run,
                          shown=("loss", "rec", "lap", "kl"))
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"reconstruction L1 {result.get('rec', float('nan')):.4f} (x {config.network['scale']} V), "
                  f"KL {result.get('kl', float('nan')):.4f}; model written to {out}", markup=False)
