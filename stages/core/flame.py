"""Read FLAME from the user's own files (never shipped or downloaded by facetex).

* ``generic_model.pkl`` (FLAME 2017/2020/2023): a Python pickle (often written by Python 2) of a dict
  with ``v_template`` ``(5023, 3)`` metres, ``f`` ``(9976, 3)``, ``shapedirs`` ``(5023, 3, 400)``
  (300 identity then 100 expression modes, coefficients ~ N(0, 1)), ``posedirs``, ``J_regressor``,
  ``kintree_table`` and ``weights``. Arrays may be chumpy objects: :func:`read_flame` unpickles with
  a restricted unpickler that knows numpy arrays, scipy sparse matrices and chumpy's ``Ch`` (read as
  the plain array it wraps) and refuses every other class, so no chumpy install is needed and a
  file cannot run code.
* Its texture space: ``FLAME_texture.npz`` (``vt`` ``(T, 2)``, ``ft`` ``(F, 3)``) or an OBJ with
  ``vt`` lines and ``f v/vt`` faces over the same vertices (``head_template_mesh.obj``).

The head is used in its zero pose (jaw closed, neck and eyes straight): identity and expression
modes only; the skinning fields are checked for presence, not used.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np

from stages.core.bfm import MAX_EXPRESSION_MODES, MAX_IDENTITY_MODES, SourceModel
from stages.core.errors import BadInputError

#: FLAME's ``shapedirs`` hold this many identity modes before the expression modes.
FLAME_IDENTITY_MODES = 300
REQUIRED = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


class _Opaque:
    """Stand-in for a class a FLAME pickle may hold but facetex does not need (sparse matrices)."""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _ChumpyArray(_Opaque):
    """Stand-in for ``chumpy.ch.Ch``: its pickled state is its ``__dict__``, the array under ``x``."""


def _numpy_global(name: str):
    module = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    return getattr(module, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return _numpy_global(name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name == "object":
            return object
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles written by Python 3
            import _codecs

            return _codecs.encode
        if module == "chumpy.ch" and name == "Ch":
            return _ChumpyArray
        if module.startswith("scipy.sparse") and name.endswith("_matrix"):
            return _Opaque
        raise pickle.UnpicklingError(f"{module}.{name} is not a class a FLAME model file holds")


def _array(path: Path, key: str, value) -> np.ndarray:
    if isinstance(value, _ChumpyArray):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise BadInputError(path, f"{key}: a chumpy expression, not a plain chumpy array")
        value = state["x"]
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInputError(path, f"{key}: not a numeric array") from None
    if not np.isfinite(out).all():
        raise BadInputError(path, f"{key}: non-finite values")
    return out


def read_flame(path: str | Path, uv_path: str | Path) -> SourceModel:
    """Read ``generic_model.pkl`` and its texture-space file.

    Raises:
        BadInputError: one line naming the file and the missing or malformed field.
    """
    path, uv_path = Path(path), Path(uv_path)
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise BadInputError(path, f"not a FLAME model pickle ({exc or type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise BadInputError(path, f"not a FLAME model pickle (holds a {type(data).__name__}, not a dict)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BadInputError(path, f"{missing[0]}: missing (a FLAME generic_model.pkl has {', '.join(REQUIRED)})")
    v = _array(path, "v_template", data["v_template"])
    if v.ndim != 2 or v.shape[1] != 3:
        raise BadInputError(path, f"v_template: shape {v.shape} is not (V, 3)")
    f = np.asarray(_array(path, "f", data["f"]), dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or f.min() < 0 or f.max() >= len(v):
        raise BadInputError(path, f"f: expected (F, 3) triangles over {len(v)} vertices, got shape {f.shape}")
    dirs = _array(path, "shapedirs", data["shapedirs"])
    if dirs.ndim != 3 or dirs.shape[:2] != v.shape or dirs.shape[2] == 0:
        raise BadInputError(path, f"shapedirs: shape {dirs.shape} is not ({len(v)}, 3, K)")
    modes = dirs.transpose(2, 0, 1)                                     # (K, V, 3)
    n_id = min(FLAME_IDENTITY_MODES, len(modes))
    identity = modes[: min(n_id, MAX_IDENTITY_MODES)]
    expression = modes[n_id: n_id + MAX_EXPRESSION_MODES] if len(modes) > n_id else None
    uv, uv_tri, obj_tri = read_uv_file(uv_path, len(v), len(f))
    return SourceModel("flame", v, f if obj_tri is None else obj_tri, identity, expression, uv, uv_tri)


def read_uv_file(path: str | Path, n_vertices: int, n_triangles: int | None = None):
    """Texture coordinates for a model's triangles: an ``.npz`` with ``vt``/``ft`` or an OBJ.

    Returns:
        ``(uv (T, 2) v up, uv_triangles (F, 3) 0-based, triangles (F, 3) or None)``: an OBJ (checked to
        have ``n_vertices`` ``v`` lines) also gives its own triangles over the model's vertices, which
        replace the model's (the corners of ``uv_triangles`` follow them); an npz's ``ft`` follows
        the model's triangle order.

    Raises:
        BadInputError: missing file fields, counts that do not match the model.
    """
    path = Path(path)
    fv = None
    if path.suffix.lower() == ".obj":
        vt, ft, fv, nv = _read_obj_uv(path)
        if nv != n_vertices:
            raise BadInputError(path, f"v: {nv} vertices, the model has {n_vertices}")
        if fv.min() < 0 or fv.max() >= n_vertices:
            raise BadInputError(path, "f: vertex index out of range")
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "vt" not in z.files or "ft" not in z.files:
                    raise BadInputError(path, f"{'vt' if 'vt' not in z.files else 'ft'}: missing (a texture-space "
                                              "file like FLAME_texture.npz has vt and ft)")
                vt, ft = z["vt"], z["ft"]
        except BadInputError:
            raise
        except Exception as exc:
            raise BadInputError(path, f"cannot read as .npz ({type(exc).__name__}: {exc})") from None
    vt = np.asarray(vt, dtype=np.float64)
    ft = np.asarray(ft, dtype=np.int64)
    if vt.ndim != 2 or vt.shape[1] < 2 or not np.isfinite(vt).all():
        raise BadInputError(path, f"vt: shape {vt.shape} is not (T, 2) finite")
    if ft.ndim != 2 or ft.shape[1] != 3 or ft.min() < 0 or ft.max() >= len(vt):
        raise BadInputError(path, f"ft: expected (F, 3) indices into vt, got shape {ft.shape}")
    if n_triangles is not None and len(ft) != n_triangles:
        raise BadInputError(path, f"ft: {len(ft)} triangles, the model has {n_triangles}")
    if vt[:, :2].min() < -1e-6 or vt[:, :2].max() > 1 + 1e-6:
        raise BadInputError(path, "vt: texture coordinates outside [0, 1]")
    return vt[:, :2], ft, fv


def _read_obj_uv(path: Path):
    """``(vt (T, 2), ft (F, 3), fv (F, 3) 0-based, vertex count)`` of an OBJ (polygons fanned into triangles)."""
    nv, vt, ft, fv = 0, [], [], []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            nv += 1
        elif parts[0] == "vt":
            vt.append(parts[1:3])
        elif parts[0] == "f":
            corners = [c.split("/") for c in parts[1:]]
            if any(len(c) < 2 or not c[1] for c in corners):
                raise BadInputError(path, f"f (line {n}): a face without texture coordinates (need f v/vt)")
            try:
                idx = [int(c[1]) - 1 for c in corners]
                vid = [int(c[0]) - 1 for c in corners]
            except ValueError:
                raise BadInputError(path, f"f (line {n}): malformed face") from None
            ft.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1))
            fv.extend([vid[0], vid[i], vid[i + 1]] for i in range(1, len(vid) - 1))
    if not vt or not ft:
        raise BadInputError(path, "vt: no texture coordinates in the OBJ")
    try:
        return np.array(vt, dtype=np.float64), np.array(ft, dtype=np.int64), np.array(fv, dtype=np.int64), nv
    except ValueError:
        raise BadInputError(path, "vt: malformed texture coordinates") from None
