"""Batch throughput of ``facetex complete`` and what each artifact costs (prints Markdown tables).

Three measurements over a folder of photos (default: the 102 London neutral photos):

- throughput: ``facetex complete PHOTOS --workers W`` in a fresh process, with all artifacts and with
  ``--no-previews``, at each ``--workers`` value: wall time, photos per second, and ms per photo in the
  steady state, ``(wall - cold) / (N - 1)`` with ``cold`` the same command on one photo (the start:
  imports, model loads, the first photo). Median of ``--runs`` runs.
- cold single photo: wall time of ``facetex complete PHOTO`` in a new process, median of ``--cold-runs``.
- artifact costs: ``Completer.run`` in this process as in a pool worker (models loaded once, warm, one
  thread), with the drawing and the writing of each file timed (``--artifact-photos`` photos): median
  ms per photo and median bytes per artifact. A preview's ms include what is drawn or rendered for it.
  ``--cpu-time`` times them in CPU time of the process instead of wall time (steadier on a loaded machine).

Times on a shared machine are pessimistic: the load average is printed next to the numbers. Usage::

    python benchmarks/bench_throughput.py [--photos DIR] [--limit N] [--workers 1 2] [--runs 1]
                                          [--cold-runs 3] [--artifact-photos 10] [--skip-throughput]
                                          [--cpu-time]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


#: The clock of the artifact costs: wall time, or the process's CPU time with --cpu-time (main sets it).
clock = time.perf_counter


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def run_cli(photos: list[Path], *flags: str) -> float:
    """Wall seconds of ``facetex complete PHOTOS FLAGS`` in a fresh process (into a fresh folder)."""
    with tempfile.TemporaryDirectory(prefix="bench_throughput.") as out:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "facetex_cli.main", "complete", *map(str, photos), "-o", out,
                               *flags], capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"facetex complete failed:\n{proc.stdout}\n{proc.stderr}")
    return wall


def throughput(photos: list[Path], workers: list[int], runs: int, cold_runs: int) -> list[dict]:
    rows = []
    cold = statistics.median(run_cli([photos[i % len(photos)]], "--workers", "1") for i in range(cold_runs))
    rows.append({"config": "cold single photo", "workers": 1, "wall_s": cold})
    for previews in (True, False):
        for w in workers:
            flags = ["--workers", str(w)] + ([] if previews else ["--no-previews"])
            cold_w = cold if previews else statistics.median(
                run_cli([photos[i % len(photos)]], "--no-previews") for i in range(max(1, cold_runs // 2)))
            wall = statistics.median(run_cli(photos, *flags) for _ in range(runs))
            rows.append({"config": "all artifacts" if previews else "--no-previews", "workers": w, "wall_s": wall,
                         "photos_per_s": len(photos) / wall,
                         "steady_ms_per_photo": 1000 * (wall - cold_w) / max(1, len(photos) - 1)})
    return rows


class ArtifactTimer:
    """Wraps the writers and the preview drawing functions to charge their time to the file they make."""

    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)
        self._patches: list[tuple[object, str, object]] = []

    def charge_writes(self, module, name: str) -> None:
        """``module.name(path, ...)`` writes ``path``: charge it to the file's name."""
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(path, *args, **kwargs):
            t = clock()
            try:
                return original(path, *args, **kwargs)
            finally:
                self.ms[_artifact(Path(path).name)] += 1000 * (clock() - t)

        self._patch(module, name, timed)

    def charge_to(self, module, name: str, artifact: str) -> None:
        """``module.name`` computes what ``artifact`` shows (a preview's drawing or rendering)."""
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.ms[artifact] += 1000 * (clock() - t)

        self._patch(module, name, timed)

    def _patch(self, module, name, value):
        self._patches.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def restore(self):
        for module, name, value in reversed(self._patches):
            setattr(module, name, value)


def _artifact(name: str) -> str:
    """Temporary names (``.uv_complete.p123.x.part.png``) -> the file they become."""
    if name.startswith(".") and ".part" in name:
        return name[1:].split(".p", 1)[0] + Path(name).suffix
    return name


