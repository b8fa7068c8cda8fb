"""Completion methods built on the PCA albedo model: ``pca`` (UV_pca alone) and ``blend`` (the
full pseudo ground truth of seed 001: PCA fit + Poisson blending + symmetric fill).

Both load the model once per run: the built-in London model (``stages/assets``) unless
``pca_path`` names another ``build-pca`` output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.completion import MODEL, MODEL_FILES_KEY, OUTSIDE, Completion, CompletionMethod, register_method
from stages.pseudo_gt import DEFAULT_LAMBDA, pca_texture, pseudo_ground_truth
from stages.unwrap import UnwrapResult

BUILTIN_PCA = Path(__file__).resolve().parents[1] / "assets" / "albedo_pca_london_v1.h5"


def load_pca(path: str | Path | None):
    from stages.pca import AlbedoPCA

    return AlbedoPCA.load(path or BUILTIN_PCA)


@register_method
class PCAFill(CompletionMethod):
    """The ridge PCA fit of the visible texels (Eq. 8): complete, smooth, no photo detail.

    Options:
        pca_path: an ``AlbedoPCA`` h5 (default: the built-in London model).
        lam: ridge weight.
    """

    name = "pca"

    def __init__(self, model, pca_path: str | None = None, lam: float = DEFAULT_LAMBDA):
        super().__init__(model)
        self.pca = load_pca(pca_path)
        self.record_model_file("pca_path", pca_path or BUILTIN_PCA)
        self.lam = lam

    def complete(self, unwrap: UnwrapResult) -> Completion:
        texture, coeffs = pca_texture(unwrap, self.pca, self.lam)
        provenance = np.where(unwrap.layout_mask, MODEL, OUTSIDE).astype(np.uint8)
        return Completion(texture=texture, provenance=provenance,
                          info={"method": self.name, "visible_fraction": 0.0, "mirrored_fraction": 0.0,
                                "smooth_fraction": 1.0, "pca_components": self.pca.n_components,
                                "lam": self.lam, MODEL_FILES_KEY: self.model_files})


@register_method
class BlendFill(PCAFill):
    """Seed 001's pseudo ground truth: PCA fit + Poisson blending (Eq. 9) + symmetric fill."""

    name = "blend"

    def complete(self, unwrap: UnwrapResult) -> Completion:
        result = pseudo_ground_truth(unwrap, self.pca, lam=self.lam)
        info = {"method": self.name, "visible_fraction": result.info["visible_fraction"],
                "mirrored_fraction": result.info["mirrored_fraction"],
                "smooth_fraction": result.info["model_fraction"], "lam": self.lam,
                MODEL_FILES_KEY: self.model_files}
        return Completion(texture=result.texture, provenance=result.provenance, info=info)
