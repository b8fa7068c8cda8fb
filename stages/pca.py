"""``build-pca``: a per-channel PCA albedo model of UV textures (UVAPM, seed 002 §3.3).

The model (:class:`AlbedoPCA`) lives on the face model's UV layout at a small resolution ``R``
(64..512, default 128): only the ``D`` texels of the layout mask are modelled. As in seed 002, each
colour channel ``c`` has its own mean ``mean[c]`` and its own orthonormal basis ``bases[c]``
(``K`` rows of length ``D``), so a texture is ``x[c] = mean[c] + p[c] @ bases[c]`` with ``(C, K)``
coefficients ``p``. Splitting the channels keeps each PCA ``D``-dimensional instead of ``3D``.

Learning from incomplete data
-----------------------------
The training maps are ``unwrap`` outputs: a texel the photo did not show (self-occlusion, the
eroded silhouette) has zero confidence, and whole half-faces are missing for turned heads. Plain
PCA of zero-filled maps would learn the occlusion pattern, and PCA of mean-filled maps would
shrink the variance of every often-hidden texel towards zero. The missing texels are instead
treated as unknowns and estimated with the model itself (EM-PCA / iterative imputation):

1. **Ingest.** Each unwrap folder is read (:meth:`stages.unwrap.UnwrapResult.load`) and
   area-averaged to ``R`` with the confidence as weight (:func:`downsample_unwrap`); its ``(C, D)``
   colours and ``(D,)`` mean confidence are appended, ``chunk_size`` rows at a time, to float16
   datasets of a scratch HDF5 file. Only one chunk of maps is ever in memory.
2. **Initial fill.** A texel with mean confidence below :data:`MISSING_THRESHOLD` is missing. It
   first takes the value of its mirror partner (column ``j <-> R - 1 - j``; the layout is exactly
   symmetric) when that was seen - faces are nearly symmetric, so this is far better than any
   average - and otherwise the per-texel confidence-weighted mean over all maps.
3. **EM rounds** (probabilistic PCA with missing data, Tipping & Bishop 1999; Ilin & Raiko 2010).
   The model of a round is ``x = mean + bases^T p + noise`` with ``p ~ N(0, diag(variance -
   sigma^2))`` and ``sigma^2`` the mean discarded variance per texel. E-step: every row's
   coefficients get their posterior from its *observed* texels (confidence-weighted noise
   precision): mean ``p = (B W B^T + diag(sigma^2 / (variance - sigma^2)))^-1 B W (x - mean)`` (the
   weighted ridge fit below with a per-component ridge) and covariance ``sigma^2 (...)^-1``; the
   missing texels take ``mean + B^T p``. M-step: the new mean is the mean of the filled rows, and
   the bases are the top-``K`` eigenvectors of the *expected* covariance: the covariance of the
   filled rows plus, for each row, ``B^T Cov(p) B + sigma^2 I`` on its missing block. That posterior
   term is what keeps the imputation honest: hard imputation (fill with the reconstruction and
   redo plain PCA) treats guesses as data and, with half-faces missing, lets a component grow
   without bound on the hidden half. Observed texels are never changed. ``iterations`` rounds
   follow the initial PCA; the posterior of every row is cached (``(N, C, K)`` means, ``(N, C, K,
   K)`` float32 covariances) and the filled matrix is never stored: each pass over the data
   recomputes its chunk's fill.
4. **Streamed randomized eigendecomposition** (Halko, Martinsson & Tropp 2011) of the expected
   ``D x D`` covariance per channel, never formed: a seeded Gaussian test matrix ``Omega``
   (``D x (K + 10)``; from the second round its first ``K`` columns are the previous basis, so the
   subspace iteration continues across rounds), ``Q = orth(S Omega)``, two power iterations
   ``Q = orth(S Q)``, then the eigendecomposition of the small ``Q^T S Q``. Every product ``S V =
   (A^T (A V) + posterior terms) / (N - 1)`` (``A`` the centred filled rows) is accumulated chunk
   by chunk, so memory is ``O(N (K + p) + D (K + p) + N K^2)``, never ``O(N D)``. The variance of a
   component is its eigenvalue (``s^2 / (N - 1)`` for complete data).

Convergence: EM is linear and slow when the noise is small next to the signal and much is
missing (synthetic rank-3 maps with 50 % hidden need ~30 rounds to reach the quantisation level).
On data whose seen/missing pattern is itself left-right structured (whole half-faces missing)
and whose variation is exactly (anti)symmetric, the mirror initial fill can steer EM into a
poor solution that fits every seen half but extrapolates the hidden half wrongly; check
``info["explained_variance_history"]`` and the component sheet.

Everything is deterministic for a given ``seed`` (the test matrices come from
``numpy.random.default_rng(seed)``; the sign of each component is fixed so that its largest entry
is positive). ``info`` records the sources (count and sha256 of the sorted list), the settings, the
missing fraction, the explained variance ratio per channel (of the expected covariance, whose
total includes the imputed entries and their uncertainty), its history over the rounds, and
``sigma^2``.

Fitting a map (:meth:`AlbedoPCA.fit`) is seed 001's Eq. 8 with the visibility mask generalised to
confidence weights, per channel::

    p[c] = argmin_p  || sqrt(w) * (x[c] - mean[c] - bases[c]^T p) ||^2 + lam ||p||^2
         = (B W B^T + lam I)^-1 B W (x[c] - mean[c]),    B = bases[c], W = diag(w)

a ``K x K`` linear system. The data term is a *sum* over texels (not a mean): ``B W B^T`` has a
diagonal of at most 1 (the observed share of each unit-norm component), so ``lam = 1e-2`` is a
mild shrinkage that only matters for components the visible texels barely constrain.

The model file (``albedo_pca.h5``, :meth:`AlbedoPCA.save`) holds float16 ``mean`` and ``bases``
(gzip), float32 ``variance``, the ``mask`` and attributes (``schema``, ``format_version``,
``resolution``, ``model_id``, ``info`` as JSON). Bases are re-orthonormalised on load (the closest
orthonormal rows to the float16 ones).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from stages.core.atomic import atomic_path
from stages.core.errors import BadInputError, FacetexError, MissingArtifactError

__all__ = [
    "FORMAT_VERSION",
    "MISSING_THRESHOLD",
    "AlbedoPCA",
    "build_albedo_pca",
    "component_sheet",
    "downsample_unwrap",
]

SCHEMA = "facetex.albedo_pca"
FORMAT_VERSION = 1
#: Texels whose (area-averaged) confidence is below this are missing in a training map.
MISSING_THRESHOLD = 0.05
#: Extra random directions of the randomized SVD.
OVERSAMPLING = 10
#: Power iterations of the randomized SVD.
POWER_ITERATIONS = 2
#: Resolutions the CLI accepts (the library takes any size the UV layout can be rasterized at).
RESOLUTION_RANGE = (64, 512)
#: Smallest noise variance used in the EM ridge prior (keeps ``sigma^2 / variance`` finite).
_NOISE_FLOOR = 1e-8

ProgressFn = Callable[[str, float], None]


@dataclass
class AlbedoPCA:
    """Per-channel PCA of UV albedo maps on the layout texels at resolution ``R``.

    Attributes:
        resolution: ``R``, the side of the model's UV maps.
        mask: ``(R, R)`` bool, the face model's UV layout at ``R`` (``uv_layout(model, R).mask``).
        mean: ``(C, D)`` float32 in ``[0, 1]``, ``D = mask.sum()``, ``C = 3`` (R, G, B).
        bases: ``(C, K, D)`` float32; each channel's ``K`` rows are orthonormal.
        variance: ``(C, K)`` float32 per-component variance, descending per channel.
        model_id: the face model's name.
        info: provenance (sources, settings, explained variance, build date, version).
    """

    resolution: int
    mask: np.ndarray
    mean: np.ndarray
    bases: np.ndarray
    variance: np.ndarray
    model_id: str
    info: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.bases.shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.mean.shape[0])

    def to_image(self, vectors: np.ndarray) -> np.ndarray:
        """``(C, D)`` layout vectors -> ``(R, R, C)`` float32 image, zeros outside the mask."""
        vectors = np.asarray(vectors, dtype=np.float32)
        out = np.zeros((self.resolution, self.resolution, vectors.shape[0]), dtype=np.float32)
        out[self.mask] = vectors.T
        return out

    def from_image(self, image: np.ndarray) -> np.ndarray:
        """``(R, R, C)`` image -> ``(C, D)`` float32 vectors of the layout texels."""
        image = np.asarray(image)
        if image.shape[:2] != self.mask.shape:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the PCA model is "
                             f"{self.resolution}x{self.resolution} (downsample with downsample_unwrap)")
        return np.ascontiguousarray(image[self.mask].T, dtype=np.float32)

    def reconstruct(self, coeffs: np.ndarray) -> np.ndarray:
        """``(C, K')`` coefficients (``K' <= K``: the leading components) -> ``(R, R, C)`` image."""
        coeffs = np.asarray(coeffs, dtype=np.float32)
        k = coeffs.shape[1]
        if k > self.n_components:
            raise ValueError(f"{k} coefficients per channel, the model has {self.n_components}")
        vectors = self.mean + np.einsum("ck,ckd->cd", coeffs, self.bases[:, :k])
        return self.to_image(vectors)

    def fit(self, image: np.ndarray, weights: np.ndarray, lam: float = 1e-2,
            n_components: int | None = None) -> np.ndarray:
        """Coefficients of the weighted ridge fit of a map (seed 001 Eq. 8 with confidence weights).

        Per channel ``c``: ``argmin_p || sqrt(w) (x[c] - mean[c] - B^T p) ||^2 + lam ||p||^2``,
        i.e. ``p = (B W B^T + lam I)^-1 B W (x[c] - mean[c])`` with ``B = bases[c]``. The data term
        is a sum over the layout texels (see the module docstring for the scale of ``lam``).

        Args:
            image: ``(R, R, C)`` map at the model's resolution (zeros where unknown are fine).
            weights: ``(R, R)`` confidence in ``[0, 1]``; 0 = not seen.
            lam: ridge weight (``>= 0``; with 0 the system must be determined by the seen texels).
            n_components: use only the leading components (default: all ``K``).

        Returns:
            ``(C, K')`` float32 coefficients for :meth:`reconstruct`.
        """
        x = self.from_image(image)
        w = np.clip(np.asarray(weights, dtype=np.float64)[self.mask], 0.0, None)
        k = self.n_components if n_components is None else int(n_components)
        bases = self.bases[:, :k].astype(np.float64)
        residual = (x.astype(np.float64) - self.mean) * w                        # (C, D)
        gram = (bases * w) @ bases.transpose(0, 2, 1) + lam * np.eye(k)        # (C, K, K)
        rhs = np.einsum("ckd,cd->ck", bases, residual)
        return _solve(gram, rhs).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write the model as HDF5 (float16 mean/bases, gzip), atomically."""
        import h5py

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs["schema"] = SCHEMA
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["resolution"] = int(self.resolution)
            h5.attrs["model_id"] = str(self.model_id)
            h5.attrs["info"] = json.dumps(self.info)
            h5.create_dataset("mask", data=self.mask.astype(np.uint8), compression="gzip")
            h5.create_dataset("mean", data=self.mean.astype(np.float16), compression="gzip")
            h5.create_dataset("bases", data=self.bases.astype(np.float16), compression="gzip",
                              chunks=(1, 1, self.bases.shape[2]))
            h5.create_dataset("variance", data=self.variance.astype(np.float32))

    @classmethod
    def load(cls, path: str | Path) -> AlbedoPCA:
        """Read a model :meth:`save` wrote.

        Raises:
            MissingArtifactError: the file is missing, unreadable, or not a facetex albedo PCA.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise MissingArtifactError(path, "no such PCA model file (build one with `facetex build-pca`)")
        try:
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("schema") != SCHEMA:
                    raise MissingArtifactError(path, "not a facetex albedo PCA model (no schema attribute)")
                version = int(h5.attrs["format_version"])
                if version != FORMAT_VERSION:
                    raise MissingArtifactError(path, f"PCA format version {version}, this facetex reads "
                                                     f"{FORMAT_VERSION}")
                resolution = int(h5.attrs["resolution"])
                model_id = str(h5.attrs["model_id"])
                info = json.loads(h5.attrs["info"])
                mask = np.asarray(h5["mask"][()]).astype(bool)
                mean = np.asarray(h5["mean"][()], dtype=np.float32)
                bases = np.asarray(h5["bases"][()], dtype=np.float32)
                variance = np.asarray(h5["variance"][()], dtype=np.float32)
        except MissingArtifactError:
            raise
        except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            raise MissingArtifactError(path, f"unreadable or corrupt PCA model ({type(exc).__name__}: {exc})") from None
        d = int(mask.sum())
        if (mask.shape != (resolution, resolution) or mean.ndim != 2 or mean.shape[1] != d or bases.ndim != 3
                or bases.shape[0] != mean.shape[0] or bases.shape[2] != d or variance.shape != bases.shape[:2]):
            raise MissingArtifactError(path, f"inconsistent PCA model shapes (mask {mask.shape}, mean {mean.shape}, "
                                             f"bases {bases.shape}, variance {variance.shape})")
        if not (np.isfinite(mean).all() and np.isfinite(bases).all() and np.isfinite(variance).all()):
            raise MissingArtifactError(path, "PCA model holds non-finite values")
        mask.setflags(write=False)
        return cls(resolution=resolution, mask=mask, mean=mean, bases=_orthonormalize_rows(bases),
                   variance=variance, model_id=model_id, info=info)


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched ``gram @ x = rhs``; least squares where a system is singular."""
    try:
        return np.linalg.solve(gram, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(g, r, rcond=None)[0] for g, r in zip(gram, rhs, strict=True)])


