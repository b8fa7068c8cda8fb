"""Training loop of the weakly supervised UV generator (seed 001, §3.2), no ground truth needed.

Each step: a batch of training pairs from :class:`stages.train.dataset.UVTrainingSet` (the unwrap
further hidden by a randomly re-posed head, or a re-rendered pseudo-GT; target = real texels where
the photo saw them, pseudo-GT elsewhere at a lower weight), then

- generator loss = ``w_rec`` * confidence-weighted L1 to the target
  + ``w_sym`` * symmetry + ``w_tv`` * total variation
  + ``w_adv`` * (centre-UV + side-UV partial discriminators, hinge), nose masked as in seed 001;
- discriminator loss: real partial UVs (the photo's seen texels) vs the generator's output under the
  same seen mask, centre and side crops (the right side mirrored and stacked with the left).

Runs through Hugging Face accelerate, so the same code trains on CPU, one GPU, or many GPUs/nodes
with ``accelerate launch``. Seeded; deterministic on CPU. Checkpoints (``training_state/``) resume
exactly; the model folder (``config.json`` + ``weights.safetensors``) is written in the
``save_pretrained`` format of :mod:`stages.train.model_dir`.

Not yet in this loop (planned, see the README): the render reconstruction loss and the face
discriminator on renders, and the identity loss.
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
from stages.train import losses as L
from stages.train.model_dir import save_pretrained
from stages.train.networks import DiscriminatorConfig, PatchDiscriminator, UVGenerator, UVGeneratorConfig

MODEL_TYPE = "uv_generator"

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


def nose_uv_mask(model: FaceModel, size: int) -> np.ndarray:
    """``(S, S)`` float 1 on texels of the nose region (masked in the partial-UV discriminators)."""
    indicator = np.zeros((model.n_vertices, 1))
    indicator[model.regions["nose"]] = 1.0
    return (uv_layout(model, size).interpolate(indicator)[..., 0] > 0.5).astype(np.float32)


def _sample_sheet(batch: dict, pred: torch.Tensor, rows: int = 4) -> np.ndarray:
    """``(rows * S, 3 * S, 3)`` image: input (partial) | output | target, one row per sample."""
    def hwc(t):
        return t.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()

    lines = []
    for i in range(min(rows, pred.shape[0])):
        lines.append(np.concatenate([hwc(batch["partial"][i]), hwc(pred[i]), hwc(batch["target"][i])], axis=1))
    return np.concatenate(lines, axis=0)


def train_uv_generator(folders: list[Path], out_dir: Path, config: TrainConfig, *, model: FaceModel,
                       resume: bool = True, cpu: bool | None = None,
                       progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume training) the UV generator and write its model folder.

    Args:
        folders: facetex output folders with fit.json, the unwrap and uv_pseudo.png.
        out_dir: model folder to write (``config.json``, ``weights.safetensors``, ``samples/``,
            ``training_state/`` for resuming).
        config: training settings.
        model: the face model (UV layout, nose region).
        resume: continue from ``out_dir/training_state`` when present.
        cpu: force CPU (default: accelerate's choice: CUDA when available).
        progress: called as ``progress(step, total, losses)`` after every step.

    Returns:
        The last step's losses (floats) plus ``steps`` and ``seconds``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from stages.train.dataset import UVTrainingSet

    out_dir = Path(out_dir)
    accelerator = Accelerator(cpu=bool(cpu))
    set_seed(config.seed)
    dataset = UVTrainingSet(folders, model, uv_size=config.uv_size, pseudo_weight=config.pseudo_weight,
                            rerender_fraction=config.rerender_fraction, seed=config.seed,
                            epoch_length=max(len(folders), config.batch_size))
    generator_cfg = UVGeneratorConfig.from_dict(config.generator)
    disc_cfg = DiscriminatorConfig.from_dict(config.discriminator)
    generator = UVGenerator(generator_cfg)
    disc_centre = PatchDiscriminator(disc_cfg)
    disc_side = PatchDiscriminator(disc_cfg)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_generator, betas=config.betas)
    opt_d = torch.optim.Adam(list(disc_centre.parameters()) + list(disc_side.parameters()),
                             lr=config.lr_discriminator, betas=config.betas)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(config.seed), num_workers=0)
    generator, disc_centre, disc_side, opt_g, opt_d, loader = accelerator.prepare(
        generator, disc_centre, disc_side, opt_g, opt_d, loader)

    state_dir = out_dir / "training_state"
    step = 0
    if resume and (state_dir / "step.json").is_file():
        accelerator.load_state(str(state_dir))
        step = int(json.loads((state_dir / "step.json").read_text())["step"])
    nose = torch.from_numpy(nose_uv_mask(model, config.uv_size))[None, None].to(accelerator.device)

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
            pred = generator(batch["partial"], batch["mask"], batch["position"])
            real_partial = batch["real"]          # the photo's own texels, zero where unseen
            fake_partial = pred * seen

            # Discriminators: real partial UVs vs the generator's output under the same seen mask.
            opt_d.zero_grad(set_to_none=True)
            real_crops, fake_crops = crops(real_partial), crops(fake_partial.detach())
            d_loss = (L.d_hinge_loss(disc_centre(real_crops["centre"]), disc_centre(fake_crops["centre"]))
                      + L.d_hinge_loss(disc_side(real_crops["side"]), disc_side(fake_crops["side"])))
            accelerator.backward(d_loss)
            opt_d.step()

            opt_g.zero_grad(set_to_none=True)
            fake_crops = crops(fake_partial)
            rec = L.weighted_l1(pred, batch["target"], batch["weight"])
            sym = L.symmetry_loss(pred, batch["layout"])
            tv = L.tv_loss(pred, batch["layout"])
            adv = L.g_hinge_loss(disc_centre(fake_crops["centre"])) + L.g_hinge_loss(disc_side(fake_crops["side"]))
            g_loss = config.w_rec * rec + config.w_sym * sym + config.w_tv * tv + config.w_adv * adv
            accelerator.backward(g_loss)
            opt_g.step()
            step += 1
            last = {name: float(value.detach()) for name, value in
                    (("g", g_loss), ("rec", rec), ("sym", sym), ("tv", tv), ("adv", adv), ("d", d_loss))}
            if progress is not None:
                progress(step, config.steps, last)
            if accelerator.is_main_process and config.sample_every and step % config.sample_every == 0:
                save_png(out_dir / "samples" / f"step_{step:06d}.png", _sample_sheet(batch, pred))
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                _checkpoint(accelerator, state_dir, step)
        epoch += 1

    _checkpoint(accelerator, state_dir, step)
    if accelerator.is_main_process:
        unwrapped = {"generator": accelerator.unwrap_model(generator),
                     "disc_centre": accelerator.unwrap_model(disc_centre),
                     "disc_side": accelerator.unwrap_model(disc_side)}
        configs = {"generator": generator_cfg.to_dict(), "disc_centre": disc_cfg.to_dict(),
                   "disc_side": disc_cfg.to_dict()}
        save_pretrained(out_dir, unwrapped, configs, model_type=MODEL_TYPE, keep=("samples", "training_state"),
                        extra={"train": asdict(config), "uv_size": config.uv_size, "face_model": model.name,
                               "steps": step, "data": [str(f) for f in folders], "last_losses": last})
    return {**last, "steps": step, "seconds": time.perf_counter() - start}


def _checkpoint(accelerator, state_dir: Path, step: int) -> None:
    accelerator.wait_for_everyone()
    accelerator.save_state(str(state_dir))
    if accelerator.is_main_process:
        write_json(state_dir / "step.json", {"step": step})
