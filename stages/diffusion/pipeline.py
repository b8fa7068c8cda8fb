"""Cross-assembled sampling: defective unwrap -> complete UV texture (seed 000's inference).

:class:`CrossAssemblyPipeline` puts the appearance network's detail extractor and the structure
network's ControlNet (the UV structure aligner) on their common base (VAE + UNet). Per step, the
UNet denoises the latents with cross-attention on the extractor's tokens of the defective unwrap
and the ControlNet's residuals from the complete UV position map; classifier-free guidance mixes
in the prediction with zero tokens (what the networks learned with ``cond_drop``).

Sampling is deterministic for a seed: every item's initial noise is drawn on the CPU from
``torch.Generator().manual_seed(seed)`` (so it does not depend on the batch or the device) and
both schedulers (DDIM with eta 0, DPM-Solver++ multistep) are deterministic. On CUDA the
networks run in float16 by default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.core.errors import MissingArtifactError
from stages.models.diffusion import require_diffusers
from stages.models.diffusion import base_fingerprint, base_path_of, load_base, load_modules, read_meta
from stages.models.inputs import POSITION_SCALE, resize_masked

SCHEDULERS = ("ddim", "dpm")


def make_scheduler(name: str, config: dict):
    """A sampling scheduler over the training noise schedule ``config``: ``ddim`` (eta 0) or ``dpm``
    (DPM-Solver++ 2nd order multistep, good in 10-20 steps)."""
    diffusers = require_diffusers()
    if name == "ddim":
        return diffusers.DDIMScheduler.from_config(config)
    if name == "dpm":
        return diffusers.DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                                 solver_order=2)
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``(B, C, h, w)`` float32 CPU noise; every item drawn from its own generator seeded ``seed``."""
    items = [torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(int(seed))) for _ in range(shape[0])]
    return torch.cat(items, dim=0)


