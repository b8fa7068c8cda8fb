"""Training pairs without ground truth (seed 001, §3.2).

No photo comes with a complete texture, so every training pair is made from one facetex output
folder (``fit.json``, the unwrap artifacts and ``uv_pseudo.png`` from ``facetex pseudo-gt``):

- **photo** samples: the unwrap, further masked by what a randomly re-posed head of the same
  per-image shape would see (:func:`stages.train.reposing.reposed_confidence`), is the input.
  The target is the photo's real texels wherever the *original* unwrap saw them (including the
  ones the re-posing hid: real colours supervise the completion) and the pseudo ground truth
  elsewhere, trusted less (``pseudo_weight``).
- **rerender** samples (a fraction ``rerender_fraction``): the pseudo-GT texture rendered at a
  random pose and unwrapped back through that pose, so the target (the pseudo-GT itself) is exact
  on the whole layout (weight 1) and the network sees complete faces at new poses.

Every array is ``float32`` in the torch ``(C, S, S)`` layout, UV image rows as in
``docs/CONVENTIONS.md`` (row 0 = top = v close to 1). Colours are in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from stages.core.errors import MissingArtifactError
from stages.core.face_model import FaceModel
from stages.core.image_io import load_texture
from stages.core.uv import uv_layout
from stages.models.inputs import POSITION_SCALE, resize_area, resize_unwrap
from stages.fit import FitResult
from stages.render import render_mesh
from stages.train.face_views import FaceView, load_photo_view, novel_view
from stages.train.reposing import PoseRange, reposed_confidence, sample_pose, view_pose_rolled
from stages.unwrap import UnwrapResult, texel_visibility

#: Model-space positions are divided by this (the model has unit RMS radius) to lie in about [-1, 1].
#: Files every training folder must hold, and the command that writes each.
REQUIRED_FILES: tuple[tuple[str, str], ...] = (
    ("fit.json", "facetex fit"),
    ("unwrap.json", "facetex unwrap"),
    ("uv_texture.png", "facetex unwrap"),
    ("uv_position.npy", "facetex unwrap"),
    ("uv_pseudo.png", "facetex pseudo-gt"),
)
KINDS = ("photo", "rerender")


@dataclass
class TrainingSample:
    """One training pair, numpy ``float32`` arrays in ``(C, S, S)`` layout.

    Attributes:
        partial: ``(3, S, S)`` input texture in ``[0, 1]``, zero where ``mask`` is 0.
        mask: ``(1, S, S)`` input seen-mask, 0/1.
        position: ``(3, S, S)`` model-space texel position divided by :data:`POSITION_SCALE` (about
            ``[-1, 1]``), zero outside the layout.
        target: ``(3, S, S)`` texture to reconstruct in ``[0, 1]``.
        weight: ``(1, S, S)`` per-texel loss weight (0 outside the layout).
        layout: ``(1, S, S)`` 0/1 texels of the model's UV layout.
        kind: ``"photo"`` or ``"rerender"``.
        pose: ``(3,)`` the simulated ``(yaw, pitch, roll)`` in degrees.
        folder: index of the source folder.
        real: ``(3, S, S)`` the photo's own texels (the original unwrap, zero where unseen): the
            "real partial UVs" of the partial-UV discriminators, whatever the sample's kind.
        seen: ``(1, S, S)`` 0/1 where the original unwrap saw the face.
        normal: ``(3, S, S)`` unit camera-space normal of each texel at the fitted pose (zero outside
            the layout): the lighting augmentation relights with it.
    """

    partial: np.ndarray
    mask: np.ndarray
    position: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    layout: np.ndarray
    kind: str
    pose: np.ndarray
    folder: int
    real: np.ndarray
    seen: np.ndarray
    normal: np.ndarray

    def to_torch(self) -> dict:
        """A dict of torch tensors (``kind`` stays a string), ready for the default collate."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if isinstance(value, str) else torch.as_tensor(np.ascontiguousarray(value))
        return out


@dataclass
class _Folder:
    """One training folder loaded at ``uv_size`` (HWC float32)."""

    path: Path
    texture: np.ndarray      # (S, S, 3), zero where unseen
    confidence: np.ndarray   # (S, S)
    position: np.ndarray     # (S, S, 3) model space, zero outside the layout
    pseudo: np.ndarray       # (S, S, 3)
    vertices: np.ndarray     # (V, 3) float64
    rotation: np.ndarray     # (3, 3) fitted rotation
    normal: np.ndarray       # (S, S, 3) camera-space texel normals at the fitted pose
    view: FaceView | None    # the photo at its fitted pose (render losses), None when not asked for


