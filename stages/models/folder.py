"""The one model-folder format of every learned model (diffusers' ``save_pretrained`` style).

A model folder holds named networks and, where a model has parts built by another library, one
diffusers-style subfolder per part::

    MODEL_DIR/
      config.json           {"schema": "facetex.model", "format_version": 1, "model_type": ...,
                             "configs": {name: config dict}, "parts": [subfolder, ...],
                             "facetex_version": ..., **extra}
      weights.safetensors   every named network's state_dict, keys "<name>.<param>" (absent when
                            the folder has only parts)
      <part>/               a subfolder: a facetex model folder itself, or a diffusers module's
                            ``save_pretrained`` (its own config.json + *.safetensors)
      samples/, training_state/   kept across saves of a training run

:func:`save_pretrained` writes the folder atomically (a temporary folder next to it, renamed into
place); :func:`load_pretrained` rebuilds the networks from their configs and checks the weights,
raising :class:`stages.core.errors.MissingArtifactError` with a one-line reason on any problem.
A network may define ``trainable_state()`` (the tensors it saves, e.g. without a frozen pretrained
encoder that its config references); it is then saved and checked instead of ``state_dict()``.

Used by the UV generator (:mod:`stages.models.uv_generator`), the UV sampler
(:mod:`stages.models.uv_sampler`) and the diffusion networks (:mod:`stages.models.diffusion`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from stages import __version__
from stages.core.atomic import swap_into_place
from stages.core.errors import MissingArtifactError

SCHEMA = "facetex.model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
#: Keys of ``config.json`` the format itself sets (``extra`` must not reuse them).
RESERVED_KEYS = ("schema", "format_version", "model_type", "configs", "parts", "facetex_version")
#: Where the model folders that ship with facetex live (each with its model card as README.md).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "assets"


def shipped_model(folder: Path, what: str, instead: str) -> Path:
    """``folder``, a model folder shipped under :data:`SHIPPED_MODELS`, checked to hold its weights.

    Args:
        folder: the folder (e.g. ``SHIPPED_MODELS / "texture_gan_london_v1"``).
        what: what it is, for the message (e.g. ``texture GAN``).
        instead: what the user can do instead, for the message (e.g. ``or pass --model DIR``).

    Raises:
        MissingArtifactError: the install lacks it (one line).
    """
    if not (folder / WEIGHTS_NAME).is_file():
        raise MissingArtifactError(folder, f"the shipped {what} is missing from this install: reinstall facetex, "
                                           f"{instead}")
    return folder


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first}"[:300]


def _saved_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a network saves: ``trainable_state()`` when it defines one, else ``state_dict()``."""
    own = getattr(module, "trainable_state", None)
    return own() if callable(own) else module.state_dict()


