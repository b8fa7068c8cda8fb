"""Training of UVAPM's detail VAE (seed 002, §3.4): dataset, losses and the runner step.

**Data.** The paper subtracts a coarse albedo (its PCA encoder-decoder's output) from each real albedo
map to get a high-frequency detail map. Here each training folder's real unwrap (``uv_texture.png``
with its confidence) is fitted by the PCA albedo model in closed form
(:func:`stages.pseudo_gt.pca_texture`, seed 001's Eq. 8: a ridge fit to the seen texels), and the
residual of the value channel ``V = max(R, G, B)``, ``V(texture) - V(pca fit)``, is the target, defined
on the seen texels only. Why this coarse fit and not uvapm's analysis-by-synthesis albedo: both are
projections onto the same PCA basis, so the residual spans the same band (what the basis cannot
express), but the closed-form fit needs only the unwrap and costs milliseconds, while the uvapm fit
needs the photo and seconds to tens of seconds per photo on a CPU (the 172 London training photos
would cost more than the training). The lit texture's residual also holds shading the basis cannot
express (sharp shadows), which the de-lit residual of inference mostly lacks; a known difference.

**Losses** (all on the seen texels only, weight ``confidence > 0``; residuals in units of the
network's ``scale``): masked L1 reconstruction (``w_rec``); the KL divergence of the latent posterior
to N(0, I) (``w_kl``, mean per latent element); a masked Laplacian-pyramid L1 (``w_lap``, Bojanowski
et al. 2018) as the perceptual term: it compares the error band by band (each level's mean weighted
by ``2 ** level``), so fine detail counts as much as the coarse level, where a plain L1 is dominated
by the low frequencies and rewards a blur; it needs no pretrained network (no LPIPS/VGG weights can be
downloaded here). No adversarial term: a masked discriminator on CPU at this data size would cost
more steps than it could help; left out.

**Augmentation:** a left-right flip of the UV map (the layout is exactly symmetric), seeded by
``(seed, epoch, index)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stages.core.face_model import FaceModel
from stages.models.detail_vae import MODEL_TYPE, PRESETS, DetailDecoder, DetailEncoder, DetailVAEConfig
from stages.models.folder import save_pretrained
from stages.core.pyramid import laplacian_pyramid_l1
from stages.models.inputs import SEEN_COVERAGE, resize_masked
from stages.train.losses import weighted_l1
from stages.train.runner import RUN_FILES, Phase, RunConfig, StepOutput, TrainingRunner, run_field, sample_sheet

#: Files each training folder must hold, and the command that writes them.
REQUIRED_FILES: tuple[tuple[str, str], ...] = (("unwrap.json", "facetex unwrap"),
                                               ("uv_texture.png", "facetex unwrap"),
                                               ("uv_position.npy", "facetex unwrap"))


def value_residual(unwrap, pca) -> tuple[np.ndarray, np.ndarray]:
    """The detail target of one unwrap: ``V(texture) - V(pca_texture(unwrap))`` and where it is defined.

    Returns:
        ``(residual (S, S) float32, zero where unseen; seen (S, S) bool)`` at the unwrap's size.
    """
    from stages.pseudo_gt import pca_texture

    coarse, _ = pca_texture(unwrap, pca)
    seen = unwrap.confidence > 0
    residual = np.clip(unwrap.texture, 0, 1).max(axis=2) - coarse.max(axis=2)
    return np.where(seen, residual, 0.0).astype(np.float32), seen


class DetailResidualSet(torch.utils.data.Dataset):
    """``{"residual": (1, S, S), "weight": (1, S, S)}`` float32 per item (the V residual, 0 where unseen;
    1 on the seen texels), loaded once at ``uv_size``; item ``i`` is folder ``i % n``, flipped left-right
    with probability ``flip`` seeded by ``(seed, epoch, i)``."""

    def __init__(self, folders: list[Path], model: FaceModel, pca, *, uv_size: int, seed: int = 0,
                 flip: float = 0.5, epoch_length: int | None = None):
        from stages.train.dataset import check_training_folder
        from stages.unwrap import UnwrapResult

        self.residuals, self.weights = [], []
        for folder in folders:
            check_training_folder(folder, REQUIRED_FILES)
            residual, seen = value_residual(UnwrapResult.load(folder, model), pca)
            small, coverage = resize_masked(residual, seen, uv_size)
            self.residuals.append(small.astype(np.float32))
            self.weights.append((coverage >= SEEN_COVERAGE).astype(np.float32))   # resize_masked's seen rule
        self.seed, self.flip, self.epoch = int(seed), float(flip), 0
        self.length = max(len(self.residuals), int(epoch_length or 0))

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        i = index % len(self.residuals)
        residual, weight = self.residuals[i], self.weights[i]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if rng.random() < self.flip:
            residual, weight = residual[:, ::-1], weight[:, ::-1]
        return {"residual": torch.from_numpy(np.ascontiguousarray(residual))[None],
                "weight": torch.from_numpy(np.ascontiguousarray(weight))[None]}


@dataclass
class DetailVAETrainConfig(RunConfig):
    """Every training knob of the detail VAE (saved in ``config.json``; losses: module docstring)."""

    preset: str = run_field("small", "Network size: tiny (tests), small (CPU; latent 4x32x32 from 128^2), base "
                                     "(GPU; the paper's 4x32x32 latent from 256^2).", choices=tuple(PRESETS))
    steps: int = 2000
    batch_size: int = 8
    lr: float = run_field(1e-3, "Adam learning rate.", min=0.0)
    w_rec: float = run_field(1.0, "Weight of the masked L1 reconstruction.", min=0.0)
    w_kl: float = run_field(1e-3, "Weight of the KL divergence (mean per latent element).", min=0.0)
    w_lap: float = run_field(0.5, "Weight of the masked Laplacian-pyramid L1 (the perceptual term).", min=0.0)
    flip: float = run_field(0.5, "Probability of a left-right flipped sample.", min=0.0, max=1.0)
    pca: str | None = run_field(None, "PCA albedo model (.h5) whose fit is subtracted.", show_default="built in",
                                path=True)
    network: dict | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.pca is not None:
            self.pca = str(self.pca)
        self.network = DetailVAEConfig.from_dict({**PRESETS[self.preset].to_dict(), **(self.network or {})}).to_dict()
        for name in ("lr", "w_rec", "w_kl", "w_lap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.lr == 0:
            raise ValueError("lr must be positive")


def vae_losses(encoder: DetailEncoder, decoder: DetailDecoder, batch: dict, config: DetailVAETrainConfig,
               generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Encode, sample, decode one batch. Returns ``(total, parts, reconstruction (B, 1, S, S))``."""
    scale = decoder.scale
    residual, weight = batch["residual"], batch["weight"]
    mean, logvar = encoder(torch.cat([residual / scale * weight, weight], dim=1))
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    recon = decoder(mean + torch.exp(0.5 * logvar) * eps)
    rec = weighted_l1(recon / scale, residual / scale, weight)
    lap = laplacian_pyramid_l1(recon / scale, residual / scale, weight)
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).mean()
    total = config.w_rec * rec + config.w_kl * kl + config.w_lap * lap
    return total, {"loss": total, "rec": rec, "lap": lap, "kl": kl}, recon


