"""Training of seed 003's texture GAN (Slossberg et al., §3.2-3.4): dataset, composites, losses, runner step.

**What the discriminator sees** (§3.4, Fig. 1). For every training photo, fitted by ``facetex fit``: the
photo cropped around the fitted face (:func:`stages.face_view.photo_view`, ``R x R``) is the
*background*; a generated UV albedo ``G(z)`` is rendered on that photo's fitted mesh at its fitted pose
through the differentiable deferred renderer (:func:`stages.core.shading.render`) and multiplied by the
SH shading of that photo's fitted light (``fit.json``'s ``lighting_sh``, normalised to its ambient level
as ``render --sh`` does: :func:`stages.render.normalised_light`). That is §3.2's two passes
``R(S, G_T(w)) * R(S, C(n | gamma))``: the renderer evaluates both per pixel and multiplies them, one
deferred pass with the same values. The face is blended into the photo with the mask of §3.3's "two-step
fitting": the fitted mesh renders, and the blend mask is the rendered face (eroded at the silhouette)
times the photo's skin probability (``skin_mask.png``: MediaPipe's dense landmarks + the skin model), so
hair, glasses and hands in front of the face stay the photo's. The composite is discriminated against
the real crops. Before sampling, the albedo is average-pooled to about the crop's texel footprint
(``uv_size // view_size``) so every texel gets gradient (a mip level, no aliasing).

**Pose variety** (§3.2's StyleRig re-posing cannot be had: no pretrained StyleGAN/DFR): with probability
``yaw_probability`` the fitted mesh is turned by a random yaw in ``[-yaw_max, yaw_max]`` about its centre
(the photo's light stays: the head turns, the light does not), re-rasterised, and blended into the same
background with the turned face's eroded silhouette times the skin mask; "where the photo allows": only
when the turned head stays within ``yaw_limit`` of frontal. Where the turned face does not cover the
photo's own face, the photo shows through: the discriminator learns to spot that too, so keep the yaw
small. The generator thus has to make texels plausible that the photo itself never showed frontally.

**Losses** (StyleGAN2): non-saturating logistic GAN loss for both networks; R1 on the real crops every
``r1_every`` steps (lazy, scaled by ``r1_every``; ``r1_gamma / 2 * |grad D(real)|^2``); style mixing
(two ``z`` with probability ``style_mixing``, crossover at a random layer); the generator kept as an
exponential moving average (decay ``min(ema_beta, (1 + step) / (10 + step))``: the ramp-up keeps
the initial weights from lingering in a short run; that average is what the model folder's ``generator`` holds)
and the mapping's running ``w_avg`` for truncation. Adam with ``betas = (0, 0.99)`` as StyleGAN2. No
path-length regularisation (its cost does not pay at CPU scale).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stages.core.face_model import FaceModel
from stages.core.shading import render
from stages.models.folder import save_pretrained
from stages.models.texture_gan import MODEL_TYPE, PRESETS, PhotoDiscriminator, TextureGANConfig, TextureGenerator
from stages.train.runner import RUN_FILES, Phase, RunConfig, StepOutput, TrainingRunner, run_field, sample_sheet

#: Files each training folder must hold, and the command that writes them.
REQUIRED_FILES: tuple[tuple[str, str], ...] = (("fit.json", "facetex fit"),)


def turn_view(screen: np.ndarray, normals: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn a face given in screen space by ``yaw`` degrees about the vertical axis through its centre.

    Screen space is x right, y down, z depth (away from the camera), a proper rotation of the camera
    frame (x right, y up, z to the camera), so a rotation about y there is a rigid turn of the head.

    Args:
        screen: ``(V, 3)`` screen-space vertices.
        normals: ``(V, 3)`` camera-space unit normals.
        yaw: degrees, the sign of the fit's yaw (``Ry(yaw)`` applied in the camera frame: the turned head's
            yaw is about the fitted yaw + ``yaw``).

    Returns:
        ``(screen (V, 3), normals (V, 3))`` float32 of the turned face.
    """
    t = math.radians(yaw)
    c, s = math.cos(t), math.sin(t)
    centre = screen.mean(axis=0)
    x, z = screen[:, 0] - centre[0], screen[:, 2] - centre[2]
    turned = screen.astype(np.float64).copy()
    turned[:, 0] = centre[0] + c * x - s * z
    turned[:, 2] = centre[2] + s * x + c * z
    n = normals.astype(np.float64).copy()
    # Camera frame: x_c = x, z_c = -z; the same rotation there.
    n[:, 0] = c * normals[:, 0] + s * normals[:, 2]
    n[:, 2] = -s * normals[:, 0] + c * normals[:, 2]
    return turned.astype(np.float32), n.astype(np.float32)


