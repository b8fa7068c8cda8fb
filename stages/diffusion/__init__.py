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

Modules: :mod:`~stages.diffusion.config` (presets, settings), :mod:`~stages.diffusion.extractor`
(detail extractor), :mod:`~stages.diffusion.models` (diffusers building blocks, model folders,
base loading), :mod:`~stages.diffusion.data` (both training sets), :mod:`~stages.diffusion.trainer`
(accelerate loops), :mod:`~stages.diffusion.pipeline` (cross-assembled sampling),
:mod:`~stages.diffusion.colour` (Lab colour matching).

diffusers is an optional dependency (``pip install 'facetex[diffusion]'``): importing this package
works without it; building a model raises :class:`MissingDependencyError`.
"""

from __future__ import annotations

from stages.core.errors import FacetexError

INSTALL_HINT = "pip install 'facetex[diffusion]'"


class MissingDependencyError(FacetexError):
    """An optional package a feature needs is not installed (one line naming what to install)."""


def require_diffusers():
    """Import and return the ``diffusers`` module, or raise :class:`MissingDependencyError`."""
    try:
        import diffusers
    except ImportError:
        raise MissingDependencyError(None, f"the diffusion method needs diffusers, which is not installed: "
                                           f"{INSTALL_HINT}") from None
    return diffusers
