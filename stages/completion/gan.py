"""``gan``: seed 003's reconstruction by inversion (Slossberg et al., §3, Fig. 2 right).

The texture GAN's generator (``facetex train texture-gan``, :mod:`stages.models.texture_gan`) is
inverted on the photo: its latent ``w`` (per layer, ``W+``, starting at the mapping's ``w_avg``) and its
noise inputs are optimised by Adam so that the generated albedo, rendered on the photo's fitted mesh at
its fitted pose under the fit's SH light (the same composite as training:
:func:`stages.train.texture_gan.composite`'s render, here through :func:`invert_texture`), matches the
photo on the skin it saw: the face mask x ``skin_mask`` x the texels the unwrap saw (so the hidden-texel
test never fits to hidden texels, as ``uvapm``). Losses: a weighted L1 and the masked Laplacian-pyramid
L1 (:func:`stages.core.pyramid.laplacian_pyramid_l1`; the paper's VGG loss needs a download), plus
small priors keeping ``w`` near ``w_avg`` and the noise maps N(0, 1).

The result, ``albedo x the fit's texel shading`` (:func:`stages.albedo_fit.fit_shading`), upsampled to the
unwrap's size, fills what the photo did not see; the photo's own texels stay exact, composed without a
seam by :func:`stages.completion.unet.keep_photo_fill_prediction` (as ``unet`` and ``uvapm``). No weights
ship, so ``model_path`` (``--model DIR``) is required.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stages.completion import MODEL_FILES_KEY, Completion, CompletionMethod, register_method
from stages.completion.unet import keep_photo_fill_prediction
from stages.core.errors import MissingArtifactError
from stages.models.folder import SHIPPED_MODELS, shipped_model
from stages.core.provenance import provenance_fractions
from stages.core.pyramid import laplacian_pyramid_l1
from stages.core.shading import render
from stages.models.device import resolve_device
from stages.unwrap import UnwrapResult

DEFAULT_ITERATIONS = 100
DEFAULT_RENDER_SIZE = 96


def render_albedo(albedo: Tensor, screen: Tensor, triangles: Tensor, vert_uv: Tensor, tid: Tensor, normals: Tensor,
                  sh: Tensor) -> Tensor:
    """``(B, 3, R, R)``: ``albedo (B, 3, S, S)`` on the mesh under SH light ``sh (B, 9, 3)``, pooled first to
    about the image's texel footprint (``S // R``), as in training."""
    factor = max(1, albedo.shape[-1] // tid.shape[-1])
    texture = F.avg_pool2d(albedo, factor) if factor > 1 else albedo
    lit, _ = render(screen, triangles, vert_uv, texture, tid, vert_normals=normals, sh_coeffs=sh)
    return lit


def invert_texture(generator, target: Tensor, weight: Tensor, geometry: dict, *,
                   iterations: int = DEFAULT_ITERATIONS, lr: float = 0.05, w_lap: float = 0.5,
                   w_latent: float = 1e-3, w_noise: float = 1e-2, seed: int = 0) -> tuple[Tensor, list[float]]:
    """Optimise ``W+`` latents and noise so the lit render of ``generator``'s albedo matches ``target``.

    Args:
        generator: a :class:`stages.models.texture_gan.TextureGenerator` (its weights are not changed).
        target: ``(1, 3, R, R)`` photo crop in ``[0, 1]``.
        weight: ``(1, 1, R, R)`` pixel weights (0 where nothing may be fitted).
        geometry: ``screen (1, V, 3)``, ``triangles (F, 3)``, ``vert_uv (V, 2)``, ``tid (1, R, R)``,
            ``normals (1, V, 3)``, ``sh (1, 9, 3)`` tensors (the :func:`render_albedo` arguments).
        iterations, lr: Adam steps and learning rate.
        w_lap, w_latent, w_noise: weights of the Laplacian-pyramid L1, ``mean (w - w_avg)^2`` and the
            noise prior ``sum_l mean(n_l)^2 + (mean(n_l^2) - 1)^2``.
        seed: the noise maps' starting values.

    Returns:
        ``(albedo (1, 3, S, S) detached, the data loss (L1 + w_lap * pyramid) before each step and after the last)``.
    """
    device = target.device
    rng = torch.Generator().manual_seed(int(seed))
    w_avg = generator.mapping.w_avg.detach()
    ws = w_avg[None, None].repeat(1, generator.num_ws, 1).clone().requires_grad_(True)
    noise = [n.to(device).requires_grad_(True) for n in generator.make_noise(1, rng)]
    optimiser = torch.optim.Adam([{"params": [ws], "lr": lr}, {"params": noise, "lr": lr}])
    total_weight = weight.sum().clamp_min(1e-6)

    def data_loss() -> tuple[Tensor, Tensor]:
        albedo = generator.synthesis(ws, noise)
        lit = render_albedo(albedo, **geometry)
        l1 = ((lit - target).abs() * weight).sum() / (3.0 * total_weight)
        return l1 + w_lap * laplacian_pyramid_l1(lit, target, weight), albedo

    history: list[float] = []
    for _ in range(int(iterations)):
        optimiser.zero_grad(set_to_none=True)
        loss, _ = data_loss()
        history.append(float(loss.detach()))
        prior = w_latent * ((ws - w_avg) ** 2).mean()
        prior = prior + w_noise * sum(n.mean() ** 2 + (n.pow(2).mean() - 1.0) ** 2 for n in noise)
        (loss + prior).backward()
        optimiser.step()
    with torch.no_grad():
        loss, albedo = data_loss()
    history.append(float(loss))
    return albedo.detach(), history


#: The texture GAN shipped with facetex (``small`` preset, London training people; its README is the card).
SHIPPED_TEXTURE_GAN = SHIPPED_MODELS / "texture_gan_london_v1"


def shipped_texture_gan() -> Path:
    """The shipped texture GAN's folder (the default of ``complete --method gan`` and ``generate``); a
    one-line :class:`MissingArtifactError` when the install lacks it."""
    return shipped_model(SHIPPED_TEXTURE_GAN, "texture GAN", "or pass --model DIR")


@register_method
class GANFill(CompletionMethod):
    """Options: ``model_path`` (a ``facetex train texture-gan`` folder; default: the shipped London-trained
    ``small`` generator, :data:`SHIPPED_TEXTURE_GAN`),
    ``iterations`` (Adam steps of the inversion, default 100), ``render_size`` (side of the image crop the
    render is compared in, default 96), ``seed``, ``device``. Needs the photo and its fit."""

    name = "gan"

    def __init__(self, model, model_path: str | None = None, iterations: int | None = None,
                 render_size: int | None = None, seed: int = 0, device: str | None = None):
        super().__init__(model)
        from stages.models.texture_gan import load_texture_generator

        model_path = shipped_texture_gan() if model_path is None else model_path
        self.device = resolve_device(device)
        self.generator, config = load_texture_generator(model_path, map_location=self.device)
        if config.get("face_model", model.name) != model.name:
            raise MissingArtifactError(model_path, f"trained on face model {config.get('face_model')!r}, "
                                                   f"not {model.name!r}")
        self.record_model_file("model_path", model_path)
        self.iterations = int(iterations or DEFAULT_ITERATIONS)
        self.render_size = int(render_size or DEFAULT_RENDER_SIZE)
        self.seed = int(seed)
        self.triangles = torch.from_numpy(model.triangles.astype(np.int64)).to(self.device)
        self.vert_uv = torch.from_numpy(np.array(model.uv, dtype=np.float32)).to(self.device)

    def complete(self, unwrap: UnwrapResult) -> Completion:
        raise MissingArtifactError(unwrap.stem, "--method gan needs the photo and its fit.json "
                                                "(inverts the generator on the photo)")

    def invert(self, unwrap: UnwrapResult, fit, photo: np.ndarray) -> tuple[np.ndarray, dict]:
        """``(albedo (S', S', 3) float32 at the generator's size, info)`` fitted to the photo's seen skin."""
        from stages.albedo_fit import seen_weight
        from stages.face_view import photo_view
        from stages.render import normalised_light

        start = time.perf_counter()
        rgb = np.asarray(photo, dtype=np.float32) / (255.0 if photo.dtype == np.uint8 else 1.0)
        skin = fit.skin.prob if fit.skin is not None else None
        view = photo_view(fit, self.model, rgb, self.render_size, skin=skin)
        weight = view.mask * seen_weight(view, self.model, unwrap.confidence)
        if weight.sum() < 50:
            raise MissingArtifactError(fit.fit_path or unwrap.stem, f"--method gan: only {weight.sum():.0f} seen "
                                                                    "skin pixels to invert the generator on")
        try:
            sh = normalised_light(fit.lighting)
        except ValueError as exc:
            raise MissingArtifactError(fit.fit_path or unwrap.stem, f"lighting_sh: {exc}") from None
        normals = fit.pose.rotate_normals(self.model.vertex_normals(fit.vertices))

        def t(a: np.ndarray, dtype=torch.float32) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=self.device, dtype=dtype)[None]

        geometry = {"screen": t(view.screen), "triangles": self.triangles, "vert_uv": self.vert_uv,
                    "tid": t(view.triangle_id, torch.int64), "normals": t(normals), "sh": t(sh)}
        target = t(view.image).permute(0, 3, 1, 2)
        albedo, history = invert_texture(self.generator, target, t(weight)[None], geometry,
                                         iterations=self.iterations, seed=self.seed)
        info = {"iterations": self.iterations, "render_size": self.render_size, "fitted_pixels": int(weight.sum()),
                "loss_start": round(history[0], 5), "loss_end": round(history[-1], 5),
                "seconds": round(time.perf_counter() - start, 3), "seed": self.seed}
        return albedo[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32), info

    def complete_fitted(self, unwrap: UnwrapResult, fit, photo: np.ndarray | None = None) -> Completion:
        from stages.albedo_fit import fit_shading

        if photo is None:
            raise MissingArtifactError(fit.fit_path or unwrap.stem, "--method gan needs the fitted photo, "
                                                                    "which was not found")
        albedo, inversion = self.invert(unwrap, fit, photo)
        size = unwrap.size
        albedo = np.clip(cv2.resize(albedo, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
        prediction = np.clip(albedo * fit_shading(self.model, fit, size), 0, 1)
        texture, provenance = keep_photo_fill_prediction(prediction, unwrap)

        return Completion(texture=texture, provenance=provenance,
                          info={"method": self.name, **provenance_fractions(provenance, unwrap.layout_mask),
                                "inversion": inversion, MODEL_FILES_KEY: self.model_files})