class PhotoCompositeSet(torch.utils.data.Dataset):
    """Per training photo, everything a composite needs, precomputed once (visibility is fixed).

    Item ``i`` (folder ``i % n``; with the random yaw re-render seeded by ``(seed, epoch, i)``)::

        crop    (3, R, R)  the photo crop in [0, 1] (background and real example)
        mask    (1, R, R)  blend mask: eroded rendered face x skin probability
        screen  (V, 3)     screen vertices in the crop     normals (V, 3) camera-space unit normals
        tid     (R, R)     int64 front triangle per pixel (-1 empty)
        sh      (9, 3)     the fit's light normalised to ambient 1          yaw () the applied turn
    """

    def __init__(self, folders: list[Path], model: FaceModel, *, view_size: int, seed: int = 0,
                 yaw_max: float = 0.0, yaw_probability: float = 0.0, yaw_limit: float = 45.0,
                 epoch_length: int | None = None):
        from stages.core.errors import MissingArtifactError
        from stages.fit import FitResult
        from stages.render import normalised_light
        from stages.train.dataset import check_training_folder
        from stages.train.face_views import load_photo_view

        self.model = model
        self.items: list[dict] = []
        for folder in folders:
            check_training_folder(folder, REQUIRED_FILES)
            fit = FitResult.load(Path(folder) / "fit.json")
            if fit.model_id != model.name or fit.vertices.shape != (model.n_vertices, 3):
                raise MissingArtifactError(Path(folder) / "fit.json",
                                           f"fit was made with model {fit.model_id!r}, not {model.name!r}")
            view = load_photo_view(folder, fit, model, view_size)
            try:
                sh = normalised_light(fit.lighting)
            except ValueError as exc:
                raise MissingArtifactError(Path(folder) / "fit.json", f"lighting_sh: {exc}") from None
            normals = fit.pose.rotate_normals(model.vertex_normals(fit.vertices))
            self.items.append({"crop": view.crop, "mask": view.mask, "screen": view.screen,
                               "normals": normals.astype(np.float32), "tid": view.triangle_id,
                               "skin": view.skin if view.skin is not None else np.ones_like(view.mask),
                               "sh": sh.astype(np.float32), "fit_yaw": float(fit.pose.euler[0])})
        self.view_size = int(view_size)
        self.seed, self.epoch = int(seed), 0
        self.yaw_max, self.yaw_probability, self.yaw_limit = float(yaw_max), float(yaw_probability), float(yaw_limit)
        self.length = max(len(self.items), int(epoch_length or 0))

    def __len__(self) -> int:
        return self.length

    def mean_colour(self) -> np.ndarray:
        """``(3,)`` float32 mean photo colour on the blend masks (weighted), the generator's starting albedo."""
        num = sum((it["crop"] * it["mask"][..., None]).sum(axis=(0, 1)) for it in self.items)
        den = sum(float(it["mask"].sum()) for it in self.items)
        return (num / max(den, 1e-6)).astype(np.float32)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        from stages.core.raster import rasterize
        from stages.face_view import _eroded

        item = self.items[index % len(self.items)]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        screen, normals, tid, mask, yaw = item["screen"], item["normals"], item["tid"], item["mask"], 0.0
        if self.yaw_max > 0 and rng.random() < self.yaw_probability:
            yaw = float(rng.uniform(-self.yaw_max, self.yaw_max))
            if abs(item["fit_yaw"] + yaw) > self.yaw_limit:
                yaw = 0.0
        if yaw:
            screen, normals = turn_view(screen, normals, yaw)
            tid = rasterize(screen, self.model.triangles, self.view_size, self.view_size).triangle_id.astype(np.int64)
            mask = _eroded(tid >= 0, self.view_size) * item["skin"]

        def t(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a))

        return {"crop": t(item["crop"].transpose(2, 0, 1)), "mask": t(mask.astype(np.float32))[None],
                "screen": t(screen), "normals": t(normals), "tid": t(tid), "sh": t(item["sh"]),
                "yaw": torch.tensor(yaw, dtype=torch.float32)}


