"""Training of the learned skin parser (:mod:`stages.models.skin_parser`): data, occluders, runner step.

**Targets.** For every training folder (a ``fit.json`` of a clean photo; London hold-out people are
dropped by the CLI), the classical mask :func:`stages.occlusion.segment_skin` is computed once on
the clean photo (where it is good: nothing covers the face) and warped to the parser's crop. Each
sample then pastes 0-3 synthetic occluders (:func:`paste_occluders`) on the crop; their pixels are
labelled not-skin: ``target = classical * (1 - occluder)``. Left-right flips, colour jitter
(brightness, contrast, per-channel gain), a blur (30 %) and noise are applied to the pasted crop.

**Occluders** (own generator, deliberately unlike the protocol's :mod:`stages.evaluate.occlusion`,
so the benchmark does not test on the training shapes): seeded per ``(seed, epoch, index)``;

- ``hair``: clumps of 3-12 near-parallel *cubic* Bezier strands (the protocol: single quadratic
  strands from one palette) from the top or a side, colour drawn continuously (dark brown to
  blonde, red, grey) rather than from a palette, each strand jittered in tone;
- ``hand``: a rotated rounded palm plus 2-5 capsule fingers at random angles entering from the
  bottom, left or right (the protocol: an upright ellipse with four vertical fingers, a palette
  tone), *re-toned to the face's own skin*: the face's colour and low-frequency shading (a
  normalised blur of its skin pixels) and its fine detail, both taken from a random shift of the
  central face, times a shading that darkens towards the outline and along a random direction, so
  its colour, texture and shading match the face and only its shape tells it apart;
- ``bar``: straight bars at any angle, thick or thin, dark or any colour, or a pair of rectangular
  frame outlines (glasses);
- ``cloth``: a polygon rising from the bottom with a wavy top edge, plain, noisy or checked;
- ``blob``: an ellipse of a random colour (background, a cup, a phone).

**Loss:** binary cross-entropy of the skin logit, occluder pixels weighted ``w_occluder`` (they are
what the classical step misses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stages.models.folder import save_pretrained
from stages.models.skin_parser import (MODEL_TYPE, PRESETS, SkinParser, SkinParserConfig, crop_matrix, crop_photo,
                                       network_input, prior_channels)
from stages.train.runner import RUN_FILES, Phase, RunConfig, StepOutput, TrainingRunner, run_field, sample_sheet

OCCLUDER_KINDS = ("hair", "hand", "bar", "cloth", "blob")


def _bezier(points: np.ndarray, n: int = 32) -> np.ndarray:
    """``(n, 2)`` points of the cubic Bezier with ``(4, 2)`` control points."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = points
    return (1 - t) ** 3 * p0 + 3 * t * (1 - t) ** 2 * p1 + 3 * t ** 2 * (1 - t) * p2 + t ** 3 * p3


def _poly(mask: np.ndarray, points, closed=True, thickness=-1) -> None:
    pts = np.round(np.asarray(points) * 16).astype(np.int32).reshape(-1, 1, 2)
    if thickness < 0:
        cv2.fillPoly(mask, [pts], 1.0, cv2.LINE_AA, 4)
    else:
        cv2.polylines(mask, [pts], closed, 1.0, max(1, int(thickness)), cv2.LINE_AA, 4)


