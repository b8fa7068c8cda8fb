"""``unet``: the weakly supervised UV generator (seed 001) trained by ``facetex train unet``.

The generator predicts the whole UV map from the partial one (plus the seen mask and the UV
position map) at its training resolution; the prediction is upsampled to the unwrap's size and the
photo's own texels are Poisson-blended into it (:func:`stages.pseudo_gt.blend_into`, without the
mirror fill by default), so the visible detail is kept at full resolution and the prediction fills
the rest without a seam.

Without ``--model DIR`` the generator shipped in ``stages/assets/`` (:data:`SHIPPED_GENERATOR`,
trained on the London training people, see its ``README.md`` model card) is used when present.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from stages.completion import (
    MODEL_FILES_KEY, Completion, CompletionMethod, provenance_map, register_method,
)
from stages.core.poisson import poisson_fill_fast, pull_push_fill
from stages.core.provenance import KEEP_CONFIDENCE, provenance_fractions, seen_or_mirrored
from stages.models import uv_generator
from stages.models.device import resolve_device
from stages.models.folder import SHIPPED_MODELS, shipped_model
from stages.models.inputs import POSITION_SCALE, resize_unwrap
from stages.pseudo_gt import blend_into
from stages.unwrap import UnwrapResult

#: The default generator (a model folder with its model card), used when no ``--model`` is given.
SHIPPED_GENERATOR = SHIPPED_MODELS / "uv_generator_london_v1"


def load_generator(path: str | Path | None):
    """Load a trained UV generator folder (default: the shipped one); one clear error when none is
    installed or it is unusable. Returns ``(generator, training uv_size)``."""
    if path is None:
        path = shipped_model(SHIPPED_GENERATOR, "UV generator", "or train one with `facetex train unet --data "
                                                                    "DIR -o MODEL_DIR` and pass --model MODEL_DIR")
    generator, config = uv_generator.load_generator(path)
    return generator, int(config.get("uv_size", 256))


COMPOSE_MODES = ("keep-photo", "eq9")


def keep_photo_fill_prediction(prediction: np.ndarray, unwrap: UnwrapResult, solve_size: int | None = 128,
                               mirror: bool = False,
                               keep_confidence: float = KEEP_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Keep every seen texel of the photo and fill the rest of the layout with the prediction's
    gradients (a guided Poisson fill with the seen texels as Dirichlet data), so a prediction whose
    overall colour is off (a photo unlike the training set) cannot shift the photo's own colours and
    leaves no seam at the border of the seen region.

    Args:
        prediction: ``(S, S, 3)`` complete texture in ``[0, 1]``.
        unwrap: the partial texture (seen where ``confidence > 0``).
        solve_size: coarse grid of the Poisson solve (None: exact).
        mirror: hidden texels whose mirror partner was seen (better) follow the partner's gradients
            instead of the prediction's (``mirror``'s rule, same ``keep_confidence``); the two guidance
            regions are labelled apart so no gradient is taken across their border.
        keep_confidence: with ``mirror``, a seen texel at or above this confidence is always kept.

    Returns:
        ``(texture (S, S, 3) float32 padded beyond the layout, provenance (S, S) uint8)``.
    """
    layout = unwrap.layout_mask
    seen, mirrored = seen_or_mirrored(unwrap.confidence, layout, mirror=mirror, keep_confidence=keep_confidence)
    guidance = np.where(mirrored[..., None], unwrap.texture[:, ::-1], prediction)
    labels = np.where(mirrored, 1, np.where(layout & ~seen, 2, 0))
    if seen.any():
        filled = poisson_fill_fast(unwrap.texture, seen, layout, guidance, labels, solve_size=solve_size)
    else:
        filled = guidance
    texture = pull_push_fill(np.clip(filled, 0.0, 1.0), layout)
    provenance = provenance_map(layout, seen, mirrored)
    return texture.astype(np.float32), provenance


@register_method
class UNetFill(CompletionMethod):
    """Options: ``model_path``: a folder written by ``facetex train unet`` (default: the shipped one);
    ``device``: ``auto`` (default: CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``;
    ``mirror``: also paste seen mirror partners over the prediction (default False: the generator
    learned the symmetry and completes the hidden texels itself, as in seed 001);
    ``compose``: ``"keep-photo"`` (default: the photo's texels stay exact, the prediction's gradients
    fill the rest, :func:`keep_photo_fill_prediction`) or ``"eq9"`` (seed 001's Eq. 9 as in the
    pseudo-GT: the photo's gradients are blended into the prediction, whose colour level wins)."""

    name = "unet"

    def __init__(self, model, model_path: str | None = None, device: str | None = None, mirror: bool = False,
                 compose: str = "keep-photo"):
        super().__init__(model)
        if compose not in COMPOSE_MODES:
            raise ValueError(f"compose must be one of {COMPOSE_MODES}, got {compose!r}")
        self.mirror = mirror
        self.compose = compose
        self.generator, self.uv_size = load_generator(model_path)
        self.record_model_file("model_path", model_path or SHIPPED_GENERATOR)
        self.device = resolve_device(device)
        self.generator.to(self.device)

    def predict(self, unwraps: list[UnwrapResult]) -> np.ndarray:
        """Batched generator forward pass: ``(B, S', S', 3)`` predictions at the training resolution."""
        size = self.uv_size
        partial, mask, position = [], [], []
        for unwrap in unwraps:
            # Exactly the resizing the training pairs had (normalised, so the seen edge keeps its colour).
            texture, confidence, pos = resize_unwrap(unwrap, self.model, size)
            partial.append(texture.transpose(2, 0, 1))
            mask.append((confidence > 0).astype(np.float32)[None])
            position.append((pos / POSITION_SCALE).transpose(2, 0, 1))

        def batch(arrays):
            return torch.from_numpy(np.stack(arrays).astype(np.float32)).to(self.device)

        with torch.no_grad():
            out = self.generator(batch(partial), batch(mask), batch(position))
        return out.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()

    def complete(self, unwrap: UnwrapResult) -> Completion:
        return self._finish(unwrap, self.predict([unwrap])[0])

    def complete_batch(self, unwraps: list[UnwrapResult]) -> list[Completion]:
        """One generator forward pass for the whole batch, then the per-texture Poisson blend."""
        predictions = self.predict(unwraps) if unwraps else []
        return [self._finish(unwrap, prediction) for unwrap, prediction in zip(unwraps, predictions, strict=True)]

    def _finish(self, unwrap: UnwrapResult, prediction: np.ndarray) -> Completion:
        base = np.clip(cv2.resize(prediction, (unwrap.size, unwrap.size), interpolation=cv2.INTER_CUBIC), 0, 1)
        if self.compose == "eq9":
            texture, provenance = blend_into(base, unwrap, mirror=self.mirror)
        else:
            texture, provenance = keep_photo_fill_prediction(base, unwrap, mirror=self.mirror)

        return Completion(texture=texture, provenance=provenance,
                          info={"method": self.name, **provenance_fractions(provenance, unwrap.layout_mask),
                                "mirror": self.mirror, "compose": self.compose, MODEL_FILES_KEY: self.model_files})
