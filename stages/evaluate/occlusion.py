"""The occlusion protocol: does anything that covers the face reach the texture?

On a near-frontal photo (clean, nothing over the face), paste a synthetic occluder, unwrap and
complete the occluded photo with the clean photo's fit (same geometry, so texels correspond
exactly; only the pixels differ), and compare with the completion of the clean photo over the
texels the occluder covered:

- ``occlusion_psnr``: PSNR of the occluded photo's completion vs the clean photo's completion on
  the occluder's texels (how well the texture under the occluder is recovered);
- ``leak``: share of the occluder's texels that reach the texture as photo texels (kept) or as
  mirrored texels (their mirror partner was filled from them).

Occluders (:data:`OCCLUDERS`), placed from the face landmarks and seeded: hair-like strands
(several colours and widths, over one side of the forehead and cheek), a skin-toned hand-like
shape (palm + fingers, a skin tone from a palette, shaded, over the chin or a cheek),
sunglasses-like dark bars, a scarf over the mouth and chin (striped cloth colours), a thin
microphone bar reaching the mouth. Deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from stages.completion import MIRRORED, VISIBLE, CompletionMethod
from stages.core.face_model import FaceModel
from stages.evaluate.metrics import psnr
from stages.fit import FitResult
from stages.occlusion import segment_skin
from stages.unwrap import UnwrapResult, texel_visibility, unwrap_photo

OCCLUDERS = ("strands", "hand", "sunglasses", "scarf", "microphone")
HAIR_COLOURS = ((25, 20, 18), (70, 45, 30), (150, 60, 30), (200, 170, 110), (150, 150, 155))
SKIN_TONES = ((235, 195, 165), (205, 150, 115), (160, 105, 75), (95, 60, 45))
CLOTH_COLOURS = ((170, 30, 40), (30, 40, 90), (110, 110, 115), (40, 100, 60), (200, 180, 140))

# MediaPipe landmark indices used for placement.
_BROW_R, _BROW_L, _EYE_R, _EYE_L = 105, 334, 468, 473          # brow middles, iris centres
_FOREHEAD, _CHIN, _NOSE_TIP, _MOUTH_R, _MOUTH_L = 10, 152, 1, 61, 291
_CHEEK_R, _CHEEK_L, _JAW_R, _JAW_L = 234, 454, 172, 397


def draw_occluder(rgb: np.ndarray, landmarks: np.ndarray, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paste one synthetic occluder on a photo.

    Args:
        rgb: ``(H, W, 3)`` uint8 photo.
        landmarks: ``(478, 3)`` MediaPipe points of its face (pixel ``x, y``).
        kind: one of :data:`OCCLUDERS`.
        seed: picks colours, widths, side and shape jitter.

    Returns:
        ``(occluded (H, W, 3) uint8, mask (H, W) bool)``: the photo with the occluder and where it is.
    """
    if kind not in OCCLUDERS:
        raise ValueError(f"unknown occluder {kind!r}; choose from {OCCLUDERS}")
    rng = np.random.default_rng(seed)
    p = landmarks[:, :2]
    width = float(np.linalg.norm(p[_CHEEK_L] - p[_CHEEK_R]))
    layer = np.zeros(rgb.shape, np.float32)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    shift, one = 4, 16.0

    def pts(a):
        return np.round(np.asarray(a, np.float64) * one).astype(np.int32)

    def paint(draw, colour, a=1.0):
        """Draw one shape with ``draw(canvas, value)`` into the colour layer and alpha."""
        m = np.zeros(alpha.shape, np.float32)
        draw(m, 1.0)
        layer[:] = layer * (1 - m[..., None] * a) + np.asarray(colour, np.float32) * m[..., None] * a
        np.maximum(alpha, m * a, out=alpha)

    side = 1 if rng.random() < 0.5 else -1  # which cheek (image right = +1)
    cheek = p[_CHEEK_L] if side > 0 else p[_CHEEK_R]
    if kind == "strands":
        top = p[_FOREHEAD] + (p[_FOREHEAD] - p[_NOSE_TIP]) * 0.25
        for _ in range(int(rng.integers(5, 9))):
            colour = HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]
            start = top + [side * rng.uniform(0.0, 0.35) * width, 0]
            end = cheek + [-side * rng.uniform(0.05, 0.3) * width, rng.uniform(0.0, 0.25) * width]
            bend = (start + end) / 2 + [side * rng.uniform(-0.15, 0.15) * width, 0]
            t = np.linspace(0, 1, 24)[:, None]
            curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * bend + t**2 * end
            thick = max(1, int(round(rng.uniform(0.008, 0.035) * width)))
            paint(lambda m, v, c=curve, k=thick: cv2.polylines(m, [pts(c)], False, v, k, cv2.LINE_AA, shift), colour)
    elif kind == "hand":
        tone = np.asarray(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float32)
        anchor = p[_CHIN] if rng.random() < 0.5 else (cheek + p[_MOUTH_L if side > 0 else _MOUTH_R]) / 2
        palm = anchor + [0, 0.2 * width]
        axes = (0.28 * width, 0.22 * width)
        shape = np.zeros(alpha.shape, np.float32)
        cv2.ellipse(shape, (pts(palm)[0], pts(palm)[1]), (int(axes[0] * one), int(axes[1] * one)), 0, 0, 360, 1.0,
                    -1, cv2.LINE_AA, shift)
        for i in range(4):  # fingers pointing up over the face
            base = palm + [(-0.21 + 0.14 * i) * width, -0.1 * width]
            tip = base + [rng.uniform(-0.03, 0.03) * width, -rng.uniform(0.3, 0.4) * width]
            cv2.line(shape, tuple(pts(base)), tuple(pts(tip)), 1.0, max(1, int(0.1 * width)), cv2.LINE_AA, shift)
        # Shaded like a lit rounded object: darker towards its border.
        inner = cv2.GaussianBlur(shape, (0, 0), 0.05 * width)
        shade = (0.7 + 0.3 * np.clip(inner * 1.5, 0, 1))[..., None]
        layer[:] = np.where(shape[..., None] > 0, tone * shade, layer)
        np.maximum(alpha, shape, out=alpha)
    elif kind == "sunglasses":
        colour = (int(rng.integers(10, 40)),) * 3
        for eye in (p[_EYE_R], p[_EYE_L]):
            half = (int(0.17 * width * one), int(0.1 * width * one))
            paint(lambda m, v, e=eye, h=half: cv2.ellipse(m, tuple(pts(e)), h, 0, 0, 360, v, -1, cv2.LINE_AA, shift),
                  colour)
        paint(lambda m, v: cv2.line(m, tuple(pts(p[_EYE_R])), tuple(pts(p[_EYE_L])), v,
                                    max(1, int(0.03 * width)), cv2.LINE_AA, shift), colour)
    elif kind == "scarf":
        colour = np.asarray(CLOTH_COLOURS[int(rng.integers(len(CLOTH_COLOURS)))], np.float32)
        top = (p[_NOSE_TIP] * 0.4 + (p[_MOUTH_R] + p[_MOUTH_L]) / 2 * 0.6)[1]
        poly = np.array([[p[_JAW_R][0] - 0.2 * width, top], [p[_JAW_L][0] + 0.2 * width, top],
                         [p[_JAW_L][0] + 0.2 * width, p[_CHIN][1] + 0.3 * width],
                         [p[_JAW_R][0] - 0.2 * width, p[_CHIN][1] + 0.3 * width]])
        shape = np.zeros(alpha.shape, np.float32)
        cv2.fillPoly(shape, [pts(poly)], 1.0, cv2.LINE_AA, shift)
        rows = np.arange(alpha.shape[0])[:, None, None]
        stripes = np.where((rows // max(2, int(0.06 * width))) % 2 == 0, 1.0, 0.75)
        layer[:] = np.where(shape[..., None] > 0, colour * stripes, layer)
        np.maximum(alpha, shape, out=alpha)
    else:  # microphone: a thin dark bar from below the frame up to a mouth corner, with a ball end
        mouth = p[_MOUTH_L if side > 0 else _MOUTH_R]
        bottom = mouth + [side * 0.5 * width, 1.5 * width]
        colour = (int(rng.integers(30, 70)),) * 3
        paint(lambda m, v: cv2.line(m, tuple(pts(bottom)), tuple(pts(mouth)), v, max(1, int(0.035 * width)),
                                    cv2.LINE_AA, shift), colour)
        paint(lambda m, v: cv2.circle(m, tuple(pts(mouth)), int(0.07 * width * one), v, -1, cv2.LINE_AA, shift),
              (90, 90, 95))
    out = rgb.astype(np.float32) * (1 - alpha[..., None]) + layer * alpha[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), alpha > 0.5


def occluder_texels(mask: np.ndarray, fit: FitResult, model: FaceModel, uv_size: int) -> np.ndarray:
    """``(S, S)`` bool texels the clean photo sees (geometrically) whose pixel the occluder covers."""
    height, width = mask.shape
    seen = texel_visibility(model, fit.vertices, fit.pose, height, width, uv_size)
    xy = seen.texel_screen[..., :2]
    on = cv2.remap(mask.astype(np.float32), (xy[..., 0] - 0.5).astype(np.float32),
                   (xy[..., 1] - 0.5).astype(np.float32), cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return (seen.confidence > 0) & (on > 0.5)


def leak_rate(provenance: np.ndarray, occluder: np.ndarray) -> float:
    """Share of occluder texels kept as photo texels or copied by the mirror to their partner."""
    if not occluder.any():
        return float("nan")
    reached = (occluder & (provenance == VISIBLE)) | (occluder & (provenance[:, ::-1] == MIRRORED))
    return float(reached.sum()) / float(occluder.sum())


def unwrap_case(rgb: np.ndarray, fit: FitResult, model: FaceModel, uv_size: int, mask: bool) -> UnwrapResult:
    """Unwrap ``rgb`` with ``fit``'s geometry; with ``mask``, a skin mask segmented on ``rgb`` itself."""
    skin = segment_skin(rgb, fit.landmarks) if mask else None
    return unwrap_photo(rgb, dataclasses.replace(fit, skin=skin), model=model, uv_size=uv_size, occlusion_mask=mask)


def run_occlusion_protocol(rgb: np.ndarray, fit: FitResult, model: FaceModel, method: CompletionMethod, *,
                           mask: bool = True, uv_size: int = 512, occluders=OCCLUDERS, seed: int = 0) -> dict:
    """Every occluder on one clean photo; returns ``{kind: {occlusion_psnr, leak, texels}}``.

    Args:
        rgb: ``(H, W, 3)`` uint8 clean photo; fit: its fit (geometry reused for the occluded copies).
        method: the completion method; mask: run with the skin mask (after) or without (before).
        seed: occluder ``k`` uses ``seed + k``.
    """
    reference = method.complete(unwrap_case(rgb, fit, model, uv_size, mask)).texture
    scores = {}
    for k, kind in enumerate(occluders):
        occluded, pixels = draw_occluder(rgb, fit.landmarks, kind, seed + k)
        texels = occluder_texels(pixels, fit, model, uv_size)
        completion = method.complete(unwrap_case(occluded, fit, model, uv_size, mask))
        scores[kind] = {"occlusion_psnr": psnr(completion.texture, reference, texels) if texels.any() else float("nan"),
                        "leak": leak_rate(completion.provenance, texels), "texels": int(texels.sum())}
    return scores
