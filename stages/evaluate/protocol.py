"""The hidden-texel completion benchmark: a ground-truth-free yardstick for completion methods.

Reprojection error cannot rank completion methods: every method keeps the visible texels, and
only those reproject. This protocol makes ground truth out of near-frontal photos instead:

1. take a near-frontal photo (|yaw|, |pitch| <= 15 degrees) and its unwrap;
2. simulate another head pose (yaw +-30, +-50, pitch +30) of the same per-image shape and compute
   which texels that pose would see (same z-buffer, confidence and silhouette erosion as a real
   unwrap, :func:`stages.unwrap.texel_visibility`);
3. hide the texels the frontal photo saw but the simulated pose does not, keep the rest (with the
   simulated pose's confidence), and let the method complete the map;
4. score the completion only on the hidden texels, against the colours the photo really showed
   there: PSNR, SSIM, L1 and a seam score (excess gradient across the kept/filled border).

Hidden texels are real pixels, so no method can be tuned to the protocol without being better at
completing faces. Deterministic: no randomness anywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from stages.completion import CompletionMethod
from stages.core.face_model import FaceModel
from stages.evaluate.metrics import l1, psnr, seam_score, ssim
from stages.fit import FitResult
from stages.render import view_pose
from stages.unwrap import UnwrapResult, texel_visibility

#: Simulated views: name -> (yaw, pitch) in degrees.
HIDDEN_VIEWS: dict[str, tuple[float, float]] = {
    "yaw-30": (-30.0, 0.0), "yaw+30": (30.0, 0.0), "yaw-50": (-50.0, 0.0), "yaw+50": (50.0, 0.0),
    "pitch+30": (0.0, 30.0),
}
#: Photos whose fitted |yaw| and |pitch| are at most this many degrees count as near-frontal.
NEAR_FRONTAL_DEG = 15.0
#: The four numbers each view reports (hidden_<name>).
SCORES = ("psnr", "ssim", "l1", "seam")


def is_near_frontal(fit: FitResult, limit: float = NEAR_FRONTAL_DEG) -> bool:
    yaw, pitch, _ = fit.pose.euler
    return abs(yaw) <= limit and abs(pitch) <= limit


@dataclass
class HiddenTexelCase:
    """One simulated view: the reduced unwrap to complete and the texels to score.

    Attributes:
        view: name of the simulated view.
        partial: the unwrap with the hidden texels removed.
        hidden: ``(S, S)`` bool texels seen in the photo but not from the simulated view (scored).
        kept: ``(S, S)`` bool texels left visible.
    """

    view: str
    partial: UnwrapResult
    hidden: np.ndarray
    kept: np.ndarray


def hide_texels(unwrap: UnwrapResult, fit: FitResult, model: FaceModel, view: str, yaw: float,
                pitch: float) -> HiddenTexelCase:
    """Remove from ``unwrap`` what a head at ``(yaw, pitch)`` would not show."""
    side = max(256, round(float(np.ptp(fit.screen_vertices()[:, 0])) / 0.8))
    vertices = np.asarray(fit.vertices, dtype=np.float64)
    pose = view_pose(vertices, yaw, pitch, side)
    seen = texel_visibility(model, vertices, pose, side, side, unwrap.size)
    seen_before = unwrap.confidence > 0
    kept = seen_before & (seen.confidence > 0)
    hidden = seen_before & ~kept & unwrap.layout_mask
    partial = UnwrapResult(
        texture=np.where(kept[..., None], unwrap.texture, 0.0).astype(np.float32),
        confidence=np.where(kept, seen.confidence, 0.0).astype(np.float32),
        position=unwrap.position, layout_mask=unwrap.layout_mask, stem=unwrap.stem,
        info={**unwrap.info, "simulated_view": view})
    return HiddenTexelCase(view=view, partial=partial, hidden=hidden, kept=kept)


def score_hidden(completed: np.ndarray, reference: np.ndarray, case: HiddenTexelCase) -> dict[str, float]:
    """PSNR / SSIM / L1 on the hidden texels, and the seam score across the kept/hidden border.

    Data range 1.0 (textures in [0, 1]); SSIM is the mean of the 11x11 Gaussian SSIM map (computed
    on the whole UV image) over the hidden texels.
    """
    return {"psnr": psnr(completed, reference, case.hidden), "ssim": ssim(completed, reference, case.hidden),
            "l1": l1(completed, reference, case.hidden),
            "seam": seam_score(completed, reference, case.kept, case.hidden)}


def run_hidden_texel_protocol(unwrap: UnwrapResult, fit: FitResult, model: FaceModel, method: CompletionMethod,
                              views: dict[str, tuple[float, float]] | None = None,
                              examples: dict[str, tuple[HiddenTexelCase, np.ndarray]] | None = None,
                              photo: np.ndarray | None = None) -> dict[str, float]:
    """Run every simulated view with ``method``; returns ``hidden_<score>`` (mean over views),
    ``hidden_<score>_<view>`` per view, ``hidden_fraction_<view>`` and ``seconds_per_fill``.

    ``examples``, when given, receives ``view -> (case, completed (S, S, 3))`` for every view with
    hidden texels (for pictures of the test; the report shows one). ``photo``: the fitted photo, for
    methods that fit to it (:meth:`CompletionMethod.complete_fitted`; they see only the kept texels)."""
    views = HIDDEN_VIEWS if views is None else views
    results: dict[str, float] = {}
    per_score: dict[str, list[float]] = {k: [] for k in SCORES}
    seconds = []
    for view, (yaw, pitch) in views.items():
        case = hide_texels(unwrap, fit, model, view, yaw, pitch)
        n_hidden = int(case.hidden.sum())
        results[f"hidden_fraction_{view}"] = round(n_hidden / max(1, int((unwrap.confidence > 0).sum())), 4)
        if n_hidden == 0:
            continue
        start = time.perf_counter()
        completed = method.complete_fitted(case.partial, fit, photo).texture
        seconds.append(time.perf_counter() - start)
        if examples is not None:
            examples[view] = (case, completed)
        for key, value in score_hidden(completed, unwrap.texture, case).items():
            results[f"hidden_{key}_{view}"] = value
            if not np.isnan(value):  # inf (a perfect PSNR) counts, nan (no seam pairs) does not
                per_score[key].append(value)
    for key, values in per_score.items():
        results[f"hidden_{key}"] = float(np.mean(values)) if values else float("nan")
    results["seconds_per_fill"] = float(np.median(seconds)) if seconds else float("nan")
    return results
