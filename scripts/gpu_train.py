"""Train every learned model of facetex within one time budget, export them, benchmark them, summarise.

    python scripts/gpu_train.py --budget 8m --out gpu_out [--data ../shared/faces/london] [--presets auto|gpu|tiny]
    # data for a machine without MediaPipe:
    python scripts/gpu_train.py --pack gpu_data [--photos ../shared/faces/london]

One process, no network (``make gpu-train BUDGET=8m``):

1. data: ``--data`` is either a London Set folder (``neutral/``, ``smiling/``; fitted here with
   MediaPipe: ``scripts/prepare_training_data.py``'s :func:`prepare_unwraps`, London TRAIN people
   only, and the hold-out people + ``../wild`` for the benchmark) or a *pack* written by ``--pack``
   (downscaled photos with their ``fit.json``: small enough to carry to a GPU machine, and unwrapped
   there without any landmark detector). Unwraps and pseudo-GT are computed where missing.
2. training: :data:`REGISTRY`, one row per learned model, in order. Each gets the share of the
   training time (what the data step and the benchmark reserve leave of ``--budget``) that its
   ``share`` says, enforced by the one runner's ``time_limit`` (:mod:`stages.train.runner`); time a
   model leaves unused passes to the next ones. One model's failure is recorded and the others go on.
3. export: ``OUT/models/<name>/``: the model folder without its training state, plus a model card
   ``README.md``; each exported folder is loaded back with the row's ``load`` function.
4. benchmark: ``benchmarks/bench_completion.py``'s hidden-texel protocol on both sets (London
   hold-out and wild), every registered completion method (``--methods``) plus the new weights
   (each row's ``bench``).
5. ``OUT/summary.json`` and ``OUT/summary.md``: per model preset, steps, seconds, final losses,
   whether the time limit stopped it; the benchmark tables. With ``--bring-back DIR`` (a device
   machine's ``$OUT``: few files, 16 MiB each, 64 MiB in all) also the summary and the exported
   models in 15 MiB tar parts, the ones that beat ``blend`` on every set first, under a size cap.

Presets: ``gpu`` (CUDA; the runs stop at their time limit) or ``tiny`` (a few steps of the tiny
presets: the same code path on CPU in about a minute, the CI test ``tests/test_gpu_train.py``);
``auto`` picks ``gpu`` when CUDA is available. Adding a learned model is one :class:`LearnedModel`
row in :data:`REGISTRY`. See docs/GPU.md for the device command.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_DATA = REPO.parent / "shared" / "faces" / "london"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Not in the default benchmark: uvapm fits by Adam per view (seconds each), too slow for a budget of minutes.
SLOW_METHODS = ("uvapm", "gan")
UNLIMITED_STEPS = 10 ** 9   # gpu presets: the time limit ends the run


def _symbol(path: str):
    """``"package.module:name"`` -> the object (imported when used, so a row costs nothing until then)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class LearnedModel:
    """One learned model in the budget.

    Attributes:
        name: its folder name under ``OUT/train`` and ``OUT/models``.
        train: ``"module:function"`` with the signature every facetex trainer has:
            ``train(folders, out_dir, config, *, model, resume, device, num_workers) -> dict`` (the last
            losses plus ``steps`` and ``seconds``).
        config: ``"module:ConfigClass"``, a :class:`stages.train.runner.RunConfig` subclass.
        presets: ``"gpu"`` and ``"tiny"`` -> the config's settings for that run.
        share: its part of the training time (relative to the other rows' shares).
        load: ``"module:function"`` loading the exported folder (``load(path, **load_options)``), to check it.
        needs: config field -> another row's name whose trained folder it takes (e.g. a base model).
        bench: benchmark rows for the trained folders: ``label -> (completion method, {option: row name})``
            or ``(method, {option: row name}, {option: value})`` for fixed options as well.
        weights: the weights file whose checksum names its benchmark results.
        workers: DataLoader workers for this row (None: the run's ``--workers``); 0 for a dataset that is
            precomputed in memory and whose epoch is one batch (workers would restart every step).
    """

    name: str
    train: str
    config: str
    presets: dict[str, dict]
    share: float
    load: str
    load_options: dict = field(default_factory=dict)
    needs: dict[str, str] = field(default_factory=dict)
    bench: dict[str, tuple] = field(default_factory=dict)
    weights: str = "weights.safetensors"
    workers: int | None = None


