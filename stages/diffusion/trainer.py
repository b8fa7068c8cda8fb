"""Training loops of the two diffusion networks (seed 000), through Hugging Face accelerate.

One loop serves both: ``kind="appearance"`` trains on :class:`stages.diffusion.data.AppearanceSet`
(real photos, UV -> 2D), ``kind="structure"`` on :class:`stages.diffusion.data.StructureSet`
(renders of the face model with PCA albedos, 2D -> UV). Each step is the standard noise
prediction loss ``|| eps - eps_theta(x_t, t, tokens(source), control) ||^2`` on VAE latents of the
target, with the extractor's tokens zeroed for a ``cond_drop`` fraction of the samples
(classifier-free guidance at sampling).

What trains:

- Stable Diffusion base (``sd15``): the base UNet and VAE are frozen; the extractor and the
  ControlNet train (as in the paper).
- own base (``tiny``/``small``), appearance network: first ``vae_steps`` autoencoder steps (L1 +
  MSE + a small KL, on the face crops and on UV maps: pseudo-GT and defective unwraps), its latent
  scaling set to ``1 / std`` of the latents; then the UNet (the base) trains together with the
  extractor and the ControlNet. The folder then *is* the base of later structure networks.
- own base, structure network: ``--base APPEARANCE_DIR``; its UNet and VAE are frozen, the
  extractor and the ControlNet train, so cross-assembly puts both on the same base.

Seeded; checkpoints in ``training_state/`` resume exactly; sample sheets in ``samples/``
(source | control | sample | target); the model folder is written atomically
(:func:`stages.models.diffusion.save_model_folder`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stages.core.atomic import write_json
from stages.core.face_model import FaceModel
from stages.core.image_io import save_png
from stages.diffusion import require_diffusers
from stages.diffusion.config import DiffusionTrainConfig
from stages.models.extractor import DetailExtractor
from stages.models.folder import CONFIG_NAME
from stages.models.diffusion import (
    base_fingerprint,
    base_path_of,
    build_controlnet,
    build_unet,
    build_vae,
    latent_factor,
    load_base,
    noise_scheduler,
    read_meta,
    save_model_folder,
)
from stages.diffusion.pipeline import make_scheduler, sample

KL_WEIGHT = 1e-6


class _Autoencoding(torch.nn.Module):
    """``forward(images (B, 3, H, W)) -> (reconstruction (B, 3, H, W), KL (B,))``: the VAE as one module,
    so accelerate's distributed wrapper sees the whole reconstruction pass."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(images).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl()


def _cycle(loader, dataset) -> Iterator[dict]:
    epoch = 0
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def _resolve_base(config: DiffusionTrainConfig) -> tuple[Path, float | None]:
    """The real base folder of ``config.base`` and, for a facetex appearance folder, its latent scaling."""
    base = Path(config.base)
    if (base / CONFIG_NAME).is_file():      # a facetex folder (an SD folder has model_index.json)
        meta = read_meta(base, "appearance")
        return base_path_of(base, meta).resolve(), float(meta["scaling_factor"])
    return base.resolve(), None


def _sheet(source: torch.Tensor, control: torch.Tensor, images: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """``(rows * S, 4 * S, 3)`` image: source | control (first 3 channels) | sample | target."""
    size = target.shape[-1]

    def rgb(t: torch.Tensor, signed: bool = True) -> torch.Tensor:
        t = t.detach().float().cpu()[:, :3]
        t = (t + 1) / 2 if signed else t
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)

    rows = torch.cat([rgb(source), rgb(control), rgb(images, signed=False), rgb(target)], dim=3)
    return rows.permute(0, 2, 3, 1).reshape(-1, 4 * size, 3).numpy()