def paste_occluder(crop: np.ndarray, face: np.ndarray, kind: str,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste one occluder of ``kind`` (:data:`OCCLUDER_KINDS`) on a face crop.

    Args:
        crop: ``(S, S, 3)`` float32 RGB in ``[0, 255]``.
        face: ``(S, S)`` bool central face (where the hand's skin texture is taken from).
        rng: picks shape, placement and colour.

    Returns:
        ``(crop (S, S, 3) float32, alpha (S, S) float32 in [0, 1])``: the new crop and the occluder's coverage.
    """
    size = crop.shape[0]
    alpha = np.zeros((size, size), np.float32)
    layer = np.zeros_like(crop)
    centre = np.array([size / 2, size / 2])
    if kind == "hair":
        from_top = rng.random() < 0.5
        start = (np.array([rng.uniform(0.2, 0.8) * size, -0.05 * size]) if from_top
                 else np.array([rng.choice([-0.05, 1.05]) * size, rng.uniform(0.1, 0.5) * size]))
        end = centre + rng.uniform(-0.35, 0.35, 2) * size
        ctrl = np.stack([start, start + (end - start) * 0.33 + rng.uniform(-0.2, 0.2, 2) * size,
                         start + (end - start) * 0.66 + rng.uniform(-0.2, 0.2, 2) * size, end])
        base = rng.choice([np.array([30, 22, 18]), np.array([90, 60, 35]), np.array([160, 70, 35]),
                           np.array([215, 180, 120]), np.array([170, 170, 172])]) * rng.uniform(0.7, 1.2, 3)
        normal = np.array([-(end - start)[1], (end - start)[0]]) / max(np.linalg.norm(end - start), 1e-6)
        for _ in range(int(rng.integers(3, 13))):
            m = np.zeros_like(alpha)
            offset = normal * rng.normal(0, 0.04 * size) + rng.normal(0, 0.01 * size, (4, 2))
            _poly(m, _bezier(ctrl + offset), closed=False, thickness=rng.uniform(0.006, 0.03) * size)
            colour = np.clip(base * rng.uniform(0.8, 1.2), 0, 255)
            layer = np.where(m[..., None] > 0, colour * m[..., None] + layer * (1 - m[..., None]), layer)
            np.maximum(alpha, m, out=alpha)
    elif kind == "hand":
        side = int(rng.integers(3))  # enters from 0 bottom, 1 left, 2 right
        direction = {0: np.array([0.0, -1.0]), 1: np.array([1.0, 0.0]), 2: np.array([-1.0, 0.0])}[side]
        direction = direction + rng.normal(0, 0.3, 2)
        direction /= np.linalg.norm(direction)
        palm = centre - direction * rng.uniform(0.2, 0.45) * size + rng.uniform(-0.15, 0.15, 2) * size
        axes = (int(rng.uniform(0.12, 0.22) * size * 16), int(rng.uniform(0.1, 0.17) * size * 16))
        angle = float(np.degrees(np.arctan2(direction[1], direction[0])))
        cv2.ellipse(alpha, tuple(np.round(palm * 16).astype(int)), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
        across = np.array([-direction[1], direction[0]])
        for i in range(int(rng.integers(2, 6))):
            base = palm + across * (i - 2) * 0.06 * size + direction * 0.08 * size
            tilt = direction + across * rng.normal(0, 0.25)
            tip = base + tilt / np.linalg.norm(tilt) * rng.uniform(0.15, 0.35) * size
            _poly(alpha, [base, tip], closed=False, thickness=rng.uniform(0.05, 0.08) * size)
        # The face's own skin colour and low-frequency shading (a normalised blur of the face's skin
        # pixels, shifted to the palm): only the shape tells it from the face.
        sigma = 0.06 * size
        weight = cv2.GaussianBlur(face.astype(np.float32), (0, 0), sigma)
        if weight.max() > 0:
            field = cv2.GaussianBlur(crop * face[..., None], (0, 0), sigma) / np.maximum(weight, 1e-3)[..., None]
            ys, xs = np.nonzero(face)
            source = np.array([xs.mean(), ys.mean()]) + rng.uniform(-0.12, 0.12, 2) * size
            shift = palm - source
            skin = cv2.warpAffine(field, np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float32), (size, size),
                                  borderMode=cv2.BORDER_REPLICATE)
        else:
            skin = np.broadcast_to(crop.reshape(-1, 3).mean(axis=0), crop.shape).copy()
        # Real skin detail (pores, JPEG noise) of the face at the same shift, so the hand is not
        # smoother than the face: the parser must not learn "smooth = hand".
        detail = (crop - cv2.GaussianBlur(crop, (0, 0), 2.0)) * face[..., None]
        skin = skin + cv2.warpAffine(detail, np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float32),
                                     (size, size), borderMode=cv2.BORDER_REFLECT) if weight.max() > 0 else skin
        inner = cv2.GaussianBlur(alpha, (0, 0), 0.03 * size)
        gradient = ((np.indices((size, size))[::-1].transpose(1, 2, 0) - centre) @ rng.normal(0, 1, 2)) / size
        shade = (rng.uniform(0.6, 0.85) + (1 - 0.75) * np.clip(inner * 1.5, 0, 1) + 0.15 * gradient)[..., None]
        layer = skin * np.clip(shade, 0.4, 1.2)
    elif kind == "bar":
        colour = (rng.uniform(5, 60, 3) if rng.random() < 0.6 else rng.uniform(0, 255, 3))
        if rng.random() < 0.3:  # glasses-like frames: two rectangle outlines and a bridge
            y = rng.uniform(0.3, 0.5) * size
            w, h = rng.uniform(0.16, 0.24) * size, rng.uniform(0.08, 0.14) * size
            t = rng.uniform(0.015, 0.04) * size
            for cx in (0.5 * size - 0.7 * w, 0.5 * size + 0.7 * w):
                _poly(alpha, [[cx - w / 2, y - h / 2], [cx + w / 2, y - h / 2], [cx + w / 2, y + h / 2],
                              [cx - w / 2, y + h / 2]], thickness=t)
            _poly(alpha, [[0.5 * size - 0.2 * w, y], [0.5 * size + 0.2 * w, y]], closed=False, thickness=t)
        else:
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * size
            mid = centre + rng.uniform(-0.3, 0.3, 2) * size
            _poly(alpha, [mid - d, mid + d], closed=False, thickness=rng.uniform(0.015, 0.12) * size)
        layer[:] = colour
    elif kind == "cloth":
        top = rng.uniform(0.55, 0.8) * size
        xs = np.linspace(-0.05, 1.05, 9) * size
        wave = top + rng.normal(0, 0.03, len(xs)) * size
        _poly(alpha, [*zip(xs, wave, strict=True), (1.05 * size, 1.05 * size), (-0.05 * size, 1.05 * size)])
        colour = rng.uniform(20, 235, 3)
        pattern = rng.integers(3)
        if pattern == 1:
            pattern_map = 1 + 0.2 * rng.normal(0, 1, (size, size))
        elif pattern == 2:
            period = max(2, int(rng.uniform(0.04, 0.1) * size))
            yy, xx = np.indices((size, size))
            pattern_map = np.where(((yy // period) + (xx // period)) % 2 == 0, 1.0, 0.7)
        else:
            pattern_map = np.ones((size, size))
        layer = np.clip(colour * pattern_map[..., None], 0, 255).astype(np.float32)
    elif kind == "blob":
        c = centre + rng.uniform(-0.5, 0.5, 2) * size
        axes = (int(rng.uniform(0.05, 0.2) * size * 16), int(rng.uniform(0.05, 0.2) * size * 16))
        cv2.ellipse(alpha, tuple(np.round(c * 16).astype(int)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1,
                    cv2.LINE_AA, 4)
        layer[:] = rng.uniform(0, 255, 3)
    else:
        raise ValueError(f"unknown occluder {kind!r}; choose from {OCCLUDER_KINDS}")
    out = crop * (1 - alpha[..., None]) + layer.astype(np.float32) * alpha[..., None]
    return out.astype(np.float32), alpha


def paste_occluders(crop: np.ndarray, face: np.ndarray, rng: np.random.Generator,
                    max_count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """0 to ``max_count`` occluders of random kinds (the hand twice as often: the hardest case).

    Returns ``(crop (S, S, 3) float32, occluder (S, S) bool)``: labelled where coverage > 0.5."""
    covered = np.zeros(crop.shape[:2], np.float32)
    weights = np.array([2.0, 3.0, 1.5, 1.0, 1.0])
    for _ in range(int(rng.integers(0, max_count + 1))):
        kind = OCCLUDER_KINDS[int(rng.choice(len(OCCLUDER_KINDS), p=weights / weights.sum()))]
        crop, alpha = paste_occluder(crop, face, kind, rng)
        np.maximum(covered, alpha, out=covered)
    return crop, covered > 0.5


def prepare_sample(rgb: np.ndarray, landmarks: np.ndarray, size: int, segmenter=None) -> dict:
    """One clean training photo at the parser's crop: ``crop (S, S, 3) uint8``, ``priors (2, S, S)``,
    ``target (S, S) float32`` (the classical mask warped to the crop), ``face (S, S) bool`` (oval
    pixels the classical mask calls skin)."""
    from stages.occlusion import segment_skin

    matrix = crop_matrix(landmarks, size)
    classical = segment_skin(rgb, landmarks, segmenter, parser=None).prob
    prior = prior_channels(landmarks, matrix, size)
    big = max(rgb.shape[:2]) / size
    small = cv2.GaussianBlur(classical, (0, 0), 0.5 * big) if big > 2 else classical
    target = cv2.warpAffine(small, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return {"crop": crop_photo(rgb, matrix, size), "priors": prior, "target": target.astype(np.float32),
            "face": (prior[0] > 0) & (prior[1] == 0) & (target > 0.8)}


class SkinParserSet(torch.utils.data.Dataset):
    """``{"input": (5, S, S), "target": (1, S, S), "weight": (1, S, S)}`` per item; item ``i`` is sample
    ``i % n`` with occluders pasted, flipped and jittered, seeded by ``(seed, epoch, i)``."""

    def __init__(self, samples: list[dict], *, seed: int = 0, flip: float = 0.5, w_occluder: float = 3.0,
                 epoch_length: int | None = None):
        if not samples:
            raise ValueError("SkinParserSet: no samples")
        self.samples, self.seed, self.flip, self.w_occluder, self.epoch = samples, int(seed), flip, w_occluder, 0
        self.length = max(len(samples), int(epoch_length or 0))

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index % len(self.samples)]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        crop, occluder = paste_occluders(s["crop"].astype(np.float32), s["face"], rng)
        target = np.where(occluder, 0.0, s["target"]).astype(np.float32)
        # Colour jitter: brightness, contrast, per-channel gain (white balance).
        mean = crop.mean(axis=(0, 1))
        crop = (crop - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
        if rng.random() < 0.3:  # soft or low-resolution photos (wild): smoothness is no cue for an occluder
            crop = cv2.GaussianBlur(crop.astype(np.float32), (0, 0), rng.uniform(0.4, 1.2))
        crop = np.clip(crop + rng.normal(0, rng.uniform(0.5, 3.0), crop.shape), 0, 255)
        priors = s["priors"]
        if rng.random() < self.flip:
            crop, target, priors, occluder = crop[:, ::-1], target[:, ::-1], priors[:, :, ::-1], occluder[:, ::-1]
        x = network_input(np.ascontiguousarray(crop), np.ascontiguousarray(priors))
        weight = np.where(occluder, self.w_occluder, 1.0).astype(np.float32)
        return {"input": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                "target": torch.from_numpy(np.ascontiguousarray(target))[None],
                "weight": torch.from_numpy(np.ascontiguousarray(weight))[None]}


@dataclass
class SkinParserTrainConfig(RunConfig):
    """Every training knob of the skin parser (saved in ``config.json``)."""

    preset: str = run_field("small", "Network size: tiny (tests, 32^2), small (CPU, 96^2).", choices=tuple(PRESETS))
    steps: int = run_field(1500, "Training steps.", min=1)
    batch_size: int = run_field(8, "Samples per step.", min=1)
    lr: float = run_field(2e-3, "Adam learning rate.", min=0.0)
    w_occluder: float = run_field(3.0, "Loss weight of occluder pixels (what the classical mask misses).", min=0.0)
    flip: float = run_field(0.5, "Probability of a left-right flipped sample.", min=0.0, max=1.0)
    network: dict | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        self.network = SkinParserConfig.from_dict({**PRESETS[self.preset].to_dict(), **(self.network or {})}).to_dict()
        if self.lr <= 0:
            raise ValueError("lr must be positive")


def load_samples(folders: list[Path], size: int) -> list[dict]:
    """:func:`prepare_sample` of every folder's ``fit.json`` and its photo.

    Raises:
        FacetexError: a folder without a readable fit or photo (one line, naming the file).
    """
    from stages.fit import FitResult
    from stages.occlusion import default_segmenter

    samples = []
    for folder in folders:
        fit = FitResult.load(Path(folder) / "fit.json")
        samples.append(prepare_sample(fit.load_fitted_photo(Path(folder) / "fit.json"), fit.landmarks, size,
                                      default_segmenter()))
    return samples


def train_skin_parser(folders: list[Path], out_dir: Path, config: SkinParserTrainConfig, *,
                      samples: list[dict] | None = None, resume: bool = True, device: str | None = "auto",
                      num_workers: int = 0, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train (or resume) the skin parser and write its model folder (network ``parser``).

    Args:
        folders: facetex output folders of clean photos (``fit.json`` + the photo it names).
        out_dir: the model folder.
        config: training settings.
        samples: already prepared samples (:func:`load_samples` of ``folders``), to skip that step.
        resume, device, num_workers, progress: the :class:`stages.train.runner.TrainingRunner`'s.

    Returns:
        The last step's losses plus ``steps`` and ``seconds``.
    """
    runner = TrainingRunner(out_dir, config, device=device, num_workers=num_workers, resume=resume, progress=progress)
    net_cfg = SkinParserConfig.from_dict(config.network)
    samples = samples if samples is not None else load_samples(folders, net_cfg.size)
    dataset = SkinParserSet(samples, seed=config.seed, flip=config.flip, w_occluder=config.w_occluder,
                            epoch_length=max(len(samples), config.batch_size))
    parser = SkinParser(net_cfg)
    optimizer = torch.optim.Adam(parser.parameters(), lr=config.lr)
    parser, optimizer, _ = runner.prepare(parser, optimizer, runner.loader(dataset))

    def train_step(batch: dict, step: int) -> StepOutput:
        logits = parser(batch["input"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["target"], weight=batch["weight"])
        runner.optimise(loss, optimizer)
        with torch.no_grad():
            wrong = ((logits > 0) != (batch["target"] > 0.5)).float()
            occ = batch["weight"] > 1
            occ_err = (wrong * occ).sum() / occ.sum().clamp_min(1)

        def sheet() -> np.ndarray:
            """input crop | target | prediction."""
            rgb = (batch["input"][:, :3] + 1) / 2
            return sample_sheet([rgb, batch["target"].repeat(1, 3, 1, 1), torch.sigmoid(logits).repeat(1, 3, 1, 1)])

        return StepOutput({"loss": loss, "error": wrong.mean(), "occluder_error": occ_err}, sheet)

    parser.train()
    step = runner.run([Phase("step", config.steps, train_step)])["step"]

    def save() -> None:
        save_pretrained(out_dir, {"parser": runner.unwrap(parser)}, {"parser": net_cfg.to_dict()},
                        model_type=MODEL_TYPE, keep=RUN_FILES,
                        extra={"train": asdict(config), "steps": step, "target": "segment_skin on the clean photo, "
                               "pasted occluders not-skin (stages.train.skin_parser)",
                               "data": [str(f) for f in folders], "last_losses": runner.last})

    runner.finish(save)
    return {**runner.last, "steps": step, "seconds": runner.seconds}


__all__ = ["OCCLUDER_KINDS", "SkinParserSet", "SkinParserTrainConfig", "load_samples", "paste_occluder",
           "paste_occluders", "prepare_sample", "train_skin_parser"]
