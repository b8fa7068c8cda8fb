"""The diffusers building blocks and the on-disk model folders of the diffusion networks.

A model folder is the one facetex format (:mod:`stages.models.folder`, written atomically) with
diffusers-style part subfolders::

    MODEL_DIR/
      config.json              schema facetex.model, model_type diffusion_appearance |
                               diffusion_structure, parts, kind, training config, base (path +
                               fingerprint), latent factor and scaling, conditioning channels, steps
      extractor/               the feature extractor (a facetex model folder, ``diffusion_extractor``)
      controlnet/              diffusers ControlNetModel (save_pretrained)
      scheduler/               the training noise schedule (DDPMScheduler config)
      unet/, vae/              only in an appearance folder of an own-base preset: the base itself
      samples/, training_state/

The *base* (VAE + UNet, frozen for the structure network and at inference) is a folder with
``unet/`` and ``vae/`` subfolders: a Stable Diffusion 1.5 diffusers folder, or an own-base
appearance folder. A folder records its base's fingerprint (:func:`folder_fingerprint` of
``unet/``), so cross-assembly refuses modules trained on different bases.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from stages.core.errors import FacetexError, MissingArtifactError
from stages.models.extractor import DetailExtractor, folder_fingerprint
from stages.models.folder import CONFIG_NAME, read_model_config, save_pretrained

INSTALL_HINT = "pip install 'facetex[diffusion]'"
#: The noise schedule both networks train with (Stable Diffusion's, so an SD base fits it), saved
#: in every folder's ``scheduler/``.
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "clip_sample": False,
                  "set_alpha_to_one": False, "steps_offset": 1}


class MissingDependencyError(FacetexError):
    """An optional package a feature needs is not installed (one line naming what to install)."""


def require_diffusers():
    """Import and return the ``diffusers`` module, or raise :class:`MissingDependencyError`."""
    try:
        import diffusers
    except ImportError:
        raise MissingDependencyError(None, f"the diffusion method needs diffusers, which is not installed: "
                                           f"{INSTALL_HINT}") from None
    return diffusers


def latent_factor(vae) -> int:
    """Spatial downsampling of an AutoencoderKL: ``2 ** (levels - 1)``."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_vae(config: dict, image_size: int):
    """A from-scratch ``AutoencoderKL`` (RGB, ``config``: block_out_channels, layers_per_block,
    norm_num_groups, latent_channels)."""
    diffusers = require_diffusers()
    levels = len(config["block_out_channels"])
    return diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                                   up_block_types=("UpDecoderBlock2D",) * levels,
                                   block_out_channels=tuple(config["block_out_channels"]),
                                   layers_per_block=int(config["layers_per_block"]),
                                   norm_num_groups=int(config["norm_num_groups"]),
                                   latent_channels=int(config["latent_channels"]), sample_size=int(image_size))


def build_unet(config: dict, latent_channels: int, sample_size: int):
    """A from-scratch ``UNet2DConditionModel`` over ``latent_channels`` latents."""
    diffusers = require_diffusers()
    return diffusers.UNet2DConditionModel(
        sample_size=int(sample_size), in_channels=int(latent_channels), out_channels=int(latent_channels),
        block_out_channels=tuple(config["block_out_channels"]), layers_per_block=int(config["layers_per_block"]),
        norm_num_groups=int(config["norm_num_groups"]), cross_attention_dim=int(config["cross_attention_dim"]),
        attention_head_dim=int(config["attention_head_dim"]), down_block_types=tuple(config["down_block_types"]),
        up_block_types=tuple(config["up_block_types"]))


def build_controlnet(unet, conditioning_channels: int, factor: int):
    """A ControlNet copied from ``unet``'s encoder (``ControlNetModel.from_unet``) whose condition
    embedding takes ``conditioning_channels`` images at ``factor`` times the latent resolution."""
    diffusers = require_diffusers()
    levels = int(round(factor)).bit_length()          # factor = 2 ** (levels - 1)
    if 2 ** (levels - 1) != factor:
        raise ValueError(f"latent factor must be a power of two, got {factor}")
    widths = tuple(min(16 * 2 ** i, 256) for i in range(levels))
    return diffusers.ControlNetModel.from_unet(unet, conditioning_channels=int(conditioning_channels),
                                               conditioning_embedding_out_channels=widths)


def noise_scheduler(config: dict | None = None):
    """The DDPM noise schedule of training (:data:`NOISE_SCHEDULE`)."""
    diffusers = require_diffusers()
    return diffusers.DDPMScheduler.from_config({**NOISE_SCHEDULE, **(config or {})})