PAIR = {"model_path": "diffusion_appearance", "structure_path": "diffusion_structure"}

#: Every learned model of facetex. Add one row to train, export and benchmark another model.
REGISTRY: tuple[LearnedModel, ...] = (
    LearnedModel(
        "diffusion_appearance", "stages.train.diffusion:train_diffusion",
        "stages.train.diffusion_config:DiffusionTrainConfig",
        presets={"gpu": {"kind": "appearance", "preset": "small", "vae_steps": 1500, "batch_size": 32,
                         "mixed_precision": "bf16"},
                 "tiny": {"kind": "appearance", "preset": "tiny", "vae_steps": 2, "steps": 3, "batch_size": 2}},
        share=0.3, load="stages.models.diffusion:load_modules", load_options={"kind": "appearance"},
        weights="unet/diffusion_pytorch_model.safetensors", workers=0),
    LearnedModel(
        "diffusion_structure", "stages.train.diffusion:train_diffusion",
        "stages.train.diffusion_config:DiffusionTrainConfig",
        presets={"gpu": {"kind": "structure", "preset": "small", "batch_size": 32, "mixed_precision": "bf16"},
                 "tiny": {"kind": "structure", "preset": "tiny", "steps": 3, "batch_size": 2}},
        share=0.2, load="stages.models.diffusion:load_modules", load_options={"kind": "structure"},
        needs={"base": "diffusion_appearance"},
        bench={"diffusion (new)": ("diffusion", PAIR),
               # docs/DIFFUSION.md "Sampling from a fill": the gentlest setting measured on CPU
               "diffusion (new, from blend)": ("diffusion", PAIR, {"init": "blend", "strength": 0.1,
                                                                   "keep_seen": True, "residual": True})},
        weights="controlnet/diffusion_pytorch_model.safetensors"),
    LearnedModel(
        "unet", "stages.train.trainer:train_uv_generator", "stages.train.trainer:TrainConfig",
        presets={"gpu": {"preset": "base", "batch_size": 16, "uv_size": 256, "view_size": 128},
                 "tiny": {"preset": "tiny", "steps": 3, "batch_size": 2, "uv_size": 64, "view_size": 32}},
        share=0.25, load="stages.models.uv_generator:load_generator",
        bench={"unet (new)": ("unet", {"model_path": "unet"})}),
    LearnedModel(
        "sampler", "stages.train.sampler:train_uv_sampler", "stages.train.sampler:SamplerTrainConfig",
        presets={"gpu": {"preset": "base", "batch_size": 16},
                 "tiny": {"preset": "tiny", "steps": 3, "batch_size": 2, "uv_size": 32}},
        share=0.1, load="stages.models.uv_sampler:load_sampler"),
    LearnedModel(
        "detail_vae", "stages.train.detail_vae:train_detail_vae", "stages.train.detail_vae:DetailVAETrainConfig",
        presets={"gpu": {"preset": "base", "batch_size": 32},
                 "tiny": {"preset": "tiny", "steps": 3, "batch_size": 2}},
        share=0.15, load="stages.models.detail_vae:load_detail_decoder",
        bench={"uvapm + detail VAE (new)": ("uvapm", {"model_path": "detail_vae"})}),
    # No benchmark row: `complete --method gan` inverts the generator per view (10-30 s a fill on CPU),
    # more than a budget of minutes holds; score it afterwards with bench_completion.py --gan-model.
    LearnedModel(
        "texture_gan", "stages.train.texture_gan:train_texture_gan",
        "stages.train.texture_gan:TextureGANTrainConfig",
        presets={"gpu": {"preset": "base", "batch_size": 32, "r1_gamma": 10.0},
                 "tiny": {"preset": "tiny", "steps": 3, "batch_size": 2}},
        share=0.15, load="stages.models.texture_gan:load_texture_generator"),
)


