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


def load_fills(model, methods: dict[str, tuple[str, dict]]) -> dict:
    """``label -> (registered method name, load options)`` -> ``label -> loaded method``; a method that
    cannot load (e.g. a learned one without weights) is reported on stderr and left out."""
    from stages.completion import get_method
    from stages.core.errors import FacetexError

    fills = {}
    for label, (name, options) in methods.items():
        try:
            fills[label] = get_method(name).load(model, **options)
        except FacetexError as exc:
            print(f"skipped method {label}: {exc}", file=sys.stderr)
    return fills


def cached_unwrap(path: Path, cache: Path, model, uv_size: int, landmarker: list):
    """``(fit, unwrap)`` of the photo ``path``, from ``cache`` (fit.json + unwrap), written there first
    when missing. An existing ``fit.json`` is reused (no landmark detector needed: a packed cache);
    ``landmarker`` is a one-item list holding the detector once built (or None)."""
    from facetex_cli.batch import quiet_native_stderr
    from stages.core.image_io import load_photo
    from stages.fit import FitResult, MediaPipeLandmarker, fit_photo, save_fit
    from stages.unwrap import UnwrapResult, unwrap_photo

    if not (cache / "unwrap.json").is_file():
        photo = load_photo(path)
        if (cache / "fit.json").is_file():
            fit = FitResult.load(cache / "fit.json")
        else:
            with quiet_native_stderr():
                landmarker[0] = landmarker[0] or MediaPipeLandmarker()
                fit = fit_photo(photo, landmarker[0], model=model)[0]
        unwrap_photo(photo, fit, model=model, uv_size=uv_size).save(cache)
        if not (cache / "fit.json").is_file():
            save_fit(fit, photo.rgb, cache, model)
    return FitResult.load(cache / "fit.json"), UnwrapResult.load(cache, model)


def score_set(set_name: str, photos: list[Path], fills: dict, model, *, cache_root: Path, results_root: Path,
              uv_size: int = 512, result_tags: dict[str, str] | None = None, limit: int | None = None,
              landmarker: list | None = None) -> dict:
    """The hidden-texel protocol of every fill on the near-frontal photos of one set.

    Args:
        set_name: the set's name (its cache and results subfolder).
        photos: the set's photos; ``cache_root/<set>/<stem>/`` caches each one's fit + unwrap.
        fills: ``label -> loaded completion method``.
        results_root: ``results_root/<set>/<tag>/<stem>.json`` caches each score (tag: ``result_tags``'s,
            or the label; give a learned method's tag its weights' checksum).
        limit: score at most this many near-frontal photos (the first in ``photos``' order).

    Returns:
        ``{"photos": n, "scored": n, "methods": {label: {column: median over photos}}}``.
    """
    from stages.core.errors import FacetexError
    from stages.evaluate.protocol import is_near_frontal, run_hidden_texel_protocol

    result_tags, landmarker = result_tags or {}, landmarker if landmarker is not None else [None]
    per_method: dict[str, list[dict]] = {m: [] for m in fills}
    frontal = 0
    for path in photos:
        if limit is not None and frontal >= limit:
            break
        try:
            fit, unwrap = cached_unwrap(path, cache_root / set_name / path.stem, model, uv_size, landmarker)
        except FacetexError as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        if not is_near_frontal(fit):
            continue
        frontal += 1
        photo: list = []   # loaded once, for the first method that is not cached
        for name, fill in fills.items():
            result_path = results_root / set_name / result_tags.get(name, name) / f"{path.stem}.json"
            if result_path.is_file():
                per_method[name].append(json.loads(result_path.read_text()))
                continue
            if not photo:
                # Methods that fit to the photo (gan, uvapm, mirror in albedo space) get it, as evaluate
                # gives it; they see only the kept texels. None when it cannot be found, as in evaluate.
                try:
                    photo.append(fit.load_fitted_photo(cache_root / set_name / path.stem / "fit.json"))
                except FacetexError:
                    photo.append(None)
            start = time.perf_counter()
            scores = run_hidden_texel_protocol(unwrap, fit, model, fill, photo=photo[0])
            scores["wall_seconds"] = time.perf_counter() - start
            result_path.parent.mkdir(parents=True, exist_ok=True)
            result_path.write_text(json.dumps(scores))
            per_method[name].append(scores)
    methods = {}
    for name, rows in per_method.items():
        methods[name] = {c: statistics.median([r[c] for r in rows if r.get(c) == r.get(c)]) if rows else float("nan")
                         for c in COLUMNS}
    return {"photos": len(photos), "scored": frontal, "methods": methods}


def table(summary: dict) -> str:
    """A Markdown table of one set's :func:`score_set` summary: method x column."""
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, medians in summary["methods"].items():
        cells = [f"{medians[c]:.3f}" if c != "hidden_psnr" else f"{medians[c]:.2f}" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def weights_tag(label: str, weights: Path) -> str:
    """A results-cache tag naming the weights' checksum, so retrained weights are scored afresh."""
    from stages.core.checksums import file_sha256

    return f"{label}-{file_sha256(weights)[:12]}"


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
                                                       "method (default: the shipped one)")
    parser.add_argument("--limit", type=int, help="score at most N near-frontal photos per set")
    args = parser.parse_args()

    from stages.completion import available_methods
    from stages.core.face_model import load_builtin_face_model

    if not SHARED.is_dir() and any(s in ("london-holdout", "wild") for s in args.sets):
        print(f"{SHARED} not found: pass photo folders with --sets", file=sys.stderr)
        return 2
    model = load_builtin_face_model()
    model_paths = {"unet": args.unet_model, "gan": args.gan_model}
    fills = load_fills(model, {name: (name, {"model_path": str(model_paths[name])} if model_paths.get(name) else {})
                               for name in args.methods or sorted(available_methods())})
    # Results are cached per method; a learned method's cache is keyed by its weights' checksum so a
    # retrained or newly shipped model is scored afresh.
    result_tags = {}
    if "unet" in fills:
        from stages.completion.unet import SHIPPED_GENERATOR

        result_tags["unet"] = weights_tag("unet", (args.unet_model or SHIPPED_GENERATOR) / "weights.safetensors")
    if "gan" in fills:
        from stages.completion.gan import SHIPPED_TEXTURE_GAN

        result_tags["gan"] = weights_tag("gan", (args.gan_model or SHIPPED_TEXTURE_GAN) / "weights.safetensors")
    landmarker = [None]
    summary: dict[str, dict] = {}
    for set_name, photos in photo_sets(args.sets).items():
        summary[set_name] = score_set(set_name, photos, fills, model, cache_root=args.work / "cache",
                                      results_root=args.work / "results", uv_size=args.uv_size,
                                      result_tags=result_tags, limit=args.limit, landmarker=landmarker)
        print(f"\n{set_name}: {len(photos)} photos, {summary[set_name]['scored']} near-frontal (|yaw|, |pitch| <= 15) "
              f"scored; UV {args.uv_size}; medians over photos of the mean over 5 simulated views\n")
        print(table(summary[set_name]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
