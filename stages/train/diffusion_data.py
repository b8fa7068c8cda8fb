"""Training samples of the two diffusion networks, from the same on-disk training folders.

Both sets read facetex output folders (``fit.json`` whose ``source`` names the photo, the unwrap,
``uv_pseudo.png``; checked with :func:`stages.train.dataset.check_training_folder`). Images are
``float32`` torch ``(C, H, W)`` in ``[-1, 1]``: colour ``c`` in ``[0, 1]`` becomes ``2c - 1``, so a
masked-out (black) pixel is ``-1``. Positions are model-space coordinates divided by
:data:`stages.models.inputs.POSITION_SCALE` (about ``[-1, 1]``) and 0 where masked out.

- :class:`AppearanceSet` (UV -> 2D, real photos; fixed per folder, computed once):
  ``source`` = the defective unwrap ``(3, U, U)`` (the extractor's input), ``control`` = the
  model's position map rendered at the fitted pose in the face crop ``(3, S, S)`` plus, with
  ``landmarks``, a 2D landmark image ``(1, S, S)``; ``target`` = the face crop of the photo masked
  by the rendered face region ``(3, S, S)``.
- :class:`StructureSet` (2D -> UV, the 3DMM domain, random per sample): a per-image shape of a
  random training folder under a random pose and random SH light, textured with an albedo drawn
  from the PCA albedo model, rendered by :func:`stages.render.render_mesh`; ``source`` = the masked
  render ``(3, S, S)``, ``control`` = the UV position map masked to the texels that view sees
  ``(3, U, U)``, ``target`` = the render's colours sampled back into UV at those texels
  ``(3, U, U)``: pixel-exact UV correspondence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from stages.core.errors import BadInputError, MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import DEFAULT_MAX_SIDE, load_photo
from stages.core.poisson import pull_push_fill
from stages.core.shading import SH_C0, SH_C1
from stages.core.uv import uv_layout
from stages.fit import FitResult
from stages.render import render_mesh
from stages.models.inputs import POSITION_SCALE
from stages.train.dataset import check_training_folder, load_training_folder
from stages.train.reposing import VIEW_FILL, PoseRange, sample_pose, view_pose_rolled
from stages.unwrap import texel_visibility

def to_signed(image: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` float in ``[0, 1]`` -> ``(C, H, W)`` float32 in ``[-1, 1]``."""
    return np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1) * 2.0 - 1.0)


def _chw(image: np.ndarray) -> np.ndarray:
    image = image[..., None] if image.ndim == 2 else image
    return np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1))


def position_texture(position: np.ndarray, layout: np.ndarray) -> np.ndarray:
    """``(U, U, 3)`` model-space positions on ``layout`` -> positions / POSITION_SCALE padded beyond the
    layout by pull-push (so bilinear lookups at chart borders stay on the surface)."""
    return pull_push_fill(np.where(layout[..., None], position / POSITION_SCALE, 0.0), layout)


def face_crop(screen: np.ndarray, size: int, fill: float = VIEW_FILL) -> tuple[float, float, float]:
    """The square crop around projected vertices ``(V, 3)`` where the face spans ``fill`` of
    ``size`` pixels, as ``(x0, y0, scale)``: crop pixel = ``(x - x0) * scale``."""
    lo, hi = screen[:, :2].min(axis=0), screen[:, :2].max(axis=0)
    side = float((hi - lo).max()) / fill
    centre = (lo + hi) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), size / max(side, 1e-6)


