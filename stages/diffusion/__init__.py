"""FreeUV-style diffusion completion (seed 000): two networks trained without UV ground truth,
cross-assembled at inference.

- **appearance network** (UV -> 2D, real photos): a flaw-tolerant *detail extractor* reads the
  defective unwrap (multi-layer image-encoder features concatenated, channel attention) and feeds
  the latent UNet's cross-attention; a ControlNet reads the masked position map rendered in the
  photo plus a 2D landmark image; the target is the masked face photo.
- **structure network** (2D -> UV, our renderer): a feature extractor (self attention) reads a
  masked render of the face model with a PCA-sampled albedo; a ControlNet, the *UV structure
  aligner*, reads the masked UV position map; the target is the masked UV texture, pixel-exact.
- **inference**: the appearance network's extractor and the structure network's ControlNet on the
  same base UNet map the defective unwrap straight to a complete UV texture, then Lab
  mean-variance colour matching.

Modules: the networks and their folders live in :mod:`stages.models` (:mod:`~stages.models.extractor`:
the detail extractor; :mod:`~stages.models.diffusion`: diffusers building blocks, model folders,
base loading); here: :mod:`~stages.diffusion.pipeline` (cross-assembled sampling, inference only),
:mod:`~stages.diffusion.colour` (Lab colour matching). Training lives in :mod:`stages.train`:
:mod:`~stages.train.diffusion_config` (presets, settings), :mod:`~stages.train.diffusion_data`
(both training sets) and :mod:`~stages.train.diffusion` (their
phases on the one runner, :mod:`stages.train.runner`).

diffusers is an optional dependency (``pip install 'facetex[diffusion]'``): importing this package
works without it; building a model raises :class:`MissingDependencyError`.
"""

from __future__ import annotations

# The optional-dependency guard lives with the networks (stages.models.diffusion); re-exported here.
from stages.models.diffusion import INSTALL_HINT, MissingDependencyError, require_diffusers  # noqa: F401
