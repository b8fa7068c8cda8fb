"""Training loops of the two diffusion networks (seed 000), through Hugging Face accelerate.

One loop serves both: ``kind="appearance"`` trains on :class:`stages.train.diffusion_data.AppearanceSet`
(real photos, UV -> 2D), ``kind="structure"`` on :class:`stages.train.diffusion_data.StructureSet`
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

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stages.core.face_model import FaceModel
from stages.diffusion import require_diffusers
from stages.train.diffusion_config import DiffusionTrainConfig
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


def _resolve_base(config: DiffusionTrainConfig) -> tuple[Path, float | None]:
    """The real base folder of ``config.base`` and, for a facetex appearance folder, its latent scaling."""
    base = Path(config.base)
    if (base / CONFIG_NAME).is_file():      # a facetex folder (an SD folder has model_index.json)
        meta = read_meta(base, "appearance")
        return base_path_of(base, meta).resolve(), float(meta["scaling_factor"])
    return base.resolve(), None


def train_diffusion(folders: list[Path], out_dir: Path, config: DiffusionTrainConfig, *, model: FaceModel,
                    pca=None, resume: bool = True, device: str | None = "auto", num_workers: int = 0,
                    cpu: bool | None = None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume) the appearance or the structure network and write its model folder.

    Args:
        folders: facetex training folders (fit.json with the photo's path, unwrap, uv_pseudo.png).
        out_dir: model folder to write.
        config: settings (``config.kind`` picks the network).
        model: the face model.
        pca: structure network: the albedo model to sample textures from (default: the shipped one).
        resume, device, num_workers, progress: the :class:`stages.train.runner.TrainingRunner`'s
            (``cpu=True``: the old spelling of ``device="cpu"``).

    Returns:
        The last losses plus ``steps``, ``vae_steps``, ``seconds`` and ``seconds_per_step``.
    """
    require_diffusers()
    from stages.fit import FitResult
    from stages.train.dataset import check_training_folder
    from stages.train.diffusion_data import AppearanceSet, StructureSet
    from stages.train.runner import RUN_FILES, Phase, StepOutput, TrainingRunner, sample_sheet

    out_dir = Path(out_dir)
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no training folders")
    runner = TrainingRunner(out_dir, config, device="cpu" if cpu else device, num_workers=num_workers,
                            resume=resume, mixed_precision=config.mixed_precision, progress=progress)
    accelerator, device = runner.accelerator, runner.device
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
    runner.state["scaling_factor"] = None
    if train_base:
        vae = build_vae(config.vae, out_size)
        factor = latent_factor(vae)
        unet = build_unet(config.unet, vae.config.latent_channels, out_size // factor)
        base_info = {"path": None, "fingerprint": None}
    else:
        base, scaling_factor = _resolve_base(config)
        vae, unet = load_base(base, device="cpu")
        factor = latent_factor(vae)
        runner.state["scaling_factor"] = float(vae.config.scaling_factor if scaling_factor is None
                                               else scaling_factor)
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
    loader = runner.loader(dataset, shuffle=appearance)
    if train_base:
        opt_vae = torch.optim.AdamW(vae.parameters(), lr=config.lr_vae, weight_decay=0.0)
        autoencoding, unet, extractor, controlnet, opt, opt_vae, _ = runner.prepare(
            _Autoencoding(vae), unet, extractor, controlnet, opt, opt_vae, loader)
        vae = runner.unwrap(autoencoding).vae
    else:
        vae.requires_grad_(False).eval()
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        for module in (vae, unet):
            module.to(device)
            if weight_dtype != torch.float32:   # frozen weights in the training precision (GPU memory)
                module.to(dtype=weight_dtype)
        extractor, controlnet, opt, _ = runner.prepare(extractor, controlnet, opt, loader)
    raw_vae, raw_unet = vae, runner.unwrap(unet)

    # Phase 1 (own base): the autoencoder, on face crops and UV maps.
    def vae_step(batch: dict, step: int) -> StepOutput:
        keys = ("target", "pseudo", "source") if appearance else ("target", "source")
        images = batch[keys[step % len(keys)]]
        with accelerator.autocast():
            recon, kl = autoencoding(images)
            rec = F.l1_loss(recon.float(), images.float()) + F.mse_loss(recon.float(), images.float())
            kl = kl.float().mean()
            loss = rec + KL_WEIGHT * kl
        runner.optimise(loss, opt_vae)
        return StepOutput({"vae_rec": rec, "vae_kl": kl})

    def train_modes(training: bool) -> None:
        for module in (extractor, controlnet) + ((unet,) if train_base else ()):
            module.train(training)

    def diffusion_start() -> None:
        if runner.state["scaling_factor"] is None:          # own base: 1 / std of the target latents
            raw_vae.eval()
            with torch.no_grad():
                latents = [raw_vae.encode(runner.next_batch()["target"].to(device)).latent_dist.mode()
                           for _ in range(4)]
            latents = accelerator.gather(torch.cat(latents).float().contiguous())   # the same in every process
            runner.state["scaling_factor"] = float(1.0 / latents.std().clamp_min(1e-6))
        raw_vae.requires_grad_(False).eval()
        raw_vae.register_to_config(scaling_factor=runner.state["scaling_factor"])
        train_modes(True)

    # Phase 2: noise prediction.
    def diffusion_step(batch: dict, step: int) -> StepOutput:
        scaling_factor = runner.state["scaling_factor"]
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
        runner.optimise(loss, opt, clip=(params, 1.0))

        def sheet() -> np.ndarray:
            """source | control (first 3 channels) | sample | target, two rows."""
            n = min(2, batch["target"].shape[0])
            train_modes(False)
            raw_unet.eval()
            dtype = next(raw_unet.parameters()).dtype
            images = sample(vae=raw_vae, unet=raw_unet, controlnet=runner.unwrap(controlnet),
                            extractor=runner.unwrap(extractor), source=batch["source"][:n].to(dtype),
                            control=batch["control"][:n].to(dtype),
                            scheduler=make_scheduler("ddim", dict(noise.config)), steps=config.sample_steps,
                            guidance=1.4 if config.cond_drop > 0 else 1.0, seed=config.seed,
                            scaling_factor=scaling_factor, factor=factor)
            train_modes(True)
            unsigned = [(batch[k][:n] + 1) / 2 for k in ("source", "control", "target")]
            return sample_sheet([unsigned[0], unsigned[1], images, unsigned[2]], rows=n)

        return StepOutput({"loss": loss}, sheet)

    vae_steps = config.vae_steps if train_base else 0
    if train_base:
        raw_vae.train()
    counters = runner.run([Phase("vae_step", vae_steps, vae_step),
                           Phase("step", config.steps, diffusion_step, start=diffusion_start)])
    seconds = runner.seconds

    def save() -> None:
        save_model_folder(out_dir, kind=config.kind, train=config.to_dict(),
                          extractor=runner.unwrap(extractor).float(), controlnet=runner.unwrap(controlnet).float(),
                          scheduler=noise, base=base_info, scaling_factor=runner.state["scaling_factor"],
                          keep=RUN_FILES, factor=factor, conditioning_channels=control_channels, steps=counters["step"],
                          vae=raw_vae.float() if train_base else None, unet=raw_unet.float() if train_base else None,
                          extra={"face_model": model.name, "data": [str(f) for f in folders],
                                 "vae_steps": counters["vae_step"], "last_losses": runner.last,
                                 "train_seconds": round(seconds, 1)})

    runner.finish(save)
    done = max(1, counters["step"] + counters["vae_step"])
    return {**runner.last, "steps": counters["step"], "vae_steps": counters["vae_step"], "seconds": seconds,
            "seconds_per_step": seconds / done}
