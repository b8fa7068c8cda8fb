"""Layout-bound methods on another face model (the ICT head, a user's BFM or FLAME): run on the built-in
layout, moved back through the UV-to-UV transfer, the rest of the head from ``mirror``'s head prior.

``pca``, ``blend``, ``unet``, ``gan``, ``uvapm`` and ``diffusion`` hold models of the built-in (MediaPipe)
layout only. :meth:`stages.completion.CompletionMethod.load` wraps such a method in :class:`ViaBuiltinLayout`
when the face model is another one, so ``complete``, ``evaluate`` and the benchmarks use it unchanged:

1. The model's unwrap (texture, confidence, skin-mask rejections) is moved into the built-in layout with
   the nearest-texel map of :mod:`stages.transfer` (each built-in texel reads the model's texel at the
   same surface point, so a hidden texel stays hidden), and the built-in model's fit to the same
   landmarks stands in for the fit (pose and shape; lighting, photo and skin mask are the same).
2. The wrapped method completes that unwrap; its texture and provenance are moved back (the face region:
   the model's texels within the transfer's distance of the built-in surface). Where the method kept
   the photo (VISIBLE) and the model's unwrap saw the texel, the model's own seen colour is kept, at its
   own resolution.
3. ``mirror`` completes the model's unwrap as usual (mirrored texels, the head prior on ears, scalp, neck,
   back of the head), and the two are cross-faded over a band of :data:`FEATHER` model units inside the
   face region, measured in 3D on the per-image shape (so the fade is seam-aware: a face texel next
   to a UV island border is near the other island's texels in 3D and fades the same way).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from stages.completion import (
    MODEL,
    MODEL_FILES_KEY,
    VISIBLE,
    Completion,
    CompletionMethod,
)
from stages.core.errors import BadInputError
from stages.core.face_model import FaceModel, load_builtin_face_model
from stages.core.poisson import pull_push_fill
from stages.core.provenance import provenance_fractions
from stages.unwrap import UnwrapResult

#: Width of the cross-fade from the method's face fill to the head, in model units, inward from the face
#: region's border (ICT: 0.3 is about 1.6 cm, 6 face-tile texels at 256: the step per texel stays small).
FEATHER = 0.3


def builtin_fit(fit, builtin: FaceModel):
    """``fit`` (a :class:`stages.fit.FitResult` of another model) as the built-in model's fit to the same
    landmarks: pose and shape from :func:`stages.fit.fit_dense_shape` (what ``fit --face-model mediapipe``
    and :func:`stages.transfer.fitted_surface` compute), everything else (lighting, skin mask) kept."""
    from stages.fit import fit_dense_shape

    pose, vertices, _ = fit_dense_shape(builtin, np.asarray(fit.landmarks, dtype=np.float64))
    return dataclasses.replace(fit, pose=pose, vertices=vertices, model_id=builtin.name)


def feather_weight(position: np.ndarray, region: np.ndarray, layout: np.ndarray, band: float = FEATHER) -> np.ndarray:
    """``(S, S)`` float weight of the face fill: 0 off ``region``, rising inside it with the 3D distance
    to the nearest layout texel off it (smoothstep over ``band``), 1 deeper in.

    Args:
        position: ``(S, S, 3)`` model-space position map (the unwrap's).
        region, layout: ``(S, S)`` bool, the face region and the layout's texels.
    """
    weight = np.zeros(region.shape, dtype=np.float32)
    outside = layout & ~region
    if not region.any():
        return weight
    if not outside.any():
        weight[region] = 1.0
        return weight
    dist, _ = cKDTree(position[outside]).query(position[region])
    t = np.clip(dist / band, 0.0, 1.0)
    weight[region] = t * t * (3.0 - 2.0 * t)
    return weight


class ViaBuiltinLayout(CompletionMethod):
    """A built-in-layout method completing another model's layout (module docstring). Built by
    :meth:`CompletionMethod.load`; ``name`` is the wrapped method's."""

    def __init__(self, model: FaceModel, inner: CompletionMethod):
        from stages.completion import get_method

        super().__init__(model)
        self.inner = inner
        self.name = inner.name
        self.builtin = load_builtin_face_model()
        self.head = get_method("mirror").load(model)
        self.model_files = inner.model_files

    def complete(self, unwrap: UnwrapResult) -> Completion:
        raise BadInputError(None, f"completion method {self.name!r} on {self.model.name}'s layout needs the "
                                  f"fit (its landmarks place the built-in layout): give the unwrap's fit.json")

    def on_builtin(self, unwrap: UnwrapResult, fit, photo: np.ndarray | None = None):
        """Step 1 of the module docstring and the wrapped method's run: ``(the unwrap moved into the
        built-in layout, the built-in fit, the wrapped method's completion of it)``."""
        from stages.transfer import texel_map

        size = unwrap.size
        inner_fit = builtin_fit(fit, self.builtin)
        # Every built-in texel reads the model's texel at its surface point (seen or not).
        to_builtin = texel_map(fit, self.model, self.builtin, size)
        occluded = None if unwrap.occluded is None else to_builtin.apply(unwrap.occluded, False)
        confidence = to_builtin.apply(unwrap.confidence.astype(np.float32))
        inner_unwrap = UnwrapResult(
            texture=to_builtin.apply(unwrap.texture.astype(np.float32)), confidence=confidence,
            position=_position_map(self.builtin, inner_fit.vertices, size),
            layout_mask=to_builtin.target_mask.copy(), stem=unwrap.stem,
            info={**unwrap.info, "model_id": self.builtin.name,
                  "coverage": round(float((confidence[to_builtin.target_mask] > 0).mean()), 4)},
            occluded=occluded)
        return inner_unwrap, inner_fit, self.inner.complete_fitted(inner_unwrap, inner_fit, photo)

    def complete_fitted(self, unwrap: UnwrapResult, fit, photo: np.ndarray | None = None) -> Completion:
        from stages.transfer import texel_map

        size = unwrap.size
        _, _, done = self.on_builtin(unwrap, fit, photo)
        # 2. Back into the model's layout: the face region.
        back = texel_map(fit, self.builtin, self.model, size, size)
        region = back.found
        layout = unwrap.layout_mask
        provenance = back.apply(done.provenance)
        keep = region & (provenance == VISIBLE) & unwrap.visible
        face = np.where(keep[..., None], unwrap.texture, back.apply(done.texture.astype(np.float32)))
        provenance[region & (provenance == VISIBLE) & ~keep] = MODEL  # the method's colour, not the photo's
        # 3. The head around it, cross-faded over FEATHER inside the region.
        head = self.head.complete_fitted(unwrap, fit, photo)
        weight = feather_weight(unwrap.position, region, layout)
        texture = weight[..., None] * face + (1.0 - weight[..., None]) * head.texture
        texture = pull_push_fill(np.clip(texture, 0.0, 1.0), layout).astype(np.float32)
        provenance = np.where(weight >= 0.5, provenance, head.provenance).astype(np.uint8)
        face_share = round(float(region.sum() / max(layout.sum(), 1)), 4)
        info = {"method": self.name, **provenance_fractions(provenance, layout),
                "via_layout": {"layout": self.builtin.name, "face_share": face_share, "feather": FEATHER,
                               "threshold_px": round(back.threshold, 3),
                               "head": head.info, "method_info": done.info}}
        if MODEL_FILES_KEY in done.info:  # `evaluate` rebuilds the method from these
            info[MODEL_FILES_KEY] = done.info[MODEL_FILES_KEY]
        extra = {name: pull_push_fill(back.apply(image.astype(np.float32)), region).astype(np.float32)
                 for name, image in done.extra_images.items()}
        return Completion(texture=texture, provenance=provenance, info=info, extra_images=extra,
                          extra_json=done.extra_json)


def _position_map(model: FaceModel, vertices: np.ndarray, size: int) -> np.ndarray:
    """``(S, S, 3)`` float32 model-space position map of ``vertices`` in ``model``'s layout (as unwrap writes)."""
    from stages.core.uv import uv_layout

    return uv_layout(model, size).interpolate(vertices).astype(np.float32)
