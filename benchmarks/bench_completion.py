"""Completion benchmark: every registered ``complete`` method on the hidden-texel protocol.

For each photo: fit + unwrap once (cached under ``--work``, so a re-run resumes), then for every
method in the completion registry run the hidden-texel protocol of ``facetex evaluate`` (near-
frontal photos; yaw +-30, +-50 and pitch +30 simulated; scored on the texels the photo saw and
the simulated view hides) and time the fill. Prints one table per photo set: method x metric,
medians over photos (means over the five views per photo), and seconds per fill.

Defaults: the London Set people held out of every shipped model (``stages.core.splits``: both
expressions) and ``../shared/faces/wild``. Deterministic (no randomness in the protocol).

    python benchmarks/bench_completion.py [--sets london-holdout wild] [--methods mirror telea]
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
COLUMNS = ("hidden_psnr", "hidden_ssim", "hidden_l1", "hidden_seam", "seconds_per_fill")


def photo_sets(names: list[str]) -> dict[str, list[Path]]:
    from stages.core.splits import london_split

    sets = {}
    for name in names:
        if name == "london-holdout":
            files = sorted(SHARED.glob("london/*/*.jpg"))
            sets[name] = [f for f in files if london_split(f) == "holdout"]
        elif name == "wild":
            sets[name] = sorted(p for p in (SHARED / "wild").iterdir() if p.suffix.lower() in (".jpg", ".png"))
        else:
            folder = Path(name)
            sets[folder.name] = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return sets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["london-holdout", "wild"],
                        help="london-holdout, wild, or photo folders")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--uv-size", type=int, default=512)
    parser.add_argument("--work", type=Path, default=REPO / "bench_out" / "completion")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--unet-model", type=Path, help="model folder from `facetex train unet` for the unet method")
    parser.add_argument("--gan-model", type=Path, help="model folder from `facetex train texture-gan` for the gan "
                                                       "method (none ships: without it gan is skipped)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N near-frontal photos per set")
    args = parser.parse_args()

    from facetex_cli.batch import quiet_native_stderr
    from stages.completion import available_methods, get_method
    from stages.core.errors import FacetexError
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import load_photo
    from stages.evaluate.protocol import is_near_frontal, run_hidden_texel_protocol
    from stages.fit import FitResult, MediaPipeLandmarker, fit_photo, save_fit
    from stages.unwrap import UnwrapResult, unwrap_photo

    if not SHARED.is_dir() and any(s in ("london-holdout", "wild") for s in args.sets):
        print(f"{SHARED} not found: pass photo folders with --sets", file=sys.stderr)
        return 2
    model = load_builtin_face_model()
    fills = {}
    for name in args.methods or sorted(available_methods()):
        options = {"model_path": str(args.unet_model)} if name == "unet" and args.unet_model else {}
        if name == "gan" and args.gan_model:
            options = {"model_path": str(args.gan_model)}
        try:
            fills[name] = get_method(name).load(model, **options)
        except FacetexError as exc:   # e.g. a learned method without weights: say so, go on
            print(f"skipped method {name}: {exc}", file=sys.stderr)
    methods = list(fills)
    # Results are cached per method; a learned method's cache is keyed by its weights' checksum so a
    # retrained or newly shipped model is scored afresh.
    result_tags = {}
    if "unet" in fills:
        from stages.completion.unet import SHIPPED_GENERATOR
        from stages.core.checksums import file_sha256

        weights = (args.unet_model or SHIPPED_GENERATOR) / "weights.safetensors"
        result_tags["unet"] = f"unet-{file_sha256(weights)[:12]}"
    if "gan" in fills:
        from stages.core.checksums import file_sha256

        result_tags["gan"] = f"gan-{file_sha256(args.gan_model / 'weights.safetensors')[:12]}"
    landmarker = None
    summary: dict[str, dict] = {}
    for set_name, photos in photo_sets(args.sets).items():
        per_method: dict[str, list[dict]] = {m: [] for m in methods}
        frontal = 0
        for path in photos:
            cache = args.work / "cache" / f"{set_name}" / path.stem
            try:
                if not (cache / "unwrap.json").is_file():
                    with quiet_native_stderr():
                        landmarker = landmarker or MediaPipeLandmarker()
                        photo = load_photo(path)
                        fit = fit_photo(photo, landmarker, model=model)[0]
                    unwrap_photo(photo, fit, model=model, uv_size=args.uv_size).save(cache)
                    save_fit(fit, photo.rgb, cache, model)
                fit = FitResult.load(cache / "fit.json")
                unwrap = UnwrapResult.load(cache, model)
            except FacetexError as exc:
                print(f"skipped {path.name}: {exc}", file=sys.stderr)
                continue
            if not is_near_frontal(fit) or (args.limit is not None and frontal >= args.limit):
                continue
            frontal += 1
            photo_rgb = None
            for name in methods:
                tag = result_tags.get(name, name)
                result_path = args.work / "results" / set_name / tag / f"{path.stem}.json"
                if result_path.is_file():
                    per_method[name].append(json.loads(result_path.read_text()))
                    continue
                if name == "gan" and photo_rgb is None:   # gan fits to the photo (it sees only the kept texels)
                    photo_rgb = fit.load_fitted_photo(cache / "fit.json")
                start = time.perf_counter()
                scores = run_hidden_texel_protocol(unwrap, fit, model, fills[name], photo=photo_rgb)
                scores["wall_seconds"] = time.perf_counter() - start
                result_path.parent.mkdir(parents=True, exist_ok=True)
                result_path.write_text(json.dumps(scores))
                per_method[name].append(scores)
        print(f"\n{set_name}: {len(photos)} photos, {frontal} near-frontal (|yaw|, |pitch| <= 15) scored; "
              f"UV {args.uv_size}; medians over photos of the mean over 5 simulated views\n")
        print("| method | " + " | ".join(COLUMNS) + " |")
        print("|---|" + "---:|" * len(COLUMNS))
        summary[set_name] = {"photos": len(photos), "scored": frontal, "methods": {}}
        for name in methods:
            rows = per_method[name]
            medians = {c: statistics.median([r[c] for r in rows if r.get(c) == r.get(c)]) if rows else float("nan")
                       for c in COLUMNS}
            summary[set_name]["methods"][name] = medians
            cells = [f"{medians[c]:.3f}" if c != "hidden_psnr" else f"{medians[c]:.2f}" for c in COLUMNS]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
