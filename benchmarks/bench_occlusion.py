"""Occlusion benchmark: synthetic occluders on near-frontal photos, with and without the skin mask.

For each near-frontal photo of each set (fits cached by ``bench_completion.py`` under
``bench_out/completion/cache`` when present), paste each occluder of
:data:`stages.evaluate.occlusion.OCCLUDERS`, complete the occluded photo and the clean one with the
same method, and report the medians over photos of ``occlusion_psnr`` and ``leak``
(:mod:`stages.evaluate.occlusion`): ``before`` = ``--no-occlusion-mask``, ``after`` = the mask.
Also reports the skin mask's cost per photo: median over the photos of the best of 5 timed
``segment_skin`` runs on the clean photo (the best run is the least disturbed by other jobs on a
shared machine).

    python benchmarks/bench_occlusion.py [--sets london-holdout wild] [--method mirror]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_completion import SHARED, photo_sets  # noqa: E402


def _timed_ms(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return 1000 * (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["london-holdout", "wild"])
    parser.add_argument("--method", default="mirror")
    parser.add_argument("--uv-size", type=int, default=512)
    parser.add_argument("--work", type=Path, default=REPO / "bench_out")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--seed-per-photo", action="store_true",
                        help="vary the occluders' colours, widths and sides per photo (default: the same seeds on "
                             "every photo, so e.g. the hand is always the darkest palette tone)")
    args = parser.parse_args()

    from facetex_cli.batch import quiet_native_stderr
    from stages.completion import get_method
    from stages.core.errors import FacetexError
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import load_photo
    from stages.evaluate.occlusion import OCCLUDERS, run_occlusion_protocol
    from stages.evaluate.protocol import is_near_frontal
    from stages.fit import FitResult, MediaPipeLandmarker, fit_photo
    from stages.occlusion import default_segmenter, segment_skin

    if not SHARED.is_dir():
        print(f"{SHARED} not found", file=sys.stderr)
        return 2
    model = load_builtin_face_model()
    method = get_method(args.method).load(model)
    landmarker = None
    summary = {}
    mask_ms = []
    for set_name, photos in photo_sets(args.sets).items():
        rows = {"before": [], "after": []}
        for index, path in enumerate(photos):
            seed = index * len(OCCLUDERS) if args.seed_per_photo else 0
            cached = args.work / "completion" / "cache" / set_name / path.stem / "fit.json"
            try:
                photo = load_photo(path)
                if cached.is_file():
                    fit = FitResult.load(cached)
                else:
                    with quiet_native_stderr():
                        landmarker = landmarker or MediaPipeLandmarker()
                        fit = fit_photo(photo, landmarker, model=model, occlusion_mask=False)[0]
            except FacetexError as exc:
                print(f"skipped {path.name}: {exc}", file=sys.stderr)
                continue
            if not is_near_frontal(fit):
                continue
            with quiet_native_stderr():
                default_segmenter()
                mask_ms.append(min(_timed_ms(segment_skin, photo.rgb, fit.landmarks) for _ in range(5)))
                for label, mask in (("before", False), ("after", True)):
                    rows[label].append(run_occlusion_protocol(photo.rgb, fit, model, method, mask=mask,
                                                              uv_size=args.uv_size, seed=seed))
        n = len(rows["after"])
        print(f"\n{set_name}: {n} near-frontal photos x {len(OCCLUDERS)} occluders, --method {args.method}, "
              f"UV {args.uv_size}; medians over photos\n")
        print("| occluder | PSNR before | PSNR after | leak before | leak after |")
        print("|---|---:|---:|---:|---:|")
        summary[set_name] = {"photos": n}
        for kind in (*OCCLUDERS, "all"):
            cell = {}
            for label in ("before", "after"):
                for metric in ("occlusion_psnr", "leak"):
                    values = [statistics.mean(r[k][metric] for k in OCCLUDERS) if kind == "all" else r[kind][metric]
                              for r in rows[label]]
                    values = [v for v in values if v == v]
                    cell[f"{metric}_{label}"] = statistics.median(values) if values else float("nan")
            summary[set_name][kind] = cell
            print(f"| {kind} | {cell['occlusion_psnr_before']:.2f} | {cell['occlusion_psnr_after']:.2f} | "
                  f"{cell['leak_before']:.1%} | {cell['leak_after']:.1%} |")
    if mask_ms:
        summary["mask_ms_median"] = statistics.median(mask_ms)
        print(f"\nskin mask: median {statistics.median(mask_ms):.1f} ms per photo over {len(mask_ms)} photos "
              "(segment_skin on the clean photo, models loaded, best of 5 runs per photo, this machine)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
