"""Training data for ``facetex train``: fit + unwrap + pseudo-gt of the London training people.

    python scripts/prepare_training_data.py [--photos ../shared/faces/london] [--out bench_out/train_london]

Writes ``OUT/<stem>/`` (fit.json, the unwrap artifacts, uv_pseudo.png, ...) for every photo of a
person in the TRAIN split (``stages.core.splits``; held-out people are never written), models
loaded once, resumable. ``build_albedo_model.py`` reuses :func:`prepare_unwraps` (without the
pseudo-GT, which needs the model it builds). Same artifacts as
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


def prepare_unwraps(photos_root: Path, out: Path, *, uv_size: int = 512, pca=None) -> list[Path]:
    """fit + unwrap (and, given a PCA model, pseudo-gt) of every London TRAIN photo under ``photos_root``.

    Resumable: a folder keeps its fit/unwrap once written, and gets only what it lacks (a folder
    holding only a ``fit.json`` of its photo is unwrapped without fitting, so no landmark detector is
    needed: ``scripts/gpu_train.py``'s packed data). Returns the folders that hold an unwrap. Models
    are loaded once.
    """
    from facetex_cli.batch import quiet_native_stderr
    from stages.core.errors import FacetexError
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import load_photo
    from stages.core.splits import london_split
    from stages.fit import FitResult, MediaPipeLandmarker, fit_photo, save_fit
    from stages.pseudo_gt import pseudo_ground_truth
    from stages.unwrap import UnwrapResult, unwrap_photo

    model = load_builtin_face_model()
    landmarker = None
    folders = []
    for path in (p for p in sorted(photos_root.glob("*/*.jpg")) if london_split(p) == "train"):
        folder = out / path.stem
        if not (folder / "unwrap.json").is_file():
            try:
                photo = load_photo(path)
                if (folder / "fit.json").is_file():
                    fit = FitResult.load(folder / "fit.json")
                else:
                    with quiet_native_stderr():
                        landmarker = landmarker or MediaPipeLandmarker()
                        fit = fit_photo(photo, landmarker, model=model)[0]
                    save_fit(fit, photo.rgb, folder, model)
            except FacetexError as exc:
                print(f"skipped {exc}", file=sys.stderr)
                continue
            unwrap_photo(photo, fit, model=model, uv_size=uv_size).save(folder)
        if pca is not None and not (folder / "uv_pseudo.png").is_file():
            pseudo_ground_truth(UnwrapResult.load(folder, model), pca).save(folder)
        folders.append(folder)
    return folders


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "london")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "train_london")
    parser.add_argument("--uv-size", type=int, default=512)
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"error {args.photos}: London Set not found (see ../shared/faces/README.md)", file=sys.stderr)
        return 2
    from stages.completion.pca import load_pca

    start = time.perf_counter()
    folders = prepare_unwraps(args.photos, args.out, uv_size=args.uv_size, pca=load_pca(None))
    print(f"{len(folders)} training folders in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