@torch.no_grad()
def sample(*, vae, unet, controlnet, extractor, source: torch.Tensor, control: torch.Tensor, scheduler,
           steps: int, guidance: float, seed: int, scaling_factor: float, factor: int,
           init: torch.Tensor | None = None, strength: float = 1.0, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Run the guided denoising loop and decode.

    From pure noise (the paper), or, with ``init``, from an image's latent noised to ``strength`` of the
    schedule (SDEdit, Meng et al. 2022: the sampler only refines the given fill); with ``keep`` the
    latents under that mask are reset after every step to ``init``'s, noised to the next step's level
    (RePaint-style, Lugmayr et al. 2022), so what is known (the photo's texels) constrains the rest.

    Args:
        vae, unet, controlnet, extractor: the assembled modules (same device and dtype).
        source: ``(B, 3, Hs, Ws)`` extractor input in ``[-1, 1]``.
        control: ``(B, Cc, H, W)`` ControlNet condition; the output is ``H x W``.
        scheduler: a diffusers scheduler (its timesteps are set here).
        steps: denoising steps.
        guidance: classifier-free guidance scale (1 = no unconditional pass).
        seed: initial-noise seed (:func:`initial_noise`).
        scaling_factor: the latent scaling of the VAE.
        factor: the VAE's spatial downsampling.
        init: ``(B, 3, H, W)`` image in ``[-1, 1]`` to start from (None: pure noise).
        strength: with ``init``, the fraction of the ``steps`` run (1 = all: ``init`` only matters
            through ``keep``); at least one step runs.
        keep: ``(B, 1, H, W)`` mask in ``[0, 1]`` of ``init``'s pixels to keep (needs ``init``).

    Returns:
        ``(B, 3, H, W)`` float32 CPU images in ``[0, 1]``.
    """
    device, dtype = control.device, control.dtype
    batch, _, height, width = control.shape
    channels = int(unet.config.in_channels)
    noise = initial_noise((batch, channels, height // factor, width // factor), seed).to(device, dtype)
    scheduler.set_timesteps(int(steps), device=device)
    timesteps = scheduler.timesteps
    if init is None:
        if keep is not None:
            raise ValueError("keep needs init")
        latents = noise * scheduler.init_noise_sigma
    else:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        known = vae.encode(init.to(device, dtype)).latent_dist.mode() * scaling_factor
        start = min(len(timesteps) - 1, int(round(len(timesteps) * (1.0 - strength))))
        timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * int(getattr(scheduler, "order", 1)))
        if strength < 1.0:
            latents = scheduler.add_noise(known, noise, timesteps[:1])
        else:
            latents = noise * scheduler.init_noise_sigma
        if keep is not None:
            keep = torch.nn.functional.interpolate(keep.to(device, dtype), size=latents.shape[-2:], mode="area")
    tokens = extractor(source)
    guided = guidance != 1.0
    if guided:
        tokens = torch.cat([torch.zeros_like(tokens), tokens])
        control = torch.cat([control, control])
    for i, t in enumerate(timesteps):
        x = torch.cat([latents, latents]) if guided else latents
        x = scheduler.scale_model_input(x, t)
        down, mid = controlnet(x, t, encoder_hidden_states=tokens, controlnet_cond=control, return_dict=False)
        eps = unet(x, t, encoder_hidden_states=tokens, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0]
        if guided:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        latents = scheduler.step(eps, t, latents, return_dict=False)[0]
        if keep is not None:
            level = known if i + 1 == len(timesteps) else scheduler.add_noise(known, noise, timesteps[i + 1:i + 2])
            latents = keep * level + (1 - keep) * latents
    images = vae.decode(latents / scaling_factor, return_dict=False)[0]
    return ((images.float().clamp(-1, 1) + 1) / 2).cpu()


@dataclass
class PreparedUnwrap:
    """Network inputs of one unwrap: ``source (3, Us, Us)`` in [-1, 1] (unseen = -1) and
    ``position (3, U, U)`` positions / POSITION_SCALE on the layout, 0 beyond."""

    source: np.ndarray
    position: np.ndarray


def prepare_unwrap(texture: np.ndarray, confidence: np.ndarray, position: np.ndarray, layout: np.ndarray, *,
                   source_size: int, uv_size: int) -> PreparedUnwrap:
    """Arrays of an unwrap (``(S, S, 3)``, ``(S, S)``, ``(S, S, 3)``, ``(S, S)`` bool) -> network inputs."""
    seen = confidence > 0
    partial, _ = resize_masked(texture, seen, source_size)
    pos, _ = resize_masked(position / POSITION_SCALE, layout, uv_size)
    return PreparedUnwrap(source=np.ascontiguousarray(partial.transpose(2, 0, 1) * 2 - 1, dtype=np.float32),
                          position=np.ascontiguousarray(pos.transpose(2, 0, 1), dtype=np.float32))


class CrossAssemblyPipeline:
    """The appearance extractor + the structure ControlNet on their shared base.

    Build with :meth:`from_folders`. Call with prepared inputs (:func:`prepare_unwrap`).
    """

    def __init__(self, *, vae, unet, extractor, controlnet, scheduler_config: dict, scaling_factor: float,
                 factor: int, source_size: int, uv_size: int, device: torch.device, dtype: torch.dtype,
                 info: dict | None = None):
        self.vae, self.unet, self.extractor, self.controlnet = vae, unet, extractor, controlnet
        self.scheduler_config = dict(scheduler_config)
        self.scaling_factor, self.factor = float(scaling_factor), int(factor)
        self.source_size, self.uv_size = int(source_size), int(uv_size)
        self.device, self.dtype = device, dtype
        self.info = dict(info or {})

    @classmethod
    def from_folders(cls, appearance: str | Path, structure: str | Path, *, device: str | torch.device = "cpu",
                     half: bool | None = None) -> CrossAssemblyPipeline:
        """Load the appearance extractor, the structure ControlNet and their base, once.

        Args:
            appearance: a ``facetex train diffusion-appearance`` folder.
            structure: a ``facetex train diffusion-structure`` folder trained on the same base.
            device: torch device.
            half: float16 networks (default: on CUDA only).

        Raises:
            MissingArtifactError: a folder is missing or broken, or the two were trained on different bases.
        """
        device = torch.device(device)
        dtype = torch.float16 if (device.type == "cuda" if half is None else half) else torch.float32
        appearance, structure = Path(appearance), Path(structure)
        meta_a = read_meta(appearance, "appearance")
        meta_s = read_meta(structure, "structure")
        base = base_path_of(appearance, meta_a)
        if not base.is_dir():
            raise MissingArtifactError(base, "base model folder of the appearance model not found")
        fingerprint = base_fingerprint(base)
        if meta_a["base"].get("fingerprint") != fingerprint:
            raise MissingArtifactError(base, "this base model is not the one the appearance model was trained on")
        if meta_s["base"].get("fingerprint") != fingerprint:
            raise MissingArtifactError(structure, f"trained on another base model than {appearance} (retrain it with "
                                                  f"`facetex train diffusion-structure --base {base}`)")
        if int(meta_s["conditioning_channels"]) != 3:
            raise MissingArtifactError(structure, "its ControlNet does not take a 3-channel UV position map")
        vae, unet = load_base(base, device=device, dtype=dtype)
        extractor, _, _ = load_modules(appearance, kind="appearance", device=device, dtype=dtype)
        _, controlnet, _ = load_modules(structure, kind="structure", device=device, dtype=dtype)
        scheduler_path = appearance / "scheduler" / "scheduler_config.json"
        try:
            scheduler_config = json.loads(scheduler_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MissingArtifactError(scheduler_path, f"unreadable scheduler config ({type(e).__name__})") from None
        return cls(vae=vae, unet=unet, extractor=extractor, controlnet=controlnet, scheduler_config=scheduler_config,
                   scaling_factor=float(meta_a["scaling_factor"]), factor=int(meta_a["latent_factor"]),
                   source_size=int(meta_a["train"]["uv_size"]), uv_size=int(meta_s["train"]["uv_size"]),
                   device=device, dtype=dtype,
                   info={"appearance": str(appearance), "structure": str(structure), "base": str(base),
                         "appearance_steps": meta_a.get("steps"), "structure_steps": meta_s.get("steps")})

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """``(B, 3, U, U)`` images in ``[-1, 1]`` -> ``(B, U, U, 3)`` in ``[0, 1]``: through the autoencoder
        (encode, mode, decode), what a sample that kept them exactly would decode to."""
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).to(self.device, self.dtype)
            y = self.vae.decode(self.vae.encode(x).latent_dist.mode(), return_dict=False)[0]
            out.append(((y.float().clamp(-1, 1) + 1) / 2).cpu().permute(0, 2, 3, 1).numpy())
        return np.concatenate(out, axis=0)

    def check_inputs(self, source: np.ndarray, position: np.ndarray, steps: int, guidance: float,
                     scheduler: str, batch_size: int) -> None:
        """Raise ValueError naming the first bad argument."""
        if source.ndim != 4 or source.shape[1:] != (3, self.source_size, self.source_size):
            raise ValueError(f"source must be (B, 3, {self.source_size}, {self.source_size}), got {source.shape}")
        if position.ndim != 4 or position.shape[1:] != (3, self.uv_size, self.uv_size):
            raise ValueError(f"position must be (B, 3, {self.uv_size}, {self.uv_size}), got {position.shape}")
        if source.shape[0] != position.shape[0]:
            raise ValueError(f"source and position batch sizes differ ({source.shape[0]} vs {position.shape[0]})")
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
            raise ValueError(f"steps must be an integer in [1, 1000], got {steps!r}")
        if not np.isfinite(guidance) or guidance < 1.0:
            raise ValueError(f"guidance must be >= 1, got {guidance!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")

    def __call__(self, source: np.ndarray, position: np.ndarray, *, steps: int = 30, guidance: float = 1.4,
                 seed: int = 0, scheduler: str = "ddim", batch_size: int = 8, init: np.ndarray | None = None,
                 strength: float = 1.0, keep: np.ndarray | None = None) -> np.ndarray:
        """Complete UV textures.

        Args:
            source: ``(B, 3, Us, Us)`` defective unwraps in ``[-1, 1]`` (:class:`PreparedUnwrap`).
            position: ``(B, 3, U, U)`` complete UV position maps / POSITION_SCALE (0 beyond the layout).
            steps, guidance, seed, scheduler: sampling settings (paper: DDIM, 30 steps, 1.4).
            batch_size: items per network pass (guidance doubles it).
            init, strength, keep: ``(B, 3, U, U)`` fills in ``[-1, 1]`` to start from, the part of the
                schedule to run, ``(B, 1, U, U)`` masks of what to keep of them (:func:`sample`).

        Returns:
            ``(B, U, U, 3)`` float32 textures in ``[0, 1]``.
        """
        self.check_inputs(source, position, steps, guidance, scheduler, batch_size)
        out = []
        for start in range(0, source.shape[0], batch_size):
            src = torch.from_numpy(source[start:start + batch_size]).to(self.device, self.dtype)
            ctl = torch.from_numpy(position[start:start + batch_size]).to(self.device, self.dtype)
            part = {name: None if a is None
                    else torch.from_numpy(a[start:start + batch_size]).to(self.device, self.dtype)
                    for name, a in (("init", init), ("keep", keep))}
            images = sample(vae=self.vae, unet=self.unet, controlnet=self.controlnet, extractor=self.extractor,
                            source=src, control=ctl, scheduler=make_scheduler(scheduler, self.scheduler_config),
                            steps=steps, guidance=float(guidance), seed=seed, scaling_factor=self.scaling_factor,
                            factor=self.factor, strength=strength, **part)
            out.append(images.permute(0, 2, 3, 1).numpy())
        return np.concatenate(out, axis=0)
