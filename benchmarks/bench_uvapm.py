"""UVAPM benchmark (issue 13): hidden-texel PSNR/SSIM and detail ratio of ``uvapm`` (with and without a
detail VAE), albedo-space ``mirror`` and today's methods (``mirror``: the plain mirror, ``--no-albedo-space``);
lighting numbers and fit time of ``uvapm``.

Per photo set (``bench_completion.py``'s sets and fit/unwrap cache under ``--work``):

- hidden-texel protocol (``stages.evaluate.protocol``) on near-frontal photos; the photo is passed so
  ``uvapm`` fits to the kept texels only;
- detail ratio (``stages.evaluate.detail``) of each completion of the protocol's yaw+50 view: hidden
  texels = filled, kept texels = seen, skin of the layout;
- lighting, on every photo: the full ``uvapm`` fit's directional/ambient ratio ``|L[1:4]| / L[0]``
  (luminance-weighted), "side-lit" when the x term ``|L[3]| / L[0]`` is at least ``--side-lit``; on
  those, the left/right mean-luminance difference of the skin texels (the two halves of the UV
  layout's skin) of ``uv_albedo`` vs ``mirror``'s ``uv_complete`` (lower is better); on every photo,
  the reprojection PSNR (256 px crop, visible face) of ``uv_albedo`` under the fitted light, and of
  the smooth PCA albedo alone (labelled ``pca_albedo``).

Per-photo results are cached under ``--work/results_uvapm/<set>/<method tag>/`` (a detail VAE's tag
holds its weights' checksum), so an interrupted run resumes.

    python benchmarks/bench_uvapm.py [--sets wild london-holdout] [--limit N] [--iterations 40]
        [--methods mirror mirror-albedo pca unet uvapm] [--detail-model DIR [--detail-strength S]]
        [--no-lighting]

``--time-fit [--device auto|cpu|cuda]``: timing only (no scores, nothing cached): ``uvapm`` as ``complete
--method uvapm`` runs it (shipped detail VAE, default settings) on each cached photo after one untimed
warm-up call; prints the medians per photo of the coarse fit, stage 3, both (issue 13's "uvapm fit":
<= 3 s on 2 CPU cores, <= 0.3 s with CUDA) and the whole method call (plus reprojection and composition).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3] @ np.array([0.299, 0.587, 0.114])



def cached(result_path: Path, compute) -> dict:
    """The JSON record at ``result_path``, computed by ``compute()`` and written there when missing."""
    if result_path.is_file():
        return json.loads(result_path.read_text())
    record = compute()
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(record))
    return record


def light_record(methods: dict, unwrap, fit, photo, path: Path, skin: np.ndarray, side_lit: float) -> dict:
    """uvapm's light, fit time and reprojection on one photo; on a side-lit one (``|L_x| / L_0 >= side_lit``)
    also the left/right mean-luminance difference of ``uv_albedo.png`` and of the plain mirror's texture."""
    from stages.evaluate.protocol import is_near_frontal

    full = methods["uvapm"][1].complete_fitted(unwrap, fit, photo)
    light = np.asarray(full.extra_json["lighting.json"]["lighting_sh"])
    lum = light @ np.array([0.299, 0.587, 0.114])
    side = abs(lum[3]) / lum[0]
    record = {"photo": path.name, "directional_ratio": float(np.linalg.norm(lum[1:4]) / lum[0]),
              "side_ratio": float(side), "fit_seconds": full.info["fit"]["seconds"],
              "reprojection_psnr": full.info["reprojection_psnr_256"]["albedo"],
              "reprojection_psnr_pca_albedo": full.info["reprojection_psnr_256"]["pca_albedo"],
              "near_frontal": bool(is_near_frontal(fit))}
    if side >= side_lit:
        half = unwrap.size // 2
        plain = methods["mirror"][1].complete_fitted(unwrap, fit, photo).texture
        for name, tex in (("albedo", full.extra_images["uv_albedo.png"]), ("mirror", plain)):
            y = luminance(tex)
            left, right = y[:, :half][skin[:, :half]].mean(), y[:, half:][skin[:, half:]].mean()
            record[f"lr_difference_{name}"] = float(abs(left - right))
    return record


def hidden_scores(method, unwrap, fit, model, photo, skin: np.ndarray) -> dict:
    """The hidden-texel protocol of ``method`` on one photo, plus the detail ratio of its yaw+50 completion."""
    from stages.evaluate.detail import detail_ratio
    from stages.evaluate.protocol import run_hidden_texel_protocol

    examples: dict = {}
    start = time.perf_counter()
    result = run_hidden_texel_protocol(unwrap, fit, model, method, photo=photo, examples=examples)
    result["wall_seconds"] = time.perf_counter() - start
    case, completed = examples["yaw+50"]
    result["detail_ratio"] = detail_ratio(completed, case.kept, case.hidden, skin)
    return result

