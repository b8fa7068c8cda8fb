"""UVAPM benchmark (issue 13): hidden-texel PSNR/SSIM and detail ratio of ``uvapm``, albedo-space ``mirror``
and plain ``mirror``; lighting numbers and fit time of ``uvapm``.

Per photo set (``bench_completion.py``'s sets and fit/unwrap cache under ``--work``):

- hidden-texel protocol (``stages.evaluate.protocol``) on near-frontal photos; the photo is passed so
  ``uvapm`` fits to the kept texels only;
- detail ratio (``stages.evaluate.detail``) of each completion on the yaw+50 view: hidden texels =
  filled, kept texels = seen, skin of the layout;
- lighting, on every photo: the full ``uvapm`` fit's directional/ambient ratio ``|L[1:4]| / L[0]``
  (luminance-weighted), "side-lit" when the x term ``|L[3]| / L[0]`` is at least ``--side-lit``; on
  those, the left/right mean-luminance difference of the skin texels (the two halves of the UV
  layout's skin) of ``uv_albedo`` vs ``mirror``'s ``uv_complete`` (lower is better); on every photo,
  the reprojection PSNR of the albedo under the fitted light on the fitted skin pixels.

    python benchmarks/bench_uvapm.py [--sets wild london-holdout] [--limit N] [--iterations 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3] @ np.array([0.299, 0.587, 0.114])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["london-holdout", "wild"])
    parser.add_argument("--limit", type=int, default=None, help="first N photos per set")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--side-lit", type=float, default=0.08, help="|L_x| / L_0 at or above: side-lit")
    parser.add_argument("--work", type=Path, default=REPO / "bench_out" / "completion")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from benchmarks.bench_completion import photo_sets
    from stages.completion import get_method
    from stages.core.errors import FacetexError
    from stages.core.face_model import load_builtin_face_model
    from stages.evaluate.detail import detail_ratio
    from stages.evaluate.protocol import hide_texels, is_near_frontal, run_hidden_texel_protocol
    from stages.evaluate.stage import skin_uv_mask
    from stages.fit import FitResult
    from stages.unwrap import UnwrapResult

    torch.set_num_threads(2)
    model = load_builtin_face_model()
    methods = {"mirror": get_method("mirror").load(model),
               "mirror-albedo": get_method("mirror").load(model, albedo_space=True),
               "uvapm": get_method("uvapm").load(model, iterations=args.iterations)}
    summary = {}
    for set_name, photos in photo_sets(args.sets).items():
        photos = photos[: args.limit] if args.limit else photos
        rows = {m: [] for m in methods}
        lighting, fit_seconds = [], []
        for path in photos:
            cache = args.work / "cache" / set_name / path.stem
            try:
                fit = FitResult.load(cache / "fit.json")
                unwrap = UnwrapResult.load(cache, model)
                photo = fit.load_fitted_photo(cache / "fit.json")
            except FacetexError as exc:
                print(f"skipped {path.name}: {exc} (run bench_completion.py first to fill the cache)", file=sys.stderr)
                continue
            skin = skin_uv_mask(model, unwrap.size)
            start = time.perf_counter()
            full = methods["uvapm"].complete_fitted(unwrap, fit, photo)
            fit_seconds.append(full.info["fit"]["seconds"])
            light = np.asarray(full.extra_json["lighting.json"]["lighting_sh"])
            lum = light @ np.array([0.299, 0.587, 0.114])
            side = abs(lum[3]) / lum[0]
            record = {"photo": path.name, "directional_ratio": float(np.linalg.norm(lum[1:4]) / lum[0]),
                      "side_ratio": float(side), "reprojection_psnr": full.info["fit"]["reprojection_psnr"],
                      "seconds": time.perf_counter() - start}
            if side >= args.side_lit:
                half = unwrap.size // 2
                plain = methods["mirror"].complete_fitted(unwrap, fit, photo).texture
                for name, tex in (("albedo", full.extra_images["uv_albedo.png"]), ("mirror", plain)):
                    y = luminance(tex)
                    left, right = y[:, :half][skin[:, :half]].mean(), y[:, half:][skin[:, half:]].mean()
                    record[f"lr_difference_{name}"] = float(abs(left - right))
            lighting.append(record)
            if not is_near_frontal(fit):
                continue
            case = hide_texels(unwrap, fit, model, "yaw+50", 50.0, 0.0)
            for name, method in methods.items():
                scores = run_hidden_texel_protocol(unwrap, fit, model, method, photo=photo)
                completed = method.complete_fitted(case.partial, fit, photo).texture
                scores["detail_ratio"] = detail_ratio(completed, case.kept, case.hidden, skin)
                rows[name].append(scores)
        side_lit = [r for r in lighting if "lr_difference_albedo" in r]

        def med(values):
            values = [v for v in values if v == v]
            return statistics.median(values) if values else float("nan")

        result = {"photos": len(photos), "scored": len(rows["mirror"]),
                  "methods": {m: {k: med([r[k] for r in rs]) for k in ("hidden_psnr", "hidden_ssim", "detail_ratio")}
                              for m, rs in rows.items()},
                  "fit_seconds_median": med(fit_seconds),
                  "reprojection_psnr_median": med([r["reprojection_psnr"] for r in lighting]),
                  "side_lit": len(side_lit),
                  "lr_difference_albedo_median": med([r["lr_difference_albedo"] for r in side_lit]),
                  "lr_difference_mirror_median": med([r["lr_difference_mirror"] for r in side_lit]),
                  "per_photo_lighting": lighting}
        summary[set_name] = result
        print(f"\n{set_name}: {len(photos)} photos, {result['scored']} near-frontal scored")
        print("| method | hidden_psnr | hidden_ssim | detail_ratio (yaw+50) |\n|---|---:|---:|---:|")
        for m, v in result["methods"].items():
            print(f"| {m} | {v['hidden_psnr']:.2f} | {v['hidden_ssim']:.3f} | {v['detail_ratio']:.3f} |")
        print(f"uvapm fit seconds (median): {result['fit_seconds_median']:.2f}; reprojection PSNR of the albedo "
              f"under the fitted light (median): {result['reprojection_psnr_median']:.2f} dB; side-lit photos: "
              f"{len(side_lit)}, left/right luminance difference albedo {result['lr_difference_albedo_median']:.4f} "
              f"vs mirror {result['lr_difference_mirror_median']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
