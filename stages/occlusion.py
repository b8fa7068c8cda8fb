"""Face-skin segmentation: keep hair, hands, glasses, scarves and background out of the texture.

``fit`` runs :func:`segment_skin` once per face and writes the result next to ``fit.json`` as
``skin_mask.png`` (8-bit skin probability, photo size) and ``skin_overlay.png`` (rejected pixels
tinted magenta on the photo). ``unwrap`` samples it at every texel (:func:`apply_skin_mask`): the
skin probability scales the texel's confidence, texels below :data:`REJECT_BELOW` get confidence 0
and are recorded in ``uv_occluded.png``. Every completion method treats ``confidence == 0`` as
unseen, and the mirror fills a texel only from a partner with a larger confidence, so a rejected
texel is never kept and never mirrored.

The segmentation, on the face window downscaled to :data:`WORK_SIDE` pixels (~12-15 ms a photo on 2
cores, about 8 ms of it the two MediaPipe graphs, which run in worker threads while the colour model
is computed):

1. a per-photo skin colour model: a robust Gaussian in CIE Lab fitted to the central face (cheeks,
   nose, forehead, chin; eyes, brows and mouth left out), iteratively trimmed so strands, a hand or
   glasses over part of the seed area do not pull it. Lightness may rise freely (highlights) and
   fall further than chroma may move (shading); hair (any colour but skin's), glasses frames,
   sunglasses, scarves, occluder shadows and background fail it;
2. MediaPipe selfie segmentation (person vs background): background pixels are not skin, which
   catches background seen beside the far cheek at large yaw even when its colour is skin-like;
3. MediaPipe hands (palm detection + 21 hand landmarks): pixels inside a detected hand are not
   skin (a hand is skin-coloured, colour alone cannot reject it);
4. occluder outlines (:func:`_edge_cut`): a skin-toned occluder (a hand of a skin tone, a
   blonde strand) passes the colour model, but its outline is a strong image edge across the face
   interior, where the face predicts smooth skin; skin-coloured regions such edges cut off from
   the central face (inside the oval, around the features, not through them) are rejected unless
   their outline runs along the features' own edges or their colour matches the face's;
5. semantic regions from the 478 face landmarks: brows, eyes (with iris), lips (with the mouth)
   and nostrils belong in a face texture, so each is kept whole unless most of a ring of skin
   around it was rejected (then something covers it: sunglasses over the eyes, a scarf over the
   mouth), in which case its pixels follow the colour model like any other; a kept region still
   loses the part next to a covered stretch of its ring (fingers over the lower lip).

Facial hair is *not* kept: a beard or moustache fails the skin model like other hair and is filled
like an occluder. Colour cannot tell a dark beard from a dark scarf or a hand's shadow over the
mouth, and leaking an occluder onto both sides of the face is the worse failure; a user who wants
the beard in the texture runs with ``--no-occlusion-mask``.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numba import njit

from stages.core.errors import MissingArtifactError

MASK_FILE = "skin_mask.png"
OVERLAY_FILE = "skin_overlay.png"
OCCLUDED_FILE = "uv_occluded.png"
#: Texels (and pixels) whose skin probability is below this are rejected.
REJECT_BELOW = 0.5
#: Long side, in pixels, of the face window the segmentation works on.
WORK_SIDE = 160
#: Margin around the landmarks' box, as a fraction of its size.
WINDOW_MARGIN = 0.15
#: Skin-model threshold: Mahalanobis distance (in the inliers' spread) at which p(skin) = 0.5.
SKIN_DISTANCE = 3.2
#: Median of the chi-square distribution with 3 degrees of freedom (consistency of the trimmed fit).
CHI2_3_MEDIAN = 2.366
#: Minimum standard deviation of the skin model in L, a, b (photo noise, JPEG chroma blocks).
SPREAD_FLOOR = (6.0, 2.5, 2.5)
#: Lightness deviations count this much against skin when darker, and this much when brighter.
DARKER_WEIGHT, BRIGHTER_WEIGHT = 0.45, 0.15
#: A semantic region is kept whole unless more than this share of the skin ring around it is rejected.
RING_REJECTED_MAX = 0.5
#: Edge step (:func:`_edge_cut`): Lab gradient per work-crop pixel (after a 1-pixel blur) that makes an edge.
EDGE_GRADIENT = 4.0
#: Pixels (work crop) within which an edge counts as explained by a brow, eye, lip, nostril or the oval.
EXPLAINED_PX = 3
#: A cut-off region whose mean colour is within this Mahalanobis distance of the face's stays skin.
ISLAND_SIMILAR = 1.0
#: Edge pixels within this many pixels of kept skin stay kept (wrinkles, folds, the nose's sides).
EDGE_KEEP_PX = 2
#: Feather width of the confidence ramp next to rejected texels, as a fraction of the UV size.
FEATHER_FRACTION = 1.0 / 128

# MediaPipe face-mesh landmark indices of the regions a face texture keeps.
KEEP_REGIONS: dict[str, tuple[int, ...]] = {
    "right_eye": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    "left_eye": (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398),
    "right_brow": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107),
    "left_brow": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    "lips": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185),
    "nostrils": (48, 64, 98, 97, 2, 326, 327, 294, 278, 79, 309, 20, 250, 60, 290, 75, 305),
}
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


@dataclass
class SkinMask:
    """Per-pixel skin probability of one face in one photo.

    Attributes:
        prob: ``(H, W)`` float32 in ``[0, 1]``, photo size; 0 outside the face window.
        info: what was found (hands, seed statistics, rejected share), for ``fit``'s record.
    """

    prob: np.ndarray
    info: dict = field(default_factory=dict)

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear skin probability at continuous pixel positions ``(..., 2+)`` (0 outside the photo)."""
        map_x = (xy[..., 0] - 0.5).astype(np.float32)
        map_y = (xy[..., 1] - 0.5).astype(np.float32)
        return cv2.remap(self.prob, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def save(self, out_dir: str | Path, rgb: np.ndarray, overlay: bool = True) -> list[Path]:
        """Write ``skin_mask.png`` (8-bit probability) and, with ``overlay``, ``skin_overlay.png`` (drawn on
        ``rgb``; a preview, which no later stage reads)."""
        from stages.core.image_io import save_png

        out_dir = Path(out_dir)
        if overlay:
            save_png(out_dir / OVERLAY_FILE, skin_overlay(rgb, self.prob))
        else:
            (out_dir / OVERLAY_FILE).unlink(missing_ok=True)
        save_png(out_dir / MASK_FILE, self.prob)
        return [out_dir / MASK_FILE] + ([out_dir / OVERLAY_FILE] if overlay else [])

    @classmethod
    def load_beside(cls, fit_path: str | Path, image_size: tuple[int, int]) -> SkinMask | None:
        """The ``skin_mask.png`` next to ``fit_path``, or None when there is none (fit without a mask).

        Raises:
            MissingArtifactError: the file is unreadable or not ``image_size`` (``(W, H)``).
        """
        path = Path(fit_path).parent / MASK_FILE
        if not path.is_file():
            return None
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise MissingArtifactError(path, "not a readable 8-bit grey skin mask (re-run `facetex fit`)")
        if (mask.shape[1], mask.shape[0]) != tuple(image_size):
            raise MissingArtifactError(path, f"mask is {mask.shape[1]}x{mask.shape[0]}, the fit's photo "
                                             f"{image_size[0]}x{image_size[1]} (re-run `facetex fit`)")
        return cls(prob=mask.astype(np.float32) / 255.0)


def save_skin_mask(skin: SkinMask | None, out_dir: str | Path, rgb: np.ndarray, overlay: bool = True) -> None:
    """Write ``skin``'s files into ``out_dir`` (``skin_overlay.png`` only with ``overlay``); with None,
    remove any left by an earlier fit (a stale mask next to a new ``fit.json`` would otherwise be used by
    ``unwrap``)."""
    if skin is not None:
        skin.save(out_dir, rgb, overlay=overlay)
        return
    for name in (MASK_FILE, OVERLAY_FILE):
        (Path(out_dir) / name).unlink(missing_ok=True)


def skin_overlay(rgb: np.ndarray, prob: np.ndarray, max_side: int = 640, margin: float = 0.05) -> np.ndarray:
    """``(H', W', 3)`` uint8: the part of the photo the mask covers (the box of ``prob > 0`` with ``margin`` of its
    size around it; the whole photo when the mask is empty) at the scale that fits the whole photo in ``max_side``,
    with rejected pixels tinted magenta and the kept border drawn. The rest of the photo shows nothing of the
    mask (and took two thirds of the time to write)."""
    factor = min(1.0, max_side / max(rgb.shape[:2]))
    thickness = max(1, round(max(rgb.shape[:2]) * factor / 600))
    rows = np.flatnonzero((prob > 0).any(axis=1))
    if rows.size:
        cols = np.flatnonzero((prob > 0).any(axis=0))
        pad = round(margin * max(rows[-1] - rows[0], cols[-1] - cols[0]))
        crop = np.s_[max(0, rows[0] - pad):rows[-1] + 1 + pad, max(0, cols[0] - pad):cols[-1] + 1 + pad]
        rgb, prob = rgb[crop], prob[crop]
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    canvas = rgb if factor == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    p = prob if factor == 1.0 else cv2.resize(prob, size, interpolation=cv2.INTER_AREA)
    out = canvas.copy()
    rows, cols = np.flatnonzero((p > 0).any(axis=1)), np.flatnonzero((p > 0).any(axis=0))
    if rows.size:  # the window the mask covers: rejected = inside the face window and not skin (tinted there only)
        window = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        rejected = (p[window] < REJECT_BELOW).astype(np.float32)[..., None]
        tint = np.array([255, 0, 200], np.float32)
        out[window] = np.clip(canvas[window].astype(np.float32) * (1 - 0.55 * rejected) + tint * 0.55 * rejected,
                              0, 255).astype(np.uint8)
    contours, _ = cv2.findContours((p >= REJECT_BELOW).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (60, 255, 120), thickness, cv2.LINE_AA)
    return out


class SkinSegmenter:
    """MediaPipe selfie segmentation + hands, built once and reused (see the module docstring).

    Args:
        hands: look for hands over the face (palm detection + landmarks).
        background: use selfie segmentation (person vs background).
    """

    def __init__(self, hands: bool = True, background: bool = True):
        os.environ.setdefault("GLOG_minloglevel", "2")
        warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
        import mediapipe as mp

        self._selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) if background else None
        self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=0,
                                               min_detection_confidence=0.5) if hands else None
        # The two graphs run in worker threads while the colour model is computed (MediaPipe
        # releases the GIL while it waits): on 2 cores this hides most of the colour model's cost.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="skin")

    def start(self, crop: np.ndarray) -> tuple[Future, Future]:
        """Run :meth:`person` and :meth:`hands` on ``crop`` in the background; returns their futures."""
        crop = np.ascontiguousarray(crop)
        return self._pool.submit(self.person, crop), self._pool.submit(self.hands, crop)

    def person(self, crop: np.ndarray) -> np.ndarray | None:
        """``(h, w)`` float32 person probability of a uint8 RGB crop (None without the model)."""
        if self._selfie is None:
            return None
        return np.asarray(self._selfie.process(np.ascontiguousarray(crop)).segmentation_mask, dtype=np.float32)

    def hands(self, crop: np.ndarray) -> list[np.ndarray]:
        """Hand landmark sets found in a uint8 RGB crop: a list of ``(21, 2)`` pixel points."""
        if self._hands is None:
            return []
        h, w = crop.shape[:2]
        found = self._hands.process(np.ascontiguousarray(crop)).multi_hand_landmarks or []
        return [np.array([(p.x * w, p.y * h) for p in hand.landmark]) for hand in found]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for graph in (self._selfie, self._hands):
            if graph is not None:
                graph.close()


