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

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stages.core.face_model import FaceModel
from stages.core.uv import uv_layout
from stages.core.shading import render
from stages.train import losses as L
from stages.train.augment import ColourAugment, apply_colour, draw_params, shading_field
from stages.train.runner import RunConfig, run_field, sample_sheet
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
class TrainConfig(RunConfig):
    """Every training knob (saved with the weights). Loss weights follow seed 001's structure.

    Fields with a help text are ``facetex train unet`` options (built from them, so each default is here)."""

    preset: str = run_field("small", "Model size: tiny (tests), small (CPU), base (GPU).", choices=tuple(PRESETS))
    uv_size: int = run_field(256, "Training UV side in texels.", min=32, max=1024)
    lr_generator: float = run_field(2e-4, "Adam learning rate of the generator.", min=0.0)
    lr_discriminator: float = run_field(2e-4, "Adam learning rate of the discriminators.", min=0.0)
    betas: tuple[float, float] = (0.5, 0.999)
    w_rec: float = run_field(1.0, "Weight of the confidence-weighted L1 to the target.", min=0.0)
    w_sym: float = run_field(0.1, "Weight of the symmetry loss.", min=0.0)
    w_tv: float = run_field(0.01, "Weight of the total variation.", min=0.0)
    w_adv: float = run_field(0.01, "Weight of the partial-UV discriminators.", min=0.0)
    w_render: float = run_field(1.0, "Weight of the render L1 loss.", min=0.0)
    w_face_adv: float = run_field(0.01, "Weight of the face discriminator.", min=0.0)
    w_id: float = run_field(0.1, "Weight of the identity loss.", min=0.0)
    identity_model: str | None = run_field(None, "TorchScript face-embedding network for the identity loss (see "
                                           "data_manifests/evaluation_models.md).",
                                           show_default="none: no identity loss", path=True)
    view_size: int = run_field(128, "Side of the face renders for the render L1 / face discriminator / identity "
                                    "losses (0: UV losses only; then the photos are not read).", min=0, max=1024)
    augment: dict = field(default_factory=lambda: asdict(ColourAugment()))
    pseudo_weight: float = run_field(0.3, "Weight of the pseudo-GT target where the photo saw nothing.", min=0.0)
    rerender_fraction: float = run_field(0.25, "Fraction of samples made by re-rendering the pseudo-GT.",
                                         min=0.0, max=1.0)
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
                       resume: bool = True, device: str | None = "auto", num_workers: int = 0,
                       cpu: bool | None = None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume training) the UV generator and write its model folder.

    Args:
        folders: facetex output folders with fit.json, the unwrap and uv_pseudo.png (and the photo
            named in fit.json when ``config.view_size > 0``).
        out_dir: model folder to write (``config.json``, ``weights.safetensors``, ``samples/``,
            ``training_state/`` for resuming).
        config: training settings.
        model: the face model (UV layout, nose region, triangles for the renders).
        resume, device, num_workers, progress: the :class:`stages.train.runner.TrainingRunner`'s
            (``cpu=True``: the old spelling of ``device="cpu"``).

    Returns:
        The last step's losses (floats) plus ``steps`` and ``seconds``.
    """
    from stages.train.dataset import UVTrainingSet
    from stages.train.identity import load_identity_network
    from stages.train.runner import RUN_FILES, Phase, StepOutput, TrainingRunner

    runner = TrainingRunner(out_dir, config, device="cpu" if cpu else device, num_workers=num_workers,
                            resume=resume, progress=progress)
    identity = load_identity_network(config.identity_model, runner.device) if config.identity_model else None
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
    loader = runner.loader(dataset)
    generator, disc_centre, disc_side, disc_face, opt_g, opt_d, _ = runner.prepare(
        generator, *discriminators.values(), opt_g, opt_d, loader)

    nose = torch.from_numpy(nose_uv_mask(model, config.uv_size))[None, None].to(runner.device)
    renderer = _Renderer(model, runner.device)
    augment = ColourAugment(**config.augment)

    def crops(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return L.uv_crops(L.masked_nose(images, nose), centre=L.DEFAULT_CENTRE_CROP, side=L.DEFAULT_SIDE_CROP)

    def train_step(batch: dict, step: int) -> StepOutput:
        seen = batch["seen"]
        partial, target, real_partial = batch["partial"], batch["target"], batch["real"]
        photo = batch["view_image"] if views else None
        if augment.enabled:
            # Seeded by step, so a resumed run draws what an uninterrupted one would.
            draws = torch.Generator().manual_seed(config.seed * 7919 + step)
            params = draw_params(augment, partial.shape[0], draws, device=partial.device)
            shade = shading_field(batch["normal"], batch["layout"], params)
            partial, target, real_partial = (apply_colour(x, params, shade) for x in (partial, target, real_partial))
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
        real_crops, fake_crops = crops(real_partial), crops(fake_partial.detach())
        d_loss = (L.d_hinge_loss(disc_centre(real_crops["centre"]), disc_centre(fake_crops["centre"]))
                  + L.d_hinge_loss(disc_side(real_crops["side"]), disc_side(fake_crops["side"])))
        if views and config.w_face_adv > 0:
            d_loss = d_loss + L.d_hinge_loss(disc_face(photo), disc_face(fake_faces.detach()))
        runner.optimise(d_loss, opt_d)

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
        runner.optimise(g_loss, opt_g)
        columns = [partial, pred, target] + ([photo, render_fitted, render_novel] if views else [])
        return StepOutput({"g": g_loss, "rec": rec, "render": rec_face, "sym": sym, "tv": tv, "adv": adv,
                           "face": adv_face, "id": ident, "d": d_loss}, lambda: sample_sheet(columns))

    counters = runner.run([Phase("step", config.steps, train_step)])
    step = counters["step"]

    def save() -> None:
        networks = {"generator": generator, "disc_centre": disc_centre, "disc_side": disc_side,
                    "disc_face": disc_face}
        configs = {"generator": generator_cfg.to_dict(), **{name: disc_cfg.to_dict() for name in discriminators}}
        save_pretrained(out_dir, {name: runner.unwrap(net) for name, net in networks.items()}, configs,
                        model_type=MODEL_TYPE, keep=RUN_FILES,
                        extra={"train": asdict(config), "uv_size": config.uv_size, "face_model": model.name,
                               "steps": step, "data": [str(f) for f in folders], "last_losses": runner.last,
                               "identity_model_sha256": identity.sha256 if identity is not None else None})

    runner.finish(save)
    return {**runner.last, "steps": step, "seconds": runner.seconds}
