"""Training of the learned UV sampler (seed 001, §3.1): its dataset, augmentation, losses and loop.

The network (:class:`stages.models.uv_sampler.UVSampler`), its model folder and the 2D alignment
(:mod:`stages.models.alignment`) live in :mod:`stages.models`, which inference imports; this
module is training only. Training (:func:`train_uv_sampler`) uses the geometric unwrap of each
training photo as the target (Eq. 5 of seed 001 plus two documented extras), see
:class:`SamplerTrainConfig`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.core.errors import MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import load_photo
from stages.core.raster import rasterize
from stages.core.uv import uv_layout
from stages.models.alignment import (ALIGN_GROUPS, HULL_POINTS, TEMPLATE_FILL, aligned_crop, alignment_matrix,
                                     apply_affine, mean_shape_grid, network_input, pixels_to_grid)
from stages.models.folder import save_pretrained
from stages.models.inputs import resize_area, resize_masked
from stages.models.uv_sampler import MODEL_TYPE, SamplerConfig, UVSampler, load_sampler, upsample_grid
from stages.train.runner import RUN_FILES, Phase, RunConfig, StepOutput, TrainingRunner, run_field, sample_sheet

# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

#: Files every training folder must hold, and the command that writes each (plus the photo named
#: by fit.json's ``source``).
REQUIRED_FILES: tuple[tuple[str, str], ...] = (
    ("fit.json", "facetex fit"),
    ("unwrap.json", "facetex unwrap"),
    ("uv_texture.png", "facetex unwrap"),
)


def check_sampler_folder(folder: str | Path) -> Path:
    """Check one training folder; returns the photo path.

    Raises:
        MissingArtifactError: naming the first missing file and the command that writes it, or the
            photo fit.json points to.
    """
    from stages.train.dataset import check_training_folder

    folder = Path(folder)
    check_training_folder(folder, REQUIRED_FILES)
    try:
        source = json.loads((folder / "fit.json").read_text()).get("source")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MissingArtifactError(folder / "fit.json", f"unreadable ({exc})") from None
    if not source or not Path(source).is_file():
        raise MissingArtifactError(folder / "fit.json", f"its source photo {source!r} is not on disk (the sampler "
                                                        "trains on the photo itself)")
    return Path(source)


@dataclass
class _SamplerFolder:
    """One training face in memory."""

    path: Path
    rgb: np.ndarray            # (h, w, 3) uint8 photo, downscaled to about 2x the crop's density
    landmarks: np.ndarray      # (L, 2) in rgb's pixels
    vertex_screen: np.ndarray  # (V, 3) the fitted mesh in rgb's pixels (x, y, depth)
    texel_screen: np.ndarray   # (S, S, 2) where each texel lands in rgb (geometric correspondence)
    texture: np.ndarray        # (S, S, 3) geometric unwrap, 0 where unseen
    confidence: np.ndarray     # (S, S) its confidence


def load_sampler_folder(folder: str | Path, model: FaceModel, uv_size: int, crop_size: int) -> _SamplerFolder:
    """Read one checked training folder (photo, fit, geometric unwrap) at training resolution."""
    from stages.fit import FitResult
    from stages.unwrap import UnwrapResult

    folder = Path(folder)
    photo_path = check_sampler_folder(folder)
    fit = FitResult.load(folder / "fit.json")
    if fit.model_id != model.name or fit.vertices.shape != (model.n_vertices, 3):
        raise MissingArtifactError(folder / "fit.json", f"fit was made with model {fit.model_id!r}, not {model.name!r}")
    if fit.landmarks.shape[0] < HULL_POINTS:
        raise MissingArtifactError(folder / "fit.json", f"has {fit.landmarks.shape[0]} landmarks; the sampler needs "
                                                        f"MediaPipe's {HULL_POINTS}+ (fit with --landmarks mediapipe)")
    unwrap = UnwrapResult.load(folder, model)
    photo = load_photo(photo_path)
    k = photo.width / fit.image_size[0]          # photo loaded at another size than at fit time
    landmarks = fit.landmarks[:, :2] * k
    screen = fit.pose.to_screen(fit.vertices) * k
    # Keep the photo at about twice the crop's density (plenty for augmentation, small in memory).
    scale = math.sqrt(abs(np.linalg.det(alignment_matrix(landmarks, model, crop_size)[:, :2])))
    factor = min(1.0, 2.0 * scale)
    rgb = photo.rgb
    if factor < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor))),
                         interpolation=cv2.INTER_AREA)
        fx = rgb.shape[1] / photo.width
        landmarks = landmarks * fx
        screen = screen * fx
    layout = uv_layout(model, uv_size)
    texel_screen = layout.interpolate(screen[:, :2])
    seen = unwrap.confidence > 0
    texture, _ = resize_masked(unwrap.texture, seen, uv_size)
    confidence, _ = resize_masked(unwrap.confidence, seen, uv_size)
    confidence = np.where(layout.mask, confidence, 0.0).astype(np.float32)
    return _SamplerFolder(path=folder, rgb=np.ascontiguousarray(rgb), landmarks=landmarks.astype(np.float64),
                          vertex_screen=screen.astype(np.float64), texel_screen=texel_screen.astype(np.float32),
                          texture=np.where((confidence > 0)[..., None], texture, 0.0).astype(np.float32),
                          confidence=confidence)


@dataclass
class Augment:
    """Random 2D jitter of the alignment (the detector's landmarks are not exact either) and mirroring.

    Attributes:
        rotate_deg: rotation range ``[-r, r]`` about the crop centre.
        scale: relative zoom range ``[1 - s, 1 + s]``.
        shift: translation range as a fraction of the crop side.
        flip: probability of a left-right mirrored sample (photo mirrored, UV maps mirrored).
    """

    rotate_deg: float = 8.0
    scale: float = 0.06
    shift: float = 0.03
    flip: float = 0.5


def _jitter_matrix(rng: np.random.Generator, aug: Augment, crop_size: int) -> np.ndarray:
    angle = np.deg2rad(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    zoom = 1.0 + rng.uniform(-aug.scale, aug.scale)
    shift = rng.uniform(-aug.shift, aug.shift, 2) * crop_size
    c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
    lin = np.array([[c, -s], [s, c]])
    centre = np.full(2, crop_size / 2.0)
    return np.concatenate([lin, (centre - lin @ centre + shift)[:, None]], axis=1)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner`` of two ``(2, 3)`` affine maps."""
    return (np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]]))[:2]