def load_base(path: str | Path, *, device="cpu", dtype=None):
    """Load ``(vae, unet)`` from a base folder (``unet/`` and ``vae/`` subfolders), frozen, eval mode.

    Raises:
        MissingArtifactError: the folder or a subfolder is missing or not loadable (one line).
    """
    diffusers = require_diffusers()
    path = Path(path)
    for sub in ("unet", "vae"):
        if not (path / sub / "config.json").is_file():
            raise MissingArtifactError(path / sub, "base model subfolder missing (a base is a Stable Diffusion 1.5 "
                                                   "diffusers folder or a facetex diffusion-appearance folder)")
    kwargs = {"local_files_only": True} | ({"torch_dtype": dtype} if dtype is not None else {})
    loaded = []
    for sub, cls in (("vae", diffusers.AutoencoderKL), ("unet", diffusers.UNet2DConditionModel)):
        try:
            module = cls.from_pretrained(path, subfolder=sub, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            raise MissingArtifactError(path / sub, f"cannot load ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
                                       ) from None
        loaded.append(module.requires_grad_(False).eval().to(device))
    return tuple(loaded)


def base_fingerprint(path: str | Path) -> str:
    return folder_fingerprint(Path(path) / "unet")


def save_model_folder(directory: str | Path, *, kind: str, train: dict, extractor: DetailExtractor, controlnet,
                      scheduler, base: dict, scaling_factor: float, factor: int, conditioning_channels: int,
                      steps: int, vae=None, unet=None, extra: dict | None = None,
                      keep: Iterable[str] = ("samples", "training_state")) -> Path:
    """Write a diffusion model folder atomically (see the module docstring).

    Args:
        base: ``{"path": str, "fingerprint": str}`` of the base folder trained on; replaced by
            ``{"path": None, "fingerprint": <own unet/>}`` when ``unet`` is given (the folder then
            holds its own base).
        vae, unet: the own base, written into ``vae/`` and ``unet/`` (appearance, own-base presets).
    """
    base = dict(base)
    if unet is not None:
        # The fingerprint reads the files, so unet/ is written once here and copied into the folder.
        with tempfile.TemporaryDirectory(prefix="facetex-unet.") as tmp_unet:
            unet.save_pretrained(Path(tmp_unet) / "unet", safe_serialization=True)
            base = {"path": None, "fingerprint": folder_fingerprint(Path(tmp_unet) / "unet")}
            return _save(directory, kind, train, extractor, controlnet, scheduler, base, scaling_factor, factor,
                         conditioning_channels, steps, vae, Path(tmp_unet) / "unet", extra, keep)
    return _save(directory, kind, train, extractor, controlnet, scheduler, base, scaling_factor, factor,
                 conditioning_channels, steps, vae, None, extra, keep)


def _save(directory, kind, train, extractor, controlnet, scheduler, base, scaling_factor, factor,
          conditioning_channels, steps, vae, unet_dir: Path | None, extra, keep) -> Path:
    meta = {"kind": kind, "train": train, "base": base, "scaling_factor": float(scaling_factor),
            "latent_factor": int(factor), "conditioning_channels": int(conditioning_channels), "steps": int(steps),
            **(extra or {})}
    parts = {"extractor": extractor.save_pretrained,
             "controlnet": lambda path: controlnet.save_pretrained(path, safe_serialization=True),
             "scheduler": scheduler.save_pretrained}
    if unet_dir is not None:
        parts["unet"] = lambda path: shutil.copytree(unet_dir, path)
    if vae is not None:
        parts["vae"] = lambda path: vae.save_pretrained(path, safe_serialization=True)
    return save_pretrained(directory, {}, {}, model_type=model_type_of(kind), extra=meta, keep=keep, parts=parts)


def model_type_of(kind: str) -> str:
    """``model_type`` of a diffusion model folder of ``kind`` (appearance | structure)."""
    return f"diffusion_{kind}"


def read_meta(directory: str | Path, kind: str | None = None) -> dict:
    """Read and check a diffusion model folder's ``config.json``.

    Raises:
        MissingArtifactError: folder/file missing, unreadable, wrong schema, version or kind.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingArtifactError(directory, "diffusion model folder not found")
    meta = read_model_config(directory, missing="missing (not a facetex diffusion model folder: train one with "
                                                "`facetex train diffusion-appearance|diffusion-structure`)")
    if meta.get("model_type") not in (model_type_of("appearance"), model_type_of("structure")):
        raise MissingArtifactError(directory / CONFIG_NAME, f"model_type is {meta.get('model_type')!r}, not a "
                                                            f"diffusion network")
    if kind is not None and meta.get("kind") != kind:
        raise MissingArtifactError(directory / CONFIG_NAME, f"this folder holds the {meta.get('kind')} network, "
                                                            f"expected the {kind} network")
    return meta


def base_path_of(directory: str | Path, meta: dict) -> Path:
    """The base folder a model was trained on (the folder itself when it holds its own base)."""
    path = meta.get("base", {}).get("path")
    return Path(directory) if path is None else Path(path)


def load_modules(directory: str | Path, *, kind: str, device="cpu", dtype=None) -> tuple[DetailExtractor, object, dict]:
    """Load ``(extractor, controlnet, meta)`` of a model folder; one-line errors on any problem."""
    diffusers = require_diffusers()
    directory = Path(directory)
    meta = read_meta(directory, kind)
    extractor = DetailExtractor.from_pretrained(directory / "extractor")
    if not (directory / "controlnet" / "config.json").is_file():
        raise MissingArtifactError(directory / "controlnet", "controlnet subfolder missing")
    try:
        controlnet = diffusers.ControlNetModel.from_pretrained(directory / "controlnet", local_files_only=True,
                                                               **({"torch_dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError, RuntimeError) as e:
        raise MissingArtifactError(directory / "controlnet", f"cannot load ({type(e).__name__})") from None
    extractor = extractor.to(device=device, dtype=dtype or extractor.proj.weight.dtype).eval()
    controlnet = controlnet.to(device).eval()
    return extractor, controlnet, meta