def save_pretrained(directory: str | Path, models: dict[str, nn.Module], configs: dict[str, dict], *,
                    model_type: str, extra: dict | None = None, keep: Iterable[str] = (),
                    parts: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Write ``models`` and their ``configs`` as a model folder, atomically.

    Args:
        directory: the model folder (created; an existing one is replaced).
        models: networks by name (names must be non-empty and contain no ``.``).
        configs: a JSON-serialisable config dict for every name in ``models``.
        model_type: what the folder holds (checked by :func:`load_pretrained`).
        extra: more top-level keys for ``config.json`` (must not reuse the reserved ones).
        keep: names of entries of an existing ``directory`` (e.g. ``samples``, ``training_state``)
            carried over into the new folder; everything else of the old folder is dropped.
        parts: subfolder name -> a function that writes that subfolder (given its path), e.g. a
            diffusers module's ``save_pretrained``; their names are listed in ``config.json``.

    Returns:
        The folder's path.

    Raises:
        ValueError: bad names, a model without a config, reserved keys in ``extra``.
    """
    directory = Path(directory)
    extra = dict(extra or {})
    for name in models:
        if not name or "." in name:
            raise ValueError(f"save_pretrained: invalid model name {name!r} (non-empty, no '.')")
    if set(models) != set(configs):
        raise ValueError(f"save_pretrained: models {sorted(models)} and configs {sorted(configs)} differ")
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"save_pretrained: extra must not set reserved keys {clash}")
    parts = dict(parts or {})
    for name in parts:
        if not name or "/" in name or name in (CONFIG_NAME, WEIGHTS_NAME, *keep):
            raise ValueError(f"save_pretrained: invalid part name {name!r}")
    config_json = {"schema": SCHEMA, "format_version": FORMAT_VERSION, "model_type": model_type,
                   "configs": {name: dict(configs[name]) for name in models}, "parts": sorted(parts),
                   "facetex_version": __version__, **extra}
    text = json.dumps(config_json, indent=2) + "\n"  # fails early on non-JSON configs
    tensors: dict[str, torch.Tensor] = {}
    for name, module in models.items():
        for key, value in _saved_state(module).items():
            # clone: safetensors refuses tensors that share memory (tied weights, views).
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()

    from safetensors.torch import save_file

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".part", dir=directory.parent))
    try:
        for name, write in parts.items():
            write(tmp / name)
        (tmp / CONFIG_NAME).write_text(text)
        if models:
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model_type": model_type})
        os.chmod(tmp, 0o777 & ~_umask())
        swap_into_place(tmp, directory, keep)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_schema_json(path: str | Path, schema: str, what: str, missing: str = "missing") -> dict:
    """Read a JSON object whose ``"schema"`` key must be ``schema``.

    Args:
        path: the file.
        schema: the expected schema name.
        what: what the file is, for the message (e.g. ``"facetex model config"``).
        missing: the reason given when the file does not exist.

    Raises:
        MissingArtifactError: naming the file: missing, unreadable, not an object, or wrong schema.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(path, missing)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MissingArtifactError(path, f"unreadable ({_one_line(e)})") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise MissingArtifactError(path, f"not a {what} (schema is not {schema!r})")
    return data


def read_model_config(directory: str | Path, *, model_type: str | None = None,
                      missing: str = "config.json missing (not a facetex model folder)") -> dict:
    """Read and check ``directory/config.json`` (and that its listed part subfolders exist).

    Args:
        missing: the reason given when ``config.json`` does not exist (e.g. how to train one).

    Raises:
        MissingArtifactError: folder or file missing, unreadable, wrong schema/version/model type,
            a listed part subfolder missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingArtifactError(directory, "model folder not found")
    path = directory / CONFIG_NAME
    config = read_schema_json(path, SCHEMA, "facetex model config", missing)
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise MissingArtifactError(path, f"unsupported format_version {version!r} (this facetex reads "
                                         f"<= {FORMAT_VERSION}; upgrade facetex)")
    if model_type is not None and config.get("model_type") != model_type:
        raise MissingArtifactError(path, f"model_type is {config.get('model_type')!r}, expected {model_type!r}")
    if not isinstance(config.get("configs"), dict):
        raise MissingArtifactError(path, "config.json has no 'configs' object")
    for part in config.get("parts", []):
        if not (directory / str(part)).is_dir():
            raise MissingArtifactError(directory / str(part), "part subfolder missing")
    return config


def load_pretrained(directory: str | Path, builders: dict[str, Callable[[dict], nn.Module]], *, model_type: str,
                    names: list[str] | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, nn.Module], dict]:
    """Rebuild networks from a model folder written by :func:`save_pretrained`.

    Args:
        directory: the model folder.
        builders: for each name, a function from its config dict to a fresh network.
        model_type: the expected ``model_type``.
        names: the networks to load (default: every name in ``builders``); other networks in the
            folder are left alone.
        map_location: device the networks are moved to.

    Returns:
        ``(models, config_json)``: the networks (in eval mode) by name, and the parsed ``config.json``.

    Raises:
        MissingArtifactError: naming the folder or file, for a missing folder, a missing /
            unreadable / wrong-schema / wrong-model_type ``config.json``, a missing or corrupt
            ``weights.safetensors``, missing or unexpected keys, or shape mismatches.
    """
    directory = Path(directory)
    config = read_model_config(directory, model_type=model_type)
    cfg_path = directory / CONFIG_NAME
    names = list(builders) if names is None else list(names)
    for name in names:
        if name not in builders:
            raise ValueError(f"load_pretrained: no builder for {name!r}")
        if name not in config["configs"]:
            raise MissingArtifactError(cfg_path, f"no config for model {name!r} (has {sorted(config['configs'])})")

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise MissingArtifactError(weights, "weights.safetensors missing")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            keys = list(fh.keys())
            wanted = {k for k in keys if k.split(".", 1)[0] in names}
            tensors = {k: fh.get_tensor(k) for k in wanted}
    except Exception as e:  # safetensors raises its own error types for truncated / garbage files
        raise MissingArtifactError(weights, f"corrupt weights file ({_one_line(e)})") from None
    stray = sorted(k for k in keys if k.split(".", 1)[0] not in config["configs"])
    if stray:
        raise MissingArtifactError(weights, f"unexpected keys not belonging to any configured model: {stray[:3]}")

    models: dict[str, nn.Module] = {}
    for name in names:
        try:
            module = builders[name](config["configs"][name])
        except (ValueError, TypeError, KeyError) as e:
            raise MissingArtifactError(cfg_path, f"invalid config for model {name!r} ({_one_line(e)})") from None
        expected = _saved_state(module)
        prefix = f"{name}."
        got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(expected) - set(got))
        if missing:
            raise MissingArtifactError(weights, f"model {name!r}: {len(missing)} missing keys, e.g. {missing[0]!r}")
        unexpected = sorted(set(got) - set(expected))
        if unexpected:
            raise MissingArtifactError(weights, f"model {name!r}: {len(unexpected)} unexpected keys, "
                                                f"e.g. {unexpected[0]!r}")
        for key, value in expected.items():
            if tuple(got[key].shape) != tuple(value.shape):
                raise MissingArtifactError(weights, f"model {name!r}: shape mismatch for {key!r}: file has "
                                                    f"{tuple(got[key].shape)}, config gives {tuple(value.shape)}")
        module.load_state_dict(got, strict=expected.keys() == module.state_dict().keys())
        models[name] = module.to(map_location).eval()
    return models, config


def export_pretrained(source: str | Path, destination: str | Path, builders: dict[str, Callable[[dict], nn.Module]],
                      *, model_type: str, names: list[str], extra: dict | None = None) -> Path:
    """Copy only the networks ``names`` of a model folder into a new one (e.g. the generator of a
    training folder, without its discriminators, optimizer state and samples: what inference needs).

    The new ``config.json`` keeps the source's extra keys (training settings, data, steps), adds
    ``exported_from`` and ``extra``; the weights are bit-identical.
    """
    models, config = load_pretrained(source, builders, model_type=model_type, names=names)
    kept = {k: v for k, v in config.items() if k not in RESERVED_KEYS}
    kept.update({"exported_from": str(source), **(extra or {})})
    return save_pretrained(destination, models, {n: config["configs"][n] for n in names}, model_type=model_type,
                           extra=kept)