def composite(albedo: Tensor, batch: dict, triangles: Tensor, vert_uv: Tensor) -> tuple[Tensor, Tensor]:
    """The generated albedo under the photo's light on its fitted mesh, blended into the photo.

    Args:
        albedo: ``(B, 3, S, S)`` generated UV albedo.
        batch: a :class:`PhotoCompositeSet` batch (``crop``, ``mask``, ``screen``, ``normals``, ``tid``, ``sh``).
        triangles: ``(F, 3)`` long; vert_uv: ``(V, 2)`` float (the face model's).

    Returns:
        ``(composite (B, 3, R, R), lit render (B, 3, R, R), zero off the face)``.
    """
    size = batch["crop"].shape[-1]
    factor = max(1, albedo.shape[-1] // size)
    texture = F.avg_pool2d(albedo, factor) if factor > 1 else albedo
    lit, _ = render(batch["screen"], triangles, vert_uv, texture, batch["tid"], vert_normals=batch["normals"],
                    sh_coeffs=batch["sh"])
    mask = batch["mask"]
    return mask * lit + (1.0 - mask) * batch["crop"], lit


@dataclass
class TextureGANTrainConfig(RunConfig):
    """Every training knob of the texture GAN (saved in ``config.json``; losses: module docstring)."""

    preset: str = run_field("small", "Network size: tiny (tests, 32^2), small (CPU, UV 128^2, crops 64^2), "
                                     "base (GPU, UV 512^2, crops 256^2).", choices=tuple(PRESETS))
    steps: int = 3000
    batch_size: int = 8
    lr: float = run_field(2e-3, "Adam learning rate of both networks (betas 0, 0.99).", min=0.0)
    r1_gamma: float = run_field(1.0, "R1 weight gamma (penalty gamma/2 |grad D(real)|^2).", min=0.0)
    r1_every: int = run_field(16, "Lazy R1: every N discriminator steps.", min=1)
    style_mixing: float = run_field(0.9, "Probability of mixing two latents at a random layer.", min=0.0, max=1.0)
    ema_beta: float = run_field(0.998, "Per-step decay of the generator's moving average (what is saved).",
                                min=0.0, max=1.0)
    yaw_max: float = run_field(15.0, "Random yaw re-render of the fitted mesh, degrees (0: off).", min=0.0,
                               max=60.0)
    yaw_probability: float = run_field(0.5, "Probability of a re-rendered (turned) sample.", min=0.0, max=1.0)
    yaw_limit: float = run_field(45.0, "Turned samples only while |fitted yaw + turn| stays within this.",
                                 min=0.0)
    network: dict | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        self.network = TextureGANConfig.from_dict({**PRESETS[self.preset].to_dict(), **(self.network or {})}).to_dict()
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.r1_gamma < 0 or self.r1_every < 1:
            raise ValueError("r1_gamma must be >= 0 and r1_every >= 1")
        if not 0.0 <= self.ema_beta <= 1.0:
            raise ValueError("ema_beta must be in [0, 1]")


def generate(generator, batch: int, config: TextureGANTrainConfig, rng: torch.Generator,
             device: torch.device) -> Tensor:
    """``(B, 3, S, S)`` albedos from fresh latents (style mixing with probability ``config.style_mixing``)
    and fresh noise, all drawn from ``rng``; ``generator`` may be the accelerate-wrapped network."""
    net = generator.module if hasattr(generator, "module") else generator
    z_dim, n = net.config.z_dim, net.num_ws
    z, z2 = torch.randn(2, batch, z_dim, generator=rng).to(device)
    mix = float(torch.rand((), generator=rng)) < config.style_mixing
    cut = int(torch.randint(1, n, (), generator=rng))
    noise = [x.to(device) for x in net.make_noise(batch, rng)]
    return generator(z, noise=noise, z2=z2 if mix else None, cut=cut if mix else None)


def discriminator_loss(discriminator: PhotoDiscriminator, real: Tensor, fake: Tensor, config: TextureGANTrainConfig,
                       *, r1: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """Non-saturating logistic loss ``softplus(D(fake)) + softplus(-D(real))``, plus the lazy R1 penalty
    ``r1_every * r1_gamma / 2 * |grad_x D(real)|^2`` when ``r1``. Returns ``(total, parts)``."""
    real_in = real.detach().requires_grad_(r1)
    real_logits = discriminator(real_in)
    fake_logits = discriminator(fake.detach())
    loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    parts = {"d_loss": loss.detach(), "d_real": real_logits.detach().mean(), "d_fake": fake_logits.detach().mean()}
    if r1 and config.r1_gamma > 0:
        grad, = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
        penalty = grad.pow(2).sum(dim=(1, 2, 3)).mean()
        loss = loss + 0.5 * config.r1_gamma * config.r1_every * penalty
        parts["r1"] = penalty.detach()
    return loss, parts


def generator_loss(discriminator: PhotoDiscriminator, fake: Tensor) -> Tensor:
    """Non-saturating ``softplus(-D(fake))``."""
    return F.softplus(-discriminator(fake)).mean()


@torch.no_grad()
def update_ema(ema: TextureGenerator, generator: TextureGenerator, beta: float) -> None:
    """``ema <- beta * ema + (1 - beta) * generator`` for parameters; buffers (``w_avg``) copied."""
    for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), generator.buffers(), strict=True):
        b_ema.copy_(b)