def _orthonormalize_rows(bases: np.ndarray) -> np.ndarray:
    """The closest matrix with orthonormal rows, per channel (Loewdin: ``(B B^T)^-1/2 B``)."""
    out = np.empty_like(bases)
    for c, b in enumerate(bases.astype(np.float64)):
        u, _, vt = np.linalg.svd(b, full_matrices=False)
        out[c] = u @ vt
    return out


def downsample_unwrap(texture: np.ndarray, confidence: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted area average of an unwrap to ``resolution``.

    Args:
        texture: ``(S, S, 3)`` float in ``[0, 1]``.
        confidence: ``(S, S)`` float in ``[0, 1]`` (0 = not seen).
        resolution: ``R``.

    Returns:
        ``(R, R, 3)`` float32 colour (the confidence-weighted mean of the texels each output texel
        covers; 0 where none was seen) and ``(R, R)`` float32 mean confidence over those texels.
        When ``S`` is a multiple of ``R`` the blocks are exact; otherwise ``cv2.INTER_AREA``
        resizes ``texture * confidence`` and ``confidence`` (bilinear when ``S < R``).
    """
    texture = np.asarray(texture, dtype=np.float32)
    conf = np.clip(np.asarray(confidence, dtype=np.float32), 0.0, 1.0)
    size, r = texture.shape[0], int(resolution)
    weighted = texture * conf[..., None]
    if size == r:
        num, den = weighted, conf
    elif size % r == 0:
        f = size // r
        num = weighted.reshape(r, f, r, f, -1).mean(axis=(1, 3))
        den = conf.reshape(r, f, r, f).mean(axis=(1, 3))
    else:
        interp = cv2.INTER_AREA if size > r else cv2.INTER_LINEAR
        num = cv2.resize(weighted, (r, r), interpolation=interp).reshape(r, r, -1)
        den = np.clip(cv2.resize(conf, (r, r), interpolation=interp), 0.0, 1.0)
    seen = den > 1e-6
    colour = np.where(seen[..., None], num / np.where(seen, den, 1.0)[..., None], 0.0)
    return np.clip(colour, 0.0, 1.0).astype(np.float32), np.where(seen, den, 0.0).astype(np.float32)


def mirror_index(mask: np.ndarray) -> np.ndarray:
    """``(D,)`` index of each layout texel's mirror partner (column ``j <-> R - 1 - j``)."""
    r = mask.shape[0]
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[mask] = np.arange(int(mask.sum()))
    partner = index[:, ::-1][mask]
    if r != mask.shape[1] or (partner < 0).any():
        raise ValueError("the UV layout mask is not left-right symmetric")
    return partner


class _Store:
    """The scratch HDF5 file of the training rows: ``values (N, C, D)`` and ``weights (N, D)`` float16."""

    def __init__(self, path: Path, channels: int, d: int):
        import h5py

        self.path = path
        self.h5 = h5py.File(path, "w")
        self.values = self.h5.create_dataset("values", shape=(0, channels, d), maxshape=(None, channels, d),
                                             dtype=np.float16, chunks=(1, channels, d))
        self.weights = self.h5.create_dataset("weights", shape=(0, d), maxshape=(None, d), dtype=np.float16,
                                              chunks=(1, d))

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def append(self, values: list[np.ndarray], weights: list[np.ndarray]) -> None:
        if not values:
            return
        start = self.n
        stop = start + len(values)
        self.values.resize(stop, axis=0)
        self.weights.resize(stop, axis=0)
        self.values[start:stop] = np.stack(values).astype(np.float16)
        self.weights[start:stop] = np.stack(weights).astype(np.float16)

    def chunks(self, chunk_size: int):
        """Yield ``(start, values float32 (n, C, D), weights float32 (n, D))``."""
        for start in range(0, self.n, chunk_size):
            stop = min(start + chunk_size, self.n)
            yield start, self.values[start:stop].astype(np.float32), self.weights[start:stop].astype(np.float32)

    def close(self) -> None:
        self.h5.close()


@dataclass
class _Model:
    """The PPCA model of one EM round: ``x = mean + bases^T p + noise``, ``p ~ N(0, diag(variance - noise))``."""

    mean: np.ndarray       # (C, D) float64
    bases: np.ndarray      # (C, K, D) float64, orthonormal rows
    variance: np.ndarray   # (C, K) eigenvalues of the expected covariance
    noise: np.ndarray      # (C,) sigma^2, the mean discarded eigenvalue

    @property
    def prior(self) -> np.ndarray:
        """``(C, K)`` ridge weights ``sigma^2 / (variance_k - sigma^2)`` of the posterior mean."""
        signal = np.maximum(self.variance - self.noise[:, None], 1e-6 * self.noise[:, None] + 1e-30)
        return self.noise[:, None] / signal


def _posterior(model: _Model, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean ``(n, C, K)`` and covariance ``(n, C, K, K)`` of the coefficients of rows ``x (n, C, D)``.

    ``w (n, D)`` scales the noise precision per texel (0 = missing): ``G = B W B^T + diag(prior)``,
    mean ``G^-1 B W (x - mean)``, covariance ``sigma^2 G^-1``.
    """
    n, channels, _ = x.shape
    k = model.bases.shape[1]
    coeffs = np.empty((n, channels, k))
    cov = np.empty((n, channels, k, k))
    prior = model.prior[:, :, None] * np.eye(k)
    for i in range(n):
        bw = model.bases * w[i]                                                   # (C, K, D)
        gram = bw @ model.bases.transpose(0, 2, 1) + prior                        # (C, K, K)
        inv = np.linalg.inv(gram)
        coeffs[i] = np.einsum("ckl,cl->ck", inv, np.einsum("ckd,cd->ck", bw, x[i] - model.mean))
        cov[i] = inv * model.noise[:, None, None]
    return coeffs, cov


class _Filler:
    """The E-step: fills missing entries (initially mirror / texel mean; then the posterior mean) and
    applies the posterior covariance of the missing entries to products with the expected covariance."""

    def __init__(self, partner: np.ndarray, texel_mean: np.ndarray, n: int):
        self.partner = partner
        self.texel_mean = texel_mean
        self.model: _Model | None = None
        self.coeffs: np.ndarray | None = None
        self.cov: np.ndarray | None = None
        self.n = n

    def set_model(self, model: _Model) -> None:
        self.model = model
        channels, k = model.variance.shape
        self.coeffs = np.zeros((self.n, channels, k))
        self.cov = np.zeros((self.n, channels, k, k), dtype=np.float32)

    def prepare(self, start: int, x: np.ndarray, w: np.ndarray) -> float:
        """Posterior of these rows under the current model (once per round); returns their trace term."""
        if self.model is None:
            return 0.0
        observed = w >= MISSING_THRESHOLD
        coeffs, cov = _posterior(self.model, x, np.where(observed, w, 0.0))
        self.coeffs[start:start + len(x)] = coeffs
        self.cov[start:start + len(x)] = cov
        # trace of the missing block of B^T Cov B + sigma^2 I, summed over rows, per channel.
        missing = ~observed
        extra = self.model.noise * missing.sum()
        for c in range(x.shape[1]):
            bases = self.model.bases[c]
            quad = np.einsum("nkd,kd->nd", cov[:, c] @ bases, bases)                  # (n, D) diag of B^T Cov B
            extra[c] += float((quad * missing).sum())
        return extra

    def fill(self, start: int, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        observed = w >= MISSING_THRESHOLD                                         # (n, D)
        if self.model is None:
            mirrored = observed[:, self.partner]
            guess = np.where(mirrored[:, None, :], x[:, :, self.partner], self.texel_mean[None])
        else:
            p = self.coeffs[start:start + len(x)]                                  # (n, C, K)
            guess = np.stack([p[:, c] @ self.model.bases[c] for c in range(x.shape[1])], axis=1)
            guess += self.model.mean[None]
        return np.where(observed[:, None, :], x, guess)

    def covariance_product(self, start: int, w: np.ndarray, v: np.ndarray, batch: int = 16) -> np.ndarray:
        """``sum_i M_i (B^T Cov_i B + sigma^2 I) M_i v`` over these rows, ``v (C, D, l)`` -> ``(C, D, l)``.

        Rows go in batches of ``batch`` so each term is two large matrix products
        (``(batch K, D) @ (D, l)`` and back), in float32.
        """
        out = np.zeros_like(v)
        if self.model is None:
            return out
        missing = (w < MISSING_THRESHOLD).astype(np.float32)                      # (n, D)
        k, d = self.model.bases.shape[1:]
        for c in range(v.shape[0]):
            bases = self.model.bases[c].astype(np.float32)
            vc = v[c].astype(np.float32)
            acc = np.zeros(vc.shape, dtype=np.float32)
            for b in range(0, len(w), batch):
                m = missing[b:b + batch]                                              # (m, D)
                bm = (bases[None] * m[:, None, :]).reshape(-1, d)                     # (m K, D)
                t = (bm @ vc).reshape(len(m), k, -1)                                  # (m, K, l)
                t = self.cov[start + b:start + b + len(m), c] @ t
                acc += bm.T @ t.reshape(len(m) * k, -1)
            out[c] = acc + self.model.noise[c] * (missing.sum(axis=0)[:, None] * vc)
        return out


def _orth(a: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(a)
    return q


def _em_round(store: _Store, filler: _Filler, k: int, chunk_size: int, rng: np.random.Generator,
              warm: np.ndarray | None, tick: Callable[[], None]) -> tuple[_Model, np.ndarray]:
    """One EM round (E-step with the filler's model, M-step = PPCA of the expected covariance), streamed.

    The expected covariance ``S = (sum_i (f_i - mean)(f_i - mean)^T + posterior terms) / (N - 1)``
    is never formed: its top ``k`` eigenpairs come from a randomized subspace iteration whose
    products ``S V`` are accumulated chunk by chunk. Returns the model and the trace of ``S`` per channel.
    """
    n = store.n
    channels, d = filler.texel_mean.shape
    width = min(k + OVERSAMPLING, d)
    omega = rng.standard_normal((channels, d, width))
    if warm is not None:
        omega[:, :, :k] = warm.transpose(0, 2, 1)

    # E-step and the mean: posterior of every row, sums of the filled rows, trace terms.
    sums = np.zeros((channels, d))
    sumsq = np.zeros(channels)
    extra_trace = np.zeros(channels)
    for start, x, w in store.chunks(chunk_size):
        extra_trace += filler.prepare(start, x, w)
        xf = filler.fill(start, x, w).astype(np.float64)
        sums += xf.sum(axis=0)
        sumsq += np.einsum("ncd,ncd->c", xf, xf)
        tick()
    mean = sums / n
    denominator = max(n - 1, 1)
    trace = (sumsq - n * np.einsum("cd,cd->c", mean, mean) + extra_trace) / denominator

    def product(v: np.ndarray) -> np.ndarray:
        """``S v`` for ``v (C, D, l)``, one pass over the data."""
        out = np.zeros_like(v)
        for start, x, w in store.chunks(chunk_size):
            xf = filler.fill(start, x, w).astype(np.float64)
            for c in range(channels):
                out[c] += xf[:, c].T @ (xf[:, c] @ v[c])
            out += filler.covariance_product(start, w, v)
            tick()
        out -= n * mean[:, :, None] * np.einsum("cd,cdl->cl", mean, v)[:, None, :]
        return out / denominator

    q = np.stack([_orth(y) for y in product(omega)])
    for _ in range(POWER_ITERATIONS):
        q = np.stack([_orth(y) for y in product(q)])
    sq = product(q)
    bases = np.empty((channels, k, d))
    variance = np.empty((channels, k))
    for c in range(channels):
        small = q[c].T @ sq[c]
        values, vectors = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(values)[::-1][:k]
        u = (q[c] @ vectors[:, order]).T                                          # (k, D)
        signs = np.sign(u[np.arange(k), np.abs(u).argmax(axis=1)])
        bases[c] = u * np.where(signs == 0, 1.0, signs)[:, None]
        variance[c] = np.maximum(values[order], 0.0)
    noise = np.maximum((trace - variance.sum(axis=1)) / max(d - k, 1), _NOISE_FLOOR)
    return _Model(mean=mean, bases=bases, variance=variance, noise=noise), trace


def _passes_per_round(n: int, chunk_size: int) -> int:
    return (3 + POWER_ITERATIONS) * -(-n // chunk_size)


def build_albedo_pca(unwrap_dirs: list[Path], out_path: Path | None, *, model, resolution: int = 128,
                     n_components: int = 40, iterations: int = 15, seed: int = 0, chunk_size: int = 256,
                     work_dir: Path | None = None, progress: ProgressFn | None = None,
                     warn: Callable[[str], None] | None = None) -> AlbedoPCA:
    """Learn an :class:`AlbedoPCA` from unwrap folders with missing texels (EM-PCA, see the module docstring).

    Args:
        unwrap_dirs: folders holding ``unwrap.json`` (+ ``uv_texture.png``, ``uv_position.npy``).
        out_path: where to save the model (``None``: do not save).
        model: the :class:`~stages.core.face_model.FaceModel` of the unwraps.
        resolution: ``R``, the model's UV side.
        n_components: ``K`` per channel (needs at least ``K + 1`` readable maps).
        iterations: EM rounds after the initial (mirror / mean filled) PCA.
        seed: seeds the randomized SVD's test matrices.
        chunk_size: maps per chunk while streaming.
        work_dir: where the scratch HDF5 goes (default: a temporary folder, removed afterwards).
        progress: called as ``progress(message, fraction in [0, 1])``.
        warn: called with a one-line message for every unreadable folder (which is skipped).

    Raises:
        BadInputError: fewer than ``n_components + 1`` readable maps.
    """
    from stages import __version__
    from stages.core.uv import uv_layout
    from stages.unwrap import UnwrapResult

    report = progress or (lambda message, fraction: None)
    resolution, n_components, chunk_size = int(resolution), int(n_components), max(1, int(chunk_size))
    if n_components < 1:
        raise ValueError("n_components must be at least 1")
    mask = np.array(uv_layout(model, resolution).mask, dtype=bool)
    d = int(mask.sum())
    partner = mirror_index(mask)
    channels = 3
    scratch = Path(tempfile.mkdtemp(prefix="facetex_pca_", dir=work_dir))
    store = _Store(scratch / "rows.h5", channels, d)
    skipped: list[str] = []
    sources: list[str] = []
    try:
        # 1. Ingest, one chunk of maps in memory at a time.
        weighted_sum = np.zeros((channels, d))
        weight_sum = np.zeros(d)
        missing = 0
        buffer_x: list[np.ndarray] = []
        buffer_w: list[np.ndarray] = []
        for i, folder in enumerate(unwrap_dirs):
            report(f"reading {Path(folder).name}", 0.3 * i / max(len(unwrap_dirs), 1))
            try:
                unwrap = UnwrapResult.load(folder, model)
                image, weight = downsample_unwrap(unwrap.texture, unwrap.confidence, resolution)
            except FacetexError as exc:
                skipped.append(str(exc))
                if warn is not None:
                    warn(str(exc))
                continue
            x = np.ascontiguousarray(image[mask].T)
            w = weight[mask]
            observed = w >= MISSING_THRESHOLD
            weighted_sum += x * np.where(observed, w, 0.0)
            weight_sum += np.where(observed, w, 0.0)
            missing += int((~observed).sum())
            buffer_x.append(x)
            buffer_w.append(w)
            sources.append(str(folder))
            if len(buffer_x) >= chunk_size:
                store.append(buffer_x, buffer_w)
                buffer_x, buffer_w = [], []
        store.append(buffer_x, buffer_w)
        del buffer_x, buffer_w
        n = store.n
        if n < n_components + 1:
            raise BadInputError(None, f"only {n} readable unwrap map(s); {n_components} components need at least "
                                      f"{n_components + 1}")
        texel_mean = _initial_texel_mean(weighted_sum, weight_sum, partner)

        # 2-4. Initial PCA of the mirror/mean filled data, then EM rounds.
        filler = _Filler(partner, texel_mean, n)
        rng = np.random.default_rng(seed)
        rounds = int(iterations) + 1
        steps = rounds * _passes_per_round(n, chunk_size)
        done = [0]
        history = []

        def tick() -> None:
            done[0] += 1
            report(f"EM round {min(done[0] * rounds // steps, rounds - 1) + 1}/{rounds}",
                   0.3 + 0.7 * done[0] / steps)

        warm = None
        for _ in range(rounds):
            em, total = _em_round(store, filler, n_components, chunk_size, rng, warm, tick)
            filler.set_model(em)
            warm = em.bases
            history.append([float(v) for v in em.variance.sum(axis=1) / np.maximum(total, 1e-30)])
        mean, bases, variance, noise = em.mean, em.bases, em.variance, em.noise
    finally:
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)

    ratio = history[-1]
    digest = hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()
    info = {
        "sources": n,
        "sources_sha256": digest,
        "skipped": skipped,
        "resolution": resolution,
        "n_components": n_components,
        "iterations": int(iterations),
        "seed": int(seed),
        "chunk_size": chunk_size,
        "missing_threshold": MISSING_THRESHOLD,
        "missing_fraction": missing / float(n * d),
        "never_seen_texels": int((weight_sum <= 0).sum()),
        "explained_variance_ratio": ratio,
        "explained_variance_history": history,
        "noise_variance": [float(v) for v in noise],
        "randomized_svd": {"oversampling": OVERSAMPLING, "power_iterations": POWER_ITERATIONS},
        "build_date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "facetex_version": __version__,
    }
    mask.setflags(write=False)
    pca = AlbedoPCA(resolution=resolution, mask=mask, mean=np.clip(mean, 0.0, 1.0).astype(np.float32),
                    bases=bases.astype(np.float32), variance=variance.astype(np.float32), model_id=model.name,
                    info=info)
    if out_path is not None:
        report("saving", 1.0)
        pca.save(out_path)
    return pca


def _initial_texel_mean(weighted_sum: np.ndarray, weight_sum: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per-texel weighted mean; never-seen texels take their partner's, else the channel's mean."""
    seen = weight_sum > 0
    mean = np.where(seen, weighted_sum / np.where(seen, weight_sum, 1.0), 0.0)
    use_partner = ~seen & seen[partner]
    mean[:, use_partner] = mean[:, partner[use_partner]]
    still = ~(seen | use_partner)
    if still.any():
        overall = weighted_sum.sum(axis=1) / max(weight_sum.sum(), 1e-30)
        mean[:, still] = overall[:, None]
    return mean


def component_sheet(pca: AlbedoPCA, n: int = 5, tile: int | None = None) -> np.ndarray:
    """A labelled overview image of the model, ``(H, W, 3)`` float32 in ``[0, 1]``.

    Top row: the mean, then components ``1..n`` at ``mean + 2 sigma`` (each channel moved along its
    own component ``k``); bottom row: the per-texel standard deviation of the model (scaled to
    its maximum), then the same components at ``mean - 2 sigma``.
    """
    n = max(0, min(int(n), pca.n_components))
    tile = int(tile or max(pca.resolution, 128))
    band = 18

    def cell(image: np.ndarray, label: str) -> np.ndarray:
        img = cv2.resize(np.clip(image, 0, 1).astype(np.float32), (tile, tile), interpolation=cv2.INTER_NEAREST)
        label_band = np.full((band, tile, 3), 255, dtype=np.uint8)      # OpenCV draws text on 8-bit images
        cv2.putText(label_band, label, (3, band - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        return np.concatenate([label_band.astype(np.float32) / 255.0, img], axis=0)

    sigma = np.sqrt(np.maximum(pca.variance, 0.0))                               # (C, K)
    std = np.sqrt(np.einsum("ck,ckd->cd", pca.variance, pca.bases ** 2))
    scale = 1.0 / max(float(std.max()), 1e-12)
    top = [cell(pca.to_image(pca.mean), "mean")]
    bottom = [cell(pca.to_image(std * scale), f"std x{scale:.1f}")]
    for k in range(n):
        delta = 2.0 * sigma[:, k:k + 1] * pca.bases[:, k]
        top.append(cell(pca.to_image(pca.mean + delta), f"PC{k + 1} +2s"))
        bottom.append(cell(pca.to_image(pca.mean - delta), f"PC{k + 1} -2s"))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)