def load_methods(names: list[str], model, iterations: int | None, detail_model: Path | None,
                 detail_strength: float | None = None) -> dict:
    """``tag -> (name, CompletionMethod)``: ``uvapm`` without stage 3; ``uvapm+vae`` (with ``detail_model``)
    is uvapm with it (its tag holds the weights' checksum and the stage-3 settings, so cached results never mix)."""
    from stages.completion import get_method
    from stages.core.checksums import file_sha256

    options = {"mirror": ("mirror", {"albedo_space": False}), "mirror-albedo": ("mirror", {"albedo_space": True}),
               "uvapm": ("uvapm", {"iterations": iterations, "detail": False})}
    methods = {}
    for name in names:
        base, kwargs = options.get(name, (name, {}))
        methods[name] = (name, get_method(base).load(model, **kwargs))
    if detail_model is not None:
        from stages.completion.uvapm import DETAIL_ANCHOR, DETAIL_HIGHPASS_SIGMA, DETAIL_STRENGTH, DETAIL_TEMPERATURE

        strength = DETAIL_STRENGTH if detail_strength is None else detail_strength
        tag = (f"uvapm+vae-{file_sha256(detail_model / 'weights.safetensors')[:12]}-s{strength:g}"
               f"-t{DETAIL_TEMPERATURE:g}-hp{DETAIL_HIGHPASS_SIGMA:g}-a{DETAIL_ANCHOR:g}")
        methods[tag] = ("uvapm+vae", get_method("uvapm").load(model, iterations=iterations,
                                                            model_path=str(detail_model), detail_strength=strength))
    return methods


def cached_inputs(work: Path, set_name: str, path: Path, model):
    """``(fit, unwrap, photo)`` of one photo from ``bench_completion.py``'s cache, or None (said on stderr)."""
    from stages.core.errors import FacetexError
    from stages.fit import FitResult
    from stages.unwrap import UnwrapResult

    cache = work / "cache" / set_name / path.stem
    try:
        fit = FitResult.load(cache / "fit.json")
        return fit, UnwrapResult.load(cache, model), fit.load_fitted_photo(cache / "fit.json")
    except FacetexError as exc:
        print(f"skipped {path.name}: {exc} (run bench_completion.py first to fill the cache)", file=sys.stderr)
        return None