def crop_photo(rgb: np.ndarray, x0: float, y0: float, scale: float, size: int) -> np.ndarray:
    """``(size, size, 3)`` float32 crop of a uint8 photo: crop pixel centre ``(j + .5, i + .5)`` shows
    photo point ``((j + .5) / scale + x0, (i + .5) / scale + y0)`` (anti-aliased when shrinking)."""
    image = rgb.astype(np.float32) / 255.0
    if scale < 1.0:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.45 / scale)
    # cv2 puts pixel centres at integers: dst_i = scale * (src_i + 0.5 - x0) - 0.5.
    matrix = np.array([[scale, 0.0, scale * (0.5 - x0) - 0.5], [0.0, scale, scale * (0.5 - y0) - 0.5]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def landmark_image(points: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` float32 image with a dot (radius ~1% of the side) at every ``(x, y)`` of ``points``."""
    image = np.zeros((size, size), np.float32)
    radius = max(1, round(size / 128))
    for x, y in np.asarray(points, dtype=np.float64)[:, :2]:
        if 0 <= x < size and 0 <= y < size:
            cv2.circle(image, (int(x), int(y)), radius, 1.0, -1)
    return image


@dataclass
class DiffusionSample:
    """One training sample (torch tensors in the layouts of the module docstring)."""

    source: torch.Tensor
    control: torch.Tensor
    target: torch.Tensor

    def as_dict(self) -> dict:
        return {"source": self.source, "control": self.control, "target": self.target}


class AppearanceSet(torch.utils.data.Dataset):
    """UV -> 2D samples from real photos (see the module docstring).

    Args:
        folders: training folders (checked; the first problem raises a one-line error).
        model: the face model of the fits.
        image_size: ``S``, side of the face crops.
        uv_size: ``U``, side of the defective unwraps.
        landmarks: add the landmark image channel to ``control``.
        max_side: photos are loaded as ``fit`` loaded them (long side limit).
        epoch_length: ``len()`` (at least the number of folders); index ``i`` is folder ``i % N``.

    ``__getitem__(i)`` -> dict ``source (3, U, U)``, ``control (3 or 4, S, S)``, ``target (3, S, S)``,
    also ``pseudo (3, U, U)`` (the complete pseudo-GT, for the autoencoder).
    """

    def __init__(self, folders: list[Path], model: FaceModel, *, image_size: int, uv_size: int,
                 landmarks: bool = True, max_side: int = DEFAULT_MAX_SIDE, epoch_length: int = 0):
        folders = [Path(f) for f in folders]
        if not folders:
            raise ValueError("no training folders")
        self.epoch_length = max(len(folders), int(epoch_length))
        self.model, self.image_size, self.uv_size, self.landmarks = model, int(image_size), int(uv_size), landmarks
        self.items = [self._load(folder, max_side) for folder in folders]

    @property
    def control_channels(self) -> int:
        return 4 if self.landmarks else 3

    def _load(self, folder: Path, max_side: int) -> dict:
        check_training_folder(folder)
        data = load_training_folder(folder, self.model, self.uv_size)
        fit = FitResult.load(folder / "fit.json")
        try:
            rgb = load_photo(fit.photo_path(folder / "fit.json"), max_side=max_side).rgb
        except BadInputError as e:
            raise MissingArtifactError(folder / "fit.json", f"source photo unusable ({e.reason})") from None
        width, height = fit.image_size
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        size = self.image_size
        screen = fit.screen_vertices()
        x0, y0, scale = face_crop(screen, size)
        crop_screen = np.column_stack([(screen[:, 0] - x0) * scale, (screen[:, 1] - y0) * scale, screen[:, 2] * scale])
        layout = uv_layout(self.model, self.uv_size).mask
        pos_tex = (position_texture(data.position, layout) + 1.0) / 2.0      # render_mesh clamps to [0, 1]
        pos_img, mask = render_mesh(pos_tex, crop_screen, self.model, size, size)
        position = np.where(mask[..., None], pos_img * 2.0 - 1.0, 0.0)
        control = [_chw(position)]
        if self.landmarks:
            points = (np.asarray(fit.landmarks)[:, :2] - [x0, y0]) * scale
            control.append(_chw(landmark_image(points, size)))
        photo = crop_photo(rgb, x0, y0, scale, size) * mask[..., None]
        seen = data.confidence > 0
        return {"source": torch.from_numpy(to_signed(np.where(seen[..., None], data.texture, 0.0))),
                "control": torch.from_numpy(np.concatenate(control, axis=0)),
                "target": torch.from_numpy(to_signed(photo)),
                "pseudo": torch.from_numpy(to_signed(data.pseudo * layout[..., None]))}

    def __len__(self) -> int:
        return self.epoch_length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.epoch_length:
            raise IndexError(index)
        return dict(self.items[index % len(self.items)])


def random_sh(rng: np.random.Generator, max_directional: float = 0.6, second_order: float = 0.05) -> np.ndarray:
    """``(9, 3)`` SH lighting: ambient 1, a directional term of random strength from a random direction
    in the front hemisphere, small random second-order terms (grey light; colour is set elsewhere)."""
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2]) + 0.3
    direction /= np.linalg.norm(direction)
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 1.0 / SH_C0
    strength = rng.uniform(0.0, max_directional)
    sh[1:4] = (strength / SH_C1 * np.array([direction[1], direction[2], direction[0]]))[:, None]
    sh[4:] = rng.normal(0.0, second_order, size=(5, 1))
    return sh


class StructureSet(torch.utils.data.Dataset):
    """2D -> UV samples rendered in the 3DMM domain (see the module docstring).

    Args:
        shapes: per-image shapes ``(V, 3)`` to pose (e.g. ``fit.vertices`` of the training folders).
        model: the face model.
        pca: an :class:`stages.pca.AlbedoPCA` (the shipped London model by default in the trainer).
        image_size: ``S`` of the renders; ``uv_size``: ``U`` of the UV maps.
        pose_range: distribution of the random poses.
        temperature: scale of the sampled PCA coefficients (1 = the model's variance).
        seed, epoch_length: sample ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``.

    ``__getitem__(i)`` -> dict ``source (3, S, S)``, ``control (3, U, U)``, ``target (3, U, U)``.
    """

    def __init__(self, shapes: list[np.ndarray], model: FaceModel, pca, *, image_size: int, uv_size: int,
                 pose_range: PoseRange = PoseRange(), temperature: float = 1.0, seed: int = 0,
                 epoch_length: int = 1000):
        if not shapes:
            raise ValueError("no shapes")
        for shape in shapes:
            if np.asarray(shape).shape != (model.n_vertices, 3):
                raise ValueError(f"a shape must be ({model.n_vertices}, 3), got {np.asarray(shape).shape}")
        if pca.model_id != model.name:
            raise ValueError(f"the PCA albedo model was built for {pca.model_id!r}, not {model.name!r}")
        self.shapes = [np.asarray(s, np.float64) for s in shapes]
        self.model, self.pca = model, pca
        self.image_size, self.uv_size = int(image_size), int(uv_size)
        self.pose_range, self.temperature = pose_range, float(temperature)
        self.seed, self.epoch_length, self.epoch = int(seed), int(epoch_length), 0
        self.layout = uv_layout(model, self.uv_size)
        self._pca_mask = uv_layout(model, pca.resolution).mask

    def __len__(self) -> int:
        return self.epoch_length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def albedo(self, rng: np.random.Generator) -> np.ndarray:
        """``(U, U, 3)`` albedo from the PCA model: one standard-normal draw shared by the three
        channels (scaled by each channel's standard deviations), padded beyond the layout."""
        z = rng.normal(size=self.pca.n_components) * self.temperature
        coeffs = z[None, :] * np.sqrt(np.maximum(self.pca.variance, 0.0))
        image = np.clip(self.pca.reconstruct(coeffs), 0.0, 1.0)
        image = pull_push_fill(image, self._pca_mask)
        interpolation = cv2.INTER_AREA if self.pca.resolution > self.uv_size else cv2.INTER_LINEAR
        return cv2.resize(image, (self.uv_size, self.uv_size), interpolation=interpolation)

    def sample(self, index: int) -> dict:
        """The numpy sample ``index`` of the current epoch (deterministic in seed, epoch, index)."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        vertices = self.shapes[int(rng.integers(len(self.shapes)))]
        size = self.image_size
        view = view_pose_rolled(vertices, *sample_pose(rng, self.pose_range), size)
        albedo = self.albedo(rng) * rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, size=3)  # exposure, white bal.
        albedo = np.clip(albedo, 0.0, 1.0).astype(np.float32)
        normals = view.rotate_normals(self.model.vertex_normals(vertices))
        rgb, mask = render_mesh(albedo, view.to_screen(vertices), self.model, size, size, normals_cam=normals,
                                sh=random_sh(rng))
        rgb = np.round(rgb * 255.0) / 255.0                      # an 8-bit photo
        seen = texel_visibility(self.model, vertices, view, size, size, self.uv_size)
        keep = (seen.confidence > 0)[..., None]
        map_x = (seen.texel_screen[..., 0] - 0.5).astype(np.float32)
        map_y = (seen.texel_screen[..., 1] - 0.5).astype(np.float32)
        colour = cv2.remap(rgb.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        position = self.layout.interpolate(vertices) / POSITION_SCALE
        return {"source": to_signed(rgb * mask[..., None]), "control": _chw(np.where(keep, position, 0.0)),
                "target": to_signed(np.where(keep, colour, 0.0))}

    def __getitem__(self, index: int) -> dict:
        return {k: torch.from_numpy(v) for k, v in self.sample(index).items()}