class GpuTrainError(Exception):
    """A one-line reason the run cannot start (no data, bad budget)."""


def parse_budget(text: str) -> float:
    """``"480"``, ``"480s"``, ``"8m"``, ``"1.5h"`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match:
        raise GpuTrainError(f"--budget {text!r}: expected seconds or a number with s, m or h (e.g. 8m)")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds <= 0:
        raise GpuTrainError(f"--budget {text!r}: must be positive")
    return seconds


# ----------------------------------------------------------------------------------------------- data

def _photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def is_pack(data: Path) -> bool:
    return (data / "train").is_dir() and (data / "pack.json").is_file()


def prepare_data(data: Path, work: Path, *, train_uv: int, bench_uv: int, sets: list[str]) -> dict:
    """Training folders and benchmark photo sets from ``data`` (a London Set folder or a pack).

    Returns ``{"train": [folders], "bench": {set: [photos]}, "bench_cache": root}``: the benchmark's
    fit/unwrap of ``photo`` is ``bench_cache/<set>/<photo stem>/``.
    """
    from prepare_training_data import prepare_unwraps
    from stages.completion.pca import load_pca

    if data.is_file() and data.name.endswith((".tgz", ".tar.gz")):
        data = unpack(data, work / "pack")
    if not data.is_dir():
        raise GpuTrainError(f"{data}: data not found (a London Set folder with neutral/ and smiling/, or a "
                            f"pack from `python scripts/gpu_train.py --pack DIR`; see docs/GPU.md)")
    pca = load_pca(None)
    if is_pack(data):
        # Fits travel with the pack; unwrap + pseudo-gt here (no landmark detector needed).
        train = prepare_unwraps(data / "train", data / "train", uv_size=train_uv, pca=pca)
        bench = {s: [p for folder in sorted((data / "bench" / s).iterdir()) if folder.is_dir()
                     for p in _photos_in(folder)[:1]]
                 for s in sets if (data / "bench" / s).is_dir()}
        bench_cache = data / "bench"
    else:
        if not any((data / sub).is_dir() for sub in ("neutral", "smiling")):
            raise GpuTrainError(f"{data}: not a London Set folder (no neutral/ or smiling/) and not a pack "
                                f"(no pack.json)")
        train = prepare_unwraps(data, work / "train", uv_size=train_uv, pca=pca)
        bench = london_sets(data, sets)
        bench_cache = work / "bench"
    if not train:
        raise GpuTrainError(f"{data}: no London TRAIN photo could be prepared")
    return {"train": train, "bench": bench, "bench_cache": bench_cache}


def unpack(archive: Path, dest: Path) -> Path:
    """Extract a packed ``.tgz`` (``--pack`` writes one next to the pack folder) into ``dest``; returns the pack."""
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            tops = {Path(n).parts[0] for n in tar.getnames() if n and not n.startswith("/")}
            if len(tops) != 1:
                raise GpuTrainError(f"{archive}: expected one pack folder inside, found {len(tops)}")
            if dest.exists():
                shutil.rmtree(dest)
            tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)
    except (tarfile.TarError, OSError) as exc:
        raise GpuTrainError(f"{archive}: unreadable pack archive ({exc})") from None
    return dest / tops.pop()


def london_sets(london: Path, sets: list[str]) -> dict[str, list[Path]]:
    """The benchmark's photo sets next to a London Set folder: its hold-out people, and ``../wild``."""
    from stages.core.splits import london_split

    out = {}
    if "london-holdout" in sets:
        out["london-holdout"] = [p for p in sorted(london.glob("*/*.jpg")) if london_split(p) == "holdout"]
    if "wild" in sets and (london.parent / "wild").is_dir():
        out["wild"] = _photos_in(london.parent / "wild")
    return out


