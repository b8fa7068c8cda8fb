"""Small synthetic BFM / FLAME files in the real formats, cut from the built-in ICT head (tests only).

The geometry is real (ICT's face, or its whole skin for FLAME), the units and layouts are the
formats' own: BFM 2009 in micrometres (``.mat``), BFM 2017 in millimetres (``.h5``, statismo layout),
FLAME in metres (a Python-2-style pickle whose arrays are chumpy ``Ch`` objects, plus ``FLAME_texture.npz``).
"""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np

N_ID, N_EX = 4, 2
SIGMA = np.array([3.0, 2.0, 1.5, 1.0])


def ict_parts(face_only: bool):
    """Welded ICT geometry: ``(vertices (V, 3) metres, triangles (F, 3), identity (4, V, 3) metres,
    expression (2, V, 3) metres, uv (T, 2), uv_triangles (F, 3), source vertex ids (V,))``."""
    from stages.core.ict import load_face_model

    ict = load_face_model("ict")
    mpu = ict.metres_per_unit()
    tris = ict.triangles
    if face_only:
        keep = np.zeros(ict.n_vertices, bool)
        keep[ict.regions["face"]] = True
        tris = tris[keep[tris].all(axis=1) & np.isin(tris, ict.regions["face"]).all(axis=1)]
    welded = ict.weld_index[tris]
    used, inverse = np.unique(welded, return_inverse=True)
    f = inverse.reshape(-1, 3)
    # The ICT shape's own axes have x to the subject's left like BFM/FLAME; keep them, shift the origin.
    v = ict.vertices.astype(np.float64)[used] * mpu + np.array([0.002, -0.03, 0.01])
    identity = ict.shape_basis.astype(np.float64)[:N_ID][:, used] * mpu
    expression = ict.expression_basis.astype(np.float64)[[26, 0]][:, used] * mpu
    uv_used, uv_inverse = np.unique(tris, return_inverse=True)
    return v, f, identity, expression, ict.uv.astype(np.float64)[uv_used], uv_inverse.reshape(-1, 3), used


def write_bfm2009(path):
    import scipy.io

    v, f, identity, _, _, _, _ = ict_parts(face_only=True)
    um = 1e6
    modes = identity * um / SIGMA[:, None, None]                       # (K, V, 3) per unit of shapeEV
    scipy.io.savemat(path, {"shapeMU": (v * um).reshape(-1, 1).astype(np.float32),
                            "shapePC": modes.reshape(N_ID, -1).T.astype(np.float32),
                            "shapeEV": SIGMA.reshape(-1, 1).astype(np.float32),
                            "tl": (f + 1).astype(np.float64)})
    return v, f, identity


def write_bfm2017(path):
    import h5py

    v, f, identity, expression, _, _, _ = ict_parts(face_only=True)
    mm = 1e3
    with h5py.File(path, "w") as h:
        h["shape/model/mean"] = (v * mm).ravel().astype(np.float32)
        h["shape/model/pcaBasis"] = (identity * mm / SIGMA[:, None, None]).reshape(N_ID, -1).T.astype(np.float32)
        h["shape/model/pcaVariance"] = (SIGMA ** 2).astype(np.float32)
        h["shape/representer/cells"] = f.T.astype(np.uint32)
        h["shape/representer/points"] = (v * mm).T.astype(np.float32)
        h["expression/model/mean"] = np.zeros(v.size, np.float32)
        h["expression/model/pcaBasis"] = (expression * mm).reshape(N_EX, -1).T.astype(np.float32)
        h["expression/model/pcaVariance"] = np.ones(N_EX, np.float32)
    return v, f, identity, expression


def write_flame(path, uv_path, chumpy: bool = True):
    """FLAME-style files; ``chumpy`` pickles ``v_template``/``shapedirs`` as ``chumpy.ch.Ch`` objects
    (a stand-in module exists only while pickling, so reading needs no chumpy)."""
    v, f, identity, expression, uv, uv_f, _ = ict_parts(face_only=False)
    shapedirs = np.concatenate([identity, expression]).transpose(1, 2, 0)   # (V, 3, K)
    module = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    wrap = Ch if chumpy else (lambda a: a)
    data = {"v_template": wrap(v), "f": f.astype(np.uint32), "shapedirs": wrap(shapedirs),
            "posedirs": np.zeros((len(v), 3, 36)), "J_regressor": np.zeros((5, len(v))),
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
            "weights": np.zeros((len(v), 5))}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), module
    try:
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    np.savez(uv_path, vt=uv, ft=uv_f)
    return v, f, identity, expression
