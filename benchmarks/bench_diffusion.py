"""Speed (and optionally quality) of ``complete --method diffusion``.

Speed: seconds per 512^2 texture for the ``small`` and the Stable-Diffusion-size configuration,
with randomly initialised networks of exactly those architectures (timing does not depend on the
weights, and no SD checkpoint is needed): the cross-assembled sampling loop (extractor, ControlNet
+ UNet per step with classifier-free guidance, VAE decode) plus the post-processing at 512^2
(upsampling, Lab colour matching, Poisson blending of the photo's texels). When the full sampling
would take too long (SD size on a CPU), ``--measure-steps`` steps are timed and the per-step time
is extrapolated to ``--steps``, and the table says so.

Quality (``--score N``): the hidden-texel protocol of ``bench_completion.py`` (its ``score_set``) for
``diffusion`` (trained folders ``--appearance`` / ``--structure``; each of ``--variants``) next to
``blend`` and ``mirror`` on the first N near-frontal photos of ``--sets`` (cache: ``--work``).

    python benchmarks/bench_diffusion.py [--presets small sd15] [--device cuda] [--batch 4] [--steps 30]
    python benchmarks/bench_diffusion.py --presets --score 8 --appearance A --structure S [--ablate-colour]
        [--unet-model U] [--sets london-holdout wild] [--variants '' 'init=blend,strength=0.3,keep_seen=1']
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

#: Stable Diffusion 1.5's UNet and VAE architectures (diffusers configs), random weights.
SD15_UNET = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "norm_num_groups": 32,
             "cross_attention_dim": 768, "attention_head_dim": 8,
             "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}
SD15_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32,
            "latent_channels": 4}
#: CLIP ViT-L/14 shaped token input is replaced by the CNN encoder of the sd15 preset (same token count order).
SD15_EXTRACTOR = {"encoder": "cnn", "channels": (64, 128, 256, 512), "tokens": 16, "heads": 8,
                  "attention": "channel"}


def random_pipeline(preset: str, device: str, half: bool):
    """A CrossAssemblyPipeline of the preset's architecture with random weights."""
    import torch

    from stages.train.diffusion_config import NOISE_SCHEDULE, PRESETS
    from stages.models.extractor import DetailExtractor
    from stages.models.diffusion import build_controlnet, build_unet, build_vae, latent_factor
    from stages.diffusion.pipeline import CrossAssemblyPipeline

    if preset == "sd15":
        size, vae_cfg, unet_cfg, ext_cfg = 512, SD15_VAE, SD15_UNET, SD15_EXTRACTOR
    else:
        p = PRESETS[preset]
        size, vae_cfg, unet_cfg = p["uv_size"], p["vae"], p["unet"]
        ext_cfg = {**p["extractor"], "attention": "channel"}
    torch.manual_seed(0)
    vae = build_vae(vae_cfg, size)
    factor = latent_factor(vae)
    unet = build_unet(unet_cfg, vae.config.latent_channels, size // factor)
    controlnet = build_controlnet(unet, 3, factor)
    extractor = DetailExtractor({**ext_cfg, "out_dim": unet.config.cross_attention_dim})
    dtype = torch.float16 if half else torch.float32
    modules = [(m.to(device).half() if half else m.to(device)).eval() for m in (vae, unet, extractor, controlnet)]
    params = sum(p.numel() for m in modules for p in m.parameters())
    pipe = CrossAssemblyPipeline(vae=modules[0], unet=modules[1], extractor=modules[2], controlnet=modules[3],
                                 scheduler_config=dict(NOISE_SCHEDULE), scaling_factor=0.18215, factor=factor,
                                 source_size=size, uv_size=size, device=torch.device(device), dtype=dtype)
    return pipe, params


def time_sampling(pipe, batch: int, steps: int, measure_steps: int | None, scheduler: str, guidance: float,
                  device: str) -> tuple[float, str]:
    """Seconds per texture of the sampling (networks' size); measured, or extrapolated from fewer steps."""
    import numpy as np
    import torch

    source = np.random.default_rng(0).uniform(-1, 1, (batch, 3, pipe.source_size, pipe.source_size)).astype(np.float32)
    position = np.random.default_rng(1).uniform(-1, 1, (batch, 3, pipe.uv_size, pipe.uv_size)).astype(np.float32)

    def run(n: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(source, position, steps=n, guidance=guidance, scheduler=scheduler, batch_size=batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(1)                                                               # warm-up
    if measure_steps is None or measure_steps >= steps:
        return statistics.median(run(steps) for _ in range(3 if device.startswith("cuda") else 1)) / batch, "measured"
    one, more = run(1), run(measure_steps + 1)
    per_step = (more - one) / measure_steps
    total = one + per_step * (steps - 1)
    return total / batch, f"extrapolated from {measure_steps + 1} steps ({per_step / batch:.2f} s/step/texture)"


def time_postprocess(uv_size: int) -> float:
    """Seconds of the 512^2 post-processing (upsample, colour match, blend) on a real or synthetic unwrap."""
    import numpy as np

    from stages.completion.diffusion import DiffusionFill
    from stages.core.face_model import load_builtin_face_model
    from stages.unwrap import UnwrapResult

    model = load_builtin_face_model()
    cache = REPO / "bench_out" / "completion" / "cache" / "london-holdout"
    folders = sorted(p for p in cache.glob("*") if (p / "unwrap.json").is_file()) if cache.is_dir() else []
    if not folders:
        return float("nan")
    unwrap = UnwrapResult.load(folders[0], model)
    method = DiffusionFill.__new__(DiffusionFill)                       # only its post-processing is timed
    method.model, method.options, method.name = model, {}, "diffusion"
    method.steps, method.guidance, method.seed, method.scheduler = 0, 1.0, 0, "ddim"
    method.colour_match, method.paste_visible = True, True
    method.pipeline = type("P", (), {"uv_size": uv_size, "info": {}})()
    sample = np.random.default_rng(0).uniform(0.3, 0.7, (uv_size, uv_size, 3)).astype(np.float32)
    method.finish(sample, unwrap)
    start = time.perf_counter()
    for _ in range(3):
        method.finish(sample, unwrap)
    return (time.perf_counter() - start) / 3


def parse_variant(text: str) -> tuple[str, dict]:
    """``"init=blend,strength=0.3,keep_seen=1"`` -> (label, options of the diffusion method)."""
    options = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key in ("strength", "guidance"):
            options[key] = float(value)
        elif key in ("steps", "seed"):
            options[key] = int(value)
        elif key in ("keep_seen", "colour_match", "residual"):
            options[key] = value not in ("0", "false", "no")
        else:
            options[key] = value
    return f"diffusion {text}" if text else "diffusion", options


def score(args) -> dict:
    """Hidden-texel protocol (``bench_completion.score_set``): diffusion (each ``--variants`` entry) next to
    blend and mirror on the first N near-frontal photos of each set, from ``--work``'s cache."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_completion import load_fills, photo_sets, score_set, table, weights_tag
    from stages.core.face_model import load_builtin_face_model

    model = load_builtin_face_model()
    base = {"model_path": str(args.appearance), "structure_path": str(args.structure), "steps": args.steps,
            "guidance": args.guidance, "scheduler": args.scheduler, "device": args.device}
    methods = {"blend": ("blend", {}), "mirror": ("mirror", {})}
    for text in args.variants:
        label, options = parse_variant(text)
        methods[label] = ("diffusion", {**base, **options})
    if args.ablate_colour:
        methods["diffusion, no colour match"] = ("diffusion", {**base, "colour_match": False})
    if args.unet_model:
        methods["unet"] = ("unet", {"model_path": str(args.unet_model)})
    fills = load_fills(model, methods)
    # Results cached per variant and weights: a retrained pair is scored afresh.
    weights = weights_tag("d", args.structure / "controlnet" / "diffusion_pytorch_model.safetensors")
    tags = {label: f"{label.replace(' ', '_').replace('=', '-').replace(',', '_')}-{weights}-s{args.steps}"
            for label in fills if label.startswith("diffusion")}
    summary = {}
    for set_name, photos in photo_sets(args.sets).items():
        summary[set_name] = score_set(set_name, photos, fills, model, cache_root=args.work / "cache",
                                      results_root=args.work / "results", result_tags=tags, limit=args.score)
        print(f"\n{set_name}: first {summary[set_name]['scored']} near-frontal photos, UV 512, medians; diffusion: "
              f"{args.steps} {args.scheduler} steps, guidance {args.guidance}\n")
        print(table(summary[set_name]))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["small", "sd15"], help="architectures to time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true", help="float16 (default on CUDA)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--scheduler", default="ddim", choices=("ddim", "dpm"))
    parser.add_argument("--guidance", type=float, default=1.4)
    parser.add_argument("--measure-steps", type=int, default=None,
                        help="time this many steps and extrapolate (default: all on GPU; 2 for sd15 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--score", type=int, default=0, help="also score N hold-out photos (needs the models)")
    parser.add_argument("--appearance", type=Path, default=REPO / "bench_out/models/diffusion_appearance_small")
    parser.add_argument("--structure", type=Path, default=REPO / "bench_out/models/diffusion_structure_small")
    parser.add_argument("--ablate-colour", action="store_true", help="--score also without Lab colour matching")
    parser.add_argument("--variants", nargs="*", default=[""],
                        help="--score: diffusion settings to compare, e.g. '' (the paper's) "
                             "'init=blend,strength=0.3,keep_seen=1'")
    parser.add_argument("--sets", nargs="+", default=["london-holdout"], help="--score: photo sets")
    parser.add_argument("--work", type=Path, default=REPO / "bench_out" / "completion",
                        help="--score: bench_completion.py's fit/unwrap cache (results cached there too)")
    parser.add_argument("--unet-model", type=Path, help="--score also this `facetex train unet` model")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    from stages.diffusion import MissingDependencyError, require_diffusers

    try:
        require_diffusers()
    except MissingDependencyError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    half = args.half or args.device.startswith("cuda")
    results = {"device": args.device, "threads": torch.get_num_threads(), "batch": args.batch, "steps": args.steps,
               "scheduler": args.scheduler, "guidance": args.guidance, "dtype": "float16" if half else "float32",
               "presets": {}}
    if args.presets:
        print(f"\n{args.device} ({torch.get_num_threads()} threads), {results['dtype']}, batch {args.batch}, "
              f"{args.steps} {args.scheduler} steps, guidance {args.guidance}\n")
        print("| config | parameters | network size | s / texture (sampling) | s / texture at 512^2 (+ post) | how |")
        print("|---|---:|---:|---:|---:|---|")
    for preset in args.presets:
        try:
            pipe, params = random_pipeline(preset, args.device, half)
        except (RuntimeError, MemoryError) as exc:       # e.g. out of memory
            print(f"| {preset} | - | - | - | - | not run: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} |")
            continue
        measure = args.measure_steps
        if measure is None and preset == "sd15" and not args.device.startswith("cuda"):
            measure = 2
        seconds, how = time_sampling(pipe, args.batch, args.steps, measure, args.scheduler, args.guidance,
                                     args.device)
        post = time_postprocess(pipe.uv_size)
        results["presets"][preset] = {"parameters": params, "uv_size": pipe.uv_size, "seconds_sampling": seconds,
                                      "seconds_post_512": post, "how": how}
        print(f"| {preset} | {params / 1e6:.1f} M | {pipe.uv_size}^2 | {seconds:.2f} | {seconds + post:.2f} | {how} |")
        del pipe
    if args.score:
        results["score"] = score(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
