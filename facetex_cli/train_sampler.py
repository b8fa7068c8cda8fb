"""``facetex train sampler``: the learned UV sampler of Yin et al. (photo -> UV texel positions, no 3D
fit at inference)."""

from __future__ import annotations

from facetex_cli.batch import console
from facetex_cli.common import config_parameters, with_parameters
from facetex_cli.train import (RUN_PARAMETERS, config_or_exit, data_parameters, run_training, train_app,
                               training_inputs)
from stages.train.sampler import SamplerTrainConfig


@train_app.command("sampler")
@with_parameters(data_parameters("Output folders (or their root) of `facetex fit` + `facetex unwrap` (fit.json, "
                                 "unwrap.json, uv_texture.png; the photo named by fit.json must be on disk).")
                 + config_parameters(SamplerTrainConfig) + RUN_PARAMETERS)
def train_sampler_command(**options) -> None:
    """Train the UV sampler against the geometric unwrap (Yin et al., weakly-supervised texture generation, Eq. 5).

    Writes a model folder.

    London Set hold-out people (person % 5 == 0) are never trained on: such folders are skipped.
    Works under `accelerate launch` unchanged.
    """
    from stages.core.face_model import load_builtin_face_model
    from stages.train.sampler import train_uv_sampler

    run, folders, out = training_inputs(options, "unwrap.json", "run `facetex fit` and `facetex unwrap`")
    config = config_or_exit(SamplerTrainConfig, **options)
    model = load_builtin_face_model()
    result = run_training("train sampler", config.steps,
                          lambda **kw: train_uv_sampler(folders, out, config, model=model, **kw), run,
                          shown=("loss", "uv", "render", "coord", "err_px", "iou"))
    if "loss" not in result:   # resumed at or past --steps: nothing to train, the folder is (re)written
        console.print(f"already trained to step {result['steps']} (training_state); model written to {out}",
                      markup=False)
        return
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"UV L1 {result.get('uv', float('nan')):.4f}, render L1 {result.get('render', float('nan')):.4f}, "
                  f"coordinate error {result.get('err_px', float('nan')):.2f} px, visibility IoU "
                  f"{result.get('iou', float('nan')):.3f}; model written to {out}", markup=False)
