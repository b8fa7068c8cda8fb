"""``facetex train parser``: the learned skin parser (:mod:`stages.models.skin_parser`), used by
``fit --skin-parser DIR``.

Registered on :data:`facetex_cli.train.train_app` (imported at the end of ``facetex_cli/train.py``);
options from :class:`stages.train.skin_parser.SkinParserTrainConfig`'s fields.
"""

from __future__ import annotations

from facetex_cli.batch import console, quiet_native_stderr
from facetex_cli.common import config_parameters, with_parameters
from facetex_cli.train import (RUN_PARAMETERS, config_or_exit, data_parameters, run_training, train_app,
                               training_inputs)
from stages.train.skin_parser import SkinParserTrainConfig


@train_app.command("parser")
@with_parameters(data_parameters("Output folders (or their root) of `facetex fit` on clean photos (fit.json and "
                                 "the photo it names).")
                 + config_parameters(SkinParserTrainConfig) + RUN_PARAMETERS)
def train_parser_command(**options) -> None:
    """Train the learned skin parser on the classical skin mask of clean photos plus pasted occluders.

    Writes a model folder for `fit --skin-parser DIR`. London Set hold-out people (person % 5 == 0)
    are never trained on: such folders are skipped. Works under `accelerate launch` unchanged.
    """
    from stages.train.skin_parser import train_skin_parser

    run, folders, out = training_inputs(options, "fit.json", "run `facetex fit`")
    config = config_or_exit(SkinParserTrainConfig, **options)

    def train(**kw):
        with quiet_native_stderr():   # MediaPipe's native log lines while the classical targets are made
            return train_skin_parser(folders, out, config, **kw)

    result = run_training("train parser", config.steps, train, run, shown=("loss", "error", "occluder_error"))
    console.print(f"trained {result['steps']} steps in {result['seconds']:.1f} s on {len(folders)} folders; "
                  f"pixel error {result.get('error', float('nan')):.3f}, on occluders "
                  f"{result.get('occluder_error', float('nan')):.3f}; model written to {out}", markup=False)