def pack(london: Path, out: Path, *, max_side: int = 512, bench_max_side: int = 1024) -> dict:
    """Write a pack: every London TRAIN photo downscaled to ``max_side`` (JPEG) with its ``fit.json`` (+ skin
    mask), and the near-frontal benchmark photos (London hold-out, ``../wild``) at ``bench_max_side``.

    Layout: ``out/train/<stem>/<stem>.jpg + fit.json``, ``out/bench/<set>/<stem>/<photo> + fit.json``,
    ``out/pack.json``; all of it also as ``<out>.tgz`` (``--data`` takes either). Fitting needs
    MediaPipe (this machine); the GPU machine only unwraps. Overlays are left out (size). Resumable.
    """
    from PIL import Image

    from facetex_cli.batch import quiet_native_stderr
    from stages.core.errors import FacetexError
    from stages.core.face_model import load_builtin_face_model
    from stages.core.image_io import load_photo
    from stages.core.splits import london_split
    from stages.evaluate.protocol import is_near_frontal
    from stages.fit import MediaPipeLandmarker, fit_photo, save_fit

    if not london.is_dir():
        raise GpuTrainError(f"{london}: London Set not found (see ../shared/faces/README.md)")
    model = load_builtin_face_model()
    landmarker = None
    jobs = [(p, out / "train" / p.stem, max_side, False) for p in sorted(london.glob("*/*.jpg"))
            if london_split(p) == "train"]
    for set_name, photos in london_sets(london, ["london-holdout", "wild"]).items():
        jobs += [(p, out / "bench" / set_name / p.stem, bench_max_side, True) for p in photos]
    counts: dict[str, int] = {}
    for path, folder, side, frontal_only in jobs:
        if (folder / "fit.json").is_file():
            counts[folder.parent.name] = counts.get(folder.parent.name, 0) + 1
            continue
        folder.mkdir(parents=True, exist_ok=True)
        small = folder / (path.stem + ".jpg")
        image = Image.open(path).convert("RGB")
        image.thumbnail((side, side), Image.LANCZOS)
        image.save(small, quality=90)
        try:
            photo = load_photo(small)
            with quiet_native_stderr():
                landmarker = landmarker or MediaPipeLandmarker()
                fit = fit_photo(photo, landmarker, model=model)[0]
        except FacetexError as exc:
            print(f"skipped {exc}", file=sys.stderr)
            shutil.rmtree(folder)
            continue
        if frontal_only and not is_near_frontal(fit):   # the benchmark scores near-frontal photos only
            shutil.rmtree(folder)
            continue
        save_fit(fit, photo.rgb, folder, model)
        for name in ("fit_overlay.png", "skin_overlay.png"):
            (folder / name).unlink(missing_ok=True)
        counts[folder.parent.name] = counts.get(folder.parent.name, 0) + 1
    info = {"source": str(london), "max_side": max_side, "bench_max_side": bench_max_side, "folders": counts}
    (out / "pack.json").write_text(json.dumps(info, indent=2))
    import tarfile

    archive = out.parent / f"{out.name}.tgz"      # what travels to a device machine
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname=out.name)
    info["archive"] = str(archive)
    return info


# ------------------------------------------------------------------------------------------- training

def choose_presets(presets: str) -> str:
    import torch

    if presets == "auto":
        return "gpu" if torch.cuda.is_available() else "tiny"
    if presets == "gpu" and not torch.cuda.is_available():
        raise GpuTrainError("--presets gpu: no CUDA device here (use --presets tiny, or auto)")
    return presets


