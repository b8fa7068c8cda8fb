"""The built-in ICT-FaceKit head (a second face model) and what a morphable head needs.

* :func:`load_face_model` picks a face model by its CLI name: built in (``mediapipe``, ``ict``) or the
  user's own (``bfm``, ``flame``, ``bfm:PATH``, ``flame:PATH,UV``; :mod:`stages.core.user_assets`).
* :func:`fit_morphable`: identity + expression coefficients and a similarity pose fitted to the 468
  MediaPipe mesh points through the model's ``landmark_embedding`` (fixed barycentric positions of
  those points on the ICT surface, built by ``scripts/build_ict_model.py``), regularised by the
  coefficient priors so the parts no landmark constrains (skull, ears, neck) stay plausible.
* :func:`mesh_harmonic_fill`: per-vertex colours spread over the welded mesh (across UV seams) from
  known vertices, decaying to a skin tone far from them; the head prior of the ``mirror`` completion
  for layouts with several UV islands.

The asset, its layout and its units are described in ``scripts/build_ict_model.py`` and
``data_manifests/ict_facekit.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stages.core.camera import Pose, fit_pose, screen_to_model
from stages.core.face_model import FaceModel, load_builtin_face_model

ICT_ASSET = Path(__file__).resolve().parent.parent / "assets" / "ict_facekit_v1.npz"
#: CLI names of the built-in face models (``--face-model``).
FACE_MODELS = ("mediapipe", "ict")
#: Prior weights of the fit, in squared model units (the built-in frame: unit RMS face radius) per
#: unit coefficient: identity coefficients ~ N(0, 1) with landmark noise ~0.02 units (1 mm);
#: expression weights are kept in [0, 1] and pulled towards 0 more weakly.
IDENTITY_PRIOR = 0.02
EXPRESSION_PRIOR = 0.005
#: Alternations of pose and coefficient solves (converged well before this for upright faces).
FIT_ITERATIONS = 4


@functools.lru_cache(maxsize=1)
def load_ict_face_model() -> FaceModel:
    """The built-in ICT-FaceKit head (``ict-facekit-v1``; cached, read-only)."""
    return FaceModel.load(ICT_ASSET)


def load_face_model(name: str) -> FaceModel:
    """A face model by its CLI name: ``mediapipe`` (``mediapipe471-v2``), ``ict``, or a user model
    (``bfm``, ``flame`` once added; ``bfm:PATH``, ``flame:PATH,UV``).

    Raises:
        ValueError: for another name (one line listing the choices).
        MissingArtifactError: a user model that was not added (one line: how to add it, where to request it).
        BadInputError: a bad ``KIND:PATH`` file.
    """
    if name == "mediapipe":
        return load_builtin_face_model()
    if name == "ict":
        return load_ict_face_model()
    from stages.core.user_assets import KINDS, load_user_model

    if name.partition(":")[0] in KINDS:
        return load_user_model(name)
    raise ValueError(f"unknown face model {name!r}; choose from {', '.join(FACE_MODELS)}, "
                     f"{', '.join(KINDS)} (after `facetex assets add`) or {'|'.join(KINDS)}:PATH")


def face_model_by_id(model_id: str, where: Path | str) -> FaceModel:
    """The face model whose ``FaceModel.name`` is ``model_id`` (as ``fit.json`` records it): built in, or
    a user model converted into the data folder (:func:`stages.core.user_assets.user_model_by_id`).

    Lets a stage that reads a finished result (``evaluate``, ``transfer``) use the model it was made
    with, without a ``--face-model`` option that could disagree with the files.

    Raises:
        MissingArtifactError: no such model (one line naming ``where``).
    """
    from stages.core.errors import MissingArtifactError
    from stages.core.user_assets import models_dir, user_model_by_id

    for name in FACE_MODELS:
        model = load_face_model(name)
        if model.name == model_id:
            return model
    user = user_model_by_id(model_id)
    if user is not None:
        return user
    if model_id.startswith(("bfm", "flame")):
        raise MissingArtifactError(where, f"model_id: {model_id!r} is a user model not in {models_dir()}; add "
                                          "its file again with `facetex assets add`")
    known = ", ".join(f"{load_face_model(n).name} (--face-model {n})" for n in FACE_MODELS)
    raise MissingArtifactError(where, f"model_id: {model_id!r} is not a built-in face model ({known})")


@dataclass(frozen=True)
class _FitSystem:
    """Per-model constants of :func:`fit_morphable`."""

    mean_lm: np.ndarray      # (L, 3) landmark positions on the mean
    basis_lm: np.ndarray     # (3L, K) landmark displacement per coefficient
    n_identity: int
    prior: np.ndarray        # (K,) ridge weights
    normal: np.ndarray       # (K, K) basis_lm.T @ basis_lm + diag(prior)


@functools.lru_cache(maxsize=4)
def _fit_system(model: FaceModel) -> _FitSystem:
    emb = model.landmark_embedding
    bases = [b for b in (model.shape_basis, model.expression_basis) if b is not None]
    basis = np.concatenate(bases).astype(np.float64)                      # (K, V, 3)
    basis_lm = np.stack([np.asarray(emb @ b) for b in basis], axis=-1)    # (L, 3, K)
    n_id = 0 if model.shape_basis is None else len(model.shape_basis)
    prior = np.concatenate([np.full(n_id, IDENTITY_PRIOR), np.full(len(basis) - n_id, EXPRESSION_PRIOR)])
    basis_lm = basis_lm.reshape(-1, len(basis))
    return _FitSystem(mean_lm=np.asarray(emb @ model.vertices.astype(np.float64)), basis_lm=basis_lm,
                      n_identity=n_id, prior=prior, normal=basis_lm.T @ basis_lm + np.diag(prior))


def morphable_vertices(model: FaceModel, coefficients: np.ndarray) -> np.ndarray:
    """``(V, 3)`` float64 shape of ``coefficients`` (identity then expression) of ``model``.

    One float32 matrix product over the stacked bases (:func:`_stacked_basis`; upcasting the float32
    bases to float64 on every call cost ~15 ms for the ICT head's 153 modes)."""
    c = np.asarray(coefficients, dtype=np.float32)
    out = model.vertices.astype(np.float64)
    basis = _stacked_basis(model)
    if basis is not None:
        out += (c @ basis).reshape(-1, 3)
    return out


@functools.lru_cache(maxsize=4)
def _stacked_basis(model: FaceModel) -> np.ndarray | None:
    """``(K, 3V)`` float32: the identity then expression bases of ``model`` as one matrix (cached)."""
    bases = [b.reshape(len(b), -1) for b in (model.shape_basis, model.expression_basis) if b is not None]
    if len(bases) < 2:
        return bases[0] if bases else None      # a view: no copy of a large (BFM) basis
    return np.concatenate(bases)


def fit_morphable(model: FaceModel, points: np.ndarray,
                  iterations: int = FIT_ITERATIONS) -> tuple[Pose, np.ndarray, np.ndarray, np.ndarray]:
    """Fit pose, identity and expression of a morphable model to detector landmarks.

    Alternates a similarity pose (Umeyama on the landmark positions, depth included as MediaPipe
    gives it) with a bounded ridge solve of the coefficients in model space: identity coefficients
    are penalised by ``IDENTITY_PRIOR * |c|^2`` and kept in [-3, 3] (3 sigma), expression weights
    by ``EXPRESSION_PRIOR * |w|^2`` and kept in [0, 1].

    Args:
        model: a model with ``landmark_embedding`` (``(L, V)``) and bases.
        points: ``(L, 3)`` screen-space landmarks (pixel ``x, y``, depth in ``x``'s scale).

    Returns:
        ``(pose, vertices (V, 3) model space, residual (L,) pixels in x/y, coefficients (K,))``.
    """
    if model.landmark_embedding is None:
        raise ValueError(f"model {model.name!r} has no landmark_embedding to fit through")
    system = _fit_system(model)
    pts = np.asarray(points, dtype=np.float64)
    k = system.basis_lm.shape[1]
    coeffs = np.zeros(k)
    lower = np.concatenate([np.full(system.n_identity, -3.0), np.zeros(k - system.n_identity)])
    upper = np.concatenate([np.full(system.n_identity, 3.0), np.ones(k - system.n_identity)])
    for _ in range(iterations):
        shape_lm = system.mean_lm + (system.basis_lm @ coeffs).reshape(-1, 3)
        pose = fit_pose(shape_lm, pts)
        target = screen_to_model(pose, pts) - system.mean_lm
        coeffs = _bounded_ridge(system, target.ravel(), lower, upper)
    shape_lm = system.mean_lm + (system.basis_lm @ coeffs).reshape(-1, 3)
    pose = fit_pose(shape_lm, pts)
    residual = np.linalg.norm(pose.to_screen(shape_lm)[:, :2] - pts[:, :2], axis=1)
    return pose, morphable_vertices(model, coeffs), residual, coeffs


def _bounded_ridge(system: _FitSystem, target: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   passes: int = 4) -> np.ndarray:
    """``argmin |A c - target|^2 + sum prior * c^2`` within ``[lower, upper]`` by a few active-set
    passes: solve the normal equations on the free coefficients, pin the ones that leave their
    bounds to the bound, repeat (K x K systems; well under a millisecond each)."""
    normal = system.normal
    rhs = system.basis_lm.T @ target
    c = np.zeros(len(rhs))
    free = np.ones(len(rhs), dtype=bool)
    for _ in range(passes):
        c_free = np.linalg.solve(normal[np.ix_(free, free)], rhs[free] - normal[np.ix_(free, ~free)] @ c[~free])
        c[free] = c_free
        out = free & ((c < lower) | (c > upper))
        c = np.clip(c, lower, upper)
        if not out.any():
            break
        free &= ~out
    return c


@functools.lru_cache(maxsize=4)
def _welded_laplacian(model: FaceModel) -> tuple[sp.csr_matrix, np.ndarray]:
    """Graph Laplacian ``(W, W)`` of the welded mesh and the welded id ``(V,)`` of every vertex."""
    weld = model.weld_index if model.weld_index is not None else np.arange(model.n_vertices)
    canonical, welded = np.unique(weld, return_inverse=True)
    t = welded[model.triangles]
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    n = len(canonical)
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    lap = sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj
    return lap.tocsr(), welded


def mesh_harmonic_fill(model: FaceModel, values: np.ndarray, known: np.ndarray, tone: np.ndarray,
                       screening: float = 0.02) -> np.ndarray:
    """Spread per-vertex values from known vertices over the mesh, decaying to ``tone``.

    Solves ``(L + screening * I) x = screening * tone`` on the unknown vertices of the welded mesh
    (split copies at UV seams share one unknown, so the result has no seam) with the known values
    fixed: near the known region ``x`` continues it smoothly, a few rings away it is ``tone``.

    Args:
        model: the face model.
        values: ``(V, C)`` per-vertex values (used where ``known``).
        known: ``(V,)`` bool.
        tone: ``(C,)`` value far from the known vertices (e.g. the median visible skin colour).
        screening: decay per edge ring (larger: reaches ``tone`` sooner).

    Returns:
        ``(V, C)`` float64, equal to ``values`` where ``known``.
    """
    lap, welded = _welded_laplacian(model)
    n = lap.shape[0]
    vals = np.asarray(values, dtype=np.float64)
    sums = np.zeros((n, vals.shape[1]))
    counts = np.zeros(n)
    np.add.at(sums, welded[known], vals[known])
    np.add.at(counts, welded[known], 1.0)
    fixed = counts > 0
    x = np.tile(np.asarray(tone, dtype=np.float64), (n, 1))
    x[fixed] = sums[fixed] / counts[fixed, None]
    free = ~fixed
    if free.any():
        system = (lap + screening * sp.eye(n)).tocsr()
        a = system[free][:, free].tocsc()
        rhs = screening * x[free] - system[free][:, fixed] @ x[fixed]
        x[free] = spla.splu(a).solve(rhs)
    out = x[welded]
    out[known] = vals[known]
    return out