class SamplerTrainingSet(torch.utils.data.Dataset):
    """Training samples of the UV sampler from facetex output folders (photo + fit + geometric unwrap).

    Args:
        folders: output folders with ``fit.json`` (whose ``source`` photo must be on disk),
            ``unwrap.json`` and ``uv_texture.png``; checked at construction (first problem raises
            :class:`MissingArtifactError` naming the file and the command that writes it), loaded once.
        model: face model of the fits.
        uv_size: ``S`` of the training UV maps.
        crop_size: ``C`` of the input crops.
        augment: jitter / mirroring (None: no augmentation, the plain alignment).
        seed: sample ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``.
        epoch_length: ``len()`` (default: the number of folders); index ``i`` uses folder ``i % N``.

    ``__getitem__`` returns float32 tensors: ``input (4, C, C)`` (:func:`network_input`), ``crop (3, C, C)``
    masked crop, ``target_grid (S, S, 2)`` where each texel of the fitted mesh lands in the crop
    (grid coordinates), ``texture (3, S, S)`` / ``confidence (1, S, S)`` the geometric unwrap,
    ``visible (1, S, S)`` 0/1 (confidence > 0), ``layout (1, S, S)``, ``verts (V, 3)`` the fitted mesh
    in crop pixels (x, y, depth), ``triangle_id (C, C)`` int64 its rasterization (-1 empty),
    ``region (1, C, C)`` mesh pixels inside the eroded hull (where the render loss compares), and
    ``flip`` (bool).
    """

    def __init__(self, folders: list[Path], model: FaceModel, *, uv_size: int = 128, crop_size: int = 128,
                 augment: Augment | None = None, seed: int = 0, epoch_length: int | None = None,
                 erosion: float = 0.03):
        folders = [Path(f) for f in folders]
        if not folders:
            raise ValueError("no training folders")
        for folder in folders:
            check_sampler_folder(folder)
        self.model = model
        self.uv_size, self.crop_size = int(uv_size), int(crop_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch_length = epoch_length
        self.epoch = 0
        self.erosion = float(erosion)
        self.layout = uv_layout(model, self.uv_size).mask.copy()
        self.triangles = np.asarray(model.triangles)
        self.mirror = np.asarray(model.mirror_index)
        self.folders = [load_sampler_folder(f, model, self.uv_size, self.crop_size) for f in folders]

    def __len__(self) -> int:
        return self.epoch_length or len(self.folders)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        data = self.folders[int(index) % len(self.folders)]
        c = self.crop_size
        matrix = alignment_matrix(data.landmarks, self.model, c)
        flip = False
        if self.augment is not None:
            matrix = _compose(_jitter_matrix(rng, self.augment, c), matrix)
            flip = bool(rng.random() < self.augment.flip)
        if flip:
            matrix = _compose(np.array([[-1.0, 0.0, float(c)], [0.0, 1.0, 0.0]]), matrix)
        crop, mask, _ = aligned_crop(data.rgb, data.landmarks, self.model, c, matrix)
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        verts = np.concatenate([apply_affine(matrix, data.vertex_screen[:, :2]),
                                data.vertex_screen[:, 2:] * scale], axis=1)
        target = pixels_to_grid(apply_affine(matrix, data.texel_screen), c)
        texture, confidence, layout = data.texture, data.confidence, self.layout
        if flip:
            # The mirrored photo shows the mirrored face: vertex v sits where its partner was, and
            # UV maps mirror about u = 0.5 (the layout is symmetric), i.e. their columns reverse.
            verts = verts[self.mirror]
            target, texture, confidence = target[:, ::-1], texture[:, ::-1], confidence[:, ::-1]
        frags = rasterize(verts, self.triangles, c, c)
        radius = max(1, round(self.erosion * float(np.ptp(verts[:, 0]))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        region = (frags.triangle_id >= 0) & (cv2.erode(mask.astype(np.uint8), kernel) > 0)
        return {
            "input": torch.from_numpy(network_input(crop, mask)),
            "crop": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))),
            "target_grid": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
            "texture": torch.from_numpy(np.ascontiguousarray(texture.transpose(2, 0, 1))),
            "confidence": torch.from_numpy(np.ascontiguousarray(confidence[None])),
            "visible": torch.from_numpy(np.ascontiguousarray((confidence > 0)[None], dtype=np.float32)),
            "layout": torch.from_numpy(layout[None].astype(np.float32)),
            "verts": torch.from_numpy(verts.astype(np.float32)),
            "triangle_id": torch.from_numpy(frags.triangle_id.astype(np.int64)),
            "region": torch.from_numpy(region[None].astype(np.float32)),
            "flip": flip,
        }


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def sample_crop(crop: Tensor, grid: Tensor) -> Tensor:
    """The incomplete UV map: ``(B, 3, C, C)`` crop sampled at ``(B, S, S, 2)`` grid -> ``(B, 3, S, S)``.

    ``grid_sample`` with ``align_corners=False`` and zero padding (outside the crop is background).
    """
    return F.grid_sample(crop, grid.to(crop.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``sum(w * v) / (sum(w) * C)`` with ``values`` ``(B, C, H, W)`` and ``weight`` ``(B or 1, 1, H, W)``."""
    w = weight.expand(values.shape[0], 1, *values.shape[2:])
    return (w * values).sum() / (w.sum() * values.shape[1] + 1e-8)


def coord_l1(grid: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean absolute error of ``(B, S, S, 2)`` grid coordinates, weighted by ``(B or 1, 1, S, S)``."""
    return _masked_mean((grid - target).abs().permute(0, 3, 1, 2), weight)


def grid_smoothness(grid: Tensor, weight: Tensor) -> Tensor:
    """Second-order smoothness of a ``(B, S, S, 2)`` sampling map inside ``weight`` ``(B or 1, 1, S, S)``.

    Mean absolute second difference (horizontal and vertical), in units of the first difference of
    an identity map (``2 / S``), so the value does not depend on ``S``: 0 for any affine map.
    """
    g = grid.permute(0, 3, 1, 2) * (grid.shape[1] / 2.0)
    dxx = (g[..., :, 2:] - 2 * g[..., :, 1:-1] + g[..., :, :-2]).abs()
    dyy = (g[..., 2:, :] - 2 * g[..., 1:-1, :] + g[..., :-2, :]).abs()
    w = weight.expand(g.shape[0], 1, *g.shape[2:])
    wx = w[..., :, 2:] * w[..., :, 1:-1] * w[..., :, :-2]
    wy = w[..., 2:, :] * w[..., 1:-1, :] * w[..., :-2, :]
    return ((wx * dxx).sum() + (wy * dyy).sum()) / ((wx.sum() + wy.sum()) * 2 + 1e-8)


def tv_l1(image: Tensor, weight: Tensor) -> Tensor:
    """Total variation (seed 001, Eq. 7, with absolute differences) of ``(B, C, S, S)`` inside ``weight``."""
    w = weight.expand(image.shape[0], 1, *image.shape[2:])
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs()
    wx = w[..., :, 1:] * w[..., :, :-1]
    wy = w[..., 1:, :] * w[..., :-1, :]
    return ((wx * dx).sum() + (wy * dy).sum()) / ((wx.sum() + wy.sum()) * image.shape[1] + 1e-8)


def render_in_crop(texture: Tensor, verts: Tensor, triangle_id: Tensor, model: FaceModel) -> Tensor:
    """Render a ``(B, 3, S, S)`` UV texture on the fitted meshes ``(B, V, 3)`` (crop pixels) -> ``(B, 3, C, C)``.

    Differentiable in the texture (seed 001, Eq. 6); visibility ``triangle_id`` ``(B, C, C)`` is fixed.
    """
    from stages.core.shading import render

    triangles = torch.from_numpy(np.array(model.triangles, dtype=np.int64)).to(texture.device)
    uv = torch.from_numpy(np.array(model.uv, dtype=np.float32)).to(device=texture.device, dtype=texture.dtype)
    image, _ = render(verts.to(texture.dtype), triangles, uv, texture, triangle_id)
    return image


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

#: Named sizes: ``tiny`` for tests (seconds on CPU), ``small`` for CPU training, ``base`` for GPUs.
PRESETS = {
    "tiny": {"crop_size": 32, "base_channels": 4, "max_channels": 16, "feature_dim": 32, "head_hidden": 32,
             "grid_size": 8, "vis_size": 8},
    "small": {"crop_size": 128, "base_channels": 16, "max_channels": 256, "feature_dim": 512, "head_hidden": 512,
              "grid_size": 32, "vis_size": 32},
    "base": {"crop_size": 256, "base_channels": 32, "max_channels": 512, "feature_dim": 512, "head_hidden": 1024,
             "grid_size": 64, "vis_size": 64},
}


@dataclass
class SamplerTrainConfig(RunConfig):
    """Every training knob of the UV sampler (saved in ``config.json``).

    Loss (per step) = ``w_uv`` * confidence-weighted L1 between the sampled UV map and the
    geometric unwrap (Eq. 5, first term)
    + ``w_render`` * L1 between the sampled UV map rendered on the fitted mesh at the photo's pose
    (crop coordinates, :func:`render_in_crop`) and the masked crop, on mesh pixels inside the eroded
    face hull (Eq. 5, second term; Eq. 6)
    + ``w_tv`` * total variation of the sampled UV map inside the layout (Eq. 5, third term; Eq. 7)
    + ``w_smooth`` * second-order smoothness of the sampling map itself (:func:`grid_smoothness`,
    extra: keeps the predicted coordinates a smooth warp)
    + ``w_coord`` * L1 between the predicted and the geometric sampling coordinates on every layout
    texel (extra, direct supervision from ``texel_visibility``'s correspondence; ``w_coord_warmup``
    for the first ``coord_warmup_steps`` steps, ``w_coord`` after)
    + ``w_vis`` * binary cross-entropy of the visibility logits against the geometric unwrap's
    ``confidence > 0`` on the layout (extra: the sampler's visibility head).
    """

    preset: str = run_field("small", "Model size: tiny (tests), small (CPU), base (GPU).", choices=tuple(PRESETS))
    uv_size: int = run_field(128, "Training UV side in texels.", min=16, max=1024)
    batch_size: int = 8
    steps: int = 3000
    lr: float = run_field(3e-4, "Adam learning rate.", min=0.0)
    betas: tuple[float, float] = (0.5, 0.999)
    w_uv: float = run_field(1.0, "Weight of the confidence-weighted UV L1 to the geometric unwrap.", min=0.0)
    w_render: float = run_field(1.0, "Weight of the render L1 in the crop.", min=0.0)
    w_tv: float = run_field(0.01, "Weight of the total variation of the sampled UV map.", min=0.0)
    w_smooth: float = run_field(0.05, "Weight of the sampling map's second-order smoothness.", min=0.0)
    w_coord: float = run_field(1.0, "Weight of the coordinate L1 to the geometric correspondence.", min=0.0)
    w_coord_warmup: float = run_field(5.0, "Coordinate L1 weight during the warm-up steps.", min=0.0)
    coord_warmup_steps: int = run_field(300, "Steps at the warm-up coordinate weight.", min=0)
    w_vis: float = run_field(0.2, "Weight of the visibility cross-entropy.", min=0.0)
    augment: dict = field(default_factory=lambda: asdict(Augment()))
    checkpoint_every: int = 250
    network: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        self.network = {**PRESETS[self.preset], **self.network}
        SamplerConfig.from_dict(self.network)   # validates
        self.betas = tuple(self.betas)
        if self.uv_size < 16:
            raise ValueError(f"uv_size must be >= 16, got {self.uv_size}")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch_size and steps must be positive")
        for name in ("w_uv", "w_render", "w_tv", "w_smooth", "w_coord", "w_coord_warmup", "w_vis"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        Augment(**self.augment)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.02, 0.98)
    return np.log(p / (1 - p))


def sampler_losses(net: nn.Module, batch: dict, config: SamplerTrainConfig, model: FaceModel,
                   step: int) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """Forward one batch and compute the weighted loss.

    Returns:
        ``(total, parts, grid, sampled)``: the scalar loss, its unweighted parts (plus metrics
        ``err_px``: mean coordinate error in crop pixels on visible texels, ``iou``: visibility IoU),
        the ``(B, S, S, 2)`` predicted grid and the ``(B, 3, S, S)`` sampled UV map.
    """
    s = config.uv_size
    coords, vis = net(batch["input"])
    grid = upsample_grid(coords, s)
    vis = F.interpolate(vis, size=(s, s), mode="bilinear", align_corners=False)
    layout, conf, visible = batch["layout"], batch["confidence"], batch["visible"]
    sampled = sample_crop(batch["crop"], grid)
    uv = _masked_mean((sampled - batch["texture"]).abs(), conf)
    rendered = render_in_crop(sampled, batch["verts"], batch["triangle_id"], model)
    ren = _masked_mean((rendered - batch["crop"]).abs(), batch["region"])
    tv = tv_l1(sampled, layout)
    smooth = grid_smoothness(grid, layout)
    coord = coord_l1(grid, batch["target_grid"], layout)
    bce = F.binary_cross_entropy_with_logits(vis, visible, reduction="none")
    vis_loss = _masked_mean(bce, layout)
    w_coord = config.w_coord_warmup if step < config.coord_warmup_steps else config.w_coord
    total = (config.w_uv * uv + config.w_render * ren + config.w_tv * tv + config.w_smooth * smooth
             + w_coord * coord + config.w_vis * vis_loss)
    with torch.no_grad():
        crop_size = batch["crop"].shape[-1]
        err = ((grid - batch["target_grid"]).norm(dim=-1) * (crop_size / 2.0)).unsqueeze(1)
        err_px = _masked_mean(err, visible)
        pred = (vis > 0).float() * layout
        iou = (pred * visible).sum() / ((pred + visible).clamp(max=1).sum() + 1e-8)
    parts = {"loss": total, "uv": uv, "render": ren, "tv": tv, "smooth": smooth, "coord": coord, "vis": vis_loss,
             "err_px": err_px, "iou": iou}
    return total, parts, grid, sampled


def _collate(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = torch.stack(values) if isinstance(values[0], Tensor) else torch.tensor(values)
    return out


def train_uv_sampler(folders: list[Path], out_dir: Path, config: SamplerTrainConfig, *, model: FaceModel,
                     resume: bool = True, device: str | None = "auto", num_workers: int = 0,
                     cpu: bool | None = None, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume training) the UV sampler and write its model folder.

    Args:
        folders: facetex output folders (fit.json with its photo on disk, unwrap.json, uv_texture.png).
        out_dir: model folder (``config.json``, ``weights.safetensors``, ``samples/``,
            ``training_state/`` with the optimizer state for resuming).
        config: training settings.
        model: the face model of the fits.
        resume, device, num_workers, progress: the :class:`stages.train.runner.TrainingRunner`'s
            (``cpu=True``: the old spelling of ``device="cpu"``).

    Returns:
        The last step's losses (floats) plus ``steps`` and ``seconds``.
    """
    runner = TrainingRunner(out_dir, config, device="cpu" if cpu else device, num_workers=num_workers,
                            resume=resume, progress=progress)
    net_cfg = SamplerConfig.from_dict(config.network)
    dataset = SamplerTrainingSet(folders, model, uv_size=config.uv_size, crop_size=net_cfg.crop_size,
                                 augment=Augment(**config.augment), seed=config.seed,
                                 epoch_length=max(len(folders), config.batch_size))
    net = UVSampler(net_cfg)
    vis_prior = np.mean([resize_area(f.confidence > 0, net_cfg.vis_size) for f in dataset.folders], axis=0)
    net.init_base(mean_shape_grid(model, net_cfg.grid_size), _logit(vis_prior))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas)
    net, optimizer, _ = runner.prepare(net, optimizer, runner.loader(dataset, collate_fn=_collate))

    def train_step(batch: dict, step: int) -> StepOutput:
        total, parts, grid, sampled = sampler_losses(net, batch, config, model, step)
        runner.optimise(total, optimizer)

        def sheet() -> np.ndarray:
            """input crop | sampled UV x predicted visibility | geometric unwrap."""
            with torch.no_grad():
                _, vis = runner.unwrap(net)(batch["input"])
                vis_mask = (F.interpolate(vis, size=sampled.shape[-2:], mode="bilinear",
                                          align_corners=False) > 0).float() * batch["layout"]
            return sample_sheet([F.interpolate(batch["crop"].float(), size=sampled.shape[-2:], mode="area"),
                                 sampled * vis_mask, batch["texture"]])

        return StepOutput(parts, sheet)

    net.train()
    step = runner.run([Phase("step", config.steps, train_step)])["step"]

    def save() -> None:
        save_pretrained(out_dir, {"sampler": runner.unwrap(net)}, {"sampler": net_cfg.to_dict()},
                        model_type=MODEL_TYPE, keep=RUN_FILES,
                        extra={"train": asdict(config), "uv_size": config.uv_size, "face_model": model.name,
                               "alignment": {"groups": [list(g) for g in ALIGN_GROUPS], "hull_points": HULL_POINTS,
                                             "template_fill": TEMPLATE_FILL},
                               "steps": step, "data": [str(f) for f in folders], "last_losses": runner.last})

    runner.finish(save)
    return {**runner.last, "steps": step, "seconds": runner.seconds}


__all__ = ["MODEL_TYPE", "SamplerConfig", "SamplerTrainConfig", "SamplerTrainingSet", "UVSampler", "Augment",
           "aligned_crop", "alignment_matrix", "load_sampler", "train_uv_sampler", "mean_shape_grid"]
