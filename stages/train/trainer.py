"""Training loop of the weakly supervised UV generator (seed 001, §3.2), no ground truth needed.

Each step: a batch of training pairs from :class:`stages.train.dataset.UVTrainingSet` (the unwrap
further hidden by a randomly re-posed head, or a re-rendered pseudo-GT; target = real texels where
the photo saw them, pseudo-GT elsewhere at a lower weight), then

- generator loss = ``w_rec`` * confidence-weighted L1 to the target
  + ``w_sym`` * symmetry + ``w_tv`` * total variation
  + ``w_adv`` * (centre-UV + side-UV partial discriminators, hinge), nose masked as in seed 001;
- ``w_render`` * L1 between the prediction rendered at the photo's fitted pose (``I_0^R``, the
  differentiable deferred renderer with the fitted z-buffer) and the background-masked photo ``I^m``
  (seed 001 eq. 11, second term);
- ``w_face_adv`` * face discriminator on ``I_0^R`` and on a render at a novel pose ``I_1^R``;
- ``w_id`` * identity loss ``1 - cos(F(I_1^R), F(I^m))`` when a face-embedding network is given
  (``identity_model``: a TorchScript file, see :mod:`stages.train.identity`);
- discriminator losses: real partial UVs (the photo's seen texels) vs the generator's output under the
  same seen mask, centre and side crops (the right side mirrored and stacked with the left); real
  masked photos vs renders for the face discriminator.

Every sample is relit and recoloured at random (:mod:`stages.train.augment`) consistently in UV and
image space, so the generator does not learn one studio's light as "the" face colour.

Runs through Hugging Face accelerate, so the same code trains on CPU, one GPU, or many GPUs/nodes
with ``accelerate launch``. Seeded; deterministic on CPU. Checkpoints (``training_state/``: weights,
optimizers, step) resume training, but not bit-exactly: the interrupted epoch's data order starts
over (measured: an interrupted tiny run drifts from an uninterrupted one after the resume). The
model folder (``config.json`` + ``weights.safetensors``) is written in the ``save_pretrained``
format of :mod:`stages.models.folder`.

"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stages.core.atomic import write_json
from stages.core.face_model import FaceModel
from stages.core.image_io import save_png
from stages.core.uv import uv_layout
from stages.core.shading import render
from stages.train import losses as L
from stages.train.augment import ColourAugment, apply_colour, draw_params, shading_field
from stages.models.folder import save_pretrained
from stages.models.uv_generator import (MODEL_TYPE, DiscriminatorConfig, PatchDiscriminator, UVGenerator,
                                        UVGeneratorConfig)


#: Named model sizes: "tiny" for tests (seconds on CPU), "small" for CPU training, "base" for GPUs.
PRESETS = {
    "tiny": {"generator": {"base_channels": 4, "depth": 2, "max_channels": 8},
             "discriminator": {"base_channels": 4, "layers": 2}},
    "small": {"generator": {"base_channels": 16, "depth": 4, "max_channels": 128},
              "discriminator": {"base_channels": 16, "layers": 3}},
    "base": {"generator": {"base_channels": 32, "depth": 5, "max_channels": 256},
             "discriminator": {"base_channels": 32, "layers": 3}},
}


@dataclass
class TrainConfig:
    """Every training knob (saved with the weights). Loss weights follow seed 001's structure."""

    preset: str = "small"
    uv_size: int = 256
    batch_size: int = 4
    steps: int = 2000
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    w_rec: float = 1.0
    w_sym: float = 0.1
    w_tv: float = 0.01
    w_adv: float = 0.01
    w_render: float = 1.0
    w_face_adv: float = 0.01
    w_id: float = 0.1
    identity_model: str | None = None
    view_size: int = 128
    augment: dict = field(default_factory=lambda: asdict(ColourAugment()))
    pseudo_weight: float = 0.3
    rerender_fraction: float = 0.25
    seed: int = 0
    sample_every: int = 200
    checkpoint_every: int = 500
    generator: dict = field(default_factory=dict)
    discriminator: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        self.generator = {**PRESETS[self.preset]["generator"], **self.generator}
        self.discriminator = {**PRESETS[self.preset]["discriminator"], **self.discriminator}
        self.betas = tuple(self.betas)
        self.augment = asdict(ColourAugment(**self.augment))
        if self.view_size and self.view_size < 32:
            raise ValueError(f"view_size must be 0 (no render losses) or >= 32, got {self.view_size}")
        if self.identity_model is not None and not self.view_size:
            raise ValueError("the identity loss compares renders: it needs view_size > 0")

    @property
    def uses_views(self) -> bool:
        """Whether the image-space terms (render L1, face discriminator, identity) are on."""
        return bool(self.view_size) and (self.w_render > 0 or self.w_face_adv > 0 or self.identity_model is not None)


