"""Metrics of the ``evaluate`` stage.

Conventions shared by every function here (each docstring states its own protocol exactly):

- Images are numpy arrays ``(H, W, C)`` (or ``(H, W)``, treated as one channel), float in
  ``[0, 1]`` unless a docstring says otherwise; all arithmetic is done in float64.
- Masks are ``(H, W)`` bool; ``mask=None`` means every pixel. A metric over an empty mask is ``nan``.
- "Mean over masked pixels and channels" means the plain mean of the ``N_masked * C`` values.

Pixel metrics (:func:`l1`, :func:`psnr`, :func:`ssim_map`, :func:`ssim`, :func:`masked_variant_ssim_psnr`),
texture metrics (:func:`seam_score`, :func:`symmetry_score`), embedding metrics
(:func:`cosine_similarity`, :func:`frechet_distance`, :func:`frechet_distance_from_features`) are pure
numpy/scipy. The learned metrics (CLIP-I, DINO-I, FID features, LPIPS, face identity) run networks the
user supplies as TorchScript files (or the optional dlib package); facetex contains no architecture code
and never downloads anything. When a network is not available the loaders raise
:class:`MetricUnavailable`, whose message the evaluate stage reports as ``skipped: <reason>``. Where to get
each network and how to export it: ``data_manifests/evaluation_models.md``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from stages.core.checksums import file_sha256, model_sha256  # noqa: F401  (re-exported)
import scipy.linalg
import scipy.ndimage

# --------------------------------------------------------------------------------------------
# helpers


def _as_hwc(img) -> np.ndarray:
    """float64 ``(H, W, C)`` view of an ``(H, W)`` or ``(H, W, C)`` array."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    return arr


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_hwc(a), _as_hwc(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    """``(H, W)`` bool mask (all True for None)."""
    if mask is None:
        return np.ones(shape[:2], dtype=bool)
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask shape {m.shape} does not match image shape {shape[:2]}")
    return m.astype(bool)


# --------------------------------------------------------------------------------------------
# pixel metrics


def l1(a, b, mask=None) -> float:
    """Mean absolute error ``mean |a - b|`` over the masked pixels and all channels.

    Protocol: ``a``, ``b`` ``(H, W, C)`` (or ``(H, W)``) in the same units (facetex: float in
    ``[0, 1]``); ``mask`` ``(H, W)`` bool or None (= all pixels). The mean is over the
    ``N_masked * C`` absolute differences. ``nan`` when the mask is empty.
    """
    a, b = _pair(a, b)
    m = _mask(mask, a.shape)
    if not m.any():
        return float("nan")
    return float(np.abs(a[m] - b[m]).mean())


def _mse(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    return float(((a[m] - b[m]) ** 2).mean())


def psnr(a, b, mask=None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB.

    Protocol: ``R = data_range`` (1.0 for float images in ``[0, 1]``); MSE is the mean squared
    difference over the masked pixels and all channels (``N_masked * C`` values; ``mask=None`` = all
    pixels). ``inf`` when MSE == 0; ``nan`` when the mask is empty.
    """
    a, b = _pair(a, b)
    m = _mask(mask, a.shape)
    if not m.any():
        return float("nan")
    mse = _mse(a, b, m)
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


#: SSIM constants (Wang, Bovik, Sheikh, Simoncelli 2004).
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11 x 11 window
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _gauss(x: np.ndarray) -> np.ndarray:
    # truncate * sigma = 3.5 * 1.5 -> radius int(5.25 + 0.5) = 5, i.e. an 11-tap normalised Gaussian,
    # the same window as skimage's gaussian_weights=True.
    return scipy.ndimage.gaussian_filter(x, sigma=SSIM_SIGMA, truncate=3.5, mode="reflect")


def ssim_map(a, b, data_range: float = 1.0) -> np.ndarray:
    """Per-pixel SSIM map ``(H, W)`` (Wang et al. 2004, Gaussian window).

    Protocol: window = normalised 11x11 Gaussian, sigma 1.5 (separable, truncated at radius 5);
    local statistics are Gaussian-weighted means with population (not sample) covariance;
    ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2`` with ``R = data_range``;
    ``SSIM = (2 mu_a mu_b + C1)(2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))``
    computed per channel and then averaged over channels (equal weights). Output has the input's
    size ('same'): the filter pads by reflection (scipy ``mode='reflect'``: ``d c b a | a b c d``).
    This equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R, channel_axis=2, full=True)[1].mean(axis=2)``.
    """
    a, b = _pair(a, b)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    out = np.zeros(a.shape[:2], dtype=np.float64)
    for c in range(a.shape[2]):
        x, y = a[:, :, c], b[:, :, c]
        mx, my = _gauss(x), _gauss(y)
        vx = _gauss(x * x) - mx * mx
        vy = _gauss(y * y) - my * my
        cxy = _gauss(x * y) - mx * my
        num = (2 * mx * my + c1) * (2 * cxy + c2)
        den = (mx * mx + my * my + c1) * (vx + vy + c2)
        out += num / den
    return out / a.shape[2]


def ssim(a, b, mask=None, data_range: float = 1.0) -> float:
    """Mean of :func:`ssim_map` over the masked pixels (``mask=None`` = every pixel).

    Protocol: as :func:`ssim_map` (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, per channel
    then channel mean, reflect padding), then the plain mean of the map over the mask. Note the
    windows of pixels near the mask border still see pixels outside it (the map is computed on the
    full images); the mask only selects which map values are averaged. With ``mask=None`` the border
    pixels are included, unlike skimage's mean, which crops 5 pixels on each side. ``nan`` when the
    mask is empty.
    """
    smap = ssim_map(a, b, data_range=data_range)
    m = _mask(mask, smap.shape)
    if not m.any():
        return float("nan")
    return float(smap[m].mean())


def masked_variant_ssim_psnr(render, photo, mask, data_range: float = 1.0) -> dict:
    """PSNR and SSIM under the "masked variant" protocol of seed 003's comparison: the whole image
    with everything outside the face zeroed.

    Protocol: every pixel outside ``mask`` is set to 0 in both ``render`` and ``photo``; PSNR
    (``10 log10(R^2 / MSE)``, MSE over **all** pixels and channels) and SSIM (mean of :func:`ssim_map`
    over all pixels) are computed over the whole image, with the same fixed ``R = data_range`` as
    :func:`psnr` (1.0 for float images in ``[0, 1]``, what ``skimage`` infers for non-negative floats).

    The only difference from :func:`psnr` with a mask is the shared zero background: it counts as
    perfectly reconstructed pixels, so ``MSE_whole = f * MSE_mask`` with ``f`` the masked fraction of
    the image, and ``PSNR_variant = PSNR_masked - 10 log10(f) >= PSNR_masked`` always (equal when the
    mask covers everything). SSIM is pushed towards 1 the same way. (An earlier version took ``R``
    from the masked render, ``max - min``; for a face darker than ``sqrt(f)`` that lowered the score
    below the plain one, so it measured the render's brightness, not the background's inflation.)
    Report these only for comparison with that protocol, labelled as inflated. Returns ``{"psnr",
    "ssim", "data_range", "mask_fraction", "protocol"}``; PSNR is ``inf`` when the masked images are
    equal; both are ``nan`` when the mask is empty.
    """
    r, p = _pair(render, photo)
    m = _mask(mask, r.shape)
    fraction = float(m.mean())
    if not m.any():
        psnr_v, ssim_v = float("nan"), float("nan")
    else:
        r = np.where(m[:, :, None], r, 0.0)
        p = np.where(m[:, :, None], p, 0.0)
        mse = float(((r - p) ** 2).mean())
        psnr_v = float("inf") if mse == 0.0 else float(10.0 * np.log10(data_range**2 / mse))
        ssim_v = 1.0 if mse == 0.0 else float(ssim_map(r, p, data_range=data_range).mean())
    return {
        "psnr": psnr_v,
        "ssim": ssim_v,
        "data_range": float(data_range),
        "mask_fraction": fraction,
        "protocol": "masked-variant: outside mask zeroed in both, fixed data range, whole image (inflated)",
    }


# --------------------------------------------------------------------------------------------
# texture metrics


def seam_score(completed, reference, kept, filled) -> float:
    """Excess gradient energy across the kept/filled boundary of a completed texture.

    Protocol: over every 4-neighbour pair ``(p, q)`` of texels (horizontal and vertical neighbours,
    each unordered pair once) with ``p`` in ``kept`` (visible texels) and ``q`` in ``filled`` (texels
    the completion produced), take ``|c_q - c_p|`` = the L2 norm over channels of the colour
    difference. The score is the mean of that over the pairs in ``completed`` minus the same mean
    in ``reference`` (same pairs). Positive = the completion has a seam the reference does not have;
    0 = no extra seam. ``nan`` when there is no boundary pair. ``kept`` and ``filled`` are ``(H, W)``
    bool; images ``(H, W, C)`` or ``(H, W)`` in the same units.
    """
    c, r = _pair(completed, reference)
    k = _mask(kept, c.shape)
    f = _mask(filled, c.shape)
    diffs_c: list[np.ndarray] = []
    diffs_r: list[np.ndarray] = []
    # horizontal pairs (i, j)-(i, j+1) and vertical pairs (i, j)-(i+1, j)
    for s0, s1 in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        pair = (k[s0] & f[s1]) | (f[s0] & k[s1])
        if not pair.any():
            continue
        diffs_c.append(np.linalg.norm(c[s1][pair] - c[s0][pair], axis=-1))
        diffs_r.append(np.linalg.norm(r[s1][pair] - r[s0][pair], axis=-1))
    if not diffs_c:
        return float("nan")
    return float(np.concatenate(diffs_c).mean() - np.concatenate(diffs_r).mean())


def symmetry_score(texture, mask=None, mirror=None) -> float:
    """Mean absolute left-right asymmetry of a UV texture.

    Protocol: the built-in UV layout is symmetric under ``u -> 1 - u``, so texel column ``j`` of an
    ``S``-wide map mirrors to column ``S - 1 - j`` (same row). The score is the mean of
    ``|t[i, j, c] - t[i, S-1-j, c]|`` over channels ``c`` and over the texels where both ``mask[i, j]``
    and ``mask[i, S-1-j]`` are true (each mirror pair therefore counts twice, and the middle column
    of an odd-width map compares with itself). 0 = perfectly symmetric; ``nan`` when no texel
    qualifies. ``mask=None`` = all texels. ``mirror``: a layout that is not symmetric under
    ``u -> 1 - u`` (the ICT head) passes its :meth:`stages.core.uv.UVLayout.mirror` (partner texels
    found in 3D; a texel without a partner does not count).
    """
    t = _as_hwc(texture)
    m = _mask(mask, t.shape)
    flip = mirror or (lambda image: image[:, ::-1])
    both = m & flip(m)
    if not both.any():
        return float("nan")
    return float(np.abs(t - flip(t))[both].mean())


# --------------------------------------------------------------------------------------------
# embeddings


def cosine_similarity(a, b, eps: float = 1e-12):
    """Cosine similarity along the last axis: ``sum(a * b) / (|a| |b|)``.

    ``a`` and ``b`` are vectors ``(D,)`` (-> float) or batches ``(N, D)`` (-> ``(N,)``, row by row);
    shapes broadcast, so ``(N, D)`` against ``(D,)`` compares every row with one vector. The norm
    product is clamped below at ``eps``, so a zero vector gives 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=-1)
    den = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), eps)
    out = num / den
    return float(out) if np.ndim(out) == 0 else out


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (the FID formula).

    ``d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, with the matrix square root
    from ``scipy.linalg.sqrtm``. As in the reference implementations (TTUR / pytorch-fid): when the
    product is singular and the square root is not finite, ``eps * I`` is added to both covariances
    and the root recomputed; tiny imaginary parts from numerical error are discarded (real part kept).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"inconsistent shapes: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below, as in pytorch-fid's disp=False
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_features(f1, f2, eps: float = 1e-6) -> float:
    """:func:`frechet_distance` between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``.

    Mean = row mean; covariance = ``np.cov(rowvar=False)`` (unbiased, ``N - 1``), as in pytorch-fid and
    clean-fid. Needs at least 2 rows in each set. FID proper uses 2048-D Inception pool features
    (:func:`feature_extractor_from_env` ``("inception")``) and many images; with few images the value
    is strongly biased upwards and only comparable at equal sample sizes.
    """
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features, got {f1.shape} and {f2.shape}")
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("need at least 2 feature vectors per set")
    return frechet_distance(
        f1.mean(axis=0), np.cov(f1, rowvar=False), f2.mean(axis=0), np.cov(f2, rowvar=False), eps=eps
    )


