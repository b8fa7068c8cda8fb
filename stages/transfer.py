"""``transfer``: move a UV texture from one face model's layout to another's through the fitted surfaces.

Both models are placed in the photo's screen space by the same detector landmarks (``fit.json``'s
``landmarks``): the model the fit was made with keeps its recorded shape and pose; another model is
fitted to the landmarks as ``facetex fit --face-model`` would (:func:`fitted_surface`). Then every
texel of the target layout gets its 3D point on the target surface, the nearest texel centre of the
source layout's position map (a ``cKDTree`` over the source texels the texture covers) is looked up,
and the source texture is read there when that texel lies within :func:`distance_threshold` of the
point; other target texels stay transparent (alpha 0). Nearest-texel sampling: a texture moved and
moved back is blurred by at most half a texel of each layout, never resampled between texels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from stages.core.face_model import FaceModel
from stages.core.uv import uv_layout
from stages.fit import fit_dense_shape

#: A source texel counts as "the same surface point" within this many source texel spacings ...
THRESHOLD_TEXELS = 2.0
#: ... or within this share of the face's model-space radius (``pose.scale`` pixels), whichever is
#: larger: the two fitted surfaces do not coincide exactly (the ICT head fitted to the landmarks
#: sits up to a few percent of the face radius off the MediaPipe mesh on the cheeks and nose).
THRESHOLD_FACE = 0.08


@dataclass
class TransferResult:
    """A texture moved to another layout.

    Attributes:
        texture: ``(S_t, S_t, 4)`` float32 RGBA in the target layout; alpha 1 where a source point
            was found within ``threshold``, 0 elsewhere (RGB 0 there).
        found: ``(S_t, S_t)`` bool, the texels with alpha 1.
        target_mask: ``(S_t, S_t)`` bool, texels of the target layout.
        threshold: 3D distance limit in screen pixels.
        found_share: ``found.sum() / target_mask.sum()``.
    """

    texture: np.ndarray
    found: np.ndarray
    target_mask: np.ndarray
    threshold: float
    found_share: float


def fitted_surface(model: FaceModel, fit) -> np.ndarray:
    """``(V, 3)`` screen-space vertices of ``model`` on the face of ``fit`` (a :class:`stages.fit.FitResult`).

    The fit's own model keeps its recorded surface; a morphable model (``landmark_embedding``: the
    ICT head, a user's BFM or FLAME) is fitted to the landmarks with :func:`stages.core.ict.fit_morphable`; the rigid
    MediaPipe-topology model takes the mesh points of the landmarks, as ``stages.fit`` does.
    """
    if model.name == fit.model_id and len(fit.vertices) == model.n_vertices:
        return fit.screen_vertices()
    pose, vertices, _ = fit_dense_shape(model, np.asarray(fit.landmarks, dtype=np.float64))
    return pose.to_screen(vertices)


def distance_threshold(positions: np.ndarray, mask: np.ndarray, face_scale: float) -> float:
    """3D distance (screen pixels) under which a source texel is the target point's surface point.

    Args:
        positions: ``(S, S, 3)`` source position map.
        mask: ``(S, S)`` texels of the source layout.
        face_scale: the fit's ``pose.scale`` (pixels per model unit, the face's RMS radius).

    Returns:
        ``max(THRESHOLD_TEXELS * median spacing of horizontally adjacent source texels,
        THRESHOLD_FACE * face_scale)``.
    """
    both = mask[:, 1:] & mask[:, :-1]
    spacing = np.linalg.norm(positions[:, 1:] - positions[:, :-1], axis=-1)[both]
    texel = float(np.median(spacing)) if spacing.size else 0.0
    return max(THRESHOLD_TEXELS * texel, THRESHOLD_FACE * float(face_scale))


@dataclass
class TexelMap:
    """Where each texel of a target layout reads a source layout (one fit's surfaces).

    Attributes:
        index: ``(S_t, S_t)`` int64 flat index into the ``(S, S)`` source texture of each target
            texel's source texel; -1 where none lies within ``threshold`` (or off the target layout).
        target_mask: ``(S_t, S_t)`` bool, texels of the target layout.
        threshold: 3D distance limit in screen pixels.
    """

    index: np.ndarray
    target_mask: np.ndarray
    threshold: float

    @property
    def found(self) -> np.ndarray:
        """``(S_t, S_t)`` bool: target texels that have a source texel."""
        return self.index >= 0

    def apply(self, values: np.ndarray, fill=0) -> np.ndarray:
        """``values`` (``(S, S, ...)`` in the source layout) read at every target texel: ``(S_t, S_t, ...)``,
        ``fill`` where no source texel was found."""
        flat = values.reshape(-1, *values.shape[2:])
        out = np.full((*self.index.shape, *values.shape[2:]), fill, dtype=values.dtype)
        found = self.found
        out[found] = flat[self.index[found]]
        return out


def texel_map(fit, source: FaceModel, target: FaceModel, source_size: int, size: int | None = None,
              usable: np.ndarray | None = None) -> TexelMap:
    """The nearest-texel map from ``source``'s layout at ``source_size`` to ``target``'s at ``size``
    (default ``source_size``) through the surfaces fitted to ``fit`` (module docstring).

    ``usable``: ``(S, S)`` bool, the source texels that may be read (default: the whole source layout).
    """
    size = int(size or source_size)
    src_layout = uv_layout(source, source_size)
    src_pos = src_layout.interpolate(fitted_surface(source, fit))             # (S, S, 3)
    usable = src_layout.mask if usable is None else usable & src_layout.mask
    threshold = distance_threshold(src_pos, src_layout.mask, fit.pose.scale)
    tgt_layout = uv_layout(target, size)
    index = np.full((size, size), -1, dtype=np.int64)
    src_idx = np.flatnonzero(usable.ravel())
    if src_idx.size:
        tgt_pos = tgt_layout.interpolate(fitted_surface(target, fit))         # (S_t, S_t, 3)
        tree = cKDTree(src_pos.reshape(-1, 3)[src_idx])
        tgt_idx = np.flatnonzero(tgt_layout.mask.ravel())
        dist, nearest = tree.query(tgt_pos.reshape(-1, 3)[tgt_idx], distance_upper_bound=threshold)
        hit = np.isfinite(dist)
        index.ravel()[tgt_idx[hit]] = src_idx[nearest[hit]]
    return TexelMap(index=index, target_mask=tgt_layout.mask, threshold=threshold)


def transfer_texture(texture: np.ndarray, fit, source: FaceModel, target: FaceModel,
                     size: int | None = None) -> TransferResult:
    """Move ``texture`` from ``source``'s UV layout to ``target``'s through the surfaces fitted to ``fit``.

    Args:
        texture: ``(S, S, 3|4)`` float in [0, 1] in ``source``'s layout; with alpha, texels of
            alpha < 0.5 are not sampled.
        fit: the :class:`stages.fit.FitResult` whose landmarks place both models.
        source, target: face models.
        size: target texture size (default ``S``).

    Returns:
        A :class:`TransferResult`.
    """
    usable = texture[..., 3] >= 0.5 if texture.shape[2] == 4 else None
    mapped = texel_map(fit, source, target, texture.shape[0], size, usable)
    found = mapped.found
    out = np.concatenate([mapped.apply(texture[..., :3].astype(np.float32)),
                          found[..., None].astype(np.float32)], axis=2)
    share = float(found.sum() / max(mapped.target_mask.sum(), 1))
    return TransferResult(texture=out, found=found, target_mask=mapped.target_mask, threshold=mapped.threshold,
                          found_share=share)


def transfer_files(texture_path: str | Path, fit_path: str | Path, to: str, out: str | Path,
                   size: int | None = None) -> tuple[Path, TransferResult]:
    """Read a texture and the fit.json it belongs to, move the texture to the model ``to`` (a
    ``--face-model`` name: ``mediapipe``, ``ict``, ``bfm``, ``flame``, ``bfm:PATH``, ...) and write
    ``OUT/<stem>/uv_<kind>.png`` (RGBA; ``kind`` is ``to`` without its ``:PATH``) and ``transfer.json``.

    The source model is the one ``fit.json``'s ``model_id`` names (built in, or a user model in the
    data folder); ``to`` equal to it is refused (the texture is already in that layout).

    Returns:
        ``(folder written, TransferResult)``.

    Raises:
        BadInputError: a missing, corrupt or non-square texture; ``to`` equal to the source model.
        MissingArtifactError: a missing or invalid fit.json, or one of a model that is not available;
            a user model ``to`` that was not added.
    """
    from stages.core.atomic import write_json
    from stages.core.errors import BadInputError
    from stages.core.ict import face_model_by_id, load_face_model
    from stages.core.image_io import load_texture, save_png
    from stages.fit import FitResult

    texture_path, fit_path, out = Path(texture_path), Path(fit_path), Path(out)
    fit = FitResult.load(fit_path)
    source = face_model_by_id(fit.model_id, fit_path)
    target = load_face_model(to)
    if target.name == source.name:
        raise BadInputError(fit_path, f"model_id: the fit was made with {source.name!r} (--face-model {to}), "
                                      f"so the texture is already in the {to} layout; choose another --to")
    kind = to.partition(":")[0]
    texture = load_texture(texture_path)
    result = transfer_texture(texture, fit, source, target, size)
    folder = out / fit.stem
    save_png(folder / f"uv_{kind}.png", result.texture)
    write_json(folder / "transfer.json", {
        "schema": "facetex.transfer",
        "texture": str(texture_path), "fit": str(fit_path),
        "source_model": source.name, "target_model": target.name,
        "source_size": int(texture.shape[0]), "target_size": int(result.texture.shape[0]),
        "found_share": round(result.found_share, 4),
        "threshold_px": round(result.threshold, 4),
        "threshold_rule": f"max({THRESHOLD_TEXELS} source texel spacings, {THRESHOLD_FACE} x pose.scale)",
        "output": f"uv_{kind}.png",
    })
    return folder, result
