"""``diffusion``: FreeUV's cross-assembled diffusion completion (seed 000).

The appearance network's detail extractor (trained UV -> 2D on photos) and the structure
network's ControlNet (trained 2D -> UV on renders) sample a complete UV texture from the defective
unwrap and the complete UV position map (:class:`stages.diffusion.pipeline.CrossAssemblyPipeline`).
The sample (at the networks' UV size) is upsampled to the unwrap's size, colour-matched to the
photo's visible texels in Lab (mean and variance, the paper's correction), and the photo's own
texels are Poisson-blended in (:func:`stages.pseudo_gt.blend_into`, no mirror fill), so the seen
detail stays at full resolution.

No trained models ship: ``model_path`` / ``structure_path`` (``--model`` / ``--structure-model``)
name folders written by ``facetex train diffusion-appearance`` / ``diffusion-structure``, or set
``FACETEX_DIFFUSION_MODEL`` / ``FACETEX_DIFFUSION_STRUCTURE_MODEL``.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from stages.completion import (
    MODEL, MODEL_FILES_KEY, OUTSIDE, Completion, CompletionMethod, register_method,
)
from stages.core.errors import MissingArtifactError
from stages.core.provenance import provenance_fractions
from stages.models.device import resolve_device
from stages.unwrap import UnwrapResult

DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 1.4
ENV_APPEARANCE = "FACETEX_DIFFUSION_MODEL"
ENV_STRUCTURE = "FACETEX_DIFFUSION_STRUCTURE_MODEL"


@register_method
class DiffusionFill(CompletionMethod):
    """Options:
        model_path: appearance model folder (``facetex train diffusion-appearance``).
        structure_path: structure model folder (``facetex train diffusion-structure``) on the same base.
        steps: denoising steps (paper: 30 with DDIM). guidance: classifier-free guidance (paper: 1.4).
        seed: sampling seed (the same seed gives the same texture). scheduler: ``ddim`` or ``dpm``.
        colour_match: Lab mean-variance matching to the visible texels (ablation switch).
        paste_visible: Poisson-blend the photo's own texels over the sample (default True).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...; half: float16 (default on CUDA).
        batch_size: textures per network pass in :meth:`complete_batch`.
        init: ``noise`` (the paper: sample from pure noise) or a registered completion method (e.g.
            ``blend``, ``mirror``) whose fill the sampler starts from, noised to ``strength`` of the
            schedule (SDEdit), so the networks only refine it.
        strength: with a fill ``init``, the part of the ``steps`` run (1: all).
        keep_seen: with a fill ``init``, hold the photo's texels (the seen region of the fill) in the
            latents at every step (RePaint-style), so the sample continues them.
        residual: with a fill ``init``, add only what the sampler changed (the sample minus the
            autoencoder's reconstruction of the fill, upsampled) to the full-resolution fill, so the
            small autoencoder's reconstruction error never reaches the texture (no colour matching:
            the fill is already the photo's colours).
    """

    name = "diffusion"

    def __init__(self, model, model_path: str | None = None, structure_path: str | None = None,
                 steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 0,
                 scheduler: str = "ddim", colour_match: bool = True, paste_visible: bool = True,
                 device: str = "auto", half: bool | None = None, batch_size: int = 8, init: str = "noise",
                 strength: float = 1.0, keep_seen: bool = False, residual: bool = False):
        super().__init__(model)
        from stages.diffusion import require_diffusers
        from stages.diffusion.pipeline import SCHEDULERS, CrossAssemblyPipeline

        require_diffusers()
        model_path = model_path or os.environ.get(ENV_APPEARANCE) or None
        structure_path = structure_path or os.environ.get(ENV_STRUCTURE) or None
        if model_path is None or structure_path is None:
            raise MissingArtifactError(None, "no diffusion models ship with facetex: train them with `facetex train "
                                             "diffusion-appearance` and `diffusion-structure`, then pass --model "
                                             "APPEARANCE_DIR --structure-model STRUCTURE_DIR")
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
            raise ValueError(f"steps must be an integer in [1, 1000], got {steps!r}")
        if not float(guidance) >= 1.0:
            raise ValueError(f"guidance must be >= 1, got {guidance!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}")
        if init == "noise":
            if keep_seen or residual or float(strength) != 1.0:
                raise ValueError("strength, keep_seen and residual need a fill to start from: init=blend (or "
                                 "another method)")
            self.init_fill = None
        else:
            from stages.completion import get_method

            if init == self.name:
                raise ValueError("init cannot be the diffusion method itself")
            self.init_fill = get_method(init).load(model)   # an unknown name raises a one-line error
        self.init, self.strength, self.keep_seen, self.residual = init, float(strength), bool(keep_seen), bool(residual)
        self.steps, self.guidance, self.seed, self.scheduler = steps, float(guidance), int(seed), scheduler
        self.colour_match, self.paste_visible, self.batch_size = bool(colour_match), bool(paste_visible), batch_size
        self.pipeline = CrossAssemblyPipeline.from_folders(model_path, structure_path, device=resolve_device(device),
                                                           half=half)
        self.record_model_file("model_path", model_path)
        self.record_model_file("structure_path", structure_path)

    def predict(self, unwraps: list[UnwrapResult]) -> np.ndarray:
        """Batched sampling: ``(B, U, U, 3)`` textures at the networks' UV size, before any post-processing
        (with ``residual``: ``(B, S, S, 3)`` at the unwraps' size, the fill plus the sampler's change)."""
        from stages.diffusion.pipeline import prepare_unwrap

        prepared = [prepare_unwrap(u.texture, u.confidence, u.position, u.layout_mask,
                                   source_size=self.pipeline.source_size, uv_size=self.pipeline.uv_size)
                    for u in unwraps]
        init = keep = full = None
        if self.init_fill is not None:
            size = self.pipeline.uv_size
            full = [self.init_fill.complete(u).texture for u in unwraps]
            fills = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in full]
            init = np.stack([f.transpose(2, 0, 1) * 2 - 1 for f in fills]).astype(np.float32)
            if self.keep_seen:
                keep = np.stack([cv2.resize((u.confidence > 0).astype(np.float32), (size, size),
                                            interpolation=cv2.INTER_AREA)[None] for u in unwraps])
        samples = self.pipeline(np.stack([p.source for p in prepared]), np.stack([p.position for p in prepared]),
                                steps=self.steps, guidance=self.guidance, seed=self.seed, scheduler=self.scheduler,
                                batch_size=self.batch_size, init=init, strength=self.strength, keep=keep)
        if not self.residual:
            return samples
        change = samples - self.pipeline.reconstruct(init, self.batch_size)
        return np.stack([np.clip(f + cv2.resize(c, f.shape[:2][::-1], interpolation=cv2.INTER_CUBIC), 0, 1)
                         for f, c in zip(full, change, strict=True)]).astype(np.float32)

    def finish(self, sample: np.ndarray, unwrap: UnwrapResult) -> Completion:
        """Upsample one sample to the unwrap's size, colour-match it, blend the photo's texels in."""
        from stages.diffusion.colour import match_colour_lab
        from stages.pseudo_gt import blend_into

        base = np.clip(cv2.resize(sample, (unwrap.size, unwrap.size), interpolation=cv2.INTER_CUBIC), 0, 1)
        visible = unwrap.confidence > 0
        matched = self.colour_match and not self.residual and visible.sum() >= 16
        if matched:
            base = match_colour_lab(base, unwrap.texture, source_mask=unwrap.layout_mask & visible,
                                    reference_mask=visible)
        if self.paste_visible:
            texture, provenance = blend_into(base, unwrap, mirror=False)
        else:
            texture = base.astype(np.float32)
            provenance = np.where(unwrap.layout_mask, MODEL, OUTSIDE).astype(np.uint8)

        return Completion(texture=texture, provenance=provenance,
                          info={"method": self.name, "steps": self.steps, "guidance": self.guidance,
                                "seed": self.seed, "scheduler": self.scheduler, "colour_matched": bool(matched),
                                "init": self.init, "strength": self.strength, "keep_seen": self.keep_seen,
                                "residual": self.residual,
                                "network_uv_size": self.pipeline.uv_size, **self.pipeline.info,
                                **provenance_fractions(provenance, unwrap.layout_mask),
                                MODEL_FILES_KEY: self.model_files})

    def complete_batch(self, unwraps: list[UnwrapResult]) -> list[Completion]:
        """Complete several unwraps with batched sampling (each as :meth:`complete` would)."""
        samples = self.predict(unwraps)
        return [self.finish(s, u) for s, u in zip(samples, unwraps, strict=True)]

    def complete(self, unwrap: UnwrapResult) -> Completion:
        return self.complete_batch([unwrap])[0]