def check_training_folder(folder: str | Path, required: tuple[tuple[str, str], ...] = REQUIRED_FILES) -> None:
    """Raise :class:`MissingArtifactError` naming the first missing file and the command that makes it.

    Args:
        folder: a facetex output folder.
        required: ``(file name, command that writes it)`` pairs (default: the UV generator's).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingArtifactError(folder, "training folder not found")
    for name, command in required:
        if not (folder / name).is_file():
            raise MissingArtifactError(folder / name, f"missing (run `{command}` first)")


def load_training_folder(folder: str | Path, model: FaceModel, uv_size: int, view_size: int = 0) -> _Folder:
    """Read one checked folder into memory at ``uv_size`` (and its photo view at ``view_size``, if > 0)."""
    folder = Path(folder)
    fit = FitResult.load(folder / "fit.json")
    if fit.model_id != model.name or fit.vertices.shape != (model.n_vertices, 3):
        raise MissingArtifactError(folder / "fit.json", f"fit was made with model {fit.model_id!r}, not {model.name!r}")
    unwrap = UnwrapResult.load(folder, model)
    pseudo = load_texture(folder / "uv_pseudo.png")[..., :3]
    texture, confidence, position = resize_unwrap(unwrap, model, uv_size)
    layout = uv_layout(model, uv_size).mask
    vertices = np.asarray(fit.vertices, dtype=np.float64)
    normal = uv_layout(model, uv_size).interpolate(fit.pose.rotate_normals(model.vertex_normals(vertices)))
    normal /= np.linalg.norm(normal, axis=2, keepdims=True) + 1e-12
    return _Folder(path=folder, texture=texture.astype(np.float32), confidence=confidence.astype(np.float32),
                   position=position.astype(np.float32), pseudo=resize_area(pseudo, uv_size).astype(np.float32),
                   vertices=vertices, rotation=np.asarray(fit.pose.rotation, dtype=np.float64),
                   normal=np.where(layout[..., None], normal, 0.0).astype(np.float32),
                   view=load_photo_view(folder, fit, model, view_size) if view_size else None)


def _chw(image: np.ndarray) -> np.ndarray:
    """``(S, S)`` or ``(S, S, C)`` -> ``(C, S, S)`` float32."""
    image = image[..., None] if image.ndim == 2 else image
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


class UVTrainingSet(torch.utils.data.Dataset):
    """Training pairs for UV completion from facetex output folders (seed 001, §3.2).

    Args:
        folders: output folders, each with ``fit.json``, ``unwrap.json``, ``uv_texture.png``,
            ``uv_position.npy`` and ``uv_pseudo.png``. Checked at construction (first missing file
            raises :class:`MissingArtifactError` naming it and the command that writes it) and
            loaded once into memory at ``uv_size``.
        model: the face model the fits were made with.
        uv_size: ``S`` of the samples; stored maps of another size are resized (INTER_AREA when
            shrinking; seen texels and positions by normalised convolution).
        pose_range: distribution of the simulated poses.
        pseudo_weight: loss weight of pseudo-GT texels in photo samples.
        rerender_fraction: probability that a sample is a re-render of the pseudo-GT.
        seed: base seed. Sample ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``,
            so it is the same in every process (DataLoader workers included).
        epoch_length: ``len()`` of the dataset (default: the number of folders); index ``i`` uses
            folder ``i % N``.
        view_size: ``R`` of the image-space views for the render losses and the face discriminator
            (:mod:`stages.train.face_views`); 0 (default) leaves them out and does not read the photos.
        novel_range: ``(max_yaw, max_pitch)`` degrees of the novel view's offset from the fitted pose.

    ``__getitem__`` returns :meth:`TrainingSample.to_torch`: ``partial (3,S,S)``, ``mask (1,S,S)``,
    ``position (3,S,S)``, ``target (3,S,S)``, ``weight (1,S,S)``, ``layout (1,S,S)`` float32
    tensors, ``pose (3,)``, ``folder`` (int64 scalar) and ``kind`` (str); with ``view_size = R > 0`` also
    ``view_image (3,R,R)``, ``view_mask (1,R,R)``, ``view_triangle_id (R,R)`` (int64), ``view_screen (V,3)``
    (the photo at its fitted pose) and ``novel_mask``, ``novel_triangle_id``, ``novel_screen`` (the shape
    turned by a random offset within ``novel_range``). Call :meth:`set_epoch`
    before each epoch for new poses (with DataLoader workers, use ``persistent_workers=False``
    so the workers pick the new epoch up).
    """

    def __init__(self, folders: list[Path], model: FaceModel, *, uv_size: int = 256,
                 pose_range: PoseRange = PoseRange(), pseudo_weight: float = 0.3, rerender_fraction: float = 0.25,
                 seed: int = 0, epoch_length: int | None = None, view_size: int = 0,
                 novel_range: tuple[float, float] = (40.0, 15.0)):
        folders = [Path(f) for f in folders]
        if not folders:
            raise ValueError("no training folders")
        if not 0.0 <= rerender_fraction <= 1.0:
            raise ValueError(f"rerender_fraction must be in [0, 1], got {rerender_fraction}")
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be positive, got {epoch_length}")
        for folder in folders:
            check_training_folder(folder)
        self.model = model
        self.uv_size = int(uv_size)
        self.pose_range = pose_range
        self.pseudo_weight = float(pseudo_weight)
        self.rerender_fraction = float(rerender_fraction)
        self.seed = int(seed)
        self.epoch_length = epoch_length
        self.epoch = 0
        if view_size < 0:
            raise ValueError(f"view_size must be >= 0, got {view_size}")
        self.view_size = int(view_size)
        self.novel_range = (float(novel_range[0]), float(novel_range[1]))
        self.layout = uv_layout(model, self.uv_size).mask.copy()
        self.folders = [load_training_folder(f, model, self.uv_size, self.view_size) for f in folders]

    def __len__(self) -> int:
        return self.epoch_length or len(self.folders)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: the same index gives another pose (and kind) in another epoch."""
        self.epoch = int(epoch)

    @property
    def render_size(self) -> int:
        """Side of the simulated photos (face about ``0.8 *`` this wide, about 1.6 pixels per texel)."""
        return 2 * self.uv_size

    def sample(self, index: int) -> TrainingSample:
        """The numpy sample ``index`` of the current epoch (deterministic in ``seed, epoch, index``)."""
        if index < 0:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        folder_index = int(index) % len(self.folders)
        data = self.folders[folder_index]
        rerender = bool(rng.random() < self.rerender_fraction)
        pose = sample_pose(rng, self.pose_range)
        if rerender:
            return self._rerender_sample(data, pose, folder_index)
        return self._photo_sample(data, pose, folder_index)

    def views(self, index: int) -> dict:
        """Image-space views of sample ``index`` (needs ``view_size > 0``): see the class docstring."""
        if not self.view_size:
            raise ValueError("this dataset was built without views (view_size=0)")
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])
        data = self.folders[int(index) % len(self.folders)]
        yaw, pitch = rng.uniform(-1.0, 1.0, 2) * np.array(self.novel_range)
        novel = novel_view(self.model, data.vertices, data.rotation, float(yaw), float(pitch), self.view_size)
        view = data.view
        return {"view_image": torch.from_numpy(_chw(view.image)), "view_mask": torch.from_numpy(_chw(view.mask)),
                "view_triangle_id": torch.from_numpy(view.triangle_id), "view_screen": torch.from_numpy(view.screen),
                "novel_mask": torch.from_numpy(_chw(novel.mask)),
                "novel_triangle_id": torch.from_numpy(novel.triangle_id),
                "novel_screen": torch.from_numpy(novel.screen)}

    def __getitem__(self, index: int) -> dict:
        item = self.sample(index).to_torch()
        if self.view_size:
            item.update(self.views(index))
        return item

    @staticmethod
    def _real(data: _Folder) -> dict:
        seen = data.confidence > 0
        return {"real": _chw(np.where(seen[..., None], data.texture, 0.0)), "seen": _chw(seen),
                "normal": _chw(data.normal)}

    def _photo_sample(self, data: _Folder, pose: tuple[float, float, float], folder_index: int) -> TrainingSample:
        reposed = reposed_confidence(self.model, data.vertices, *pose, self.uv_size, image_size=self.render_size)
        seen = data.confidence > 0
        keep = seen & (reposed > 0)
        target = np.where(seen[..., None], data.texture, data.pseudo)
        weight = np.where(seen, data.confidence, self.pseudo_weight) * self.layout
        return TrainingSample(partial=_chw(np.where(keep[..., None], data.texture, 0.0)), mask=_chw(keep),
                              position=_chw(data.position / POSITION_SCALE), target=_chw(target), weight=_chw(weight),
                              layout=_chw(self.layout), kind="photo", pose=np.asarray(pose, np.float32),
                              folder=folder_index, **self._real(data))

    def _rerender_sample(self, data: _Folder, pose: tuple[float, float, float], folder_index: int) -> TrainingSample:
        size = self.render_size
        view = view_pose_rolled(data.vertices, *pose, size)
        rgb, _ = render_mesh(data.pseudo, view.to_screen(data.vertices), self.model, size, size)
        rgb = np.round(rgb * 255.0) / 255.0                    # an 8-bit photo, like the real ones
        seen = texel_visibility(self.model, data.vertices, view, size, size, self.uv_size)
        keep = seen.confidence > 0
        map_x = (seen.texel_screen[..., 0] - 0.5).astype(np.float32)  # cv2.remap: pixel centres at integers
        map_y = (seen.texel_screen[..., 1] - 0.5).astype(np.float32)
        colour = cv2.remap(rgb.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return TrainingSample(partial=_chw(np.where(keep[..., None], colour, 0.0)), mask=_chw(keep),
                              position=_chw(data.position / POSITION_SCALE), target=_chw(data.pseudo),
                              weight=_chw(self.layout), layout=_chw(self.layout), kind="rerender",
                              pose=np.asarray(pose, np.float32), folder=folder_index, **self._real(data))
