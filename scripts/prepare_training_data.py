"""Training data for ``facetex train``: fit + unwrap + pseudo-gt of the London training people.

    python scripts/prepare_training_data.py [--photos ../shared/faces/london] [--out bench_out/train_london]

Writes ``OUT/<stem>/`` (fit.json, the unwrap artifacts, uv_pseudo.png, ...) for every photo of a
person in the TRAIN split (``stages.core.splits``; held-out people are never written), models
loaded once, resumable (folders with uv_pseudo.png are skipped). Same artifacts as
``make pipeline`` followed by ``facetex pseudo-gt``, in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "london")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "train_london")
    parser.add_argument("--uv-size", type=int, default=512)
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"error {args.photos}: London Set not found (see ../shared/faces/README.md)", file=sys.stderr)
        return 2

    from facetex_cli.batch import quiet_native_stderr
    from stages.completion.pca import load_pca
    from stages.core.errors import FacetexError
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import load_photo
    from stages.core.splits import london_split
    from stages.fit import MediaPipeLandmarker, fit_photo, save_fit
    from stages.pseudo_gt import pseudo_ground_truth
    from stages.unwrap import unwrap_photo

    model = load_builtin_face_model()
    pca = load_pca(None)
    with quiet_native_stderr():
        landmarker = MediaPipeLandmarker()
    photos = [p for p in sorted(args.photos.glob("*/*.jpg")) if london_split(p) == "train"]
    start, done = time.perf_counter(), 0
    for path in photos:
        folder = args.out / path.stem
        if (folder / "uv_pseudo.png").is_file():
            continue
        try:
            photo = load_photo(path)
            with quiet_native_stderr():
                fit = fit_photo(photo, landmarker, model=model)[0]
            unwrap = unwrap_photo(photo.rgb, fit, model=model, uv_size=args.uv_size)
        except FacetexError as exc:
            print(f"skipped {exc}", file=sys.stderr)
            continue
        save_fit(fit, photo.rgb, folder, model)
        unwrap.save(folder)
        pseudo_ground_truth(unwrap, pca).save(folder)
        done += 1
    seconds = time.perf_counter() - start
    print(f"{done} new training folders ({len(photos)} train photos) in {seconds:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