def train_one(entry: LearnedModel, kind: str, folders: list[Path], out_dir: Path, seconds: float, model,
              trained: dict[str, Path], workers: int) -> dict:
    """Train one registry row for at most ``seconds`` (the runner's ``time_limit``); returns its record."""
    settings = dict(entry.presets[kind])
    for key, other in entry.needs.items():
        if other not in trained:
            raise GpuTrainError(f"needs the {other} model, which did not train")
        settings[key] = str(trained[other])
    if kind == "gpu":
        settings.setdefault("steps", UNLIMITED_STEPS)
    settings.update(time_limit=round(max(1.0, seconds), 1), sample_every=0, checkpoint_every=0, log_every=50)
    config = _symbol(entry.config)(**settings)
    if out_dir.exists():
        shutil.rmtree(out_dir)     # a fresh run: the budget is spent on new steps, not on a resume
    start = time.perf_counter()
    result = _symbol(entry.train)(folders, out_dir, config, model=model, resume=False, device="auto",
                                  num_workers=workers)
    wall = time.perf_counter() - start
    losses = {k: float(v) for k, v in result.items()
              if k not in ("steps", "vae_steps", "seconds", "seconds_per_step") and isinstance(v, (int, float))}
    return {"preset": settings.get("preset"), "settings": {k: v for k, v in settings.items() if k not in entry.needs},
            "steps": int(result["steps"]),
            **({"vae_steps": int(result["vae_steps"])} if result.get("vae_steps") else {}),
            "seconds": round(wall, 1), "time_limit": round(seconds, 1),
            "time_limited": bool(kind == "gpu" or int(result["steps"]) < int(settings.get("steps", 0))),
            "losses": losses}


RUN_ARTIFACTS = ("samples", "training_state", "train_log.jsonl")