def train_detail_vae(folders: list[Path], out_dir: Path, config: DetailVAETrainConfig, *, model: FaceModel,
                     resume: bool = True, device: str | None = "auto", num_workers: int = 0,
                     cpu: bool | None = None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume) the detail VAE and write its model folder (networks ``encoder`` + ``decoder``).

    Args:
        folders: facetex output folders holding an unwrap (``unwrap.json``, ``uv_texture.png``).
        out_dir: the model folder.
        config: training settings.
        model: the face model of the unwraps.
        resume, device, num_workers, progress: the :class:`stages.train.runner.TrainingRunner`'s
            (``cpu=True``: the old spelling of ``device="cpu"``).

    Returns:
        The last step's losses plus ``steps`` and ``seconds``.
    """
    from stages.completion.pca import BUILTIN_PCA, load_pca

    runner = TrainingRunner(out_dir, config, device="cpu" if cpu else device, num_workers=num_workers,
                            resume=resume, progress=progress)
    net_cfg = DetailVAEConfig.from_dict(config.network)
    pca = load_pca(config.pca)
    dataset = DetailResidualSet(folders, model, pca, uv_size=net_cfg.uv_size, seed=config.seed, flip=config.flip,
                                epoch_length=max(len(folders), config.batch_size))
    encoder, decoder = DetailEncoder(net_cfg), DetailDecoder(net_cfg)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=config.lr)
    encoder, decoder, optimizer, _ = runner.prepare(encoder, decoder, optimizer, runner.loader(dataset))

    def train_step(batch: dict, step: int) -> StepOutput:
        total, parts, recon = vae_losses(encoder, decoder, batch, config)
        runner.optimise(total, optimizer)

        def sheet() -> np.ndarray:
            """target residual | reconstruction | seen mask (residuals shown as 0.5 + 2.5 r)."""
            def grey(t: Tensor) -> Tensor:
                return (0.5 + 2.5 * t).repeat(1, 3, 1, 1)

            return sample_sheet([grey(batch["residual"]), grey(recon * batch["weight"]),
                                 batch["weight"].repeat(1, 3, 1, 1)])

        return StepOutput(parts, sheet)

    encoder.train()
    decoder.train()
    step = runner.run([Phase("step", config.steps, train_step)])["step"]

    def save() -> None:
        save_pretrained(out_dir, {"encoder": runner.unwrap(encoder), "decoder": runner.unwrap(decoder)},
                        {"encoder": net_cfg.to_dict(), "decoder": net_cfg.to_dict()}, model_type=MODEL_TYPE,
                        keep=RUN_FILES,
                        extra={"train": asdict(config), "face_model": model.name, "steps": step,
                               "pca": str(config.pca or BUILTIN_PCA), "residual": "V(unwrap) - V(pca_texture)",
                               "data": [str(f) for f in folders], "last_losses": runner.last})

    runner.finish(save)
    return {**runner.last, "steps": step, "seconds": runner.seconds}


__all__ = ["DetailResidualSet", "DetailVAETrainConfig", "laplacian_pyramid_l1", "train_detail_vae",
           "value_residual"]
