"""Read the Basel Face Model from the user's own file (never shipped or downloaded by facetex).

* BFM 2009, ``01_MorphableModel.mat`` (MATLAB v5, :func:`scipy.io.loadmat`): ``shapeMU`` ``(3V, 1)``
  mean, ``shapePC`` ``(3V, K)`` orthonormal modes, ``shapeEV`` ``(K, 1)`` their standard deviations,
  ``tl`` ``(F, 3)`` 1-based triangles; micrometres. No expressions.
* BFM 2017, ``model2017-1_bfm_nomouth.h5`` / ``model2017-1_face12_nomouth.h5`` (HDF5, statismo layout):
  ``/shape/model/{mean (3V,), pcaBasis (3V, K) orthonormal, pcaVariance (K,)}``,
  ``/shape/representer/{cells (3, F) 0-based, points (3, V)}``, ``/expression/model/{mean, pcaBasis,
  pcaVariance}`` (the expression mean is added to the shape mean); millimetres.

Vectors are vertex-major (``x0 y0 z0 x1 ...``). A mode's displacement per unit coefficient is its
column times its standard deviation, so coefficients are ~ N(0, 1) as :func:`stages.core.ict.fit_morphable`
expects. BFM has no texture coordinates: :func:`stages.core.morphable.disk_uv` or ``--uv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.errors import BadInputError

#: Modes kept (the first, largest ones): 468 landmarks constrain far fewer than BFM's 199 + 100, and
#: each kept mode costs V x 3 x 2 bytes in the converted model (BFM: 0.3 MB).
MAX_IDENTITY_MODES = 80
MAX_EXPRESSION_MODES = 64


@dataclass
class SourceModel:
    """A morphable model as read from a source file, in its own units and axes.

    Attributes:
        variant: e.g. ``bfm2009``, ``bfm2017``, ``flame``.
        vertices: ``(V, 3)`` mean; triangles: ``(F, 3)`` 0-based.
        identity: ``(K, V, 3)`` per unit N(0, 1) coefficient; expression: ``(K_e, V, 3)`` or None.
        uv, uv_triangles: ``(T, 2)`` / ``(F, 3)`` texture coordinates when the source has them.
    """

    variant: str
    vertices: np.ndarray
    triangles: np.ndarray
    identity: np.ndarray
    expression: np.ndarray | None = None
    uv: np.ndarray | None = None
    uv_triangles: np.ndarray | None = None


def read_bfm(path: str | Path) -> SourceModel:
    """Read a BFM 2009 ``.mat`` or BFM 2017 ``.h5`` (by content, not suffix).

    Raises:
        BadInputError: one line naming the file and the missing or malformed field.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _read_h5(path)
    if magic[:6] == b"MATLAB":
        return _read_mat(path)
    raise BadInputError(path, "not a BFM file (neither a MATLAB .mat like 01_MorphableModel.mat nor an HDF5 .h5 "
                              "like model2017-1_bfm_nomouth.h5)")


def _modes(path: Path, field: str, basis: np.ndarray, sigma: np.ndarray, n_vertices: int, keep: int) -> np.ndarray:
    """``(K, V, 3)`` displacement per unit coefficient from a ``(3V, K)`` basis and ``(K,)`` std devs."""
    basis = np.asarray(basis, dtype=np.float64)
    if basis.ndim != 2 or 3 * n_vertices not in basis.shape:
        raise BadInputError(path, f"{field}: shape {basis.shape} is not (3V, K) for V = {n_vertices}")
    if basis.shape[0] != 3 * n_vertices:
        basis = basis.T
    sigma = np.asarray(sigma, dtype=np.float64).ravel()[: basis.shape[1]]
    k = min(keep, basis.shape[1], len(sigma))
    if k == 0 or not (np.isfinite(basis[:, :k]).all() and np.isfinite(sigma[:k]).all()):
        raise BadInputError(path, f"{field}: no modes or non-finite values")
    return (basis[:, :k] * sigma[:k]).T.reshape(k, n_vertices, 3)


