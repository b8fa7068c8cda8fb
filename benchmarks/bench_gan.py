"""Texture GAN benchmark (seed 003): diversity, a realism proxy, detail ratio and speed of a trained model.

    python benchmarks/bench_gan.py --model MODEL_DIR [--real bench_out/train_london] [--n 64]
        [--work bench_out/completion] [--limit 8]

Prints (and with ``--json`` writes):

- **diversity**: mean pairwise L1 between ``--n`` generated albedos (truncation 1) on the skin texels of
  the layout, at the generator's UV size; next to the same for the real textures and for random
  samples of the built-in PCA albedo model;
- **realism proxy** (offline, no downloaded network): KID (Binkowski et al. 2018; unbiased MMD^2 with the
  cubic polynomial kernel, x 1000) between feature vectors of the generated albedos and of the *real*
  textures, where the features are facetex's own trained network: the encoder of the shipped UV
  generator (``stages/assets/uv_generator_london_v1``; bottleneck and last down level, average pooled;
  layout mask as the seen mask, mean-shape positions). The real textures are the pseudo ground truths
  (``uv_pseudo.png``) of ``--real`` folders divided by their fit's normalised shading (albedo-like, as
  the generator's output), i.e. the *training* distribution: KID measures how close the GAN gets to what
  it was trained on, not to unseen people. Also printed: KID of PCA samples vs the same reals, and of one
  half of the reals vs the other (the floor at this sample size);
- **detail ratio** (:mod:`stages.evaluate.detail`) of ``gan`` and ``mirror`` completions of the yaw+50
  hidden-texel case on the first ``--limit`` near-frontal London hold-out photos of the
  ``bench_completion.py`` cache (``--work``), and the inversion seconds per fill;
- **speed**: generator milliseconds per texture (batch 1, median of 20) on ``--device``.

Timings depend on the machine's load (say so next to them).
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


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 50, subset_size: int = 32, seed: int = 0) -> float:
    """Kernel inception distance x 1000 between feature sets ``(N, D)`` and ``(M, D)`` (mean over subsets)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(x), len(y))
    d = x.shape[1]
    values = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        values.append(mmd)
    return float(np.mean(values) * 1000)


def pairwise_l1(textures: np.ndarray, mask: np.ndarray) -> float:
    """Mean over pairs of the mean absolute difference on ``mask``; ``textures (N, S, S, 3)``."""
    flat = textures[:, mask].reshape(len(textures), -1)
    dists = [np.abs(flat[i] - flat[j]).mean() for i in range(len(flat)) for j in range(i + 1, len(flat))]
    return float(np.mean(dists))


