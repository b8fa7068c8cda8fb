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

from stages.completion import MIRRORED, MODEL, VISIBLE, Completion, CompletionMethod, register_method
from stages.core.errors import MissingArtifactError
from stages.pseudo_gt import blend_into
from stages.unwrap import UnwrapResult

#: UV position maps are divided by this before entering the network (the model is unit-RMS).
POSITION_SCALE = 1.5
#: The default generator (a model folder with its model card), used when no ``--model`` is given.
SHIPPED_GENERATOR = Path(__file__).resolve().parents[1] / "assets" / "uv_generator_london_v1"


def load_generator(path: str | Path | None):
    """Load a trained UV generator folder; one clear error when none is given or it is unusable."""
    from stages.train.model_dir import load_pretrained
    from stages.train.networks import UVGenerator, UVGeneratorConfig
    from stages.train.trainer import MODEL_TYPE

    if path is None:
        if not (SHIPPED_GENERATOR / "weights.safetensors").is_file():
            raise MissingArtifactError(SHIPPED_GENERATOR, "the shipped UV generator is missing from this install: "
                                                          "train one with `facetex train unet --data DIR -o "
                                                          "MODEL_DIR` and pass --model MODEL_DIR")
        path = SHIPPED_GENERATOR
    models, config = load_pretrained(path, {"generator": lambda c: UVGenerator(UVGeneratorConfig.from_dict(c))},
                                     model_type=MODEL_TYPE, names=["generator"])
    generator = models["generator"].eval()
    return generator, int(config.get("uv_size", 256))


@register_method
class UNetFill(CompletionMethod):
    """Options: ``model_path``: a folder written by ``facetex train unet`` (default: the shipped one);
    ``device``: torch device (default CUDA when available, else CPU);
    ``mirror``: also paste seen mirror partners over the prediction (default False: the generator
    learned the symmetry and completes the hidden texels itself, as in seed 001)."""

    name = "unet"
    description = "weakly supervised UV generator (seed 001); built-in London model or --model DIR"

    def __init__(self, model, model_path: str | None = None, device: str | None = None, mirror: bool = False):
        super().__init__(model)
        self.mirror = mirror
        self.generator, self.uv_size = load_generator(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator.to(self.device)

    def predict(self, unwraps: list[UnwrapResult]) -> np.ndarray:
        """Batched generator forward pass: ``(B, S', S', 3)`` predictions at the training resolution."""
        size = self.uv_size
        partial, mask, position = [], [], []
        for unwrap in unwraps:
            seen = (unwrap.confidence > 0).astype(np.float32)
            texture = unwrap.texture * seen[..., None]
            if unwrap.size != size:
                texture = cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA)
                seen = cv2.resize(seen, (size, size), interpolation=cv2.INTER_AREA)
            pos = cv2.resize(unwrap.position, (size, size), interpolation=cv2.INTER_AREA) / POSITION_SCALE
            partial.append(texture.transpose(2, 0, 1))
            mask.append((seen > 0.5).astype(np.float32)[None])
            position.append(pos.transpose(2, 0, 1))

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
        base = cv2.resize(prediction, (unwrap.size, unwrap.size), interpolation=cv2.INTER_CUBIC)
        texture, provenance = blend_into(np.clip(base, 0, 1), unwrap, mirror=self.mirror)
        n = max(1, int(unwrap.layout_mask.sum()))

        def fraction(code: int) -> float:
            return round(float((provenance == code).sum()) / n, 4)

        return Completion(texture=texture, provenance=provenance,
                          info={"method": self.name, "visible_fraction": fraction(VISIBLE),
                                "mirrored_fraction": fraction(MIRRORED), "smooth_fraction": fraction(MODEL)})