def artifact_costs(photos: list[Path], uv_size: int) -> tuple[dict, dict, float]:
    """Median ms and bytes per artifact per photo, and the median ``Completer.run`` ms, warm, one thread."""
    from facetex_cli.batch import limit_threads

    limit_threads(1)  # as a pool worker runs (before torch loads)
    import stages.complete as complete_mod
    import stages.core.atomic as atomic
    import stages.core.image_io as image_io
    import stages.fit as fit_mod
    import stages.occlusion as occlusion
    import stages.render as render
    import stages.unwrap as unwrap_mod
    from facetex_cli.batch import quiet_native_stderr, single_thread_blas
    from stages.completion import Completion
    from stages.complete import CompleteOptions, Completer

    with quiet_native_stderr():
        completer = Completer(CompleteOptions(uv_size=uv_size))
    timer = ArtifactTimer()
    for module in (image_io, fit_mod, unwrap_mod, complete_mod, render):
        if hasattr(module, "save_png"):
            timer.charge_writes(module, "save_png")
    for module in (atomic, fit_mod, unwrap_mod, complete_mod, render):
        for writer in ("write_json", "write_npy"):
            if hasattr(module, writer):
                timer.charge_writes(module, writer)
    timer.charge_to(fit_mod, "draw_overlay", "fit_overlay.png")
    timer.charge_to(occlusion, "skin_overlay", "skin_overlay.png")
    timer.charge_to(unwrap_mod, "position_preview", "uv_position.png")
    timer.charge_to(render, "render_on_photo", "render_fitted.png")
    timer.charge_to(render, "render_views", "views.png")
    timer.charge_to(render, "compose_views", "views.png")
    timer.charge_to(Completion, "provenance_image", "uv_provenance.png")
    mesh_ms = []
    original_export = render.export_textured_mesh

    def export(*args, **kwargs):
        t = clock()
        try:
            return original_export(*args, **kwargs)
        finally:
            mesh_ms.append(1000 * (clock() - t))

    render.export_textured_mesh = export
    per_photo_ms: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, list[int]] = defaultdict(list)
    runs = []
    try:
        with tempfile.TemporaryDirectory() as tmp, quiet_native_stderr(), single_thread_blas():
            completer.run(photos[0], tmp)  # warm up (JIT, UV layouts), not counted
            for path in photos:
                timer.ms.clear()
                mesh_ms.clear()
                t = clock()
                folders = completer.run(path, Path(tmp) / "out")
                runs.append(1000 * (clock() - t))
                for name, ms in timer.ms.items():
                    per_photo_ms[name].append(ms)
                # The OBJ/MTL (+GLB) export as a whole (its PNG texture is uv_complete.png, written once).
                per_photo_ms["textured.obj+.mtl+.glb (export)"].append(sum(mesh_ms))
                for file in folders[0].iterdir():
                    sizes[file.name].append(file.stat().st_size)
    finally:
        timer.restore()
        render.export_textured_mesh = original_export
    return ({k: statistics.median(v) for k, v in per_photo_ms.items()},
            {k: statistics.median(v) for k, v in sizes.items()}, statistics.median(runs))


PREVIEWS = ("fit_overlay.png", "skin_overlay.png", "uv_position.png", "render_fitted.png", "views.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "london" / "neutral")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0 = all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=1, help="runs of each batch (median)")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--uv-size", type=int, default=512)
    parser.add_argument("--artifact-photos", type=int, default=10)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--cpu-time", action="store_true", help="artifact costs in CPU time, not wall time")
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.cpu_time else time.perf_counter

    from facetex_cli.batch import expand_inputs

    photos = expand_inputs([str(args.photos)]).files
    if args.limit:
        photos = photos[: args.limit]
    if len(photos) < 2:
        print(f"need at least 2 photos in {args.photos}", file=sys.stderr)
        return 2
    result: dict = {"photos": len(photos), "load_before": load_average()}

    ms, sizes, run_ms = artifact_costs(photos[: args.artifact_photos], args.uv_size)
    result["artifacts"] = {"ms": ms, "bytes": sizes, "completer_run_ms": run_ms}
    print(f"\nartifact costs: {min(len(photos), args.artifact_photos)} photos, UV {args.uv_size}, warm, one process, "
          f"medians, {'CPU' if args.cpu_time else 'wall'} time; {load_average()}\n")
    print("| artifact | ms per photo | KB | preview (`--no-previews` skips it) |")
    print("|---|---:|---:|---|")
    for name in sorted(set(ms) | set(sizes), key=lambda n: -ms.get(n, 0)):
        kb = f"{sizes[name] / 1024:.0f}" if name in sizes else ""
        # The mesh files are timed together, as the export (their atomic writes are not save_png/write_json).
        cost = "in export" if name.startswith("textured.") and name not in ms else f"{ms.get(name, 0):.1f}"
        print(f"| {name} | {cost} | {kb} | {'yes' if name in PREVIEWS else ''} |")
    print(f"\n`Completer.run` per photo (everything): {run_ms:.0f} ms median")

    if not args.skip_throughput:
        rows = throughput(photos, args.workers, args.runs, args.cold_runs)
        result["throughput"] = rows
        print(f"\nthroughput: `facetex complete` over {len(photos)} photos from {args.photos}, UV {args.uv_size}, "
              f"fresh process per run, median of {args.runs}; {load_average()}\n")
        print("| run | workers | wall s | photos/s | steady ms per photo |")
        print("|---|---:|---:|---:|---:|")
        for row in rows:
            extra = (f"{row['photos_per_s']:.2f} | {row['steady_ms_per_photo']:.0f}" if "photos_per_s" in row
                     else " | ")
            print(f"| {row['config']} | {row['workers']} | {row['wall_s']:.2f} | {extra} |")
    result["load_after"] = load_average()
    print(f"\n{result['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
