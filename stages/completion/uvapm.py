"""``uvapm``: seed 002's analysis-by-synthesis albedo (UVAPM, Dai et al., §3.2-3.5).

1. Coarse fit (:func:`stages.albedo_fit.fit_albedo`): PCA albedo coefficients, 9x3 SH light and a
   small pose/shape refinement through the differentiable renderer, against the photo's seen skin
   (the unwrap's confidence says which texels may be fitted to, so a hidden-texel test stays honest).
2. Detail (§3.4-3.5, stage 3): ``A = HSV(H_c, S_c, V_c + D(z))`` with ``D`` a decoder's residual on
   the V channel and ``z`` optimised with the coarse fit held (:func:`fit_detail`). ``D`` is the
   decoder of a detail VAE (``facetex train detail-vae``, :mod:`stages.models.detail_vae`): the shipped
   London-trained one (:data:`SHIPPED_DETAIL_VAE`) or ``model_path`` (``--model DIR``); its residual is
   high-passed and scaled per photo so the filled skin is ``detail_strength`` times as detailed as the
   photo's own (:meth:`UVAPMFill.synthesize_detail`). ``detail=False`` (``--no-detail``): no residual,
   the coarse albedo.
3. Outputs: ``uv_albedo.png`` (de-lit: the photo divided by the fitted shading where it was seen, the
   albedo elsewhere, composed seamlessly), ``lighting.json`` (the SH light, camera frame) and
   ``uv_complete.png``: the photo's texels where it saw them and the albedo under the fitted light
   elsewhere, composed by :func:`stages.completion.unet.keep_photo_fill_prediction`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from stages.albedo_fit import (AlbedoFitOptions, fit_albedo, reprojection_psnr, texel_normals, texel_shading,
                               torch_threads)
from stages.completion import MODEL_FILES_KEY, Completion, CompletionMethod, register_method
from stages.completion.pca import BUILTIN_PCA, load_pca
from stages.completion.unet import keep_photo_fill_prediction
from stages.core.errors import MissingArtifactError
from stages.models.folder import SHIPPED_MODELS, shipped_model
from stages.core.provenance import provenance_fractions
from stages.evaluate.detail import REFERENCE_SIZE, SIGMA_HI, band_pass, region_energy, region_pixels
from stages.models.device import resolve_device
from stages.models.inputs import SEEN_COVERAGE, resize_area, resize_masked
from stages.unwrap import UnwrapResult

#: A detail decoder: latent ``(1, *latent_shape)`` -> V residual ``(1, 1, S', S')`` (any ``S'``; resized).
DetailDecoder = Callable[[torch.Tensor], torch.Tensor]


def hsv_compose(coarse: np.ndarray, detail: np.ndarray | None) -> np.ndarray:
    """``A = HSV(H_c, S_c, V_c + D)``: add a residual to the value channel only (seed 002, §3.5).

    Args:
        coarse: ``(S, S, 3)`` float RGB in ``[0, 1]``.
        detail: ``(S, S)`` float residual on V (None or zeros: no detail).

    Returns:
        ``(S, S, 3)`` float32 RGB; hue and saturation are those of ``coarse`` (V is clipped to [0, 1]).
    """
    coarse = np.clip(np.asarray(coarse, dtype=np.float32), 0.0, 1.0)
    if detail is None:
        return coarse.copy()
    hsv = cv2.cvtColor(coarse, cv2.COLOR_RGB2HSV)
    hsv[..., 2] = np.clip(hsv[..., 2] + np.asarray(detail, dtype=np.float32), 0.0, 1.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def fit_detail(coarse: np.ndarray, target: np.ndarray, weight: np.ndarray, decoder: DetailDecoder | None,
               latent_shape: tuple[int, ...] = (4, 32, 32), *, iterations: int = 50, lr: float = 0.05,
               w_prior: float = 0.0, w_anchor: float = 0.0, init_scale: float = 1.0, seed: int = 0,
               device: torch.device | str = "cpu") -> np.ndarray:
    """Stage 3: the latent ``z`` whose decoded V residual makes ``hsv_compose(coarse, D(z))`` match the
    de-lit photo's V on the seen texels, the coarse fit held.

    ``z`` starts from a seeded sample of the VAE's prior N(0, I) times ``init_scale`` (its temperature)
    and only the data term moves it: the latents under texels the photo saw are fitted, the rest keep
    their prior sample, which is what puts plausible detail where the photo saw nothing. ``w_anchor
    ||z - z_0||^2`` keeps every latent near its sample: without it, latents whose decoded footprint
    straddles the seen border were driven to extremes (Adam's steps do not shrink with the gradient)
    and showed as blocks of the latent grid just outside the seen skin. A prior term
    ``w_prior ||z||^2`` (default off) would, under Adam (its steps do not shrink with the gradient), pull every
    unconstrained latent to the mean in a few dozen steps: a smooth fill (on 3 London hold-out photos,
    with an early checkpoint: detail ratio 0.21-0.47 from the mean, 0.28-0.83 from a sample).

    Args:
        coarse: ``(S, S, 3)`` coarse albedo.
        target: ``(S, S, 3)`` de-lit photo texture (meaningful where ``weight > 0``).
        weight: ``(S, S)`` texel weights (seen texels' confidence).
        decoder: the detail decoder, or None (no detail model: the residual is zero); on ``device``.
        latent_shape: shape of ``z`` without the batch.
        device: where ``z`` is optimised (a resolved device). The prior sample is drawn on the CPU with
            ``seed`` and moved, so every device starts from the same ``z_0``.

    Returns:
        ``(S, S)`` float32 V residual ``D(z)`` (zeros without a decoder).
    """
    size = coarse.shape[0]
    if decoder is None:
        return np.zeros((size, size), dtype=np.float32)
    device = torch.device(device)
    with torch_threads(1):     # small convolutions: threads only add synchronisation (see fit_albedo)
        gen = torch.Generator().manual_seed(seed)
        z0 = (init_scale * torch.randn(1, *latent_shape, generator=gen)).to(device)
        z = z0.clone().requires_grad_(True)
        with torch.no_grad():
            out = int(decoder(z).shape[-1])
        # Fit at the decoder's resolution (the residual has no finer detail); upsample once at the end.
        seen = np.asarray(weight) > 0
        v_coarse = torch.from_numpy(resize_area(np.clip(coarse, 0, 1).max(axis=2).astype(np.float32), out)).to(device)
        v_target, coverage = resize_masked(np.clip(target, 0, 1).max(axis=2).astype(np.float32), seen, out)
        w_small, _ = resize_masked(np.asarray(weight, dtype=np.float32), seen, out)
        v_target = torch.from_numpy(v_target).to(device)
        w = torch.from_numpy(np.where(coverage >= SEEN_COVERAGE, w_small, 0.0).astype(np.float32)).to(device)
        optimiser = torch.optim.Adam([z], lr=lr)
        for _ in range(iterations):
            optimiser.zero_grad()
            v = (v_coarse + decoder(z)[0, 0]).clamp(0, 1)
            loss = ((w * (v - v_target).abs()).sum() / w.sum().clamp_min(1.0) + w_prior * (z ** 2).mean()
                    + w_anchor * ((z - z0) ** 2).mean())
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            residual = torch.nn.functional.interpolate(decoder(z), size=(size, size), mode="bilinear",
                                                       align_corners=False)[0, 0]
    return residual.cpu().numpy().astype(np.float32)


def detail_highpass(detail: np.ndarray, sigma: float) -> np.ndarray:
    """``detail`` minus its Gaussian blur of ``sigma`` texels at UV 512 (scaled with the size): the
    sampled residual's low frequencies are a random mottle the coarse albedo already covers; they cost
    hidden-texel PSNR and add no detail in the band :mod:`stages.evaluate.detail` measures."""
    detail = np.asarray(detail, dtype=np.float32)
    return detail - cv2.GaussianBlur(detail, (0, 0), sigma * detail.shape[0] / REFERENCE_SIZE)


def match_detail_gain(coarse_v: np.ndarray, detail: np.ndarray, reference_v: np.ndarray, seen: np.ndarray,
                      fill: np.ndarray, strength: float = 1.0) -> float:
    """The gain ``g >= 0`` that gives the filled texels ``strength`` times the photo's own detail: the
    band energy (:mod:`stages.evaluate.detail`) of ``V_c + g D`` over ``fill`` equals ``strength`` times
    that of ``reference_v`` over ``seen``.

    The band is linear, so with ``b_c``, ``b_d`` the band responses of ``V_c`` and ``D`` the energy over
    ``fill`` is ``E(g) = mean((b_c + g b_d)^2)``, a quadratic in ``g``: its positive root (0 when the
    coarse albedo alone already reaches the target).

    Args:
        coarse_v: ``(S, S)`` V of the coarse albedo.
        detail: ``(S, S)`` the decoder's V residual ``D``.
        reference_v: ``(S, S)`` V of the de-lit photo (meaningful on ``seen``).
        seen, fill: ``(S, S)`` bool skin texels the photo saw / the method fills.
        strength: target ratio of the two energies (1.0: as detailed as the photo).

    Returns:
        ``g``; nan when either region is empty after erosion or ``D`` has no energy there (no target).
    """
    target = strength * region_energy(band_pass(reference_v), seen)
    pixels = region_pixels(fill)
    if not np.isfinite(target) or not pixels.any():
        return float("nan")
    b_c, b_d = band_pass(coarse_v)[pixels].astype(np.float64), band_pass(detail)[pixels].astype(np.float64)
    a, b, c = np.mean(b_d * b_d), np.mean(b_c * b_d), np.mean(b_c * b_c) - target
    if a <= 1e-20:
        return float("nan")
    if c >= 0:
        return 0.0
    return float((-b + np.sqrt(b * b - a * c)) / a)      # a g^2 + 2 b g + c = 0 with c < 0: one positive root


#: The detail VAE shipped with facetex (``small`` preset, London training people; its README is the card).
SHIPPED_DETAIL_VAE = SHIPPED_MODELS / "detail_vae_london_v1"
#: Stage-3 defaults, tuned on London training photos (README "UVAPM albedo and light"): the prior
#: sample's temperature, the high-pass of the decoded residual (texels at UV 512) and the strength the
#: filled texels' detail is matched to (:func:`match_detail_gain`).
DETAIL_TEMPERATURE = 0.5
#: Weight of ``||z - z_0||^2`` in stage 3 (:func:`fit_detail`): 0 left block artifacts along the seen
#: border (chosen by looking at 2 London train + 2 wild textures: 0.03 still showed some, 0.1 and 1 none).
DETAIL_ANCHOR = 0.1
DETAIL_HIGHPASS_SIGMA = SIGMA_HI
DETAIL_STRENGTH = 0.7


def shipped_detail_vae() -> Path:
    """The shipped detail VAE's folder (the default of ``complete --method uvapm``); a one-line
    :class:`MissingArtifactError` when the install lacks it."""
    return shipped_model(SHIPPED_DETAIL_VAE, "detail VAE", "pass --model DIR or --no-detail")


@register_method
class UVAPMFill(CompletionMethod):
    """Options: ``pca_path`` (an ``AlbedoPCA`` h5; default the built-in London model), ``iterations``
    (Adam steps of the coarse fit), ``seed``, ``render_size`` (side of the fit's image crop),
    ``detail`` (stage 3 on or off), ``model_path`` (a detail VAE folder of ``facetex train detail-vae``;
    default the shipped one, :data:`SHIPPED_DETAIL_VAE`), ``detail_strength`` (the filled texels' detail
    energy over the photo's, :func:`match_detail_gain`), ``device`` (where the coarse fit, stage 3 and the
    reprojection render run: ``auto``, the default, is CUDA when available, as for every method with a
    ``--device``; ``cpu``; ``cuda``; ``cuda:N``; :func:`stages.models.device.resolve_device`). Needs the photo
    and its fit (:meth:`complete_fitted`)."""

    name = "uvapm"

    def __init__(self, model, pca_path: str | None = None, iterations: int | None = None, seed: int = 0,
                 render_size: int | None = None, model_path: str | None = None, detail: bool = True,
                 detail_strength: float = DETAIL_STRENGTH, device: str | None = None):
        super().__init__(model)
        if not isinstance(detail, bool):
            raise ValueError(f"detail must be true or false, got {detail!r}")
        if not detail and model_path is not None:
            raise ValueError("a detail model (model_path) was given with detail off")
        if not (np.isfinite(detail_strength) and detail_strength >= 0):
            raise ValueError(f"detail_strength must be a number >= 0, got {detail_strength!r}")
        self.device = resolve_device(device)
        self.pca = load_pca(pca_path)
        self.record_model_file("pca_path", pca_path or BUILTIN_PCA)
        defaults = AlbedoFitOptions()
        self.fit_options = AlbedoFitOptions(iterations=iterations or defaults.iterations, seed=seed,
                                            render_size=render_size or defaults.render_size)
        self.detail_strength = float(detail_strength)
        #: The stage-3 detail decoder and its latent shape (None with ``detail`` off: no detail).
        self.detail_decoder: DetailDecoder | None = None
        self.detail_latent_shape: tuple[int, ...] = (4, 32, 32)
        if detail:
            from stages.models.detail_vae import load_detail_decoder

            model_path = shipped_detail_vae() if model_path is None else model_path
            decoder, _ = load_detail_decoder(model_path, map_location=self.device)
            self.detail_decoder, self.detail_latent_shape = decoder, decoder.latent_shape
            self.record_model_file("model_path", model_path)

    def synthesize_detail(self, coarse: np.ndarray, delit: np.ndarray,
                          confidence: np.ndarray) -> tuple[np.ndarray, dict]:
        """Stage 3: the V residual ``D`` to add to ``coarse`` (:func:`hsv_compose`) and what was done.

        The decoder's residual (:func:`fit_detail`, from a prior sample at :data:`DETAIL_TEMPERATURE`),
        high-passed (:func:`detail_highpass`), times the gain that makes the filled skin whose mirror
        partner the photo saw (all the filled skin when that part is too thin to measure)
        ``detail_strength`` times as detailed as the photo's seen skin, both de-lit
        (:func:`match_detail_gain`). Without either region the gain is 1 (``info["detail_matched"]`` says which).

        Args:
            coarse, delit: ``(S, S, 3)`` coarse albedo and de-lit photo texture.
            confidence: ``(S, S)`` the unwrap's confidence (seen where > 0).

        Returns:
            ``(D (S, S) float32, info)``.
        """
        size = coarse.shape[0]
        if self.detail_decoder is None:
            return np.zeros((size, size), dtype=np.float32), {"detail": False}
        from stages.evaluate.stage import skin_uv_mask   # (evaluate imports the completion registry)

        start = time.perf_counter()
        residual = fit_detail(coarse, delit, confidence, self.detail_decoder, self.detail_latent_shape,
                              init_scale=DETAIL_TEMPERATURE, w_anchor=DETAIL_ANCHOR, seed=self.fit_options.seed,
                              device=self.device)
        seconds = time.perf_counter() - start
        residual = detail_highpass(residual, DETAIL_HIGHPASS_SIGMA)
        skin = skin_uv_mask(self.model, size)
        seen, unseen = skin & (confidence > 0), skin & (confidence <= 0)
        gain, matched = float("nan"), "none (no seen skin or nothing to fill: gain 1)"
        # The filled skin whose mirror partner was seen (tuned on); when that is too thin to measure (a
        # frontal photo: only slivers, or a view from below: the chin, whose partner is hidden too), all of it.
        for region, fill in (("mirror-seen", unseen & seen[:, ::-1]), ("all unseen", unseen)):
            gain = match_detail_gain(np.clip(coarse, 0, 1).max(axis=2), residual,
                                     np.clip(delit, 0, 1).max(axis=2), seen, fill, self.detail_strength)
            if np.isfinite(gain):
                matched = region
                break
        gain = gain if np.isfinite(gain) else 1.0
        return (gain * residual).astype(np.float32), {
            "detail": True, "detail_strength": self.detail_strength, "detail_gain": round(gain, 4),
            "detail_matched": matched, "detail_seconds": round(seconds, 3)}

    def complete(self, unwrap: UnwrapResult) -> Completion:
        raise MissingArtifactError(unwrap.stem, "--method uvapm needs the photo and its fit.json "
                                                "(fits the albedo to the photo)")

    def complete_fitted(self, unwrap: UnwrapResult, fit, photo: np.ndarray | None = None) -> Completion:
        if photo is None:
            raise MissingArtifactError(fit.fit_path or unwrap.stem, "--method uvapm needs the fitted photo, "
                                                                    "which was not found")
        try:
            coarse_fit = fit_albedo(photo, fit, self.model, self.pca, texel_weight=unwrap.confidence,
                                    options=self.fit_options, device=self.device)
        except ValueError as exc:
            raise MissingArtifactError(fit.fit_path or unwrap.stem, f"uvapm fit failed: {exc}") from None
        size = unwrap.size
        normals = texel_normals(self.model, coarse_fit.vertices, coarse_fit.pose.rotation, size)
        shade = texel_shading(normals, coarse_fit.lighting)
        delit = np.clip(unwrap.texture / shade, 0.0, 1.0)
        coarse = coarse_fit.albedo(self.pca, size)
        detail, detail_info = self.synthesize_detail(coarse, delit, unwrap.confidence)
        albedo_model = hsv_compose(coarse, detail)
        # The photo where it was seen, the model elsewhere: in albedo space and under the fitted light.
        albedo, _ = keep_photo_fill_prediction(albedo_model, dataclasses.replace(unwrap, texture=delit))
        texture, provenance = keep_photo_fill_prediction(np.clip(albedo_model * shade, 0, 1), unwrap)
        # The check of the de-lit albedo: rendered back under the fitted light, does it give the photo?
        reprojection = {name: round(reprojection_psnr(image, photo, fit, self.model, coarse_fit,
                                                      texel_weight=unwrap.confidence, device=self.device), 3)
                        for name, image in (("albedo", albedo), ("pca_albedo", coarse))}

        lighting = {"schema": "facetex.lighting", "schema_version": 1, "frame": "camera (x right, y up, z to camera)",
                    "lighting_sh": np.asarray(coarse_fit.lighting, dtype=float).round(6).tolist(),
                    "albedo": "uv_albedo.png",
                    "note": "absolute SH light of uv_albedo.png (shading = sh_basis(n) @ lighting_sh)",
                    "pose": coarse_fit.pose.to_dict()}
        info = {"method": self.name, **provenance_fractions(provenance, unwrap.layout_mask), "fit": coarse_fit.info,
                "reprojection_psnr_256": reprojection,
                **detail_info,
                MODEL_FILES_KEY: self.model_files}
        return Completion(texture=texture, provenance=provenance, info=info,
                          extra_images={"uv_albedo.png": albedo}, extra_json={"lighting.json": lighting})
