"""Learned UV sampler vs the geometric unwrap on held-out photos (no ground truth needed).

For every unwrap folder given (``fit.json`` + the geometric ``uv_texture.png``, with the photo that
fit.json names on disk), the learned sampler unwraps the same photo from the fit's 2D landmarks
only, at the geometric unwrap's UV size, and is compared with it:

- ``psnr`` / ``l1``: colour agreement on texels both unwraps see (PSNR over all those texels of the
  folder; colours in [0, 1]); ``psnr_common``: the same on the texels that the learned sampler, the
  baseline and the geometric unwrap all see (a like-for-like comparison of the two methods);
- ``iou``: visibility agreement (learned visible vs geometric ``confidence > 0``) on the layout;
- ``err_px``: distance between the learned and the geometric sampling positions in photo pixels,
  on texels the geometric unwrap sees, also as a fraction of the inter-ocular distance (``err_iod``).

The same numbers are printed for the **mean-shape baseline**: the face model's frontal mean shape
placed by the same 2D alignment (no network, no fit; visibility = texels whose frontal mean-shape
normal faces the camera), i.e. where the sampler starts from. London hold-out people only
(person % 5 == 0) should be passed, e.g. ``bench_out/completion/cache/london-holdout``.

    python benchmarks/bench_sampler.py --model MODEL_DIR bench_out/completion/cache/london-holdout
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.core.face_model import load_builtin_face_model  # noqa: E402
from stages.core.image_io import load_photo  # noqa: E402
from stages.core.splits import london_split  # noqa: E402
from stages.core.uv import uv_layout  # noqa: E402
from stages.fit import FitResult  # noqa: E402
from stages.learned_unwrap import LearnedUnwrapper  # noqa: E402
from stages.models.alignment import (  # noqa: E402
    ALIGN_GROUPS,
    alignment_matrix,
    apply_affine,
    frontal_mean_shape,
    hull_mask,
    invert_affine,
)
from stages.unwrap import MIN_CONFIDENCE, UnwrapResult  # noqa: E402


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-10))) if a.size else float("nan")


def _compare(texture: np.ndarray, visible: np.ndarray, xy: np.ndarray, geo: UnwrapResult, geo_xy: np.ndarray,
             iod: float, common: np.ndarray) -> dict:
    """Metrics of one unwrap (``(S, S, 3)`` texture, ``(S, S)`` visible, ``(S, S, 2)`` photo positions).

    ``common``: ``(S, S)`` texels that every compared method and the geometric unwrap see (``psnr_common``).
    """
    layout = geo.layout_mask
    geo_vis = geo.visible & layout
    both = visible & geo_vis
    err = np.linalg.norm(xy - geo_xy, axis=-1)[geo_vis]
    union = (visible | geo_vis) & layout
    return {"psnr": _psnr(texture[both], geo.texture[both]),
            "psnr_common": _psnr(texture[common], geo.texture[common]),
            "l1": float(np.abs(texture[both] - geo.texture[both]).mean()) if both.any() else np.nan,
            "iou": float((both.sum()) / max(1, union.sum())), "err_px": float(err.mean()),
            "err_iod": float(err.mean() / iod), "both_texels": int(both.sum())}


def _baseline(rgb: np.ndarray, landmarks: np.ndarray, model, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frontal mean shape placed by the 2D alignment: texture, visibility, photo positions."""
    import cv2

    from stages.unwrap import _prefilter

    layout = uv_layout(model, size)
    crop = 256
    matrix = alignment_matrix(landmarks, model, crop)
    crop_xy = layout.interpolate(frontal_mean_shape(model) * crop).astype(np.float64)
    xy = apply_affine(invert_affine(matrix), crop_xy)
    normals = model.vertex_normals(np.asarray(model.vertices, dtype=np.float64))
    facing = layout.interpolate(normals)[..., 2] > MIN_CONFIDENCE
    mask = hull_mask(landmarks, matrix, crop)
    cx = np.clip(crop_xy[..., 0].astype(int), 0, crop - 1)
    cy = np.clip(crop_xy[..., 1].astype(int), 0, crop - 1)
    visible = layout.mask & facing & (mask[cy, cx] > 0)
    texel_px = float(np.ptp(landmarks[:468, 0])) / max(1.0, float(np.ptp(model.uv[:, 0])) * size)
    photo, factor = _prefilter(rgb, texel_px)
    colour = cv2.remap(photo, (xy[..., 0] * factor - 0.5).astype(np.float32),
                       (xy[..., 1] * factor - 0.5).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).astype(np.float32) / 255.0
    colour[~visible] = 0
    return colour, visible, xy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="unwrap folders, or roots holding <stem>/unwrap.json")
    parser.add_argument("--model", required=True, help="UV sampler model folder")
    parser.add_argument("--json", help="also write the per-folder numbers here")
    parser.add_argument("--allow-train", action="store_true", help="do not refuse London training people")
    args = parser.parse_args(argv)
    folders: list[Path] = []
    for entry in map(Path, args.folders):
        direct = (entry / "unwrap.json").is_file()
        folders += [entry] if direct else sorted(p.parent for p in entry.glob("*/unwrap.json"))
    if not folders:
        print("error: no unwrap folders found", file=sys.stderr)
        return 2
    model = load_builtin_face_model()
    unwrapper = LearnedUnwrapper(args.model, face_model=model)
    rows = []
    start = time.perf_counter()
    for folder in folders:
        fit = FitResult.load(folder / "fit.json")
        if london_split(fit.source) == "train" and not args.allow_train:
            print(f"error: {folder} is a London training person; pass hold-out folders (or --allow-train)",
                  file=sys.stderr)
            return 2
        geo = UnwrapResult.load(folder, model)
        photo = load_photo(fit.source)
        k = photo.width / fit.image_size[0]
        landmarks = fit.landmarks[:, :2] * k
        size = geo.size
        layout = uv_layout(model, size)
        geo_xy = layout.interpolate((fit.pose.to_screen(fit.vertices) * k)[:, :2]).astype(np.float64)
        eyes = np.stack([landmarks[list(g)].mean(axis=0) for g in ALIGN_GROUPS[:2]])
        iod = float(np.linalg.norm(eyes[0] - eyes[1]))
        t = time.perf_counter()
        learned = unwrapper.unwrap(photo.rgb, landmarks, uv_size=size, stem=fit.stem, source=fit.source)
        seconds = time.perf_counter() - t
        pred = unwrapper.predict(photo.rgb, landmarks, size)
        row = {"folder": str(folder), "yaw": round(fit.pose.euler[0], 1), "seconds": round(seconds, 3)}
        base_texture, base_visible, base_xy = _baseline(photo.rgb, landmarks, model, size)
        common = learned.visible & base_visible & geo.visible
        row["learned"] = _compare(learned.texture, learned.visible, pred["photo_xy"], geo, geo_xy, iod, common)
        row["baseline"] = _compare(base_texture, base_visible, base_xy, geo, geo_xy, iod, common)
        rows.append(row)
    print(f"{len(rows)} folders, UV {size}^2, sampler {args.model}, "
          f"{time.perf_counter() - start:.0f} s")
    keys = ("psnr", "psnr_common", "l1", "iou", "err_px", "err_iod")
    print(f"{'method':<22}" + "".join(f"{k:>12}" for k in keys))
    for name in ("baseline", "learned"):
        label = "mean-shape baseline" if name == "baseline" else "learned sampler"
        means = [np.nanmean([r[name][k] for r in rows]) for k in keys]
        print(f"{label:<22}" + "".join(f"{m:>12.4f}" for m in means))
    worst = min(rows, key=lambda r: r["learned"]["psnr"])
    print(f"worst learned PSNR {worst['learned']['psnr']:.2f} dB on {worst['folder']} (yaw {worst['yaw']}); "
          f"median {np.median([r['learned']['psnr'] for r in rows]):.2f} dB; "
          f"learned unwrap {np.mean([r['seconds'] for r in rows]):.3f} s per face")
    wins = sum(r["learned"]["psnr_common"] > r["baseline"]["psnr_common"] for r in rows)
    closer = sum(r["learned"]["err_px"] < r["baseline"]["err_px"] for r in rows)
    print(f"learned beats the baseline on {wins}/{len(rows)} faces (psnr_common), closer to the geometric "
          f"positions on {closer}/{len(rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
