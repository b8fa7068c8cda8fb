"""Face model benchmark: ``--face-model ict`` against ``mediapipe`` on the same photos, same region.

For each photo and each model: fit (wall and process CPU time, MediaPipe detection timed apart),
unwrap (timed warm at ``--time-uv-size``, the layout cached; its one-off build per process timed too), then at
``--uv-size``: the share of the layout the photo sees, the ``mirror`` completion's shares (seen,
mirrored, prior), the reprojection error and, on near-frontal photos, the hidden-texel protocol of
``facetex evaluate`` (:mod:`stages.evaluate.protocol`).

The face region is the same photo pixels for both models: those inside the silhouette of the
built-in (mediapipe) face mask fitted to the photo. Reprojection is scored on those pixels (minus
what the skin mask rejects); hidden texels count when the photo pixel they were seen at lies there.
So the ICT head's ears, neck and scalp do not enter the comparison; the face does.

    python benchmarks/bench_ict.py [--photos P ...] [--london 4] [--wild 4] [--json out.json]
        [--models mediapipe ict bfm flame]   # bfm / flame: after `facetex assets add` (or bfm:PATH)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED = REPO.parent / "shared" / "faces"
MODELS = ("mediapipe", "ict")
COLUMNS = ("fit_ms", "unwrap_ms", "fit_cpu_ms", "unwrap_cpu_ms", "visible", "mirrored", "prior", "reproj_psnr",
           "reproj_l1",
           "hidden_psnr", "hidden_l1", "hidden_texels")


def default_photos(n_london: int, n_wild: int) -> list[Path]:
    """The first ``n_london`` London hold-out photos (neutral) and the first ``n_wild`` wild photos."""
    from stages.core.splits import london_split

    london = [p for p in sorted((SHARED / "london" / "neutral").glob("*.jpg")) if london_split(p) == "holdout"]
    wild = sorted(p for p in (SHARED / "wild").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    return london[:n_london] + wild[:n_wild]


def face_pixels(fit_mp, height: int, width: int):
    """``(H, W)`` bool: the photo pixels inside the fitted built-in face mask."""
    from stages.core.face_model import load_builtin_face_model
    from stages.core.raster import rasterize

    return rasterize(fit_mp.screen_vertices(), load_builtin_face_model().triangles, height, width).mask


def texel_in_face(model, fit, size: int, face_px):
    """``(S, S)`` bool: layout texels whose point on the fitted surface projects into ``face_px``."""
    import numpy as np

    from stages.core.uv import uv_layout

    layout = uv_layout(model, size)
    screen = layout.interpolate(fit.pose.to_screen(fit.vertices))
    h, w = face_px.shape
    x, y = np.floor(screen[..., 0]).astype(int), np.floor(screen[..., 1]).astype(int)
    inside = layout.mask & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    out = np.zeros_like(inside)
    out[inside] = face_px[y[inside], x[inside]]
    return out


def score(model, photo, fit, face_px, args, landmarker, fill) -> dict:
    import numpy as np

    from stages.core.provenance import MIRRORED, MODEL, VISIBLE
    from stages.core.raster import crop_window
    from stages.evaluate import metrics as M
    from stages.evaluate.protocol import HiddenTexelCase, is_near_frontal, run_hidden_texel_protocol, score_hidden
    from stages.evaluate.stage import reprojection
    from stages.fit import fit_photo
    from stages.unwrap import unwrap_photo

    row = {}
    start, cpu = time.perf_counter(), time.process_time()
    fit_photo(photo, landmarker, model=model)
    row["fit_ms"], row["fit_cpu_ms"] = 1000 * (time.perf_counter() - start), 1000 * (time.process_time() - cpu)
    unwrap_photo(photo, fit, model=model, uv_size=args.time_uv_size)           # builds the layout once
    start, cpu = time.perf_counter(), time.process_time()
    unwrap_photo(photo, fit, model=model, uv_size=args.time_uv_size)
    row["unwrap_ms"], row["unwrap_cpu_ms"] = 1000 * (time.perf_counter() - start), 1000 * (time.process_time() - cpu)

    unwrap = unwrap_photo(photo, fit, model=model, uv_size=args.uv_size)
    completion = fill.complete_fitted(unwrap, fit, photo.rgb)
    n = max(1, int(unwrap.layout_mask.sum()))
    for key, code in (("visible", VISIBLE), ("mirrored", MIRRORED), ("prior", MODEL)):
        row[key] = float((completion.provenance == code).sum()) / n

    height, width = photo.rgb.shape[:2]
    erosion_px = int(unwrap.info["erosion_px"])
    _, crop, render, mask = reprojection(photo.rgb, completion.texture, fit, model, erosion_px)
    x0, y0, x1, y1 = crop_window(fit.pose.to_screen(fit.vertices), height, width, margin=erosion_px + 2)
    mask = mask & face_px[y0:y1, x0:x1]
    row["reproj_psnr"], row["reproj_l1"] = M.psnr(render, crop, mask), M.l1(render, crop, mask)

    row["hidden_psnr"] = row["hidden_l1"] = float("nan")
    row["hidden_texels"] = 0
    if is_near_frontal(fit):
        examples: dict = {}
        run_hidden_texel_protocol(unwrap, fit, model, fill, examples=examples, photo=photo.rgb)
        in_face = texel_in_face(model, fit, args.uv_size, face_px)
        psnrs, l1s = [], []
        for case, completed in examples.values():
            face_case = HiddenTexelCase(view=case.view, partial=case.partial, hidden=case.hidden & in_face,
                                        kept=case.kept)
            if face_case.hidden.any():
                s = score_hidden(completed, unwrap.texture, face_case)
                psnrs.append(s["psnr"])
                l1s.append(s["l1"])
                row["hidden_texels"] += int(face_case.hidden.sum())
        if psnrs:
            row["hidden_psnr"], row["hidden_l1"] = float(np.mean(psnrs)), float(np.mean(l1s))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="*", type=Path, help="default: London hold-out + wild")
    parser.add_argument("--london", type=int, default=4, help="London hold-out photos (neutral), first N")
    parser.add_argument("--wild", type=int, default=4, help="wild photos, first N")
    parser.add_argument("--uv-size", type=int, default=512, help="UV size of the quality numbers")
    parser.add_argument("--time-uv-size", type=int, default=1024, help="UV size of the unwrap timing")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="--face-model names; the first must be mediapipe (it defines the face region)")
    args = parser.parse_args()

    from facetex_cli.batch import quiet_native_stderr
    from stages.completion import get_method
    from stages.core.errors import FacetexError
    from stages.core.ict import load_face_model
    from stages.core.image_io import load_photo
    from stages.core.uv import uv_layout
    from stages.fit import MediaPipeLandmarker, fit_photo

    photos = args.photos or default_photos(args.london, args.wild)
    if not photos:
        print(f"no photos (is {SHARED} there?): pass --photos", file=sys.stderr)
        return 2
    if args.models[0] != "mediapipe":
        parser.error("--models must start with mediapipe (its fitted mask is the face region)")
    models = {name: load_face_model(name) for name in args.models}
    layout_ms = {}
    for name, model in models.items():
        start = time.perf_counter()
        uv_layout(model, args.time_uv_size)
        layout_ms[name] = 1000 * (time.perf_counter() - start)
    fills = {name: get_method("mirror").load(model) for name, model in models.items()}
    with quiet_native_stderr():
        landmarker = MediaPipeLandmarker()
    rows: dict[str, dict[str, dict]] = {}
    for path in photos:
        try:
            photo = load_photo(path)
            start = time.perf_counter()
            with quiet_native_stderr():
                landmarker.detect(photo.rgb)
            detect_ms = 1000 * (time.perf_counter() - start)
            fits = {name: fit_photo(photo, landmarker, model=model)[0] for name, model in models.items()}
        except FacetexError as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        face_px = face_pixels(fits["mediapipe"], *photo.rgb.shape[:2])
        rows[path.name] = {}
        for name, model in models.items():
            row = score(model, photo, fits[name], face_px, args, landmarker, fills[name])
            row["detect_ms"] = detect_ms
            rows[path.name][name] = row
            print(path.name, name, " ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)

    print(f"\n{len(rows)} photos; UV {args.uv_size} (timing at {args.time_uv_size}; *_cpu_ms: process CPU time, "
          f"robust to load; load average {os.getloadavg()[0]:.1f}); medians over photos; "
          f"layout build once per process: " + ", ".join(f"{k} {v:.0f} ms" for k, v in layout_ms.items()) + "\n")
    print("| model | detect_ms | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * (len(COLUMNS) + 1))
    for name in args.models:
        cells = []
        for column in ("detect_ms", *COLUMNS):
            values = [r[name][column] for r in rows.values() if r[name][column] == r[name][column]]
            cells.append(f"{statistics.median(values):.3g}" if values else "n/a")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"layout_ms": layout_ms, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
