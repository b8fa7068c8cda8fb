"""A PCA shape model of the fitted face meshes: the geometry ``facetex generate`` couples to its textures.

Seed 003 draws the geometry of a generated face from the 3DMM parameters its DFR network regresses
from the background latent (§3.2, Fig. 2). No DFR or 3DMM can be had here; instead every fit already
holds a dense per-image shape (``fit.json``'s ``vertices``: the face model's vertices placed on the
dense MediaPipe landmarks and brought to model space by the fitted similarity,
:func:`stages.fit.fit_dense_shape`), so the fits of a photo set span a shape space. This module fits
a PCA to those shapes (identity and expression together: the London set has a neutral and a
smiling photo per person) and samples from it.

File (``.npz``, ``schema = "facetex.shape_pca"``): ``mean (V, 3)``, ``components (K, V*3)``
orthonormal rows, ``stddev (K,)``, ``model_id``, ``sources`` (the fit.json paths).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.core.errors import MissingArtifactError
from stages.core.face_model import FaceModel

SCHEMA = "facetex.shape_pca"


@dataclass
class ShapeModel:
    """PCA of per-image shapes.

    Attributes:
        mean: ``(V, 3)`` float64 mean shape (model space).
        components: ``(K, V*3)`` orthonormal principal directions.
        stddev: ``(K,)`` standard deviation along each.
        model_id: the face model the shapes belong to.
        sources: the fits it was built from.
    """

    mean: np.ndarray
    components: np.ndarray
    stddev: np.ndarray
    model_id: str
    sources: list[str] = field(default_factory=list)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def shape(self, coefficients: np.ndarray) -> np.ndarray:
        """``(V, 3)`` vertices for whitened coefficients ``(K,)`` (units of ``stddev``)."""
        c = np.asarray(coefficients, dtype=np.float64)
        return self.mean + ((c * self.stddev) @ self.components).reshape(self.mean.shape)

    def sample(self, rng: np.random.Generator, truncation: float = 1.0) -> np.ndarray:
        """``(V, 3)`` vertices with whitened coefficients ``truncation * N(0, I)``."""
        return self.shape(truncation * rng.standard_normal(self.n_components))

    def save(self, path: str | Path) -> None:
        from stages.core.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, schema=SCHEMA, mean=self.mean, components=self.components, stddev=self.stddev,
                     model_id=self.model_id, sources=json.dumps(self.sources))

    @classmethod
    def load(cls, path: str | Path, model: FaceModel | None = None) -> ShapeModel:
        """Read a shape model file; with ``model``, check it belongs to that face model.

        Raises:
            MissingArtifactError: missing, unreadable, not a shape model, inconsistent arrays, other model.
        """
        path = Path(path)
        if not path.is_file():
            raise MissingArtifactError(path, "shape model not found (build one with `facetex build-pca --shape`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["schema"]) != SCHEMA:
                    raise ValueError(f"schema is not {SCHEMA!r}")
                out = cls(mean=data["mean"].astype(np.float64), components=data["components"].astype(np.float64),
                          stddev=data["stddev"].astype(np.float64), model_id=str(data["model_id"]),
                          sources=json.loads(str(data["sources"])))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MissingArtifactError(path, f"not a readable shape model ({reason})") from None
        v3 = out.mean.size
        if out.mean.ndim != 2 or out.components.ndim != 2 or out.components.shape[1] != v3 or \
                out.stddev.shape != (out.components.shape[0],) or not np.isfinite(out.components).all():
            raise MissingArtifactError(path, "inconsistent arrays (mean, components, stddev)")
        if model is not None and (out.model_id != model.name or out.mean.shape != (model.n_vertices, 3)):
            raise MissingArtifactError(path, f"built for face model {out.model_id!r}, not {model.name!r}")
        return out


def build_shape_model(folders: list[Path], model: FaceModel, n_components: int = 20,
                      warn=None) -> ShapeModel:
    """PCA of the ``fit.json`` shapes in ``folders`` (each a folder holding ``fit.json``).

    Unreadable fits or fits of another face model are skipped with ``warn(message)`` (recorded: not in
    ``sources``). ``K = min(n_components, number of shapes - 1)``.

    Raises:
        MissingArtifactError: fewer than 2 usable fits.
    """
    from stages.fit import FitResult

    shapes, sources = [], []
    for folder in folders:
        path = Path(folder) / "fit.json"
        try:
            fit = FitResult.load(path)
            if fit.model_id != model.name or fit.vertices.shape != (model.n_vertices, 3):
                raise MissingArtifactError(path, f"fit of face model {fit.model_id!r}, not {model.name!r}")
        except MissingArtifactError as exc:
            if warn is not None:
                warn(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - FitResult.load raises FacetexError subclasses too
            if warn is not None:
                warn(f"{path}: {exc}")
            continue
        shapes.append(np.asarray(fit.vertices, dtype=np.float64).ravel())
        sources.append(str(path))
    if len(shapes) < 2:
        raise MissingArtifactError(None, f"a shape model needs at least 2 fits, got {len(shapes)}")
    data = np.stack(shapes)
    mean = data.mean(axis=0)
    _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
    k = max(1, min(int(n_components), len(shapes) - 1))
    stddev = singular[:k] / np.sqrt(len(shapes) - 1)
    return ShapeModel(mean=mean.reshape(-1, 3), components=vt[:k], stddev=stddev, model_id=model.name,
                      sources=sources)