def train_texture_gan(folders: list[Path], out_dir: Path, config: TextureGANTrainConfig, *, model: FaceModel,
                      resume: bool = True, device: str | None = "auto", num_workers: int = 0,
                      cpu: bool | None = None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume) the texture GAN and write its model folder (networks ``generator``: the moving
    average, and ``discriminator``).

    Args:
        folders: facetex output folders holding ``fit.json`` (their photos must be findable; the skin
            mask is used when the fit has one).
        out_dir: the model folder.
        config: training settings.
        model: the face model of the fits.
        resume, device, num_workers, progress: the :class:`stages.train.runner.TrainingRunner`'s
            (``cpu=True``: the old spelling of ``device="cpu"``).

    Returns:
        The last step's losses plus ``steps`` and ``seconds``.
    """
    runner = TrainingRunner(out_dir, config, device="cpu" if cpu else device, num_workers=num_workers,
                            resume=resume, progress=progress)
    net_cfg = TextureGANConfig.from_dict(config.network)
    dataset = PhotoCompositeSet(folders, model, view_size=net_cfg.view_size, seed=config.seed,
                                yaw_max=config.yaw_max, yaw_probability=config.yaw_probability,
                                yaw_limit=config.yaw_limit, epoch_length=max(len(folders), config.batch_size))
    generator, discriminator = TextureGenerator(net_cfg), PhotoDiscriminator(net_cfg)
    with torch.no_grad():   # start the albedo at the data's mean skin colour (no pretrained init here)
        generator.to_rgb[0].bias.copy_(2.0 * torch.from_numpy(dataset.mean_colour()) - 1.0)
    ema = copy.deepcopy(generator).requires_grad_(False).eval()
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(0.0, 0.99), eps=1e-8)
    generator, discriminator, opt_g, opt_d, _ = runner.prepare(generator, discriminator, opt_g, opt_d,
                                                               runner.loader(dataset))
    ema.to(runner.device)
    runner.accelerator.register_for_checkpointing(ema)
    triangles = torch.from_numpy(model.triangles.astype(np.int64)).to(runner.device)
    vert_uv = torch.from_numpy(np.array(model.uv, dtype=np.float32)).to(runner.device)
    g_net = runner.unwrap(generator)

    def train_step(batch: dict, step: int) -> StepOutput:
        rng = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        real = batch["crop"]
        with torch.no_grad():
            fake, _ = composite(generate(generator, real.shape[0], config, rng, runner.device), batch, triangles,
                                vert_uv)
        d_total, parts = discriminator_loss(discriminator, real, fake, config, r1=step % config.r1_every == 0)
        runner.optimise(d_total, opt_d)
        albedo = generate(generator, real.shape[0], config, rng, runner.device)
        fake, lit = composite(albedo, batch, triangles, vert_uv)
        g_total = generator_loss(discriminator, fake)
        runner.optimise(g_total, opt_g)
        with torch.no_grad():
            z = torch.randn(real.shape[0], net_cfg.z_dim, generator=rng).to(runner.device)
            g_net.mapping.update_w_avg(g_net.mapping(z))
        update_ema(ema, g_net, min(config.ema_beta, (1.0 + step) / (10.0 + step)))   # ramp-up: early steps count
        parts["g_loss"] = g_total.detach()

        def sheet() -> np.ndarray:
            """albedo (EMA generator, 4 seeds) | composite | lit render | real crop."""
            with torch.no_grad():
                shown = ema(torch.randn(real.shape[0], net_cfg.z_dim, generator=rng).to(runner.device),
                            noise=[n.to(runner.device) for n in ema.make_noise(real.shape[0], rng)])
            return sample_sheet([F.interpolate(shown, size=real.shape[-2:], mode="area").clamp(0, 1),
                                 fake.clamp(0, 1), lit.clamp(0, 1), real])

        return StepOutput(parts, sheet)

    generator.train()
    discriminator.train()
    step = runner.run([Phase("step", config.steps, train_step)])["step"]

    def save() -> None:
        save_pretrained(out_dir, {"generator": ema, "discriminator": runner.unwrap(discriminator)},
                        {"generator": net_cfg.to_dict(), "discriminator": net_cfg.to_dict()}, model_type=MODEL_TYPE,
                        keep=RUN_FILES,
                        extra={"train": asdict(config), "face_model": model.name, "steps": step,
                               "uv_size": net_cfg.uv_size, "data": [str(f) for f in folders],
                               "last_losses": runner.last,
                               "generator_output": "UV albedo (lit by normalised fit SH in training)"})

    runner.finish(save)
    return {**runner.last, "steps": step, "seconds": runner.seconds}


__all__ = ["PhotoCompositeSet", "TextureGANTrainConfig", "composite", "discriminator_loss", "generator_loss",
           "train_texture_gan", "turn_view", "update_ema"]