# --------------------------------------------------------------------------------------------
# user-supplied networks


class MetricUnavailable(Exception):
    """A metric cannot run here; ``str(exc)`` is a one-line reason (reported as ``skipped: <reason>``)."""

    def __init__(self, reason: str):
        reason = " ".join(str(reason).split())  # one line
        super().__init__(reason)
        self.reason = reason


def _load_torchscript(path):
    import torch

    p = Path(path)
    if not p.is_file():
        raise MetricUnavailable(f"model file not found: {p}")
    try:
        model = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # any loading failure means "not usable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MetricUnavailable(f"{p} is not a loadable TorchScript file ({type(exc).__name__}: {first})") from exc
    model.eval()
    return model


def _triple(v, name: str) -> tuple[float, float, float]:
    if np.ndim(v) == 0:
        return (float(v),) * 3
    t = tuple(float(x) for x in v)
    if len(t) == 1:
        return t * 3
    if len(t) != 3:
        raise ValueError(f"{name} must be a number or 3 numbers, got {v!r}")
    return t  # type: ignore[return-value]


def _images_to_tensor(images):
    """``(B, H, W, 3)`` (or one ``(H, W, 3)``) float in [0, 1] or uint8 -> float32 torch ``(B, 3, H, W)``."""
    import torch

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected images (B, H, W, 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32, copy=False)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif arr.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def _first_tensor(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


class _UserModelFile:
    """A network loaded from a user-supplied file: remembers the path, hashes it once."""

    path: Path
    _sha256: str | None = None

    @property
    def sha256(self) -> str:
        """sha256 of the model file (computed once)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256


class FeatureExtractor(_UserModelFile):
    """An image encoder from a user-supplied TorchScript file (CLIP / DINO image tower, Inception, ...).

    ``FeatureExtractor(path, size=224, mean=..., std=...)`` loads ``torch.jit.load(path,
    map_location='cpu')``. If a sidecar ``<path>.json`` (e.g. ``clip_b32.pt.json``) exists, its keys
    ``"size"``, ``"mean"``, ``"std"`` override the constructor's values (they describe the file).
    Loading failures (missing file, not TorchScript, bad sidecar) raise :class:`MetricUnavailable`
    naming the file.

    :meth:`embed` protocol: images ``(B, H, W, 3)`` float RGB in ``[0, 1]`` (uint8 is divided by 255;
    one ``(H, W, 3)`` image is a batch of 1) -> torch ``(B, 3, H, W)`` -> resized to
    ``size x size`` with ``torch.nn.functional.interpolate(mode='bilinear', antialias=True,
    align_corners=False)`` (aspect ratio not preserved, no crop) -> ``(x - mean) / std`` per channel ->
    ``model(x)`` in eval mode without gradients (a tuple/list output uses its first element) ->
    flattened to ``(B, D)`` float64.
    """

    def __init__(
        self,
        path,
        *,
        size: int = 224,
        mean: Sequence[float] | float = (0.485, 0.456, 0.406),
        std: Sequence[float] | float = (0.229, 0.224, 0.225),
        batch_size: int = 32,
    ):
        self.path = Path(path)
        sidecar = Path(str(self.path) + ".json")
        if sidecar.is_file():
            try:
                cfg = json.loads(sidecar.read_text())
                size = int(cfg.get("size", size))
                mean = cfg.get("mean", mean)
                std = cfg.get("std", std)
            except (ValueError, TypeError, AttributeError, OSError) as exc:
                raise MetricUnavailable(f"bad sidecar {sidecar}: {exc}") from exc
        try:
            self.mean = _triple(mean, "mean")
            self.std = _triple(std, "std")
        except (ValueError, TypeError) as exc:
            raise MetricUnavailable(f"bad mean/std for {self.path}: {exc}") from exc
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.model = _load_torchscript(self.path)
        self._sha256: str | None = None

    def describe(self) -> dict:
        """What to record in ``metrics.json``: path, sha256 and the input convention."""
        return {"path": str(self.path), "sha256": self.sha256, "size": self.size,
                "mean": list(self.mean), "std": list(self.std)}

    def forward_tensor(self, x):
        """Differentiable embedding (used by training losses): ``(B, 3, H, W)`` float in ``[0, 1]`` on any
        device -> ``(B, D)``, with the resize and normalisation of :meth:`embed`. Gradients flow to ``x``."""
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return _first_tensor(self.model((x - mean) / std)).reshape(x.shape[0], -1)

    def embed(self, images) -> np.ndarray:
        """Embeddings ``(B, D)`` float64 of images ``(B, H, W, 3)`` in ``[0, 1]`` (see the class docstring)."""
        import torch

        x_all = _images_to_tensor(images)
        outs = []
        with torch.no_grad():
            for i in range(0, x_all.shape[0], self.batch_size):
                out = self.forward_tensor(x_all[i : i + self.batch_size])
                outs.append(out.detach().to(torch.float64).cpu().numpy())
        return np.concatenate(outs, axis=0)


#: Per-kind env var, CLI flag and input convention (a sidecar ``<file>.json`` overrides these).
FEATURE_KINDS: dict[str, dict] = {
    "clip": {"env": "FACETEX_CLIP_MODEL", "flag": "--clip-model", "size": 224,
             # OpenAI CLIP's own normalisation (clip/clip.py _transform)
             "mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)},
    "dino": {"env": "FACETEX_DINO_MODEL", "flag": "--dino-model", "size": 224,
             "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "inception": {"env": "FACETEX_INCEPTION_MODEL", "flag": "--inception-model", "size": 299,
                  "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}

LPIPS_ENV = "FACETEX_LPIPS_MODEL"
_MANIFEST = "data_manifests/evaluation_models.md"


def _resolve(path, env: str, what: str, flag: str) -> Path:
    if path:
        return Path(path)
    value = os.environ.get(env, "").strip()
    if value:
        return Path(value)
    raise MetricUnavailable(
        f"{what} weights not provided: set {env} or {flag} to a TorchScript file (see {_MANIFEST})"
    )


def feature_extractor_from_env(kind: str, path=None) -> FeatureExtractor:
    """The :class:`FeatureExtractor` for ``kind`` in ``("clip", "dino", "inception")``.

    The file is ``path`` when given, else the env var ``FACETEX_CLIP_MODEL`` / ``FACETEX_DINO_MODEL`` /
    ``FACETEX_INCEPTION_MODEL``; neither -> :class:`MetricUnavailable` ("<KIND> weights not provided:
    ..."). Input conventions (overridable by the sidecar JSON): clip 224 px with CLIP's mean/std,
    dino 224 px with ImageNet mean/std, inception 299 px with mean 0.5 / std 0.5 (input in ``[-1, 1]``).
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {sorted(FEATURE_KINDS)}")
    spec = FEATURE_KINDS[kind]
    p = _resolve(path, spec["env"], kind.upper(), spec["flag"])
    return FeatureExtractor(p, size=spec["size"], mean=spec["mean"], std=spec["std"])


class LPIPSModel(_UserModelFile):
    """LPIPS from a user-supplied TorchScript file.

    The module must take two float tensors ``(B, 3, H, W)`` in ``[-1, 1]`` and return distances of
    shape ``(B,)`` or ``(B, 1, 1, 1)`` (what ``lpips.LPIPS(net='alex', version='0.1')`` returns,
    spatially averaged). :meth:`distance` protocol: images ``(B, H, W, 3)`` float in ``[0, 1]`` (uint8 is
    divided by 255) -> ``2 x - 1`` -> model, no resizing (both batches must have the same shape), no
    gradients -> ``(B,)`` float64. Mask the images beforehand (e.g. the same background in both) if
    only a region should count.
    """

    def __init__(self, path, *, batch_size: int = 16):
        self.path = Path(path)
        self.batch_size = int(batch_size)
        self.model = _load_torchscript(self.path)
        self._sha256: str | None = None

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "input": "[-1, 1], no resize"}

    def distance(self, a_images, b_images) -> np.ndarray:
        import torch

        a = _images_to_tensor(a_images)
        b = _images_to_tensor(b_images)
        if a.shape != b.shape:
            raise ValueError(f"LPIPS image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        outs = []
        with torch.no_grad():
            for i in range(0, a.shape[0], self.batch_size):
                xa = a[i : i + self.batch_size] * 2.0 - 1.0
                xb = b[i : i + self.batch_size] * 2.0 - 1.0
                d = _first_tensor(self.model(xa, xb)).detach().to(torch.float64).reshape(xa.shape[0], -1)
                outs.append(d.mean(dim=1).cpu().numpy())
        return np.concatenate(outs, axis=0)


def lpips_model_from_env(path=None) -> LPIPSModel:
    """:class:`LPIPSModel` from ``path``, else ``$FACETEX_LPIPS_MODEL``; neither -> :class:`MetricUnavailable`."""
    return LPIPSModel(_resolve(path, LPIPS_ENV, "LPIPS", "--lpips-model"))


IDENTITY_UNAVAILABLE = (
    "identity model not installed: pip install dlib face-recognition-models (builds dlib from source, ~7 min)"
)
_DLIB_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
_DLIB_SHAPE5 = "shape_predictor_5_face_landmarks.dat"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _face_recognition_models_dir() -> Path:
    """``models/`` folder of the installed ``face_recognition_models`` package, located without importing it.

    (Importing it needs ``pkg_resources``, which recent setuptools no longer ships.)
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise MetricUnavailable(IDENTITY_UNAVAILABLE)
    if spec.submodule_search_locations:
        pkg = Path(list(spec.submodule_search_locations)[0])
    else:
        pkg = Path(spec.origin).parent
    return pkg / "models"


class IdentityModel:
    """Face identity similarity with dlib's ResNet face descriptor (128-D, from ``face-recognition-models``).

    :meth:`load` needs the optional packages ``dlib`` and ``face-recognition-models``; without them it
    raises :class:`MetricUnavailable` (:data:`IDENTITY_UNAVAILABLE`). Protocol of :meth:`embed`: RGB uint8
    ``(H, W, 3)`` (float in [0, 1] is scaled by 255) -> dlib frontal face detector (HOG, 1 upsample) ->
    the largest detection -> 5-point shape predictor -> ``compute_face_descriptor`` (aligned 150 px
    chip, no jitter) -> ``(128,)`` float64, or None when no face is found. :meth:`similarity` is the
    cosine of the two descriptors (dlib's own verification rule uses Euclidean distance < 0.6 instead).
    """

    def __init__(self, detector, shape_predictor, encoder, models_dir: Path | None = None):
        self.detector = detector
        self.shape_predictor = shape_predictor
        self.encoder = encoder
        self.models_dir = models_dir

    @classmethod
    def load(cls) -> IdentityModel:
        if not (_has_module("dlib") and _has_module("face_recognition_models")):
            raise MetricUnavailable(IDENTITY_UNAVAILABLE)
        folder = _face_recognition_models_dir()
        rec, shp = folder / _DLIB_RECOGNITION, folder / _DLIB_SHAPE5
        for f in (rec, shp):
            if not f.is_file():
                raise MetricUnavailable(f"identity model file missing: {f} (reinstall face-recognition-models)")
        try:
            import dlib

            return cls(dlib.get_frontal_face_detector(), dlib.shape_predictor(str(shp)),
                       dlib.face_recognition_model_v1(str(rec)), folder)
        except Exception as exc:  # a broken dlib install means "unavailable"
            raise MetricUnavailable(f"identity model failed to load: {type(exc).__name__}: {exc}") from exc

    def describe(self) -> dict:
        if self.models_dir is None:
            return {"model": "dlib resnet v1"}
        rec = self.models_dir / _DLIB_RECOGNITION
        return {"model": "dlib resnet v1", "path": str(rec), "sha256": file_sha256(rec)}

    def embed(self, rgb) -> np.ndarray | None:
        img = np.asarray(rgb)
        if img.dtype != np.uint8:
            img = np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.ascontiguousarray(img[:, :, :3])
        dets = self.detector(img, 1)
        if len(dets) == 0:
            return None
        det = max(dets, key=lambda d: d.width() * d.height())
        shape = self.shape_predictor(img, det)
        return np.asarray(self.encoder.compute_face_descriptor(img, shape), dtype=np.float64)

    def similarity(self, photo_rgb, render_rgb) -> float | None:
        """Cosine similarity of the identity descriptors; None when either image has no detected face."""
        e1 = self.embed(photo_rgb)
        if e1 is None:
            return None
        e2 = self.embed(render_rgb)
        if e2 is None:
            return None
        return float(cosine_similarity(e1, e2))
