"""Face models from the user's own files: BFM and FLAME, converted once into a user data folder.

facetex never ships or downloads them (their licences do not allow it): ``facetex assets add bfm|flame
PATH`` (:func:`add_user_model`) checks the file, records its sha256, converts it with
:func:`stages.core.morphable.morphable_face_model` (the landmark correspondence is built here, once) and
writes ``<data>/models/<name>.npz`` plus ``<data>/models/<kind>.json`` naming the current one. ``<data>``
is ``$FACETEX_DATA`` or the platform's user data folder (``$XDG_DATA_HOME/facetex``,
``~/.local/share/facetex``; ``~/Library/Application Support/facetex`` on macOS; ``%LOCALAPPDATA%\\facetex``
on Windows). ``--face-model bfm`` then loads the added model; ``bfm:PATH`` converts (or reuses the
conversion of) that file without making it the default.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from stages.core.errors import BadInputError, MissingArtifactError
from stages.core.face_model import FaceModel

KINDS = ("bfm", "flame")
#: Where a user requests each model (both are free for research after registration).
REQUEST_URL = {"bfm": "https://faces.dmi.unibas.ch/bfm/", "flame": "https://flame.is.tue.mpg.de/"}
EXPECTED_FILES = {"bfm": "01_MorphableModel.mat (BFM 2009) or model2017-1_bfm_nomouth.h5 (BFM 2017)",
                  "flame": "generic_model.pkl with --uv FLAME_texture.npz (or head_template_mesh.obj)"}
RECORD_SCHEMA = "facetex.user_model"


def data_dir() -> Path:
    """The user data folder (``$FACETEX_DATA`` first)."""
    if os.environ.get("FACETEX_DATA"):
        return Path(os.environ["FACETEX_DATA"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "facetex"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "facetex"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "facetex"


def models_dir() -> Path:
    return data_dir() / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise BadInputError(path, f"{what} not found")
    if not path.is_file():
        raise BadInputError(path, f"{what} is not a regular file")


def _model_name(kind: str, variant: str, source_sha: str, uv_sha: str | None) -> str:
    key = source_sha if uv_sha is None else hashlib.sha256(f"{source_sha}:{uv_sha}".encode()).hexdigest()
    return f"{variant}-{key[:12]}"


def convert_user_model(kind: str, path: str | Path, uv: str | Path | None = None) -> tuple[FaceModel, dict]:
    """Read and convert a user's BFM / FLAME file (nothing written). Returns ``(model, record)``.

    Raises:
        BadInputError: a missing, unreadable or malformed file (one line naming file and field);
            FLAME without ``uv``.
    """
    from stages.core.bfm import read_bfm
    from stages.core.flame import read_flame, read_uv_file
    from stages.core.morphable import morphable_face_model

    if kind not in KINDS:
        raise ValueError(f"unknown user model kind {kind!r}; choose from {', '.join(KINDS)}")
    path = Path(path)
    _check_file(path, f"{kind} model file")
    uv_path = None if uv is None else Path(uv)
    if uv_path is not None:
        _check_file(uv_path, "UV file")
    if kind == "flame":
        if uv_path is None:
            raise BadInputError(path, "FLAME needs its texture-space file: add --uv FLAME_texture.npz (or "
                                      f"head_template_mesh.obj), from {REQUEST_URL['flame']}")
        source = read_flame(path, uv_path)
    else:
        source = read_bfm(path)
        if uv_path is not None:
            source.uv, source.uv_triangles, obj_tri = read_uv_file(uv_path, len(source.vertices))
            if obj_tri is not None:
                source.triangles = obj_tri
            elif len(source.uv_triangles) != len(source.triangles):
                raise BadInputError(uv_path, f"ft: {len(source.uv_triangles)} triangles, the model has "
                                             f"{len(source.triangles)}")
    source_sha = sha256_of(path)
    uv_sha = None if uv_path is None else sha256_of(uv_path)
    name = _model_name(kind, source.variant, source_sha, uv_sha)
    try:
        model, info = morphable_face_model(name, source.vertices, source.triangles, source.identity,
                                           source.expression, source.uv, source.uv_triangles)
    except ValueError as exc:
        raise BadInputError(path, f"cannot convert: {exc}") from None
    record = {"schema": RECORD_SCHEMA, "kind": kind, "variant": source.variant, "name": name,
              "source": str(path.resolve()), "source_sha256": source_sha,
              "uv": None if uv_path is None else str(uv_path.resolve()), "uv_sha256": uv_sha,
              "model_file": f"{name}.npz", "added": time.strftime("%Y-%m-%dT%H:%M:%S"), "conversion": info}
    return model, record


def add_user_model(kind: str, path: str | Path, uv: str | Path | None = None, default: bool = True) -> dict:
    """Convert a user's file into the data folder; with ``default`` make it what ``--face-model KIND`` loads.

    Returns:
        The record written to ``<data>/models/<kind>.json`` (source path and sha256, model name and
        file, conversion statistics).
    """
    from stages.core.atomic import atomic_path, io_error, write_json

    model, record = convert_user_model(kind, path, uv)
    folder = models_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(folder, exc) from None
    target = folder / record["model_file"]
    with atomic_path(target) as tmp:
        model.save(tmp, basis_dtype="float16")
    write_json(folder / f"{record['name']}.json", record)
    if default:
        write_json(folder / f"{kind}.json", record)
    _load_npz.cache_clear()
    return record


def _missing(kind: str, where: Path) -> MissingArtifactError:
    return MissingArtifactError(where, f"no {kind.upper()} model added: add your copy of {EXPECTED_FILES[kind]} "
                                       f"with `facetex assets add {kind} PATH` (request it at {REQUEST_URL[kind]})")


@functools.lru_cache(maxsize=4)
def _load_npz(path: Path, mtime: float) -> FaceModel:
    return FaceModel.load(path)


def _load_record(record_path: Path, kind: str) -> FaceModel:
    try:
        record = json.loads(record_path.read_text())
        model_path = record_path.parent / record["model_file"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MissingArtifactError(record_path, f"unreadable {kind} record; add the model again with "
                                                f"`facetex assets add {kind} PATH`") from None
    if not model_path.exists():
        raise MissingArtifactError(model_path, f"converted {kind} model missing; add it again with "
                                               f"`facetex assets add {kind} PATH`")
    try:
        return _load_npz(model_path, model_path.stat().st_mtime)
    except ValueError as exc:
        raise MissingArtifactError(model_path, f"broken converted {kind} model ({exc}); add it again with "
                                               f"`facetex assets add {kind} PATH`") from None


def load_user_model(spec: str) -> FaceModel:
    """``bfm`` / ``flame`` (the added model) or ``bfm:PATH`` / ``flame:PATH[,UV]`` (that file, converted
    into the data folder on first use and reused while its sha256 is unchanged).

    Raises:
        MissingArtifactError: nothing added (one line: the file wanted, how to add it, where to request it).
        BadInputError: a bad PATH.
    """
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown face model {spec!r}")
    if not rest:
        record = models_dir() / f"{kind}.json"
        if not record.exists():
            raise _missing(kind, record)
        return _load_record(record, kind)
    path, _, uv = rest.partition(",")
    if kind == "flame" and not uv:
        raise BadInputError(Path(path), "flame:PATH needs its UV file too: flame:generic_model.pkl,FLAME_texture.npz")
    _check_file(Path(path), f"{kind} model file")
    for record_path in sorted(models_dir().glob("*.json")) if models_dir().is_dir() else []:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if (record.get("schema") == RECORD_SCHEMA and record.get("kind") == kind
                and record.get("source") == str(Path(path).resolve())
                and record.get("uv") == (str(Path(uv).resolve()) if uv else None)
                and record.get("source_sha256") == sha256_of(Path(path))
                and (not uv or record.get("uv_sha256") == sha256_of(Path(uv)))):
            return _load_record(record_path, kind)
    record = add_user_model(kind, path, uv or None, default=False)
    return _load_record(models_dir() / f"{record['name']}.json", kind)


def user_model_by_id(model_id: str) -> FaceModel | None:
    """The converted user model named ``model_id`` (as ``fit.json`` records it), or None."""
    path = models_dir() / f"{model_id}.npz"
    if "/" in model_id or not path.exists():
        return None
    return _load_npz(path, path.stat().st_mtime)