def export(train_dir: Path, out_dir: Path) -> None:
    """Copy a trained model folder without its training state, samples and log (what inference needs)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(train_dir, out_dir, ignore=lambda _d, names: [n for n in names if n in RUN_ARTIFACTS])
    if (train_dir / "train_log.jsonl").is_file():     # the loss curve is part of the card's evidence
        shutil.copy2(train_dir / "train_log.jsonl", out_dir / "train_log.jsonl")


def beats(summary_bench: dict, label: str, reference: str = "blend") -> bool:
    """Whether ``label`` has a higher hidden-texel PSNR than ``reference`` on every benchmark set."""
    sets = list(summary_bench.values())
    return bool(sets) and all(label in s["methods"] and reference in s["methods"]
                              and s["methods"][label]["hidden_psnr"] > s["methods"][reference]["hidden_psnr"]
                              for s in sets)


def bring_back(out: Path, exported: dict[str, Path], benchmark: dict, dest: Path, cap_mib: float,
               part_mib: int = 15) -> dict:
    """Copy the summary into ``dest`` and tar exported models into ``dest/models.tar.NN`` parts of at most
    ``part_mib`` MiB (a device machine returns few, small files): first the models whose benchmark rows
    beat ``blend`` on every set, then the others in registry order, while the total stays under ``cap_mib``.

    Returns ``{"archived": [names], "left_out": {name: reason}}``; ``cat dest/models.tar.* | tar x`` restores.
    """
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    winners = [e.name for e in REGISTRY if e.name in exported and any(beats(benchmark, lb) for lb in e.bench)]
    order = winners + [name for name in exported if name not in winners]
    archived, left_out, total = [], {}, 0
    for name in order:
        size = sum(f.stat().st_size for f in exported[name].rglob("*") if f.is_file())
        if (total + size) / 2 ** 20 > cap_mib:
            left_out[name] = f"{size / 2 ** 20:.1f} MiB would pass the {cap_mib:g} MiB cap"
            continue
        archived.append(name)
        total += size
    if archived:
        tar_path = out / "models.tar"
        with tarfile.open(tar_path, "w") as tar:
            for name in archived:
                tar.add(exported[name], arcname=f"models/{name}")
        with open(tar_path, "rb") as whole:
            for i, chunk in enumerate(iter(lambda: whole.read(part_mib * 2 ** 20), b"")):
                (dest / f"models.tar.{i:02d}").write_bytes(chunk)
        tar_path.unlink()
    for name in ("summary.json", "summary.md"):
        shutil.copy2(out / name, dest / name)
    return {"archived": archived, "winners": winners, "left_out": left_out}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_card(entry: LearnedModel, record: dict, folder: Path, run: dict, bench: dict) -> str:
    """``README.md`` of an exported model folder: what it is, data, settings, losses, benchmark rows."""
    weights = folder / entry.weights
    sha = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else "missing"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    rows = []
    for set_name, summary in bench.items():
        for label in entry.bench:
            medians = summary["methods"].get(label)
            if medians:
                rows.append(f"| {set_name} | {label} | {medians['hidden_psnr']:.2f} | {medians['hidden_ssim']:.3f} |")
    table = ("\n## Evaluation (hidden-texel protocol, medians)\n\n"
             "| set | method | PSNR (dB) | SSIM |\n|---|---|---:|---:|\n"
             + "\n".join(rows) + "\n") if rows else ""
    losses = ", ".join(f"{k} {v:.4f}" for k, v in record["losses"].items())
    return (f"# `{entry.name}` (trained by `scripts/gpu_train.py`)\n\n"
            f"- Trainer: `{entry.train}`; settings: `{json.dumps(record['settings'])}`.\n"
            f"- Data: {run['train_folders']} facetex folders of the London Set's TRAINING people only "
            f"(`stages/core/splits.py`; hold-out people never used), from `{run['data']}`. Photos: Face Research Lab "
            f"London Set, CC BY 4.0 (DeBruine & Jones 2017, https://doi.org/10.6084/m9.figshare.5047666.v5); "
            f"these weights are a derivative under CC BY 4.0 with that attribution.\n"
            f"- Run: {record['steps']} steps"
            + (f" (+ {record['vae_steps']} autoencoder steps)" if "vae_steps" in record else "")
            + f" in {record['seconds']} s (time limit {record['time_limit']} s) on {run['device']}, "
            f"presets `{run['presets']}`, facetex commit `{run['commit']}`, {run['date']}.\n"
            f"- Last step's losses: {losses or 'none recorded'}.\n"
            f"- `{entry.weights}` sha256 `{sha}`; folder {size / 1e6:.1f} MB.\n" + table)


# ------------------------------------------------------------------------------------------ benchmark

def bench_methods(methods: list[str] | None, trained: dict[str, Path]) -> dict[str, tuple[str, dict]]:
    """``label -> (method, options)``: the registered methods (``methods``, default all but the slow ones)
    and the new weights' rows whose method is among them (their options name the trained folders)."""
    from stages.completion import available_methods

    names = methods if methods is not None else [m for m in sorted(available_methods()) if m not in SLOW_METHODS]
    out = {name: (name, {}) for name in names}
    for entry in REGISTRY:
        for label, (method, options, *fixed) in entry.bench.items():
            if method in names and all(row in trained for row in options.values()):
                paths = {opt: str(trained[row]) for opt, row in options.items()}
                out[label] = (method, {**paths, **(fixed or [{}])[0]})
    return out


def run_benchmark(data: dict, methods: dict[str, tuple[str, dict]], trained: dict[str, Path], work: Path,
                  model, *, uv_size: int, limit: int | None) -> dict:
    from bench_completion import load_fills, score_set, weights_tag

    fills = load_fills(model, methods)
    tags = {}
    for entry in REGISTRY:
        for label in entry.bench:
            if label in fills:
                tags[label] = weights_tag(re.sub(r"\W+", "_", label).strip("_"), trained[entry.name] / entry.weights)
    return {set_name: score_set(set_name, photos, fills, model, cache_root=data["bench_cache"],
                                results_root=work / "results", uv_size=uv_size, result_tags=tags, limit=limit)
            for set_name, photos in data["bench"].items()}


# -------------------------------------------------------------------------------------------- summary

