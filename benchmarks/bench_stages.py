"""Per-stage timings and peak memory of the foundation pipeline (prints a Markdown table).

Measures, over a folder of photos (default: the London neutral set), with models loaded once:

- ``load``     decode the photo (EXIF, colour conversion)
- ``fit``      MediaPipe landmarks + pose + per-image shape + SH lighting
- ``unwrap``   visible texels at the UV size
- ``fill``     the completion method (default ``mirror``)
- ``complete`` the whole ``Completer.run`` per photo as a batch runs it: all of the above plus
               writing every artifact (PNGs, OBJ/MTL/GLB, JSON) and the preview renders
- cold start: wall time of ``facetex complete PHOTO`` in a fresh process (interpreter start,
  imports, model loading, one photo), median of ``--cold-runs`` runs

Medians are reported (these machines are noisy), of wall time and of process CPU time (all
threads; robust to a loaded machine: it does not count time waiting for a core, and is about the
wall time on a quiet one, less where a stage runs threads in parallel). Peak memory is the
process's maximum resident set size after the batch. Usage::

    python benchmarks/bench_stages.py [--photos DIR] [--limit N] [--uv-size 512] [--face-model ict]
        [--cold-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "london" / "neutral")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0 = all)")
    parser.add_argument("--uv-size", type=int, default=512)
    parser.add_argument("--method", default="mirror")
    parser.add_argument("--face-model", default="mediapipe", help="mediapipe (built-in) or ict")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    from facetex_cli.batch import expand_inputs, quiet_native_stderr
    from stages.complete import CompleteOptions, Completer
    from stages.core.ict import load_face_model
    from stages.core.image_io import load_photo
    from stages.fit import fit_photo
    from stages.unwrap import unwrap_photo

    photos = expand_inputs([str(args.photos)]).files
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        print(f"no photos in {args.photos}", file=sys.stderr)
        return 2

    t = time.perf_counter()
    with quiet_native_stderr():
        model = load_face_model(args.face_model)
        subdivide = 0 if model.landmark_embedding is not None else CompleteOptions.subdivide  # as the CLI does
        completer = Completer(CompleteOptions(method=args.method, uv_size=args.uv_size, subdivide=subdivide),
                              model=model)
        # Warm up JIT caches and lazy initialisation on the first photo (not timed).
        with tempfile.TemporaryDirectory() as tmp:
            completer.run(photos[0], tmp)
    model_load = time.perf_counter() - t

    stages = ("load", "fit", "unwrap", "fill", "fit+unwrap", "complete")
    times: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    failures = 0
    with tempfile.TemporaryDirectory() as tmp, quiet_native_stderr():
        for path in photos:
            try:
                stamps = [(time.perf_counter(), time.process_time())]
                photo = load_photo(path)
                stamps.append((time.perf_counter(), time.process_time()))
                fit = fit_photo(photo, completer.landmarker, model=completer.model)[0]
                stamps.append((time.perf_counter(), time.process_time()))
                unwrap = unwrap_photo(photo, fit, model=completer.model, uv_size=args.uv_size)
                stamps.append((time.perf_counter(), time.process_time()))
                completer.complete_unwrap(unwrap)
                stamps.append((time.perf_counter(), time.process_time()))
                completer.run(path, tmp)
                stamps.append((time.perf_counter(), time.process_time()))
            except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
                failures += 1
                print(f"skipped {path.name}: {exc}", file=sys.stderr)
                continue
            for key, (a, b) in zip(stages, ((0, 1), (1, 2), (2, 3), (3, 4), (1, 3), (4, 5)), strict=True):
                times[key].append(stamps[b][0] - stamps[a][0])
                cpu[key].append(stamps[b][1] - stamps[a][1])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    cold = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.cold_runs):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "facetex_cli.main", "complete", str(photos[i % len(photos)]),
                                   "-o", tmp, "--uv-size", str(args.uv_size), "--face-model", args.face_model],
                                  capture_output=True, text=True,
                                  check=False)
            cold.append(time.perf_counter() - t)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)

    n = len(times["complete"])
    print(f"\nfacetex stage timings: {n} photos from {args.photos} (failures: {failures}), UV {args.uv_size}, "
          f"--face-model {args.face_model}, method {args.method}, {os.cpu_count()} CPUs, torch threads "
          f"{sys.modules['torch'].get_num_threads() if 'torch' in sys.modules else '(torch not loaded)'}, "
          f"numba threads {__import__('numba').get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| stage | median ms | p90 ms | CPU median ms |")
    print("|---|---:|---:|---:|")
    result = {}
    for key, values in times.items():
        if values:
            values = sorted(values)
            med, p90 = statistics.median(values) * 1000, values[int(0.9 * (len(values) - 1))] * 1000
            cpu_med = statistics.median(cpu[key]) * 1000
            result[key] = {"median_ms": round(med, 1), "p90_ms": round(p90, 1), "cpu_median_ms": round(cpu_med, 1)}
            print(f"| {key} | {med:.0f} | {p90:.0f} | {cpu_med:.0f} |")
    cold_med = statistics.median(cold) if cold else float("nan")
    print(f"| cold `facetex complete` (1 photo, new process), s | {cold_med:.2f} | {max(cold, default=0):.2f} | |")
    print(f"\nmodel load + warm-up: {model_load:.2f} s; peak RSS: {peak_rss_mb:.0f} MB")
    result.update({"cold_s": round(cold_med, 3), "model_load_s": round(model_load, 3),
                   "peak_rss_mb": round(peak_rss_mb), "photos": n, "failures": failures})
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
