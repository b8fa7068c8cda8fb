"""The ``mirror`` completion: symmetric fill, then a smooth membrane fill, blended in the gradient domain.

1. Texels seen well in the photo are kept as they are.
2. A texel seen badly or not at all takes its mirror partner (``u -> 1 - u``) when the partner was
   seen better: faces are nearly symmetric, lighting is not, so the mirrored texels are pasted by
   Poisson editing (their gradients, the visible texels as boundary) and meet the visible side
   without a seam.
3. Texels seen on neither side (under the chin, nostrils in a frontal photo, both ears) get the
   membrane (harmonic) fill of their surroundings.
4. Beyond the UV layout the texture is padded by pull-push so bilinear lookups and mip-maps at
   the layout border never read black.

This is the honest baseline every learned method must beat.
"""

from __future__ import annotations

import numpy as np

from stages.completion import (
    MIRRORED,
    MODEL,
    OUTSIDE,
    VISIBLE,
    Completion,
    CompletionMethod,
    register_method,
)
from stages.core.poisson import poisson_fill_fast, pull_push_fill
from stages.core.provenance import KEEP_CONFIDENCE, seen_or_mirrored
from stages.unwrap import UnwrapResult


@register_method
class MirrorFill(CompletionMethod):
    """Symmetric fill + membrane fill with Poisson blending (no learned model).

    Options:
        keep_confidence: texels at or above this confidence are always kept
            (default :data:`stages.core.provenance.KEEP_CONFIDENCE`).
        solve_size: coarse grid side for the Poisson solve (None = exact at full size).
        albedo_space: mirror in albedo space (needs the fit, :meth:`complete_fitted`): each texel is
            divided by the fit's shading at its normal, mirrored, and multiplied by the shading of the
            side it lands on (:func:`stages.albedo_fit.albedo_space_mirror`), so the lit half's light
            is not copied onto the shadowed half.
    """

    name = "mirror"
    description = "mirror from the symmetric side, smooth-fill the rest, seams blended (no model)"

    def __init__(self, model, keep_confidence: float = KEEP_CONFIDENCE, solve_size: int | None = 128,
                 albedo_space: bool = False):
        super().__init__(model)
        self.keep_confidence = keep_confidence
        self.solve_size = solve_size
        self.albedo_space = albedo_space

    def complete_fitted(self, unwrap: UnwrapResult, fit, photo=None) -> Completion:
        if not self.albedo_space:
            return self.complete(unwrap)
        from stages.albedo_fit import albedo_space_mirror, fit_shading

        return self.complete(unwrap, albedo_space_mirror(unwrap.texture, fit_shading(self.model, fit, unwrap.size)))

    def complete(self, unwrap: UnwrapResult, tex_mirror: np.ndarray | None = None) -> Completion:
        """``tex_mirror``: ``(S, S, 3)`` what each texel takes from its partner (default the plain mirror)."""
        if self.albedo_space and tex_mirror is None:
            raise ValueError("mirror with albedo_space=True needs the fit: call complete_fitted")
        conf = unwrap.confidence
        domain = unwrap.layout_mask
        tex_mirror = unwrap.texture[:, ::-1] if tex_mirror is None else tex_mirror
        fixed, guided = seen_or_mirrored(conf, domain, keep_confidence=self.keep_confidence)
        if not fixed.any():
            # Nothing kept on this side: the mirrored texels become the fixed data themselves.
            fixed, guided = guided, np.zeros_like(guided)
            base = tex_mirror
        else:
            base = unwrap.texture
        filled = poisson_fill_fast(base, fixed, domain, tex_mirror, guided, solve_size=self.solve_size)
        filled = np.clip(filled, 0.0, 1.0)
        texture = pull_push_fill(filled, domain)

        provenance = np.full(conf.shape, OUTSIDE, dtype=np.uint8)
        provenance[domain] = MODEL
        provenance[guided] = MIRRORED
        provenance[fixed] = VISIBLE if base is unwrap.texture else MIRRORED
        n = max(1, int(domain.sum()))
        info = {"method": self.name,
                "visible_fraction": round(float((provenance == VISIBLE).sum()) / n, 4),
                "mirrored_fraction": round(float((provenance == MIRRORED).sum()) / n, 4),
                "smooth_fraction": round(float((provenance == MODEL).sum()) / n, 4), "albedo_space": self.albedo_space}
        return Completion(texture=texture.astype(np.float32), provenance=provenance, info=info)