def time_fit(photo_sets: dict, model, args) -> dict:
    """Median seconds per photo of uvapm on ``args.device`` (see the module docstring's ``--time-fit``)."""
    from stages.completion import get_method

    from stages.core.errors import FacetexError

    try:
        method = get_method("uvapm").load(model, iterations=args.iterations, device=args.device)
    except FacetexError as exc:         # e.g. --device cuda without CUDA: one line
        raise SystemExit(f"error {exc}") from None
    inputs = [(path, found) for set_name, photos in photo_sets.items()
              for path in (photos[: args.limit] if args.limit else photos)
              if (found := cached_inputs(args.work, set_name, path, model)) is not None]
    if not inputs:
        raise SystemExit("no cached photos to time (run bench_completion.py first)")
    fit, unwrap, photo = inputs[0][1]
    method.complete_fitted(unwrap, fit, photo)      # warm-up: CUDA context and kernels, numba, caches
    rows = []
    for path, (fit, unwrap, photo) in inputs:
        start = time.perf_counter()
        info = method.complete_fitted(unwrap, fit, photo).info      # numpy out: the device has finished
        total = time.perf_counter() - start
        rows.append({"photo": path.name, "fit": info["fit"]["seconds"], "detail": info["detail_seconds"],
                     "method": total})
        print(f"{path.name}: {rows[-1]}", file=sys.stderr, flush=True)
    med = {key: statistics.median(r[key] for r in rows) for key in ("fit", "detail", "method")}
    print(f"uvapm on {method.device} ({len(rows)} photos, warm, median s per photo): coarse fit {med['fit']:.3f}, "
          f"stage 3 {med['detail']:.3f}, fit + stage 3 {med['fit'] + med['detail']:.3f}, "
          f"whole method call {med['method']:.3f}")
    return {"device": str(method.device), "photos": len(rows), "median_seconds": med, "per_photo": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["london-holdout", "wild"])
    parser.add_argument("--limit", type=int, default=None, help="first N photos per set")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["mirror", "mirror-albedo", "pca", "unet", "uvapm"])
    parser.add_argument("--detail-model", type=Path, help="a detail VAE folder: also score uvapm with it (uvapm+vae)")
    parser.add_argument("--detail-strength", type=float, help="uvapm+vae's detail strength (default: uvapm's)")
    parser.add_argument("--no-lighting", action="store_true",
                        help="hidden-texel scores only (no uvapm lighting/reprojection/fit-time record per photo)")
    parser.add_argument("--side-lit", type=float, default=0.08, help="|L_x| / L_0 at or above: side-lit")
    parser.add_argument("--work", type=Path, default=REPO / "bench_out" / "completion")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--time-fit", action="store_true",
                        help="only time uvapm (shipped detail VAE) per photo on --device; no scores")
    parser.add_argument("--device", default="cpu", help="--time-fit: auto, cpu, cuda or cuda:N")
    args = parser.parse_args()
    if args.device != "cpu" and not args.time_fit:
        parser.error("--device goes with --time-fit (the scores are CPU numbers)")

    import torch

    from benchmarks.bench_completion import photo_sets
    from stages.core.face_model import load_builtin_face_model
    from stages.evaluate.protocol import is_near_frontal
    from stages.evaluate.stage import skin_uv_mask

    torch.set_num_threads(2)
    model = load_builtin_face_model()
    if args.time_fit:
        timing = time_fit(photo_sets(args.sets), model, args)
        if args.json:
            args.json.write_text(json.dumps(timing, indent=2))
        return 0
    if not args.no_lighting and ("uvapm" not in args.methods or "mirror" not in args.methods):
        parser.error("--methods must include mirror and uvapm (the lighting numbers compare them), "
                     "or pass --no-lighting")
    methods = load_methods(args.methods, model, args.iterations, args.detail_model, args.detail_strength)
    summary = {}
    for set_name, photos in photo_sets(args.sets).items():
        photos = photos[: args.limit] if args.limit else photos
        rows = {tag: [] for tag in methods}
        lighting = []
        for path in photos:
            found = cached_inputs(args.work, set_name, path, model)
            if found is None:
                continue
            fit, unwrap, photo = found
            skin = skin_uv_mask(model, unwrap.size)

            results = args.work / "results_uvapm" / set_name
            if not args.no_lighting:
                lighting.append(cached(results / "lighting" / f"{path.stem}.json",
                                       partial(light_record, methods, unwrap, fit, photo, path, skin, args.side_lit)))
                print(f"{set_name}/{path.name}: {lighting[-1]}", file=sys.stderr, flush=True)
            if not is_near_frontal(fit):
                continue
            for tag, (_, method) in methods.items():
                rows[tag].append(cached(results / tag / f"{path.stem}.json",
                                        partial(hidden_scores, method, unwrap, fit, model, photo, skin)))
        side_lit = [r for r in lighting if "lr_difference_albedo" in r]

        def med(values):
            values = [v for v in values if v == v]
            return statistics.median(values) if values else float("nan")

        names = {tag: name for tag, (name, _) in methods.items()}
        result = {"photos": len(photos), "scored": max(len(rs) for rs in rows.values()),
                  "methods": {names[t]: {k: med([r[k] for r in rs])
                                         for k in ("hidden_psnr", "hidden_ssim", "detail_ratio", "wall_seconds")}
                              for t, rs in rows.items()},
                  "fit_seconds_median": med([r["fit_seconds"] for r in lighting]),
                  "reprojection_psnr_median": med([r["reprojection_psnr"] for r in lighting]),
                  "reprojection_psnr_pca_albedo_median": med([r["reprojection_psnr_pca_albedo"] for r in lighting]),
                  "reprojection_psnr_near_frontal_median": med([r["reprojection_psnr"] for r in lighting
                                                                if r["near_frontal"]]),
                  "side_lit": len(side_lit),
                  "lr_difference_albedo_median": med([r["lr_difference_albedo"] for r in side_lit]),
                  "lr_difference_mirror_median": med([r["lr_difference_mirror"] for r in side_lit]),
                  "per_photo_lighting": lighting}
        summary[set_name] = result
        print(f"\n{set_name}: {len(photos)} photos, {result['scored']} near-frontal scored")
        print("| method | hidden_psnr | hidden_ssim | detail_ratio (yaw+50) | s per photo (5 views) |\n"
              "|---|---:|---:|---:|---:|")
        for m, v in result["methods"].items():
            print(f"| {m} | {v['hidden_psnr']:.2f} | {v['hidden_ssim']:.3f} | {v['detail_ratio']:.3f} "
                  f"| {v['wall_seconds']:.1f} |")
        if args.no_lighting:
            continue
        print(f"uvapm fit seconds (median): {result['fit_seconds_median']:.2f}; reprojection PSNR under the fitted "
              f"light (median, visible face): uv_albedo {result['reprojection_psnr_median']:.2f} dB "
              f"(near-frontal {result['reprojection_psnr_near_frontal_median']:.2f}), PCA albedo alone "
              f"{result['reprojection_psnr_pca_albedo_median']:.2f} dB; side-lit photos: {len(side_lit)}, "
              f"left/right luminance difference uv_albedo {result['lr_difference_albedo_median']:.4f} "
              f"vs mirror {result['lr_difference_mirror_median']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
