"""The dependency direction of the learned models: inference never imports training code.

core <- models (networks + their save/load) <- stages / completion methods <- train and cli.
Each inference module is imported in a fresh interpreter (other tests may already have imported
``stages.train`` into this one) and must leave no ``stages.train`` module in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INFERENCE_MODULES = ("stages.completion.unet", "stages.completion.diffusion", "stages.learned_unwrap",
                     "stages.diffusion.pipeline", "stages.models.uv_generator", "stages.models.uv_sampler",
                     "stages.models.diffusion", "stages.models.detail_vae", "stages.completion.uvapm",
                     "stages.complete", "stages.pseudo_gt")


def _imported_by(module: str, register_methods: bool = True) -> list[str]:
    """Every module in ``sys.modules`` of a fresh interpreter after importing ``module`` (and, with
    ``register_methods``, registering every built-in completion method as ``complete --method`` does)."""
    code = ("import importlib, json, sys\n"
            f"importlib.import_module({module!r})\n"
            + ("import stages.completion as c\nc.available_methods()\n" if register_methods else "")
            + "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", INFERENCE_MODULES)
def test_inference_module_imports_no_training_code(module):
    training = [name for name in _imported_by(module) if name == "stages.train" or name.startswith("stages.train.")]
    assert training == [], f"{module} imports training code: {training}"


def test_pseudo_gt_does_not_import_the_completion_package():
    """completion.{pca,unet,diffusion} import pseudo_gt; the reverse would be an import cycle."""
    modules = _imported_by("stages.pseudo_gt", register_methods=False)
    assert not [m for m in modules if m == "stages.completion" or m.startswith("stages.completion.")]