_DEFAULT: SkinSegmenter | None = None


def default_segmenter() -> SkinSegmenter:
    """The process-wide segmenter (built on first use, like the landmark detector per batch)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = SkinSegmenter()
    return _DEFAULT


def face_window(landmarks: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` integer pixel window: the landmarks' box plus :data:`WINDOW_MARGIN`."""
    x0, y0 = landmarks[:, :2].min(axis=0)
    x1, y1 = landmarks[:, :2].max(axis=0)
    mx, my = WINDOW_MARGIN * (x1 - x0), WINDOW_MARGIN * (y1 - y0)
    return (max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my))),
            min(width, int(np.ceil(x1 + mx))), min(height, int(np.ceil(y1 + my))))


def _polygon(shape: tuple[int, int], points: np.ndarray, hull: bool = True) -> np.ndarray:
    """``(h, w)`` bool filled polygon (convex hull with ``hull``) of ``(N, 2)`` pixel points."""
    out = np.zeros(shape, np.uint8)
    pts = np.round(points * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    if hull:
        pts = cv2.convexHull(pts)
    cv2.fillPoly(out, [pts.reshape(-1, 1, 2)], 1, cv2.LINE_8, 2)
    return out.astype(bool)


def robust_skin_model(lab: np.ndarray, iterations: int = 4, keep: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed Gaussian of ``(N, 3)`` Lab seed colours: each round keeps the ``keep`` share closest
    to the current estimate, so a minority of hair, hand or glasses pixels in the seed does not
    move it; the covariance is then rescaled so the median squared distance over the seed is the
    chi-square median (the trimmed spread alone would be too tight) and floored at
    :data:`SPREAD_FLOOR`. Returns ``(mean (3,), covariance (3, 3))``."""
    floor = np.diag(np.square(SPREAD_FLOOR))  # also keeps grey photos (a = b = 0) invertible
    mean = np.median(lab, axis=0)
    cov = _covariance(lab) + floor
    for _ in range(iterations):
        d = _mahalanobis2(lab, mean, cov)
        inliers = lab[d <= _quantile(d, keep)]
        mean = inliers.mean(axis=0)
        cov = _covariance(inliers) + 1e-3 * floor
        cov = cov * _quantile(_mahalanobis2(lab, mean, cov), 0.5) / CHI2_3_MEDIAN + floor
    return mean, cov


def _covariance(x: np.ndarray) -> np.ndarray:
    """``(3, 3)`` sample covariance of ``(N, 3)`` points (``np.cov`` of the columns, without its overhead)."""
    centred = x - x.mean(axis=0)
    return centred.T @ centred / max(len(x) - 1, 1)


def _quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear interpolation) of a 1-D array, by partial sorting."""
    position = q * (len(values) - 1)
    lo, hi = int(np.floor(position)), int(np.ceil(position))
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (position - lo))


#: The seed fit uses at most this many pixels (an even stride over the seed; keeps the cost flat).
FIT_SAMPLES = 800


def _subsample(index: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    step = max(1, len(index[0]) // FIT_SAMPLES)
    return tuple(i[::step] for i in index)


def _mahalanobis2(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of ``(..., 3)`` points, in ``x``'s float precision."""
    diff = (x - mean).astype(x.dtype, copy=False).reshape(-1, 3)
    inverse = np.linalg.inv(cov).astype(diff.dtype)
    return np.einsum("ij,ij->i", diff @ inverse, diff).reshape(x.shape[:-1])


def _hand_area(hand: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` bool: the hull of a hand's 21 points grown by about a finger's width."""
    finger = max(1, round(0.12 * np.ptp(hand[:, 0]) + 0.12 * np.ptp(hand[:, 1])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * finger + 1, 2 * finger + 1))
    return cv2.dilate(_polygon(shape, hand).astype(np.uint8), kernel) > 0


def _edge_cut(lab: np.ndarray, prob: np.ndarray, seed: np.ndarray, features: np.ndarray, oval: np.ndarray,
              cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skin-coloured pixels an image edge the face does not explain cuts off from the central face.

    A skin-toned occluder (a hand of the face's tone, a blonde strand) passes the colour model, but
    its outline is a strong image edge crossing the face interior, where the fitted face predicts
    smooth skin. The skin-coloured, edge-free pixels (Lab gradient below :data:`EDGE_GRADIENT`, edges
    grown by a pixel so a one-pixel gap does not join two regions) are split into 4-connected
    regions, with the oval's border and the kept features as barriers (outside the oval, skin joined
    to the face around the border stays); the region holding most of the seed is the face. Another
    region is still skin when its outline runs mostly along edges the face explains (within
    :data:`EXPLAINED_PX` of a brow, eye, lip or nostril, or of the face oval's border: skin between
    an eye and a brow, beside a nostril) or its mean colour is within :data:`ISLAND_SIMILAR` of the
    face's (skin between wrinkles); otherwise it is an occluder.

    Args:
        lab: ``(h, w, 3)`` float32 Lab of the work crop; prob: ``(h, w)`` colour skin probability;
        seed, features, oval: ``(h, w)`` bool central face, kept regions, face oval; cov: the skin
        model's ``(3, 3)`` covariance.

    Returns:
        ``(islands, edges)`` ``(h, w)`` bool: pixels of rejected regions, and edge pixels farther
        than :data:`EDGE_KEEP_PX` from any kept region (an occluder's outline, a thin strand).
    """
    smooth = cv2.GaussianBlur(lab, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    # Per pixel of a WORK_SIDE crop (a small face's crop is not upsampled; its edges span fewer pixels).
    scale = max(lab.shape[:2]) / WORK_SIDE
    edge = np.sqrt((gx * gx + gy * gy).sum(axis=2)) * scale > 8.0 * EDGE_GRADIENT  # (Sobel = 8 x gradient)
    # Grown by a pixel: an outline with a one- or two-pixel gap (a fingertip's weaker edge) still closes.
    edge = cv2.dilate(edge.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))).astype(bool)
    skinish = prob >= REJECT_BELOW
    # Barriers: skin connects to the face inside the oval only, and around the brows, eyes, lips and
    # nostrils, not through them (a hand over the chin would otherwise join the face through the neck
    # below it, fingers over the mouth through the lips). The features are kept or not by their ring.
    barrier = features | (oval & ~cv2.erode(oval.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))
    count, labels = cv2.connectedComponents((skinish & ~edge & ~barrier).astype(np.uint8), connectivity=4)
    on_seed = np.bincount(labels[seed], minlength=count)
    on_seed[0] = 0
    face = int(np.argmax(on_seed))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EXPLAINED_PX + 1,) * 2)
    band = _grow(oval, EXPLAINED_PX) & ~cv2.erode(oval.astype(np.uint8), disc).astype(bool)
    explained = _grow(features, EXPLAINED_PX) | band
    # Each region's outline: the pixels just outside it (the highest neighbouring label wins).
    outline_label = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
    # (a barrier is an outline only where it is an image edge: elsewhere it is a cut, not an edge)
    outline = (labels == 0) & (outline_label > 0) & ~(barrier & ~edge)
    length = np.bincount(outline_label[outline], minlength=count)
    along = np.bincount(outline_label[outline & explained], minlength=count)
    keep = along >= 0.5 * np.maximum(length, 1)
    area = np.bincount(labels.ravel(), minlength=count)
    means = np.stack([np.bincount(labels.ravel(), lab[..., c].ravel(), minlength=count) for c in range(3)], 1)
    means /= np.maximum(area, 1)[:, None]
    keep |= _mahalanobis2(means, means[face], cov) < ISLAND_SIMILAR ** 2
    keep[face], keep[0] = True, False
    kept = keep[labels] | barrier  # (barrier pixels are never cut off: they belong to no region)
    # Outside the oval its border is no barrier: skin there (neck, temples) joined to the face stays.
    around = cv2.connectedComponents((skinish & ~edge & ~features).astype(np.uint8), connectivity=4)[1]
    on_seed = np.bincount(around[seed], minlength=around.max() + 1)
    on_seed[0] = 0
    kept |= ~oval & (around == np.argmax(on_seed))
    return (labels > 0) & ~kept, skinish & edge & ~_grow(kept, EDGE_KEEP_PX)


def _locally_covered(ring: np.ndarray, rejected: np.ndarray, radius: int) -> np.ndarray:
    """``(h, w)`` bool: pixels for which more than :data:`RING_REJECTED_MAX` of the ``ring`` pixels within
    ``2 * radius`` (a square window) are ``rejected``."""
    side = (4 * radius + 1,) * 2
    near = cv2.boxFilter(ring.astype(np.float32), -1, side, normalize=False, borderType=cv2.BORDER_CONSTANT)
    near_rejected = cv2.boxFilter((ring & rejected).astype(np.float32), -1, side, normalize=False,
                                  borderType=cv2.BORDER_CONSTANT)
    return near_rejected > RING_REJECTED_MAX * np.maximum(near, 1.0)


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a disc of ``radius`` pixels."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)


_DEFAULT_PARSER = None


def set_default_parser(parser) -> None:
    """Make ``parser`` (a loaded :class:`stages.models.skin_parser.SkinParser`, or None) the learned
    skin parser every :func:`segment_skin` call without an explicit ``parser`` uses (``fit
    --skin-parser DIR``; the occlusion protocol's unwraps then use it too)."""
    global _DEFAULT_PARSER
    _DEFAULT_PARSER = parser


def default_parser():
    """The learned skin parser :func:`segment_skin` uses by default (None: the classical mask alone)."""
    return _DEFAULT_PARSER


def segment_skin(rgb: np.ndarray, landmarks: np.ndarray, segmenter: SkinSegmenter | None = None,
                 parser="default") -> SkinMask:
    """Skin probability of the face given by ``landmarks`` (see the module docstring for the steps).

    Args:
        rgb: ``(H, W, 3)`` uint8 photo.
        landmarks: ``(478, 3)`` (or ``(468+, 3)``) MediaPipe face-mesh points, pixel ``x, y``.
        segmenter: the MediaPipe graphs (default: :func:`default_segmenter`).
        parser: a learned skin parser (:mod:`stages.models.skin_parser`) whose probability caps the
            classical one (the minimum of the two), None for the classical mask alone, or
            ``"default"``: :func:`default_parser`.

    Returns:
        A :class:`SkinMask` of the photo's size.
    """
    segmenter = segmenter or default_segmenter()
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = face_window(landmarks, height, width)
    prob_full = np.zeros((height, width), np.float32)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return SkinMask(prob=prob_full, info={"skipped": "face window outside the photo"})
    # Downscaled in two area-averaging steps: first by the whole factor f (OpenCV's fast path; the
    # window is trimmed by under f pixels to a multiple of it), then by the rest (3-4x less work).
    f = max(1, int(max(x1 - x0, y1 - y0) / WORK_SIDE))
    x1, y1 = x0 + (x1 - x0) // f * f, y0 + (y1 - y0) // f * f
    k = min(1.0, WORK_SIDE / max(x1 - x0, y1 - y0))
    w, h = max(2, round((x1 - x0) * k)), max(2, round((y1 - y0) * k))
    crop = rgb[y0:y1, x0:x1]
    if f > 1:
        crop = cv2.resize(crop, ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    pts = (landmarks[:, :2] - [x0, y0]) * [w / (x1 - x0), h / (y1 - y0)]
    person_job, hands_job = segmenter.start(crop)  # steps 2 and 3 run while step 1 is computed

    # 1. Skin colour model seeded from the central face.
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    oval = _polygon((h, w), pts[list(FACE_OVAL)])
    regions = {name: _polygon((h, w), pts[list(idx)]) for name, idx in KEEP_REGIONS.items()}
    features = np.any(list(regions.values()), axis=0)
    grow = max(1, round(0.04 * w))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    centre = pts[list(FACE_OVAL)].mean(axis=0)
    central = _polygon((h, w), centre + 0.75 * (pts[list(FACE_OVAL)] - centre))
    seed = central & ~cv2.dilate(features.astype(np.uint8), kernel).astype(bool)
    if seed.sum() < 30:
        seed = oval & ~features
    mean, cov = robust_skin_model(lab[_subsample(np.nonzero(seed))].astype(np.float64))
    diff = lab - mean.astype(np.float32)
    diff[..., 0] *= np.where(diff[..., 0] < 0, np.float32(DARKER_WEIGHT), np.float32(BRIGHTER_WEIGHT))
    d = np.sqrt(_mahalanobis2(diff, np.zeros(3, np.float32), cov))
    prob = np.float32(1.0) / (np.float32(1.0) + np.exp(np.float32(2.0) * (d - np.float32(SKIN_DISTANCE))))

    # 2. Background.
    person = person_job.result()
    person_used = person is not None and float(np.median(person[seed])) >= 0.5
    if person_used:
        # Only where the segmenter agrees that the central face is a person: on renders, drawings or
        # unusual crops it can call the whole face background, and the landmarks say otherwise.
        prob *= np.clip((person - 0.2) / 0.4, 0.0, 1.0)
    # 3. Hands: the hull of the 21 points, grown by about a finger's width.
    hands = hands_job.result()
    hand_areas = [_hand_area(hand, (h, w)) for hand in hands]
    for area in hand_areas:
        prob[area] = 0.0

    # 3b. Occluder outlines: skin-coloured regions the face's image edges cut off from the central face.
    islands, edges = _edge_cut(lab, prob, seed, features, oval, cov)
    prob[islands] = 0.0

    # 4. Keep brows, eyes, lips and nostrils unless the skin around them is covered. The ring test
    # counts dropped edge pixels only away from the features' own edges.
    ring_prob = np.where(edges & ~_grow(features, EXPLAINED_PX + 1), 0.0, prob)
    prob[edges] = 0.0
    kept, covered = [], []
    for name, region in regions.items():
        # (on the region's box plus the ring and the local window: the same result, a fraction of the cost)
        lo = np.maximum(np.floor(pts[list(KEEP_REGIONS[name])].min(axis=0)).astype(int) - 3 * grow, 0)
        hi = np.ceil(pts[list(KEEP_REGIONS[name])].max(axis=0)).astype(int) + 3 * grow + 1
        box = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        region, box_prob = region[box], prob[box]
        ring = cv2.dilate(region.astype(np.uint8), kernel).astype(bool) & ~features[box] & oval[box]
        ring_rejected = ring_prob[box] < REJECT_BELOW
        if ring.sum() == 0 or ring_rejected[ring].mean() <= RING_REJECTED_MAX:
            box_prob[region] = 1.0
            # ... except where the ring next to it is covered: an occluder reaching into the region
            # (fingers over the lower lip, a microphone at a mouth corner) covers the part next to it.
            box_prob[region & _locally_covered(ring, ring_rejected, grow)] = 0.0
            kept.append(name)
        else:
            covered.append(name)
    for area in hand_areas:  # a hand over an eye or the mouth wins over the keep rule
        prob[area] = 0.0

    # A light blur gives the rejected region a smooth outline at photo resolution.
    prob = cv2.GaussianBlur(prob, (0, 0), 0.8)
    np.clip(prob, 0.0, 1.0, out=prob)  # (bilinear upsampling stays inside [0, 1])
    prob_full[y0:y1, x0:x1] = cv2.resize(prob, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    if isinstance(parser, str):
        parser = default_parser()
    if parser is not None:  # the learned parser rejects what it sees as not skin (a hand's outline)
        from stages.models.skin_parser import parse_skin

        window = prob_full[y0:y1, x0:x1]
        np.minimum(window, parse_skin(parser, rgb, landmarks, (x0, y0, x1, y1)), out=window)
        prob = cv2.resize(prob_full[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
    rejected = float((prob[oval] < REJECT_BELOW).mean()) if oval.any() else 0.0
    info = {"parser": getattr(parser, "source", "given") if parser is not None else None,
            "window": [x0, y0, x1, y1], "hands": len(hands), "person_mask_used": person_used,
            "kept_regions": kept, "covered_regions": covered,
            "skin_lab_mean": [round(float(v), 2) for v in mean], "rejected_face_fraction": round(rejected, 4)}
    return SkinMask(prob=prob_full, info=info)


def apply_skin_mask(confidence: np.ndarray, texel_screen: np.ndarray, skin: SkinMask,
                    min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold the skin probability into an unwrap's confidence.

    Each seen texel's confidence is multiplied by a smoothstep of its skin probability (0 at
    :data:`REJECT_BELOW`, 1 from 0.8 up) and by a feather ramp that
    rises from 0 to 1 over :data:`FEATHER_FRACTION` of the UV size away from rejected texels, so
    the kept/filled border is soft (methods that weight by confidence blend across it, and the
    mirror prefers a better-seen partner near it); the first feather width next to a rejected texel
    is dropped as the occluder's soft edge. Texels left below ``min_confidence`` are unseen.

    Args:
        confidence: ``(S, S)`` float32 geometric confidence (0 = not seen).
        texel_screen: ``(S, S, 2+)`` pixel position of every texel in the photo.
        skin: the photo's skin mask.
        min_confidence: the unwrap's visibility threshold.

    Returns:
        ``(confidence (S, S) float32, occluded (S, S) bool)``: the new confidence and the texels
        seen geometrically that the mask removed.
    """
    size = confidence.shape[0]
    feather = max(1.0, FEATHER_FRACTION * size)
    # Only the seen texels are sampled and weighed (a head's layout is mostly unseen; the rest stays 0).
    seen = np.flatnonzero(confidence.reshape(-1) > 0)                       # (N,) flat indices
    out = np.zeros(size * size, np.float32)
    occluded = np.zeros(size * size, bool)
    if len(seen):
        # cv2.remap takes maps under 32767 a side: the N positions as rows of 4096, the last padded.
        xy = np.zeros((-(-len(seen) // 4096) * 4096, 2), texel_screen.dtype)
        _gather_xy(texel_screen.reshape(-1, texel_screen.shape[-1]), seen, xy)
        p = skin.sample(xy.reshape(-1, 4096, 2)).reshape(-1)[:len(seen)]
        dist = None
        if (p < REJECT_BELOW).any():
            keep = np.ones(size * size, np.uint8)
            keep[seen[p < REJECT_BELOW]] = 0
            # Over the whole layout: OpenCV's (IPP) float distances differ by a few ulp with the
            # image's extent, so a crop would change the outputs' bits.
            dist = cv2.distanceTransform(keep.reshape(confidence.shape), cv2.DIST_L2, 3).reshape(-1)
        _weigh_seen(confidence.reshape(-1), seen, p, dist, np.float32(feather), np.float32(REJECT_BELOW),
                    np.float32(min_confidence), out, occluded)
    return out.reshape(confidence.shape), occluded.reshape(confidence.shape)


@njit(cache=True)
def _gather_xy(texel_screen, seen, xy):
    """``xy[i] = texel_screen[seen[i], :2]``."""
    for i in range(seen.shape[0]):
        xy[i, 0] = texel_screen[seen[i], 0]
        xy[i, 1] = texel_screen[seen[i], 1]


@njit(cache=True)
def _weigh_seen(confidence, seen, p, dist, feather, reject_below, min_confidence, out, occluded):
    """:func:`apply_skin_mask`'s weighting of the seen texels ``seen`` (flat indices), in float32 with
    the numpy formulation's operations in its order (the same bits): ``p`` their skin probability,
    ``dist`` the layout's distance to the nearest rejected texel (None: none rejected)."""
    one, zero = np.float32(1.0), np.float32(0.0)
    for i in range(seen.shape[0]):
        k = seen[i]
        if p[i] < reject_below:  # rejected
            occluded[k] = True
            continue
        # The first ``feather`` texels next to a rejected one are dropped too (an occluder's soft
        # edge, blurred by resampling, is not skin either), then the confidence ramps up over another.
        ramp = one
        if dist is not None:
            ramp = min(max(dist[k] / feather - one, zero), one)
        # Skin probability 0.5 -> 0 ... 0.8 -> 1 (smoothstep): clear skin keeps its confidence.
        t = min(max((p[i] - reject_below) / np.float32(0.3), zero), one)
        value = confidence[k] * t * t * (np.float32(3.0) - np.float32(2.0) * t) * ramp
        if value < min_confidence or not value > zero:
            occluded[k] = True
        else:
            out[k] = value