def _vector3(path: Path, field: str, value) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64).ravel()
    if v.size == 0 or v.size % 3 or not np.isfinite(v).all():
        raise BadInputError(path, f"{field}: expected a finite (3V,) vector, got shape {np.shape(value)}")
    return v.reshape(-1, 3)


def _triangles(path: Path, field: str, value, n_vertices: int, base: int) -> np.ndarray:
    t = np.asarray(value)
    if t.ndim == 2 and t.shape[0] == 3 and t.shape[1] != 3:
        t = t.T
    if t.ndim != 2 or t.shape[1] != 3 or not len(t):
        raise BadInputError(path, f"{field}: expected (F, 3) triangles, got shape {np.shape(value)}")
    t = t.astype(np.int64) - base
    if t.min() < 0 or t.max() >= n_vertices:
        raise BadInputError(path, f"{field}: vertex index out of range for {n_vertices} vertices")
    return t


def _read_mat(path: Path) -> SourceModel:
    import scipy.io

    try:
        d = scipy.io.loadmat(str(path), variable_names=["shapeMU", "shapePC", "shapeEV", "tl"])
    except Exception as exc:  # scipy raises several types for truncated or v7.3 files
        raise BadInputError(path, f"cannot read as a MATLAB v5 .mat ({type(exc).__name__}: {exc})") from None
    for key in ("shapeMU", "shapePC", "shapeEV", "tl"):
        if key not in d:
            raise BadInputError(path, f"{key}: missing (a BFM 2009 01_MorphableModel.mat has shapeMU, shapePC, "
                                      "shapeEV and tl)")
    mean = _vector3(path, "shapeMU", d["shapeMU"])
    identity = _modes(path, "shapePC", d["shapePC"], d["shapeEV"], len(mean), MAX_IDENTITY_MODES)
    return SourceModel("bfm2009", mean, _triangles(path, "tl", d["tl"], len(mean), base=1), identity)


def _read_h5(path: Path) -> SourceModel:
    import h5py

    def get(f, name, required=True):
        if name not in f:
            if required:
                raise BadInputError(path, f"/{name}: missing (a BFM 2017 .h5 has /shape/model/mean, pcaBasis, "
                                          "pcaVariance and /shape/representer/cells)")
            return None
        return f[name]

    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise BadInputError(path, f"cannot read as HDF5 ({type(exc).__name__}: {exc})") from None
    try:
        with f:
            mean = _vector3(path, "/shape/model/mean", get(f, "shape/model/mean")[()])
            basis = get(f, "shape/model/pcaBasis")
            identity = _modes(path, "/shape/model/pcaBasis", basis[:, :MAX_IDENTITY_MODES]
                              if basis.shape[0] == 3 * len(mean) else basis[:MAX_IDENTITY_MODES],
                              np.sqrt(np.maximum(get(f, "shape/model/pcaVariance")[()], 0)), len(mean),
                              MAX_IDENTITY_MODES)
            triangles = _triangles(path, "/shape/representer/cells", get(f, "shape/representer/cells")[()],
                                   len(mean), base=0)
            expression = None
            if get(f, "expression/model/pcaBasis", required=False) is not None:
                ex_mean = _vector3(path, "/expression/model/mean", get(f, "expression/model/mean")[()])
                if ex_mean.shape != mean.shape:
                    raise BadInputError(path, f"/expression/model/mean: {len(ex_mean)} vertices, the shape model "
                                              f"has {len(mean)}")
                mean = mean + ex_mean
                ex_basis = get(f, "expression/model/pcaBasis")
                expression = _modes(path, "/expression/model/pcaBasis", ex_basis[:, :MAX_EXPRESSION_MODES]
                                    if ex_basis.shape[0] == 3 * len(mean) else ex_basis[:MAX_EXPRESSION_MODES],
                                    np.sqrt(np.maximum(get(f, "expression/model/pcaVariance")[()], 0)), len(mean),
                                    MAX_EXPRESSION_MODES)
    except BadInputError:
        raise
    except Exception as exc:  # a damaged dataset inside a readable file
        raise BadInputError(path, f"cannot read the BFM datasets ({type(exc).__name__}: {exc})") from None
    return SourceModel("bfm2017", mean, triangles, identity, expression)
