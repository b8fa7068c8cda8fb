"""The ``telea`` completion: OpenCV's fast-marching inpainting (Telea 2004), as a reference baseline.

It knows nothing about faces (no symmetry, no model): it propagates the colours at the border of
the visible region inwards. Beyond the UV layout the texture is padded by pull-push like every
method. Useful as the "generic image inpainting" row of the benchmark.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.completion import Completion, CompletionMethod, provenance_map, register_method
from stages.core.image_io import to_uint8
from stages.core.poisson import pull_push_fill
from stages.unwrap import UnwrapResult


@register_method
class TeleaInpaint(CompletionMethod):
    """OpenCV ``INPAINT_TELEA`` of every layout texel that was not seen.

    Options:
        radius: inpainting neighbourhood radius in texels (default 5).
    """

    name = "telea"

    def __init__(self, model, radius: int = 5):
        super().__init__(model)
        self.radius = radius

    def complete(self, unwrap: UnwrapResult) -> Completion:
        domain = unwrap.layout_mask
        visible = unwrap.visible & domain
        if not visible.any():
            raise ValueError("nothing visible to inpaint from")
        # Only the layout is inpainted: outside texels are marked known (filled with the nearest
        # visible colours by pull-push first) so they do not drag the fill towards black.
        base = pull_push_fill(unwrap.texture, visible)
        holes = (domain & ~visible).astype(np.uint8)
        filled = cv2.inpaint(to_uint8(base), holes, self.radius, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
        filled[visible] = unwrap.texture[visible]
        texture = pull_push_fill(filled, domain)
        provenance = provenance_map(domain, visible)
        n = max(1, int(domain.sum()))
        return Completion(texture=texture, provenance=provenance,
                          info={"method": self.name, "visible_fraction": round(float(visible.sum()) / n, 4),
                                "mirrored_fraction": 0.0,
                                "smooth_fraction": round(float((domain & ~visible).sum()) / n, 4)})