def summary_markdown(summary: dict) -> str:
    from bench_completion import table

    run = summary["run"]
    lines = [f"# gpu_train summary ({run['date']}, {run['device']}, presets `{run['presets']}`)", "",
             f"Budget {run['budget_seconds']:.0f} s; data {run['data_seconds']:.1f} s ({run['train_folders']} "
             f"training folders), training {run['train_seconds']:.1f} s, benchmark {run['bench_seconds']:.1f} s, "
             f"total {run['total_seconds']:.1f} s. Commit `{run['commit']}`.", "",
             "| model | preset | steps | seconds (limit) | stopped by limit | last losses | loads |",
             "|---|---|---:|---:|---|---|---|"]
    for name, rec in summary["models"].items():
        if "error" in rec:
            lines.append(f"| {name} | | | | | error: {rec['error']} | no |")
            continue
        steps = f"{rec['steps']}" + (f" (+{rec['vae_steps']} vae)" if "vae_steps" in rec else "")
        losses = ", ".join(f"{k} {v:.4f}" for k, v in rec["losses"].items())
        lines.append(f"| {name} | {rec['preset']} | {steps} | {rec['seconds']} ({rec['time_limit']}) | "
                     f"{'yes' if rec['time_limited'] else 'no'} | {losses} | {'yes' if rec.get('loads') else 'no'} |")
    for set_name, result in summary["benchmark"].items():
        lines += ["", f"## {set_name}: {result['scored']} near-frontal of {result['photos']} photos scored "
                      f"(hidden-texel protocol, UV {run['bench_uv']}, medians)", "", table(result)]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import torch

    from stages.core.face_model import load_builtin_face_model

    started = time.perf_counter()
    budget = parse_budget(args.budget)
    kind = choose_presets(args.presets)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tiny = kind == "tiny"
    train_uv = args.train_uv or 256
    data = prepare_data(args.data, out / "data", train_uv=train_uv, bench_uv=args.bench_uv, sets=args.sets)
    data_seconds = time.perf_counter() - started
    print(f"data: {len(data['train'])} training folders, benchmark sets "
          f"{ {k: len(v) for k, v in data['bench'].items()} } in {data_seconds:.1f} s", flush=True)
    model = load_builtin_face_model()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and kind == "gpu" else "CPU"
    workers = args.workers if args.workers is not None else (0 if tiny else min(8, max(0, (os.cpu_count() or 1) - 2)))

    train_start = time.perf_counter()
    train_time = budget * (1.0 - args.bench_share) - data_seconds
    if train_time <= 0:
        raise GpuTrainError(f"--budget {args.budget}: the data step alone took {data_seconds:.0f} s")
    records: dict[str, dict] = {}
    trained: dict[str, Path] = {}
    rows = [e for e in REGISTRY if not args.only or e.name in args.only]
    for i, entry in enumerate(rows):
        left = train_time - (time.perf_counter() - train_start)
        seconds = left * entry.share / sum(e.share for e in rows[i:])
        print(f"train {entry.name}: up to {seconds:.0f} s", flush=True)
        try:
            records[entry.name] = train_one(entry, kind, data["train"], out / "train" / entry.name, seconds, model,
                                            trained, workers if entry.workers is None else entry.workers)
            trained[entry.name] = out / "train" / entry.name
        except Exception as exc:   # noqa: BLE001  one model's failure is recorded, the others train
            records[entry.name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            traceback.print_exc()
            print(f"error {entry.name}: {records[entry.name]['error']}", file=sys.stderr, flush=True)
            continue
        print(f"  {records[entry.name]['steps']} steps in {records[entry.name]['seconds']} s", flush=True)
    train_seconds = time.perf_counter() - train_start

    exported = {}
    for entry in rows:
        if entry.name not in trained:
            continue
        folder = out / "models" / entry.name
        export(trained[entry.name], folder)
        try:
            _symbol(entry.load)(folder, **entry.load_options)
            records[entry.name]["loads"] = True
            exported[entry.name] = folder
        except Exception as exc:   # noqa: BLE001
            records[entry.name]["loads"] = False
            records[entry.name]["error"] = f"exported folder does not load: {type(exc).__name__}: {exc}"

    bench_start = time.perf_counter()
    methods = bench_methods(args.methods, exported)
    benchmark = run_benchmark(data, methods, exported, out, model, uv_size=args.bench_uv,
                              limit=args.bench_limit if args.bench_limit is not None else (2 if tiny else 10))
    bench_seconds = time.perf_counter() - bench_start

    run_info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device, "presets": kind,
                "commit": git_commit(), "data": str(args.data), "train_folders": len(data["train"]),
                "train_uv": train_uv, "bench_uv": args.bench_uv, "budget_seconds": budget,
                "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
                "bench_seconds": round(bench_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1)}
    for entry in rows:
        if entry.name in exported:
            (exported[entry.name] / "README.md").write_text(
                model_card(entry, records[entry.name], exported[entry.name], run_info, benchmark))
    summary = {"run": run_info, "models": records, "benchmark": benchmark,
               "methods": {label: [m, opts] for label, (m, opts) in methods.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary))
    if args.bring_back is not None:
        summary["bring_back"] = bring_back(out, exported, benchmark, args.bring_back, args.bring_back_mib)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        shutil.copy2(out / "summary.json", args.bring_back / "summary.json")
        print(f"brought back: {summary['bring_back']}")
    print(summary_markdown(summary))
    return 1 if any("error" in r for r in records.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="8m", help="total wall-clock budget: seconds, or 8m, 1h")
    parser.add_argument("--out", type=Path, default=REPO / "gpu_out", help="output folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a London Set folder, or a pack (--pack) folder or .tgz")
    parser.add_argument("--presets", choices=("auto", "gpu", "tiny"), default="auto")
    parser.add_argument("--only", nargs="+", choices=[e.name for e in REGISTRY], help="train only these rows")
    parser.add_argument("--methods", nargs="+", help="registered completion methods to benchmark "
                                                     f"(default: all but {', '.join(SLOW_METHODS)})")
    parser.add_argument("--sets", nargs="+", default=["london-holdout", "wild"])
    parser.add_argument("--bench-limit", type=int, help="near-frontal photos scored per set (default 10; tiny 2)")
    parser.add_argument("--bench-share", type=float, default=0.2, help="part of the budget kept for the benchmark")
    parser.add_argument("--bench-uv", type=int, default=512, help="UV size of the benchmark's unwraps")
    parser.add_argument("--train-uv", type=int, help="UV size of the training unwraps (256..2048)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU, up to 8 on GPU)")
    parser.add_argument("--bring-back", type=Path, metavar="DIR",
                        help="also copy the summary and tar the exported models (winners first) into DIR in "
                             "15 MiB parts (a device machine's $OUT)")
    parser.add_argument("--bring-back-mib", type=float, default=56.0, help="--bring-back: cap of the models' size")
    parser.add_argument("--pack", type=Path, metavar="DIR", help="write a pack of --photos to DIR and exit")
    parser.add_argument("--photos", type=Path, default=DEFAULT_DATA, help="--pack: the London Set folder")
    parser.add_argument("--max-side", type=int, default=512, help="--pack: long side of the training photos")
    parser.add_argument("--bench-max-side", type=int, default=1024, help="--pack: long side of benchmark photos")
    args = parser.parse_args(argv)
    try:
        if args.pack is not None:
            info = pack(args.photos, args.pack, max_side=args.max_side, bench_max_side=args.bench_max_side)
            size = sum(f.stat().st_size for f in args.pack.rglob("*") if f.is_file())
            print(f"pack {args.pack}: {info['folders']}, {size / 2 ** 20:.1f} MiB; "
                  f"{info['archive']}: {Path(info['archive']).stat().st_size / 2 ** 20:.1f} MiB")
            return 0
        if not 0.0 <= args.bench_share < 1.0:
            raise GpuTrainError(f"--bench-share {args.bench_share}: must be in [0, 1)")
        return run(args)
    except GpuTrainError as exc:
        print(f"error {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