def train_diffusion(folders: list[Path], out_dir: Path, config: DiffusionTrainConfig, *, model: FaceModel,
                    pca=None, resume: bool = True, cpu: bool | None = None,
                    progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume) the appearance or the structure network and write its model folder.

    Args:
        folders: facetex training folders (fit.json with the photo's path, unwrap, uv_pseudo.png).
        out_dir: model folder to write.
        config: settings (``config.kind`` picks the network).
        model: the face model.
        pca: structure network: the albedo model to sample textures from (default: the shipped one).
        resume: continue from ``out_dir/training_state`` when present.
        cpu: force CPU (default: accelerate's choice, CUDA when available).
        progress: ``progress(step, total, losses)`` after every step (autoencoder steps included).

    Returns:
        The last losses plus ``steps``, ``vae_steps``, ``seconds`` and ``seconds_per_step``.
    """
    require_diffusers()
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from stages.diffusion.data import AppearanceSet, StructureSet
    from stages.fit import FitResult
    from stages.train.dataset import check_training_folder

    out_dir = Path(out_dir)
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no training folders")
    accelerator = Accelerator(cpu=bool(cpu), mixed_precision=config.mixed_precision)
    device = accelerator.device
    set_seed(config.seed)
    appearance = config.kind == "appearance"
    if appearance:
        dataset = AppearanceSet(folders, model, image_size=config.image_size, uv_size=config.uv_size,
                                landmarks=config.landmarks, epoch_length=config.batch_size)
        control_channels, out_size = dataset.control_channels, config.image_size
    else:
        if pca is None:
            from stages.completion.pca import load_pca

            pca = load_pca(None)
        shapes = []
        for folder in folders:
            check_training_folder(folder)
            shapes.append(FitResult.load(folder / "fit.json").vertices)
        dataset = StructureSet(shapes, model, pca, image_size=config.image_size, uv_size=config.uv_size,
                               seed=config.seed, epoch_length=max(len(folders), config.batch_size))
        control_channels, out_size = 3, config.uv_size

    train_base = config.own_base and appearance
    scaling_factor = None
    if train_base:
        vae = build_vae(config.vae, out_size)
        factor = latent_factor(vae)
        unet = build_unet(config.unet, vae.config.latent_channels, out_size // factor)
        base_info = {"path": None, "fingerprint": None}
    else:
        base, scaling_factor = _resolve_base(config)
        vae, unet = load_base(base, device="cpu")
        factor = latent_factor(vae)
        scaling_factor = float(vae.config.scaling_factor if scaling_factor is None else scaling_factor)
        base_info = {"path": str(base), "fingerprint": base_fingerprint(base)}
    if out_size % factor:
        raise ValueError(f"image size {out_size} is not a multiple of the VAE's downsampling {factor}")
    extractor = DetailExtractor({**config.extractor, "out_dim": int(unet.config.cross_attention_dim)})
    controlnet = build_controlnet(unet, control_channels, factor)
    noise = noise_scheduler()

    params = [p for p in extractor.parameters() if p.requires_grad] + list(controlnet.parameters())
    if train_base:
        params += list(unet.parameters())
    else:
        unet.requires_grad_(False).eval()
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=appearance, drop_last=True,
                                         generator=torch.Generator().manual_seed(config.seed), num_workers=0)
    if train_base:
        opt_vae = torch.optim.AdamW(vae.parameters(), lr=config.lr_vae, weight_decay=0.0)
        autoencoding, unet, extractor, controlnet, opt, opt_vae, loader = accelerator.prepare(
            _Autoencoding(vae), unet, extractor, controlnet, opt, opt_vae, loader)
        vae = accelerator.unwrap_model(autoencoding).vae
    else:
        vae.requires_grad_(False).eval()
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        for module in (vae, unet):
            module.to(device)
            if weight_dtype != torch.float32:   # frozen weights in the training precision (GPU memory)
                module.to(dtype=weight_dtype)
        extractor, controlnet, opt, loader = accelerator.prepare(extractor, controlnet, opt, loader)

    state_dir = out_dir / "training_state"
    step, vae_step = 0, 0
    vae_steps = config.vae_steps if train_base else 0
    if resume and (state_dir / "step.json").is_file():
        accelerator.load_state(str(state_dir))
        state = json.loads((state_dir / "step.json").read_text())
        step, vae_step = int(state["step"]), int(state.get("vae_step", 0))
        scaling_factor = state.get("scaling_factor", scaling_factor)

    raw_vae, raw_unet = vae, accelerator.unwrap_model(unet)
    batches = _cycle(loader, dataset)
    total = vae_steps + config.steps
    start, last = time.perf_counter(), {}

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(state_dir))
        if accelerator.is_main_process:
            write_json(state_dir / "step.json", {"step": step, "vae_step": vae_step, "scaling_factor": scaling_factor})

    # Phase 1 (own base): the autoencoder, on face crops and UV maps.
    if vae_step < vae_steps:
        raw_vae.train()
    while vae_step < vae_steps:
        batch = next(batches)
        keys = ("target", "pseudo", "source") if appearance else ("target", "source")
        images = batch[keys[vae_step % len(keys)]]
        with accelerator.autocast():
            recon, kl = autoencoding(images)
            rec = F.l1_loss(recon.float(), images.float()) + F.mse_loss(recon.float(), images.float())
            kl = kl.float().mean()
            loss = rec + KL_WEIGHT * kl
        opt_vae.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt_vae.step()
        vae_step += 1
        last = {"vae_rec": float(rec.detach()), "vae_kl": float(kl.detach())}
        if progress is not None:
            progress(vae_step, total, last)
        if config.checkpoint_every and vae_step % config.checkpoint_every == 0:
            checkpoint()
    if scaling_factor is None:          # own base: 1 / std of the target latents
        raw_vae.eval()
        with torch.no_grad():
            latents = [raw_vae.encode(next(batches)["target"].to(device)).latent_dist.mode() for _ in range(4)]
        latents = accelerator.gather(torch.cat(latents).float().contiguous())   # the same value in every process
        scaling_factor = float(1.0 / latents.std().clamp_min(1e-6))
    raw_vae.requires_grad_(False).eval()
    raw_vae.register_to_config(scaling_factor=scaling_factor)

    # Phase 2: noise prediction.
    extractor.train()
    controlnet.train()
    if train_base:
        unet.train()
    while step < config.steps:
        batch = next(batches)
        with torch.no_grad():
            latents = raw_vae.encode(batch["target"].to(raw_vae.dtype)).latent_dist.sample() * scaling_factor
        eps = torch.randn_like(latents)
        t = torch.randint(0, noise.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        noisy = noise.add_noise(latents, eps, t)
        with accelerator.autocast():
            tokens = extractor(batch["source"])
            keep = (torch.rand(tokens.shape[0], 1, 1, device=tokens.device) >= config.cond_drop).to(tokens.dtype)
            tokens = tokens * keep
            down, mid = controlnet(noisy, t, encoder_hidden_states=tokens, controlnet_cond=batch["control"],
                                   return_dict=False)
            pred = unet(noisy, t, encoder_hidden_states=tokens, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), eps.float())
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        last = {"loss": float(loss.detach())}
        if progress is not None:
            progress(vae_steps + step, total, last)
        if accelerator.is_main_process and config.sample_every and step % config.sample_every == 0:
            _write_samples(out_dir, step, batch, raw_vae, raw_unet, accelerator.unwrap_model(controlnet),
                           accelerator.unwrap_model(extractor), noise, config, scaling_factor, factor)
            extractor.train()
            controlnet.train()
            if train_base:
                unet.train()
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint()

    seconds = time.perf_counter() - start
    checkpoint()
    if accelerator.is_main_process:
        save_model_folder(out_dir, kind=config.kind, train=config.to_dict(),
                          extractor=accelerator.unwrap_model(extractor).float(),
                          controlnet=accelerator.unwrap_model(controlnet).float(), scheduler=noise, base=base_info,
                          scaling_factor=scaling_factor, factor=factor, conditioning_channels=control_channels,
                          steps=step, vae=raw_vae.float() if train_base else None,
                          unet=raw_unet.float() if train_base else None,
                          extra={"face_model": model.name, "data": [str(f) for f in folders], "vae_steps": vae_step,
                                 "last_losses": last, "train_seconds": round(seconds, 1)})
    done = max(1, step + vae_step)
    return {**last, "steps": step, "vae_steps": vae_step, "seconds": seconds, "seconds_per_step": seconds / done}


def _write_samples(out_dir: Path, step: int, batch: dict, vae, unet, controlnet, extractor, noise,
                   config: DiffusionTrainConfig, scaling_factor: float, factor: int) -> None:
    n = min(2, batch["target"].shape[0])
    unet.eval()
    controlnet.eval()
    extractor.eval()
    dtype = next(unet.parameters()).dtype
    images = sample(vae=vae, unet=unet, controlnet=controlnet, extractor=extractor,
                    source=batch["source"][:n].to(dtype), control=batch["control"][:n].to(dtype),
                    scheduler=make_scheduler("ddim", dict(noise.config)), steps=config.sample_steps,
                    guidance=1.4 if config.cond_drop > 0 else 1.0, seed=config.seed, scaling_factor=scaling_factor,
                    factor=factor)
    save_png(out_dir / "samples" / f"step_{step:06d}.png",
             _sheet(batch["source"][:n], batch["control"][:n], images, batch["target"][:n]))
