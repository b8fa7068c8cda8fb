"""Build the shipped PCA albedo model from the London Set's training people.

    python scripts/build_albedo_model.py [--photos ../shared/faces/london] [--work bench_out/albedo]

1. every London photo (neutral and smiling) of a person in the training split
   (``stages.core.splits.london_split``; held-out people never enter the model);
2. ``fit`` + ``unwrap`` at 512^2 with the built-in face model (``prepare_training_data.prepare_unwraps``,
   cached in ``--work``, resumable; the same folders ``facetex train`` uses);
3. ``build-pca`` per channel at 128^2 with 40 components, 15 EM iterations, seed 0;
4. writes ``stages/assets/albedo_pca_london_v1.h5`` (float16) and ``docs/albedo_pca_london_v1.png``
   (mean and first components), and prints the numbers for data_manifests/albedo_pca_london.md.

Deterministic: MediaPipe and the PCA are deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import hashlib
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
    parser.add_argument("--work", type=Path, default=REPO / "bench_out" / "train_london")
    parser.add_argument("--out", type=Path, default=REPO / "stages" / "assets" / "albedo_pca_london_v1.h5")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--components", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"error {args.photos}: London Set not found (see ../shared/faces/README.md)", file=sys.stderr)
        return 2

    from prepare_training_data import prepare_unwraps  # scripts/ is on sys.path when run as a script

    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import save_png

    model = load_builtin_face_model()
    start = time.perf_counter()
    folders = prepare_unwraps(args.photos, args.work, uv_size=512)
    print(f"{len(folders)} training unwraps ready in {time.perf_counter() - start:.1f} s")
    from stages.pca import build_albedo_pca, component_sheet

    (args.work / "_pca").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pca = build_albedo_pca(folders, args.out, model=model, resolution=args.resolution,
                           n_components=args.components, iterations=args.iterations, seed=args.seed,
                           work_dir=args.work / "_pca")
    print(f"PCA built in {time.perf_counter() - start:.1f} s: {pca.info}")
    save_png(REPO / "docs" / f"{args.out.stem}.png", component_sheet(pca))
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