def nose_uv_mask(model: FaceModel, size: int) -> np.ndarray:
    """``(S, S)`` float 1 on texels of the nose region (masked in the partial-UV discriminators)."""
    indicator = np.zeros((model.n_vertices, 1))
    indicator[model.regions["nose"]] = 1.0
    return (uv_layout(model, size).interpolate(indicator)[..., 0] > 0.5).astype(np.float32)


def _sample_sheet(images: list[torch.Tensor], rows: int = 4) -> np.ndarray:
    """``(rows * S, len(images) * S, 3)`` image: one column per ``(B, 3, ., .)`` tensor (resized to the
    first one's size), one row per sample, e.g. input | output | target | photo | render."""
    size = images[0].shape[-2:]

    def hwc(t):
        t = t.detach().float().cpu()
        if t.shape[-2:] != size:
            t = torch.nn.functional.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]
        return t.clamp(0, 1).permute(1, 2, 0).numpy()

    lines = [np.concatenate([hwc(image[i]) for image in images], axis=1)
             for i in range(min(rows, images[0].shape[0]))]
    return np.concatenate(lines, axis=0)


class _Renderer:
    """Renders UV textures of the face model in fixed-visibility views (batched, differentiable)."""

    def __init__(self, model: FaceModel, device: torch.device):
        self.triangles = torch.from_numpy(model.triangles.astype(np.int64)).to(device)
        self.vert_uv = torch.from_numpy(np.array(model.uv, dtype=np.float32)).to(device)

    def __call__(self, texture: torch.Tensor, screen: torch.Tensor, triangle_id: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        """``texture (B, C, S, S)``, ``screen (B, V, 3)``, ``triangle_id (B, R, R)``, ``mask (B, 1, R, R)``
        -> ``(B, C, R, R)`` render, zero outside ``mask``."""
        image, _ = render(screen, self.triangles, self.vert_uv, texture, triangle_id)
        return image * mask


def train_uv_generator(folders: list[Path], out_dir: Path, config: TrainConfig, *, model: FaceModel,
                       resume: bool = True, cpu: bool | None = None,
                       progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume training) the UV generator and write its model folder.

    Args:
        folders: facetex output folders with fit.json, the unwrap and uv_pseudo.png (and the photo
            named in fit.json when ``config.view_size > 0``).
        out_dir: model folder to write (``config.json``, ``weights.safetensors``, ``samples/``,
            ``training_state/`` for resuming).
        config: training settings.
        model: the face model (UV layout, nose region, triangles for the renders).
        resume: continue from ``out_dir/training_state`` when present.
        cpu: force CPU (default: accelerate's choice: CUDA when available).
        progress: called as ``progress(step, total, losses)`` after every step.

    Returns:
        The last step's losses (floats) plus ``steps`` and ``seconds``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from stages.train.dataset import UVTrainingSet
    from stages.train.identity import load_identity_network

    out_dir = Path(out_dir)
    accelerator = Accelerator(cpu=bool(cpu))
    set_seed(config.seed)
    identity = load_identity_network(config.identity_model, accelerator.device) if config.identity_model else None
    views = config.uses_views
    dataset = UVTrainingSet(folders, model, uv_size=config.uv_size, pseudo_weight=config.pseudo_weight,
                            rerender_fraction=config.rerender_fraction, seed=config.seed,
                            epoch_length=max(len(folders), config.batch_size),
                            view_size=config.view_size if views else 0)
    generator_cfg = UVGeneratorConfig.from_dict(config.generator)
    disc_cfg = DiscriminatorConfig.from_dict(config.discriminator)
    generator = UVGenerator(generator_cfg)
    discriminators = {name: PatchDiscriminator(disc_cfg) for name in ("disc_centre", "disc_side", "disc_face")}
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.betas)
    opt_d = torch.optim.Adam([p for d in discriminators.values() for p in d.parameters()],
                             lr=config.lr_discriminator, betas=config.betas)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(config.seed), num_workers=0)
    generator, disc_centre, disc_side, disc_face, opt_g, opt_d, loader = accelerator.prepare(
        generator, *discriminators.values(), opt_g, opt_d, loader)

    state_dir = out_dir / "training_state"
    step = 0
    if resume and (state_dir / "step.json").is_file():
        accelerator.load_state(str(state_dir))
        step = int(json.loads((state_dir / "step.json").read_text())["step"])
    nose = torch.from_numpy(nose_uv_mask(model, config.uv_size))[None, None].to(accelerator.device)
    renderer = _Renderer(model, accelerator.device)
    augment = ColourAugment(**config.augment)

    def crops(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return L.uv_crops(L.masked_nose(images, nose), centre=L.DEFAULT_CENTRE_CROP, side=L.DEFAULT_SIDE_CROP)

    start = time.perf_counter()
    last: dict[str, float] = {}
    epoch = step // max(1, len(loader))
    while step < config.steps:
        dataset.set_epoch(epoch)
        for batch in loader:
            if step >= config.steps:
                break
            seen = batch["seen"]
            partial, target, real_partial = batch["partial"], batch["target"], batch["real"]
            photo = batch["view_image"] if views else None
            if augment.enabled:
                # Seeded by step, so a resumed run draws what an uninterrupted one would.
                draws = torch.Generator().manual_seed(config.seed * 7919 + step)
                params = draw_params(augment, partial.shape[0], draws, device=partial.device)
                shade = shading_field(batch["normal"], batch["layout"], params)
                partial, target, real_partial = (apply_colour(x, params, shade)
                                                 for x in (partial, target, real_partial))
                if views:
                    shade_view = renderer(shade, batch["view_screen"], batch["view_triangle_id"], batch["view_mask"])
                    photo = apply_colour(photo, params, shade_view) * batch["view_mask"]
            pred = generator(partial, batch["mask"], batch["position"])
            fake_partial = pred * seen
            if views:
                render_fitted = renderer(pred, batch["view_screen"], batch["view_triangle_id"], batch["view_mask"])
                render_novel = renderer(pred, batch["novel_screen"], batch["novel_triangle_id"], batch["novel_mask"])
                fake_faces = torch.cat([render_fitted, render_novel], 0)

            # Discriminators: real partial UVs vs the generator's output under the same seen mask;
            # real masked photos vs renders of the prediction (fitted and novel pose).
            opt_d.zero_grad(set_to_none=True)
            real_crops, fake_crops = crops(real_partial), crops(fake_partial.detach())
            d_loss = (L.d_hinge_loss(disc_centre(real_crops["centre"]), disc_centre(fake_crops["centre"]))
                      + L.d_hinge_loss(disc_side(real_crops["side"]), disc_side(fake_crops["side"])))
            if views and config.w_face_adv > 0:
                d_loss = d_loss + L.d_hinge_loss(disc_face(photo), disc_face(fake_faces.detach()))
            accelerator.backward(d_loss)
            opt_d.step()

            opt_g.zero_grad(set_to_none=True)
            fake_crops = crops(fake_partial)
            zero = pred.new_zeros(())
            rec = L.weighted_l1(pred, target, batch["weight"])
            sym = L.symmetry_loss(pred, batch["layout"])
            tv = L.tv_loss(pred, batch["layout"])
            adv = L.g_hinge_loss(disc_centre(fake_crops["centre"])) + L.g_hinge_loss(disc_side(fake_crops["side"]))
            rec_face = L.weighted_l1(render_fitted, photo, batch["view_mask"]) if views else zero
            adv_face = L.g_hinge_loss(disc_face(fake_faces)) if views and config.w_face_adv > 0 else zero
            ident = identity.loss(render_novel, photo) if identity is not None else zero
            g_loss = (config.w_rec * rec + config.w_sym * sym + config.w_tv * tv + config.w_adv * adv
                      + config.w_render * rec_face + config.w_face_adv * adv_face + config.w_id * ident)
            accelerator.backward(g_loss)
            opt_g.step()
            step += 1
            last = {name: float(value.detach()) for name, value in
                    (("g", g_loss), ("rec", rec), ("render", rec_face), ("sym", sym), ("tv", tv), ("adv", adv),
                     ("face", adv_face), ("id", ident), ("d", d_loss))}
            if progress is not None:
                progress(step, config.steps, last)
            if accelerator.is_main_process and config.sample_every and step % config.sample_every == 0:
                columns = [partial, pred, target] + ([photo, render_fitted, render_novel] if views else [])
                save_png(out_dir / "samples" / f"step_{step:06d}.png", _sample_sheet(columns))
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save_checkpoint(accelerator, state_dir, step)
        epoch += 1

    save_checkpoint(accelerator, state_dir, step)
    if accelerator.is_main_process:
        unwrapped = {"generator": accelerator.unwrap_model(generator),
                     "disc_centre": accelerator.unwrap_model(disc_centre),
                     "disc_side": accelerator.unwrap_model(disc_side),
                     "disc_face": accelerator.unwrap_model(disc_face)}
        configs = {"generator": generator_cfg.to_dict(), **{name: disc_cfg.to_dict() for name in discriminators}}
        save_pretrained(out_dir, unwrapped, configs, model_type=MODEL_TYPE, keep=("samples", "training_state"),
                        extra={"train": asdict(config), "uv_size": config.uv_size, "face_model": model.name,
                               "steps": step, "data": [str(f) for f in folders], "last_losses": last,
                               "identity_model_sha256": identity.sha256 if identity is not None else None})
    return {**last, "steps": step, "seconds": time.perf_counter() - start}


def save_checkpoint(accelerator, state_dir: Path, step: int) -> None:
    """Save the accelerate training state (models, optimizers, RNGs) and the step count, for resuming."""
    accelerator.wait_for_everyone()
    accelerator.save_state(str(state_dir))
    if accelerator.is_main_process:
        write_json(state_dir / "step.json", {"step": step})