def encoder_features(net, textures: np.ndarray, layout: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``(N, D)`` pooled encoder features of the UV generator ``net`` for ``textures (N, S, S, 3)``."""
    import torch

    feats = []
    with torch.no_grad():
        for tex in textures:
            x = torch.cat([torch.from_numpy(tex.transpose(2, 0, 1))[None] * torch.from_numpy(layout)[None, None],
                           torch.from_numpy(layout)[None, None], torch.from_numpy(position)[None]], dim=1).float()
            x = net.stem(x)
            pooled = []
            for down in net.down:
                x = down(x)
            pooled.append(x.mean(dim=(2, 3)))
            pooled.append(net.bottleneck(x).mean(dim=(2, 3)))
            feats.append(torch.cat(pooled, dim=1)[0].numpy())
    return np.stack(feats).astype(np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="`facetex train texture-gan` folder")
    parser.add_argument("--real", type=Path, default=REPO / "bench_out" / "train_london",
                        help="folders with uv_pseudo.png + fit.json (the training set)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--work", type=Path, default=REPO / "bench_out" / "completion",
                        help="bench_completion.py's cache (fits and unwraps of the London hold-out)")
    parser.add_argument("--limit", type=int, default=8, help="hold-out photos for the detail ratio / inversion")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import cv2

    from stages.albedo_fit import fit_shading
    from stages.completion import get_method
    from stages.completion.pca import load_pca
    from stages.completion.unet import SHIPPED_GENERATOR
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import load_texture
    from stages.core.poisson import pull_push_fill
    from stages.core.uv import uv_layout
    from stages.evaluate.detail import detail_ratio
    from stages.evaluate.protocol import hide_texels, is_near_frontal
    from stages.evaluate.stage import skin_uv_mask
    from stages.fit import FitResult
    from stages.generate import generate_albedo
    from stages.models.inputs import POSITION_SCALE
    from stages.models.texture_gan import load_texture_generator
    from stages.models.uv_generator import load_generator
    from stages.unwrap import UnwrapResult

    model = load_builtin_face_model()
    generator, _ = load_texture_generator(args.model, map_location=args.device)
    size = generator.config.uv_size
    skin = skin_uv_mask(model, size)
    results: dict = {"model": str(args.model), "uv_size": size, "n": args.n}

    # speed + samples
    times, generated = [], []
    generate_albedo(generator, 999, 0, device=args.device)   # warm-up
    for i in range(args.n):
        start = time.perf_counter()
        generated.append(generate_albedo(generator, 0, i, 1.0, args.device))
        times.append(time.perf_counter() - start)
    generated = np.stack(generated)
    results["generate_ms"] = 1000 * statistics.median(times[:20])

    # reals (de-lit pseudo-GT) and PCA samples
    reals = []
    for folder in sorted(p for p in args.real.iterdir() if (p / "uv_pseudo.png").is_file()):
        fit = FitResult.load(folder / "fit.json")
        pseudo = load_texture(folder / "uv_pseudo.png")[..., :3].astype(np.float32)
        delit = np.clip(pseudo / fit_shading(model, fit, pseudo.shape[0]), 0, 1)
        reals.append(cv2.resize(delit, (size, size), interpolation=cv2.INTER_AREA))
    reals = np.stack(reals)
    pca = load_pca(None)
    rng = np.random.default_rng(0)
    pca_samples = []
    for _ in range(args.n):
        coeffs = rng.standard_normal(pca.variance.shape) * np.sqrt(np.maximum(pca.variance, 0))
        img = pull_push_fill(pca.reconstruct(coeffs.astype(np.float32)), pca.mask)
        pca_samples.append(np.clip(cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC),
                                   0, 1))
    pca_samples = np.stack(pca_samples)

    results["diversity_l1"] = {"gan": pairwise_l1(generated, skin), "real": pairwise_l1(reals, skin),
                               "pca": pairwise_l1(pca_samples, skin)}

    net, cfg = load_generator(SHIPPED_GENERATOR)
    enc_size = int(cfg.get("uv_size", 256))
    layout = uv_layout(model, enc_size).mask.astype(np.float32)
    position = (uv_layout(model, enc_size).interpolate(model.vertices) / POSITION_SCALE).transpose(2, 0, 1)
    position = position.astype(np.float32)

    def feats(textures: np.ndarray) -> np.ndarray:
        resized = np.stack([cv2.resize(t, (enc_size, enc_size), interpolation=cv2.INTER_LINEAR) for t in textures])
        return encoder_features(net, resized.astype(np.float32), layout, position)

    f_gan, f_real, f_pca = feats(generated), feats(reals), feats(pca_samples)
    half = len(f_real) // 2
    perm = np.random.default_rng(1).permutation(len(f_real))
    results["kid_x1000"] = {"gan_vs_real": kid(f_gan, f_real), "pca_vs_real": kid(f_pca, f_real),
                            "real_half_vs_half": kid(f_real[perm[:half]], f_real[perm[half:]])}

    # detail ratio + inversion time on the hold-out (yaw+50 case)
    cache = args.work / "cache" / "london-holdout"
    methods = {"gan": get_method("gan").load(model, model_path=str(args.model), device=args.device),
               "mirror": get_method("mirror").load(model)}
    rows: dict[str, list] = {m: [] for m in methods}
    inv_seconds = []
    for folder in sorted(cache.iterdir()) if cache.is_dir() else []:
        if len(rows["gan"]) >= args.limit:
            break
        fit = FitResult.load(folder / "fit.json")
        if not is_near_frontal(fit):
            continue
        unwrap = UnwrapResult.load(folder, model)
        photo = fit.load_fitted_photo(folder / "fit.json")
        case = hide_texels(unwrap, fit, model, "yaw+50", 50.0, 0.0)
        region = skin_uv_mask(model, unwrap.size)
        for name, method in methods.items():
            start = time.perf_counter()
            completed = method.complete_fitted(case.partial, fit, photo)
            if name == "gan":
                inv_seconds.append(time.perf_counter() - start)
            rows[name].append(detail_ratio(completed.texture, case.kept, case.hidden, region))
    results["detail_ratio_yaw50"] = {m: statistics.median(v) if v else float("nan") for m, v in rows.items()}
    results["holdout_photos"] = len(rows["gan"])
    results["inversion_seconds"] = statistics.median(inv_seconds) if inv_seconds else float("nan")

    print(f"texture GAN {args.model} (UV {size}), {args.n} samples, {len(reals)} real textures from {args.real}")
    d = results["diversity_l1"]
    print(f"diversity (mean pairwise L1 on skin): gan {d['gan']:.4f} | real {d['real']:.4f} | pca {d['pca']:.4f}")
    k = results["kid_x1000"]
    print(f"KID x1000 (UV generator encoder features): gan vs real {k['gan_vs_real']:.2f} | pca vs real "
          f"{k['pca_vs_real']:.2f} | real half vs half {k['real_half_vs_half']:.2f}")
    r = results["detail_ratio_yaw50"]
    print(f"detail ratio (yaw+50, {results['holdout_photos']} London hold-out): gan {r['gan']:.3f} | "
          f"mirror {r['mirror']:.3f}")
    print(f"generator {results['generate_ms']:.1f} ms/texture; inversion {results['inversion_seconds']:.1f} s/fill "
          f"({args.device}; this machine's load applies)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
