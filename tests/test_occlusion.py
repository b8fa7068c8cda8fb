"""The face-skin mask: occluders are rejected, kept out of the texture and never mirrored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.completion import MIRRORED, VISIBLE, get_method
from stages.core.image_io import Photo, load_photo
from stages.evaluate.occlusion import occluder_texels
from stages.fit import FitResult, fit_photo, save_fit
from stages.occlusion import (
    KEEP_REGIONS,
    REJECT_BELOW,
    WORK_SIDE,
    SkinMask,
    SkinSegmenter,
    apply_skin_mask,
    face_window,
    segment_skin,
)
from stages.render import render_mesh
from stages.unwrap import UnwrapResult, unwrap_photo
from tests.test_roundtrip import face_texture  # noqa: F401  (the astronaut's completed texture, a fixture)
from tests.test_unwrap_render import synthetic_fit

#: Drawn occluder colours (RGB): a green strand set, a blue sunglasses bar, a pale rosy skin-tone
#: "hand" blob (Lab chroma a 14, b 5 against the astronaut's yellower skin). A blob of the face's own
#: chroma, lighter or darker, passes the colour model (it tolerates shading): that case needs the
#: hand detector, which a drawn blob does not trigger.
STRAND, BAR, BLOB = (40, 160, 60), (25, 25, 110), (240, 200, 200)
#: Stated bound: the rejected pixels overlap the drawn occluder (inside the face) with IoU above this.
IOU_MIN = 0.5


def _draw(image: np.ndarray, fit) -> tuple[np.ndarray, np.ndarray]:
    """Draw strands over the right cheek, a bar over the eyes and a blob on the chin; returns the mask."""
    p = fit.landmarks[:, :2]
    width = float(p[:, 0].max() - p[:, 0].min())
    out = image.copy()
    mask = np.zeros(image.shape[:2], np.uint8)
    for k in range(4):
        start = (int(p[10, 0] + (0.05 + 0.06 * k) * width), int(p[10, 1]))
        end = (int(p[454, 0] - (0.25 - 0.05 * k) * width), int(p[152, 1] - 0.25 * width))
        for canvas, colour in ((out, STRAND), (mask, 1)):
            cv2.line(canvas, start, end, colour, max(3, int(0.03 * width)))
    left, right = p[468, :2].astype(int), p[473, :2].astype(int)
    for canvas, colour in ((out, BAR), (mask, 1)):
        cv2.rectangle(canvas, (left[0] - int(0.12 * width), left[1] - int(0.05 * width)),
                      (right[0] + int(0.12 * width), right[1] + int(0.05 * width)), colour, -1)
        cv2.circle(canvas, (int(p[152, 0]), int(p[152, 1] - 0.08 * width)), int(0.12 * width), colour if canvas is mask
                   else BLOB, -1)
    return out, mask.astype(bool)


@pytest.fixture(scope="module")
def occluded_render(face_texture, landmarker, model):  # noqa: F811
    """A rendered face (the astronaut's texture) with drawn occluders, fitted on the clean render."""
    size = 512
    truth = synthetic_fit(model, 0.0, size)
    rgb, inside = render_mesh(face_texture, truth.screen_vertices(), model, size, size)
    clean = (np.where(inside[..., None], rgb, 0.35) * 255 + 0.5).astype(np.uint8)
    fit = fit_photo(Photo(rgb=clean, path=Path("render.png"), scale=1.0, original_size=(size, size)), landmarker,
                    model=model, occlusion_mask=False)[0]
    image, drawn = _draw(clean, fit)
    return image, drawn, inside, fit, clean


def test_mask_rejects_drawn_occluders(occluded_render):
    image, drawn, inside, fit, _ = occluded_render
    skin = segment_skin(image, fit.landmarks)
    rejected = (skin.prob < REJECT_BELOW) & inside
    target = drawn & inside
    iou = (rejected & target).sum() / (rejected | target).sum()
    assert iou > IOU_MIN, f"IoU {iou:.2f}"
    for colour in (STRAND, BAR, BLOB):   # each occluder on its own is mostly rejected
        own = target & (np.abs(image.astype(int) - colour).sum(axis=2) == 0)
        assert (skin.prob[own] < REJECT_BELOW).mean() > 0.8, colour


def _near(texture: np.ndarray, colour) -> np.ndarray:
    """``(S, S)`` bool: within 30 RGB levels (sum of abs differences) of ``colour``."""
    return np.abs(texture * 255 - np.asarray(colour, np.float32)).sum(axis=2) < 30


@pytest.mark.parametrize("colour", [STRAND, BAR, BLOB])
def test_no_occluder_colour_reaches_the_completed_texture(occluded_render, model, colour):
    image, drawn, _, fit, clean = occluded_render
    mirror = get_method("mirror").load(model)
    fit = dataclasses.replace(fit, skin=segment_skin(clean, fit.landmarks))
    reference = mirror.complete(unwrap_photo(clean, fit, model=model, uv_size=256))
    fit.skin = segment_skin(image, fit.landmarks)
    before = mirror.complete(unwrap_photo(image, fit, model=model, uv_size=256, occlusion_mask=False))
    after = mirror.complete(unwrap_photo(image, fit, model=model, uv_size=256))
    # Occluder-coloured texels where the clean photo's completion has no such colour, on the occluder of
    # that colour (grown by 4 px) or their mirror partners (elsewhere a fill can hit the colour by
    # chance: pale texels filled under the rejected eye bar are not the chin's pale pink blob).
    own = drawn & (np.abs(image.astype(int) - colour).sum(axis=2) == 0)
    on = occluder_texels(cv2.dilate(own.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0, fit, model, 256)
    new = (before.provenance > 0) & ~_near(reference.texture, colour) & (on | on[:, ::-1])
    leaked_before = int((_near(before.texture, colour) & new).sum())
    leaked_after = int((_near(after.texture, colour) & new).sum())
    # Without the mask the occluder is unwrapped (and mirrored); with it, (almost) none of it is left.
    assert leaked_before > 150
    # (strands: 101/2212 before the edge cut, 112/2222 with it; both runs of the clean reference differ)
    assert leaked_after <= 0.06 * leaked_before, (leaked_after, leaked_before)


def test_astronaut_keeps_brows_eyes_and_lips(astronaut_path, landmarker, model):
    photo = load_photo(astronaut_path)
    fit = fit_photo(photo, landmarker, model=model)[0]
    assert fit.skin is not None
    p = fit.landmarks[:, :2]
    for name in ("right_eye", "left_eye", "right_brow", "left_brow", "lips"):
        poly = np.zeros(photo.rgb.shape[:2], np.uint8)
        cv2.fillConvexPoly(poly, cv2.convexHull(p[list(KEEP_REGIONS[name])].astype(np.int32)), 1)
        kept = (fit.skin.prob[poly > 0] >= REJECT_BELOW).mean()
        assert kept > 0.95, f"{name}: {kept:.2f} kept"


def test_mirror_refuses_rejected_texels(model):
    """A texel the mask rejected is never kept and never copied to its partner by the mirror."""
    from stages.core.uv import uv_layout

    size = 128
    layout = uv_layout(model, size).mask
    cols = np.arange(size)[None, :].repeat(size, 0)
    confidence = np.where(layout & (cols < size // 2 - 2), 0.9, 0.0).astype(np.float32)
    texture = np.full((size, size, 3), 0.6, np.float32)
    patch = np.zeros((size, size), bool)
    patch[50:70, 30:50] = True
    patch &= confidence > 0
    texture[patch] = (0.0, 0.0, 1.0)                      # the occluder, seen on the left side only
    # texel_screen = the texel grid itself; the mask says "not skin" on the patch.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    skin = SkinMask(prob=np.where(patch, 0.0, 1.0).astype(np.float32))
    conf, occluded = apply_skin_mask(confidence, np.dstack([xx, yy]), skin, min_confidence=0.05)
    assert occluded[patch].all() and (conf[patch] == 0).all()
    texture = np.where((conf > 0)[..., None], texture, 0.0)
    unwrap = UnwrapResult(texture=texture, confidence=conf, position=np.zeros((size, size, 3), np.float32),
                          layout_mask=layout, stem="t", info={}, occluded=occluded)
    result = get_method("mirror").load(model).complete(unwrap)
    partner = patch[:, ::-1]
    assert not (result.provenance[patch] == VISIBLE).any()
    assert not (result.provenance[partner] == MIRRORED).any()
    assert (result.texture[patch | partner][:, 2] < 0.8).all()   # no blue anywhere it could have gone


def test_skin_mask_files_round_trip(astronaut_path, landmarker, model, tmp_path):
    photo = load_photo(astronaut_path)
    fit = fit_photo(photo, landmarker, model=model)[0]
    save_fit(fit, photo.rgb, tmp_path, model)
    assert (tmp_path / "skin_mask.png").is_file() and (tmp_path / "skin_overlay.png").is_file()
    loaded = FitResult.load(tmp_path / "fit.json")
    assert np.abs(loaded.skin.prob - fit.skin.prob).max() <= 1 / 255 + 1e-6
    unwrap = unwrap_photo(photo.rgb, loaded, model=model, uv_size=256)
    unwrap.save(tmp_path)
    assert (UnwrapResult.load(tmp_path, model).occluded == unwrap.occluded).all()
    # A fit without the mask removes the stale files, so unwrap cannot pick up an old mask.
    save_fit(fit_photo(photo, landmarker, model=model, occlusion_mask=False)[0], photo.rgb, tmp_path, model)
    assert FitResult.load(tmp_path / "fit.json").skin is None
    assert not (tmp_path / "skin_mask.png").exists()


@pytest.fixture(scope="module")
def mirror_results(astronaut_path, tmp_path_factory):
    """`complete --method mirror --uv-size 256` result folders of the astronaut, with and without the mask."""
    from stages.complete import CompleteOptions, Completer

    folders = {}
    for mask in (True, False):
        out = tmp_path_factory.mktemp(f"mirror_mask_{mask}")
        Completer(CompleteOptions(method="mirror", uv_size=256, glb=False, previews=False,
                                  occlusion_mask=mask)).run(astronaut_path, out)
        folders[mask] = out
    return folders


def test_evaluate_occlusion_flag_adds_the_protocol_metrics(mirror_results, model, tmp_path):
    import json

    from typer.testing import CliRunner

    from facetex_cli.main import app
    from stages.evaluate.occlusion import OCCLUDERS, run_occlusion_protocol

    def evaluate(folder, out, *flags):
        result = CliRunner().invoke(app, ["evaluate", str(folder), "-o", str(out), "--no-identity", *flags])
        assert result.exit_code == 0, result.output
        return json.loads((out / "metrics.json").read_text())

    # Off by default: no extra completions, no occlusion metrics.
    plain = evaluate(mirror_results[True], tmp_path / "plain")
    assert "leak_rate" not in plain["per_image"]["astronaut"]["metrics"]
    assert plain["settings"]["occlusion"] == "off (--no-occlusion)"

    data = evaluate(mirror_results[True], tmp_path / "masked", "--occlusion")
    metrics = data["per_image"]["astronaut"]["metrics"]
    # The values are the protocol's own (means over the occluders, same method, mask and UV size).
    folder = mirror_results[True] / "astronaut"
    fit = FitResult.load(folder / "fit.json")
    scores = run_occlusion_protocol(fit.load_fitted_photo(), fit, model, get_method("mirror").load(model),
                                    mask=True, uv_size=256)
    assert metrics["leak_rate"] == pytest.approx(np.mean([scores[k]["leak"] for k in OCCLUDERS]), abs=1e-9)
    assert metrics["occlusion_psnr"] == pytest.approx(np.mean([scores[k]["occlusion_psnr"] for k in OCCLUDERS]),
                                                      abs=1e-6)
    assert metrics["leak_rate"] < 0.15
    assert {"occlusion_psnr", "leak_rate"} <= set(data["aggregate"])
    assert data["settings"]["occlusion"]["occluders"] == list(OCCLUDERS)
    html = (tmp_path / "masked" / "report.html").read_text()
    assert "leak_rate" in html and "occlusion_psnr" in html
    # A folder completed without the mask is scored without it: the occluders leak.
    unmasked = evaluate(mirror_results[False], tmp_path / "unmasked", "--occlusion")["per_image"]["astronaut"]
    assert unmasked["metrics"]["leak_rate"] > 0.8
    assert unmasked["metrics"]["occlusion_psnr"] < metrics["occlusion_psnr"] - 3


class _InjectedHands(SkinSegmenter):
    """The real selfie graph, and a palm detector that 'finds' the given hand (photo pixels)."""

    def __init__(self, hand_px: np.ndarray | None, window: tuple[int, int, int, int], crop_scale: float):
        super().__init__(hands=False, background=True)
        self.hand_px, self.window, self.crop_scale = hand_px, window, crop_scale

    def hands(self, crop: np.ndarray) -> list[np.ndarray]:
        if self.hand_px is None:
            return []
        return [(self.hand_px - self.window[:2]) * self.crop_scale]


def test_detected_hand_is_rejected_even_in_the_face_colour(occluded_render):
    """A hand in the face's own colour passes the colour model; the hand detector's result removes it
    (and wins over the keep rule for the lips it covers). The detector result is injected: the
    MediaPipe palm detector does not fire on a hand drawn from shapes."""
    _, _, inside, fit, clean = occluded_render
    p = fit.landmarks[:, :2]
    width = float(p[454, 0] - p[234, 0])
    skin = np.median(clean[(clean.shape[0] * 45) // 100:(clean.shape[0] * 55) // 100,
                           int(p[234, 0] + 0.2 * width):int(p[454, 0] - 0.2 * width)].reshape(-1, 3), axis=0)
    image, hand = clean.copy(), np.zeros(clean.shape[:2], np.uint8)
    palm = (int(p[152, 0]), int(p[152, 1]))
    for canvas, value in ((image, tuple(int(v) for v in skin)), (hand, 1)):
        cv2.ellipse(canvas, palm, (int(0.25 * width), int(0.2 * width)), 0, 0, 360, value, -1)
        for i in range(4):  # fingers up over the mouth
            x = int(palm[0] + (-0.18 + 0.12 * i) * width)
            cv2.line(canvas, (x, palm[1]), (x, int(p[13, 1] - 0.05 * width)), value, int(0.08 * width))
    hand = hand.astype(bool) & inside
    # 21 "landmarks" on the drawn hand's outline, as the hand model would return them.
    contour = cv2.findContours(hand.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0][:, 0]
    points = contour[np.linspace(0, len(contour) - 1, 21).astype(int)].astype(np.float64)
    window = face_window(fit.landmarks, *clean.shape[:2])
    scale = min(1.0, WORK_SIDE / max(window[2] - window[0], window[3] - window[1]))

    missed = segment_skin(image, fit.landmarks, _InjectedHands(None, window, scale)).prob
    found = segment_skin(image, fit.landmarks, _InjectedHands(points, window, scale))
    assert (missed[hand] >= REJECT_BELOW).mean() > 0.5      # colour alone keeps most of it
    assert (found.prob[hand] < REJECT_BELOW).mean() > 0.95  # the detected hand is rejected
    assert found.info["hands"] == 1
    # One finger across the lips leaves most of the skin ring around them clear, so the keep rule
    # alone would keep the lips whole; the detected finger still wins over it.
    lips = np.zeros(hand.shape, np.uint8)
    cv2.fillConvexPoly(lips, cv2.convexHull(p[list(KEEP_REGIONS["lips"])].astype(np.int32)), 1)
    finger, tip = np.zeros(hand.shape, np.uint8), (int(p[13, 0]), int(p[2, 1]))
    image = clean.copy()
    for canvas, value in ((image, tuple(int(v) for v in skin)), (finger, 1)):
        cv2.line(canvas, (tip[0], int(p[152, 1])), tip, value, int(0.06 * width))
    points = np.array([[tip[0] + dx, y] for y in np.linspace(tip[1], p[152, 1], 7)
                       for dx in (-0.02 * width, 0, 0.02 * width)])
    on_lips = (finger > 0) & (lips > 0)
    crossed = segment_skin(image, fit.landmarks, _InjectedHands(points, window, scale))
    assert "lips" in crossed.info["kept_regions"]
    assert (crossed.prob[on_lips] < REJECT_BELOW).mean() > 0.9
    eyes = np.zeros(hand.shape, np.uint8)
    for name in ("right_eye", "left_eye"):
        cv2.fillConvexPoly(eyes, cv2.convexHull(p[list(KEEP_REGIONS[name])].astype(np.int32)), 1)
    assert (found.prob[eyes > 0] >= REJECT_BELOW).mean() > 0.95


#: Stated bound for the edge step: share of a skin-toned hand's pixels (inside the face oval) rejected.
HAND_REJECTED_MIN = 0.8


def test_skin_toned_hand_is_cut_off_by_its_outline(shared_faces, landmarker, model, monkeypatch):
    """A darker skin-toned hand (the protocol's shape and palette; the palm detector does not fire on
    drawn shapes, so none is injected) reads as shaded skin to the colour model; its outline, a
    strong edge across the chin and mouth where the face has none, cuts it off from the central
    face and it is rejected. A London *train* photo (never a hold-out person)."""
    import stages.occlusion as occlusion
    from stages.evaluate.occlusion import draw_occluder
    from stages.occlusion import FACE_OVAL

    photo = load_photo(shared_faces / "london" / "neutral" / "001_03.jpg")
    fit = fit_photo(photo, landmarker, model=model, occlusion_mask=False)[0]
    image, hand = draw_occluder(photo.rgb, fit.landmarks, "hand", seed=1)
    oval = np.zeros(hand.shape, np.uint8)
    cv2.fillPoly(oval, [fit.landmarks[list(FACE_OVAL), :2].astype(np.int32)], 1)
    hand &= oval > 0
    window = face_window(fit.landmarks, *photo.rgb.shape[:2])
    scale = min(1.0, WORK_SIDE / max(window[2] - window[0], window[3] - window[1]))
    no_detector = _InjectedHands(None, window, scale)

    cut = segment_skin(image, fit.landmarks, no_detector)
    assert (cut.prob[hand] < REJECT_BELOW).mean() > HAND_REJECTED_MIN
    assert {"right_eye", "left_eye", "right_brow", "left_brow"} <= set(cut.info["kept_regions"])
    # Without the edge step the colour model keeps most of the hand (what the step is for).
    monkeypatch.setattr(occlusion, "_edge_cut", lambda lab, prob, *a: (np.zeros(prob.shape, bool),) * 2)
    colour_only = segment_skin(image, fit.landmarks, no_detector)
    assert (colour_only.prob[hand] >= REJECT_BELOW).mean() > 0.5


def _apply_skin_mask_numpy(confidence, texel_screen, skin, min_confidence):
    """apply_skin_mask's whole-layout numpy formulation, which the seen-texel kernel replaced."""
    import cv2

    from stages.occlusion import FEATHER_FRACTION, REJECT_BELOW

    p = skin.sample(texel_screen)
    seen = confidence > 0
    rejected = seen & (p < REJECT_BELOW)
    feather = max(1.0, FEATHER_FRACTION * confidence.shape[0])
    ramp = np.ones_like(confidence)
    if rejected.any():
        ramp = np.clip(cv2.distanceTransform((~rejected).astype(np.uint8), cv2.DIST_L2, 3) / feather - 1.0, 0.0, 1.0)
    t = np.clip((p - REJECT_BELOW) / 0.3, 0.0, 1.0)
    out = np.where(rejected, 0.0, confidence * t * t * (3 - 2 * t) * ramp).astype(np.float32)
    out[out < min_confidence] = 0.0
    return out, seen & (out <= 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_skin_mask_same_bits_as_the_whole_layout_formulation(dtype):
    """Only the seen texels are sampled and weighed now: the same confidence bits and occluded texels
    as the whole-layout numpy formulation, with rejections, feathering, the threshold and texels
    landing outside the photo."""
    rng = np.random.default_rng(3)
    for trial in range(6):
        size = 128 if trial % 2 else 200
        confidence = np.zeros((size, size), np.float32)
        confidence[10:110, 20:120] = rng.uniform(0.0, 1.0, (100, 100)) * (rng.uniform(size=(100, 100)) < 0.8)
        texel_screen = rng.uniform(-4.0, 70.0, (size, size, 3)).astype(dtype)
        prob = cv2_blur(rng.uniform(0.0, 1.0, (64, 64)).astype(np.float32))
        skin = SkinMask(prob=prob)
        want = _apply_skin_mask_numpy(confidence, texel_screen, skin, 0.05 * trial)
        got = apply_skin_mask(confidence, texel_screen, skin, 0.05 * trial)
        assert want[1].any() and not want[1].all()
        assert got[0].dtype == np.float32 and np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    # Clear skin keeps a confidence exactly at the threshold (only below it is unseen).
    at = np.full((64, 64), 0.2, np.float32)
    at[:, :8] = 0.1
    clear_skin = SkinMask(prob=np.ones((16, 16), np.float32))
    kept, dropped = apply_skin_mask(at, np.full((64, 64, 3), 8.0, dtype), clear_skin, 0.2)
    assert (kept[:, 8:] == np.float32(0.2)).all() and not kept[:, :8].any() and dropped[:, :8].all()
    empty = apply_skin_mask(np.zeros((64, 64), np.float32), np.zeros((64, 64, 3), dtype), skin, 0.1)
    assert not empty[0].any() and not empty[1].any()


def cv2_blur(image):
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 2.0) * 1.6 - 0.3


_TRAIN_FITS: dict = {}


def _train_photo(shared_faces, landmarker, model, name: str):
    """A London *train* photo (never a hold-out person) and its fit without a mask (cached per module)."""
    if name not in _TRAIN_FITS:
        photo = load_photo(shared_faces / "london" / "neutral" / f"{name}.jpg")
        _TRAIN_FITS[name] = photo, fit_photo(photo, landmarker, model=model, occlusion_mask=False)[0]
    return _TRAIN_FITS[name]


def _no_detector(photo, fit) -> SkinSegmenter:
    window = face_window(fit.landmarks, *photo.rgb.shape[:2])
    return _InjectedHands(None, window, min(1.0, WORK_SIDE / max(window[2] - window[0], window[3] - window[1])))


def _region(fit, shape, name: str) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(out, cv2.convexHull(fit.landmarks[list(KEEP_REGIONS[name]), :2].astype(np.int32)), 1)
    return out > 0


def test_lips_under_a_hand_are_not_kept(shared_faces, landmarker, model):
    """The lips are kept whole when most of the skin ring around them is skin; a hand over the chin
    reaching up over the lower lip leaves the upper ring clear, so the rule alone would restore the
    lips' pixels under the fingers. The part of the lips next to a covered stretch of ring follows
    the rejection (protocol hand, seed 4: 92 % of the lips under it were kept before, 20 % now)."""
    from stages.evaluate.occlusion import draw_occluder

    photo, fit = _train_photo(shared_faces, landmarker, model, "004_03")
    image, hand = draw_occluder(photo.rgb, fit.landmarks, "hand", seed=4)
    skin = segment_skin(image, fit.landmarks, _no_detector(photo, fit))
    lips = _region(fit, hand.shape, "lips")
    assert "lips" in skin.info["kept_regions"]
    assert (skin.prob[lips & hand] < REJECT_BELOW).mean() > 0.7  # (0.80 now, 0.08 without the local rule)
    # Lip pixels away from the hand (more than a ring width above it) are still kept.
    clear = lips & ~cv2.dilate(hand.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    assert clear.sum() > 200 and (skin.prob[clear] >= REJECT_BELOW).mean() > 0.95


@pytest.mark.parametrize("name, seed", [("004_03", 5), ("041_03", 4)])
def test_hand_stays_a_region_of_its_own(shared_faces, landmarker, model, name, seed):
    """A skin-toned hand over the chin that the edge step used to join to the face: through a
    one-pixel gap in its outline at a fingertip (004_03, seed 5), or through the neck below the
    face and the lips (041_03, seed 4; the oval's border and the kept features are barriers). Before,
    all of either hand was kept; now it is cut off, and the clean photo keeps its features."""
    from stages.evaluate.occlusion import draw_occluder
    from stages.occlusion import FACE_OVAL

    photo, fit = _train_photo(shared_faces, landmarker, model, name)
    image, hand = draw_occluder(photo.rgb, fit.landmarks, "hand", seed=seed)
    oval = np.zeros(hand.shape, np.uint8)
    cv2.fillPoly(oval, [fit.landmarks[list(FACE_OVAL), :2].astype(np.int32)], 1)
    skin = segment_skin(image, fit.landmarks, _no_detector(photo, fit))
    assert (skin.prob[hand & (oval > 0)] < REJECT_BELOW).mean() > HAND_REJECTED_MIN
    clean = segment_skin(photo.rgb, fit.landmarks, _no_detector(photo, fit))
    assert {"right_eye", "left_eye", "right_brow", "left_brow", "lips"} <= set(clean.info["kept_regions"])
    assert clean.info["rejected_face_fraction"] < 0.15


def test_seed_statistics_match_numpy():
    from stages.occlusion import _covariance, _quantile

    x = np.random.default_rng(0).normal(size=(801, 3))
    for q in (0.0, 0.5, 0.6, 1.0):
        assert _quantile(x[:, 0], q) == pytest.approx(np.quantile(x[:, 0], q), abs=1e-12)
    assert _quantile(x[:800, 1], 0.5) == pytest.approx(np.median(x[:800, 1]), abs=1e-12)
    np.testing.assert_allclose(_covariance(x), np.cov(x.T), atol=1e-12)
