#!/usr/bin/env python
"""Build the built-in face model asset ``stages/assets/mediapipe471_v2.npz``.

Usage::

    python scripts/build_face_model.py [PHOTO_DIR] [--out PATH] [--preview PNG]

``PHOTO_DIR`` defaults to ``../shared/faces/london/neutral`` relative to the repository root
(the Face Research Lab London Set, CC BY 4.0; see ``data_manifests/face_model_mediapipe.md``).
Photos and per-photo landmarks are never written anywhere; only the mean shape is stored.

Steps:
1. Triangles: the ordered edge list of ``FACEMESH_TESSELATION`` parsed from the source of
   ``mediapipe/python/solutions/face_mesh_connections.py`` (consecutive edge triples close a
   triangle; the runtime frozenset loses that order), oriented consistently and outwards (+z).
2. Landmarks: MediaPipe FaceMesh (static images, refined landmarks) on every photo, converted
   to continuous pixels ``(x W, y H, z W)`` and then to model space ``(x, -y, -z)``; only the
   first 468 points (mesh vertices) are used.
3. Mean shape: generalized Procrustes analysis (similarity transforms) over all photos.
4. Mirror pairs: the symmetry plane of the mean is estimated and rotated to x = 0, vertices are
   matched to their x-mirrored positions (Hungarian), and the map is verified to be an
   orientation-reversing automorphism of the mesh and an involution. The mean is then
   symmetrized, centred and scaled to unit RMS radius. Three pairs of quads in MediaPipe's
   tessellation have non-mirrored diagonals; one diagonal per pair is flipped so the map
   becomes an automorphism (verified, raises otherwise).
5. Regions and iBUG-68 approximations from MediaPipe's ``FACEMESH_*`` connection sets.
6. Caps: the three inner holes are closed by fans to new centre vertices 468 (subject's left
   eye, +x), 469 (right eye, -x), 470 (mouth), placed at the mean of the hole's boundary loop
   (``landmark_map`` records these averages); fan triangles are appended in that order, oriented
   like the rest (CCW from +z). The mesh becomes a disk (471 vertices, 904 triangles, one
   boundary loop); the shape is re-centred and re-scaled to unit RMS radius over all 471
   vertices (a similarity, so the loop-mean relation still holds). Cap regions are added.
7. UV layout of the disk: the outer boundary is fixed on an ellipse (symmetric, arc-length
   spacing from the 3D boundary, aspect chosen to minimize distortion over all 904 triangles);
   interior vertices (cap centres included) are solved with Floater's mean-value coordinates,
   then stretch-minimizing reweighting w_ij <- w_ij / sigma_j^0.5 (Yoshizawa et al. 2004); all
   weights stay positive with a convex boundary => bijective, flip-free; the result is
   symmetrized exactly and mapped into [0.02, 0.98]^2.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stages.core.face_model import (  # noqa: E402  (after the sys.path insert)
    BUILTIN_ASSET,
    FaceModel,
    boundary_loops,
    check_mirror_index,
    check_topology,
    uv_distortion,
    uv_signed_areas,
)

N_MESH = 468
CAP_NAMES = ("left_eye", "right_eye", "mouth")  # cap centre vertices 468, 469, 470
N_VERTS = N_MESH + len(CAP_NAMES)
MODEL_NAME = "mediapipe471-v2"
MARGIN = 0.02
STRETCH_ITERS = 10  # stretch-minimizing reweighting iterations (stops when L2 stretch rises)
STRETCH_POWER = 0.5  # damping of the reweighting: w_ij <- w_ij / sigma_j ** STRETCH_POWER


# ------------------------------------------------------------------------------------------
# 1. Triangles
# ------------------------------------------------------------------------------------------


def _connections_source() -> tuple[str, str]:
    import importlib.util

    spec = importlib.util.find_spec("mediapipe.python.solutions.face_mesh_connections")
    if spec is None or spec.origin is None:
        raise SystemExit("mediapipe is not installed (need mediapipe==0.10.14)")
    return spec.origin, Path(spec.origin).read_text()


def _literal_connection_lists() -> dict[str, list[tuple[int, int]]]:
    """Ordered edge lists of every ``FACEMESH_X = frozenset([...])`` in the mediapipe source."""
    _, src = _connections_source()
    out = {}
    for node in ast.parse(src).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and node.value.args
                and isinstance(node.value.args[0], (ast.List, ast.Tuple))):
            out[node.targets[0].id] = [tuple(e) for e in ast.literal_eval(node.value.args[0])]
    return out


def tessellation_triangles() -> np.ndarray:
    """(852, 3) triangles from consecutive edge triples of FACEMESH_TESSELATION's source list."""
    edges = _literal_connection_lists()["FACEMESH_TESSELATION"]
    if len(edges) % 3:
        raise ValueError(f"FACEMESH_TESSELATION has {len(edges)} edges, not a multiple of 3")
    tris = []
    for k in range(0, len(edges), 3):
        (a, b), (c, d), (e, f) = edges[k:k + 3]
        if not (b == c and d == e and f == a):
            raise ValueError(f"edges {edges[k:k + 3]} at position {k} do not close a triangle")
        tris.append((a, b, d))
    return np.asarray(tris, dtype=np.int64)


def orient_consistently(tris: np.ndarray) -> np.ndarray:
    """Flip faces so each interior edge is traversed in opposite directions (BFS per component)."""
    tris = tris.copy()
    F = len(tris)
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for f, t in enumerate(tris.tolist()):
        for k in range(3):
            a, b = t[k], t[(k + 1) % 3]
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(f)
    done = np.zeros(F, dtype=bool)

    def has_directed(t, a, b):
        return any(t[k] == a and t[(k + 1) % 3] == b for k in range(3))

    for seed in range(F):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            f = stack.pop()
            t = tris[f].tolist()
            for k in range(3):
                a, b = t[k], t[(k + 1) % 3]
                for g in edge_faces[(min(a, b), max(a, b))]:
                    if g == f:
                        continue
                    need_flip = has_directed(tris[g].tolist(), a, b)
                    if done[g]:
                        if need_flip:
                            raise ValueError("mesh is not orientable")
                        continue
                    if need_flip:
                        tris[g] = tris[g][[0, 2, 1]]
                    done[g] = True
                    stack.append(g)
    return tris


# ------------------------------------------------------------------------------------------
# 2-4. Landmarks, Procrustes mean, mirror pairs
# ------------------------------------------------------------------------------------------


class _QuietStderr:
    """Redirect file descriptor 2 (MediaPipe's native INFO/WARNING log lines) to /dev/null."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.close(self._null)
        return False


def detect_landmarks(photo_dir: Path) -> tuple[list[np.ndarray], list[str]]:
    """Model-space landmarks (N_MESH, 3) per photo where MediaPipe finds a face."""
    with _QuietStderr():
        return _detect_landmarks(photo_dir)


def _detect_landmarks(photo_dir: Path) -> tuple[list[np.ndarray], list[str]]:
    import warnings

    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype")
    import cv2
    import mediapipe as mp

    files = sorted(p for p in photo_dir.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no .jpg/.png photos in {photo_dir}")
    shapes, missed = [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as fm:
        for p in files:
            bgr = cv2.imread(str(p))
            if bgr is None:
                missed.append(p.name)
                continue
            H, W = bgr.shape[:2]
            res = fm.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if not res.multi_face_landmarks:
                missed.append(p.name)
                continue
            lm = res.multi_face_landmarks[0].landmark
            px = np.array([[q.x * W, q.y * H, q.z * W] for q in lm], dtype=np.float64)
            # continuous pixels (x right, y down, z smaller = closer) -> model (x, y up, z out)
            shapes.append(px[:N_MESH] * np.array([1.0, -1.0, -1.0]))
    return shapes, missed


def _normalize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x / np.sqrt((x ** 2).sum(axis=1).mean())


def _similarity_align(x: np.ndarray, ref: np.ndarray, scale: bool = True) -> np.ndarray:
    """Align x to ref (both (N, 3)) with the best rotation (+ scale) + translation."""
    xc = x - x.mean(axis=0)
    rc = ref - ref.mean(axis=0)
    U, S, Vt = np.linalg.svd(xc.T @ rc)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt  # row-vector convention: xc @ R ~ rc
    s = (S * np.diag(D)).sum() / (xc ** 2).sum() if scale else 1.0
    return s * xc @ R + ref.mean(axis=0)


def procrustes_mean(shapes: list[np.ndarray], iters: int = 100, tol: float = 1e-12):
    """Generalized Procrustes mean (unit RMS radius), gauge fixed to the camera frame."""
    X = np.stack([_normalize(s) for s in shapes])
    anchor = _normalize(X.mean(axis=0))  # camera-frame orientation
    mean = anchor
    for it in range(iters):  # noqa: B007  (returned below)
        aligned = np.stack([_similarity_align(x, mean) for x in X])
        new = _normalize(aligned.mean(axis=0))
        new = _similarity_align(new, anchor, scale=False)
        delta = np.abs(new - mean).max()
        mean = new
        if delta < tol:
            break
    resid = np.sqrt(((aligned - mean) ** 2).sum(axis=2).mean())
    return mean, it + 1, float(resid)


def _match_mirror(x: np.ndarray) -> np.ndarray:
    mirrored = x * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(x[:, None, :] - mirrored[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    m = np.empty(len(x), dtype=np.int64)
    m[rows] = cols
    return m


def _rotation_to(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimal rotation matrix R with R a = b (unit vectors)."""
    v = np.cross(a, b)
    c = float(a @ b)
    if np.linalg.norm(v) < 1e-15:
        return np.eye(3)
    K = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + K + K @ K / (1.0 + c)


def mirror_and_symmetrize(mean: np.ndarray):
    """Rotate the symmetry plane to x = 0, match mirror pairs, symmetrize, unit RMS radius."""
    x = mean - mean.mean(axis=0)
    m = _match_mirror(x)
    for _ in range(5):
        pairs = m != np.arange(len(m))
        d = x[pairs] - x[m[pairs]]
        _, V = np.linalg.eigh(d.T @ d)
        n = V[:, -1] * np.sign(V[0, -1])
        R = _rotation_to(n, np.array([1.0, 0.0, 0.0]))
        x = x @ R.T
        mid = 0.5 * (x + x[m])
        x = x - np.array([mid[:, 0].mean(), 0.0, 0.0])
        m_new = _match_mirror(x)
        if np.array_equal(m_new, m):
            break
        m = m_new
    asym = float(np.sqrt(((x - x[m] * np.array([-1.0, 1.0, 1.0])) ** 2).sum(1).mean()))
    sym = 0.5 * (x + x[m] * np.array([-1.0, 1.0, 1.0]))
    sym[m == np.arange(len(m)), 0] = 0.0
    sym = sym - sym.mean(axis=0)
    sym[:, 0] = 0.5 * (sym[:, 0] - sym[m, 0])  # exact after centring
    sym = sym / np.sqrt((sym ** 2).sum(axis=1).mean())
    return sym, m, asym


def _min_angle(x: np.ndarray, tri) -> float:
    p = x[list(tri)]
    out = np.pi
    for i in range(3):
        e1, e2 = p[(i + 1) % 3] - p[i], p[(i + 2) % 3] - p[i]
        c = e1 @ e2 / (np.linalg.norm(e1) * np.linalg.norm(e2))
        out = min(out, float(np.arccos(np.clip(c, -1, 1))))
    return out


def symmetrize_triangulation(tris: np.ndarray, m: np.ndarray, x: np.ndarray):
    """Make the triangulation mirror-symmetric by flipping quad diagonals.

    MediaPipe's tessellation is symmetric except for a few quads whose diagonal is not the
    mirror image of its partner quad's diagonal. For every such pair of quads, the diagonal
    with the larger minimum angle on the symmetric mean ``x`` is used on both sides. Returns
    the new triangles and the list of flipped edges ``(old diagonal, new diagonal)``.
    """
    tris = tris.copy()

    def canon(t):
        k = int(np.argmin(t))
        return tuple(int(t[(k + i) % 3]) for i in range(3))

    faces = {canon(t) for t in tris.tolist()}
    bad = [f for f, t in enumerate(tris.tolist()) if canon(m[[t[0], t[2], t[1]]]) not in faces]
    # group bad faces into quads sharing an edge
    quads = []
    used = set()
    for f in bad:
        if f in used:
            continue
        for g in bad:
            if g == f or g in used:
                continue
            shared = set(tris[f].tolist()) & set(tris[g].tolist())
            if len(shared) == 2:
                quads.append((f, g))
                used |= {f, g}
                break
        else:
            raise ValueError(f"asymmetric face {tris[f].tolist()} is not part of a quad")
    flips = []
    done = set()
    for f, g in quads:
        if (f, g) in done:
            continue
        t1 = tris[f].tolist()
        t2 = tris[g].tolist()
        k = next(i for i in range(3) if t1[(i + 1) % 3] in t2 and t1[i] in t2)
        a, b, c = t1[k], t1[(k + 1) % 3], t1[(k + 2) % 3]
        d = next(v for v in t2 if v not in (a, b))
        keep = min(_min_angle(x, (a, b, c)), _min_angle(x, (b, a, d)))
        alt = min(_min_angle(x, (c, a, d)), _min_angle(x, (d, b, c)))
        # the mirror quad (m[a], m[b], m[c], m[d]) currently has diagonal m[c]-m[d]
        mf = [i for i, (p, q) in enumerate(quads) if {p, q} != {f, g}
              and set(tris[p].tolist()) | set(tris[q].tolist()) == set(m[[a, b, c, d]].tolist())]
        if len(mf) != 1:
            raise ValueError(f"no mirror partner for asymmetric quad {a, b, c, d}")
        p, q = quads[mf[0]]
        done |= {(f, g), (p, q)}
        if alt > keep:  # flip this quad: diagonal a-b -> c-d
            tris[f], tris[g] = (c, a, d), (d, b, c)
            flips.append(((a, b), (c, d)))
        else:  # flip the mirror quad: diagonal m[c]-m[d] -> m[a]-m[b]
            s1 = tris[p].tolist()
            s2 = tris[q].tolist()
            k = next(i for i in range(3) if s1[(i + 1) % 3] in s2 and s1[i] in s2)
            a2, b2, c2 = s1[k], s1[(k + 1) % 3], s1[(k + 2) % 3]
            d2 = next(v for v in s2 if v not in (a2, b2))
            tris[p], tris[q] = (c2, a2, d2), (d2, b2, c2)
            flips.append(((a2, b2), (c2, d2)))
    check_mirror_index(tris, m)
    return tris, flips


# ------------------------------------------------------------------------------------------
# 5. Regions and iBUG-68
# ------------------------------------------------------------------------------------------


def _vertex_set(edges) -> np.ndarray:
    return np.unique(np.asarray(list(edges), dtype=np.int64).ravel())


def _adjacency(tris: np.ndarray, n: int) -> list[set[int]]:
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b, c in tris.tolist():
        adj[a] |= {b, c}
        adj[b] |= {a, c}
        adj[c] |= {a, b}
    return adj


def _enclosed(adj, wall: np.ndarray, seeds) -> np.ndarray:
    """Vertices reachable from seeds without entering wall vertices, plus the wall."""
    wall_set = set(wall.tolist())
    seen = {s for s in seeds if s not in wall_set}
    stack = list(seen)
    while stack:
        v = stack.pop()
        for w in adj[v]:
            if w not in wall_set and w not in seen:
                seen.add(w)
                stack.append(w)
    return np.unique(np.concatenate([wall, np.fromiter(seen, dtype=np.int64, count=len(seen))]))


def _dilate(adj, verts: np.ndarray, rings: int) -> np.ndarray:
    s = set(verts.tolist())
    for _ in range(rings):
        s |= {w for v in list(s) for w in adj[v]}
    return np.array(sorted(s), dtype=np.int64)


def _chain(edges, start: int, end: int) -> list[int]:
    """Path from start to end through an edge set (simple graph walk)."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in adj.get(v, []):
            if w not in prev:
                prev[w] = v
                queue.append(w)
    if end not in prev:
        raise ValueError(f"no path {start} -> {end}")
    path = [end]
    while path[-1] != start:
        path.append(prev[path[-1]])
    return path[::-1]


def _pick_along(path: list[int], x: np.ndarray, fractions) -> list[int]:
    """Vertices of a path nearest (by arc length in the frontal projection) to fractions."""
    p = x[path][:, :2]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    s /= s[-1]
    out = []
    for f in fractions:
        out.append(path[int(np.argmin(np.abs(s - f)))])
    return out


def build_regions(conn, tris: np.ndarray, x: np.ndarray, mirror: np.ndarray):
    """Regions dict and landmarks68 from mediapipe connection sets (subject's left = +x)."""
    n = len(x)
    adj = _adjacency(tris, n)
    oval = _vertex_set(conn["FACEMESH_FACE_OVAL"])
    leye = _vertex_set(conn["FACEMESH_LEFT_EYE"])
    reye = _vertex_set(conn["FACEMESH_RIGHT_EYE"])
    lbrow = _vertex_set(conn["FACEMESH_LEFT_EYEBROW"])
    rbrow = _vertex_set(conn["FACEMESH_RIGHT_EYEBROW"])
    lips_edges = conn["FACEMESH_LIPS"]
    lip_contours = _vertex_set(lips_edges)
    outer_lip = np.array(sorted(set(_chain(lips_edges, 61, 0)) | set(_chain(lips_edges, 61, 17))
                                | set(_chain(lips_edges, 291, 0))
                                | set(_chain(lips_edges, 291, 17))), dtype=np.int64)
    lips = _enclosed(adj, outer_lip, [13, 14])
    assert set(lip_contours.tolist()) <= set(lips.tolist())
    nose_edges = conn["FACEMESH_NOSE"]
    nose_set = _vertex_set(nose_edges)
    bridge = set(_chain([e for e in nose_edges], 168, 2))
    nose_loop = np.array(sorted(set(nose_set.tolist()) - (bridge - {4, 2})), dtype=np.int64)
    nose = np.union1d(nose_set, _enclosed(adj, nose_loop, [1]))
    if x[leye, 0].mean() <= 0 or x[reye, 0].mean() >= 0:
        raise ValueError("left eye is not on +x: model-space convention violated")
    excluded = np.unique(np.concatenate([
        _dilate(adj, np.union1d(leye, reye), 2),
        np.union1d(lbrow, rbrow),
        _dilate(adj, lips, 1),
        oval,
    ]))
    skin = np.setdiff1d(np.arange(n), excluded)
    regions = {
        "face_oval": oval, "left_eye": leye, "right_eye": reye, "left_eyebrow": lbrow,
        "right_eyebrow": rbrow, "lips": lips, "nose": nose, "skin": skin,
    }
    for k, r in regions.items():  # every region must be mirror-closed with its partner
        partner = {"left_eye": "right_eye", "right_eye": "left_eye",
                   "left_eyebrow": "right_eyebrow", "right_eyebrow": "left_eyebrow"}.get(k, k)
        if not np.array_equal(np.sort(mirror[r]), np.sort(regions[partner])):
            raise ValueError(f"region {k} is not mirror-consistent with {partner}")

    # ---- iBUG-68 approximation (0-based iBUG order; iBUG "right" = subject's right = -x)
    oval_e = conn["FACEMESH_FACE_OVAL"]
    oval_edges_nontop = [e for e in oval_e if not ({10} & set(e))]
    # widest oval points at eye level on each side: 234 (subject's right), 454 (left)
    jaw_path = _chain(oval_edges_nontop, 234, 454)  # passes the chin 152
    jaw = _pick_along(jaw_path, x, np.linspace(0, 1, 17))
    # brows: the upper chain of each brow set, outer -> inner (right), inner -> outer (left)
    rb_upper = _chain(conn["FACEMESH_RIGHT_EYEBROW"], 70, 107)
    lb_upper = _chain(conn["FACEMESH_LEFT_EYEBROW"], 336, 300)
    bridge_path = _chain(nose_edges, 168, 1)
    tip = bridge_path[int(np.argmax(x[bridge_path, 2]))]
    bridge_path = bridge_path[:bridge_path.index(tip) + 1]
    nose_bridge = _pick_along(bridge_path, x, [0, 1 / 3, 2 / 3, 1])
    nostrils = [98, 97, 2, 326, 327]
    re_, le_ = conn["FACEMESH_RIGHT_EYE"], conn["FACEMESH_LEFT_EYE"]
    r_up = [e for e in re_ if not ({7, 163, 144, 145, 153, 154, 155} & set(e))]
    r_lo = [e for e in re_ if not ({246, 161, 160, 159, 158, 157, 173} & set(e))]
    l_up = [e for e in le_ if not ({249, 390, 373, 374, 380, 381, 382} & set(e))]
    l_lo = [e for e in le_ if not ({466, 388, 387, 386, 385, 384, 398} & set(e))]
    r_eye = ([33] + _pick_along(_chain(r_up, 33, 133), x, [1 / 3, 2 / 3]) + [133]
             + _pick_along(_chain(r_lo, 133, 33), x, [1 / 3, 2 / 3]))
    l_eye = ([362] + _pick_along(_chain(l_up, 362, 263), x, [1 / 3, 2 / 3]) + [263]
             + _pick_along(_chain(l_lo, 263, 362), x, [1 / 3, 2 / 3]))
    outer_up = [e for e in lips_edges if set(e) <= set(_chain(lips_edges, 61, 0))
                | set(_chain(lips_edges, 291, 0))]
    outer_lo = [e for e in lips_edges if set(e) <= set(_chain(lips_edges, 61, 17))
                | set(_chain(lips_edges, 291, 17))]
    mouth_outer = (_pick_along(_chain(outer_up, 61, 291), x, np.linspace(0, 1, 7))
                   + _pick_along(_chain(outer_lo, 291, 61), x, np.linspace(0, 1, 7))[1:-1])
    inner_up = [e for e in lips_edges if set(e) <= set(_chain(lips_edges, 78, 13))
                | set(_chain(lips_edges, 308, 13))]
    inner_lo = [e for e in lips_edges if set(e) <= set(_chain(lips_edges, 78, 14))
                | set(_chain(lips_edges, 308, 14))]
    mouth_inner = (_pick_along(_chain(inner_up, 78, 308), x, np.linspace(0, 1, 5))
                   + _pick_along(_chain(inner_lo, 308, 78), x, np.linspace(0, 1, 5))[1:-1])
    lm68 = np.array(jaw + rb_upper + lb_upper + nose_bridge + nostrils + r_eye + l_eye
                    + mouth_outer + mouth_inner, dtype=np.int64)
    if lm68.shape != (68,) or len(np.unique(lm68)) != 68:
        raise ValueError(f"landmarks68 construction failed: {lm68.shape}, "
                         f"{len(np.unique(lm68))} unique")
    return regions, lm68


# ------------------------------------------------------------------------------------------
# 6. Caps
# ------------------------------------------------------------------------------------------


def add_caps(x: np.ndarray, tris: np.ndarray, mirror: np.ndarray, regions: dict):
    """Close the eye and mouth holes with fans to new centre vertices (see step 6).

    Returns ``(x471, tris904, mirror471, landmark_map (471, 468) csr, cap_regions)``.
    """
    n = len(x)
    loops = boundary_loops(tris)
    if len(loops) != 4:
        raise ValueError(f"expected 4 boundary loops, found {len(loops)}")
    holes = loops[1:]
    by_name = {}
    for h in holes:
        hs = set(h.tolist())
        if hs == set(regions["left_eye"].tolist()):
            by_name["left_eye"] = h
        elif hs == set(regions["right_eye"].tolist()):
            by_name["right_eye"] = h
        elif hs <= set(regions["lips"].tolist()):
            by_name["mouth"] = h
    if sorted(by_name) != sorted(CAP_NAMES):
        raise ValueError(f"could not identify the eye and mouth holes: {sorted(by_name)}")
    fans, rows, cols, vals = [], list(range(n)), list(range(n)), [1.0] * n
    cap_regions = {}
    for k, name in enumerate(CAP_NAMES):
        h = by_name[name]
        # start each loop at its smallest index so the fan order is canonical
        h = np.roll(h, -int(np.argmin(h)))
        c = n + k
        for i in range(len(h)):
            a, b = int(h[i]), int(h[(i + 1) % len(h)])  # mesh half-edge a->b; fan has b->a
            fans.append((b, a, c))
        rows += [c] * len(h)
        cols += h.tolist()
        vals += [1.0 / len(h)] * len(h)
        cap_regions[f"{name}_cap"] = np.concatenate([h, [c]]).astype(np.int64)
    lmap = sp.csr_matrix((vals, (rows, cols)), shape=(n + len(CAP_NAMES), n))
    xc = lmap @ x
    # re-centre and re-scale over all vertices (a similarity: loop means stay loop means)
    m = np.concatenate([mirror, [n + 1, n, n + 2]]).astype(np.int64)
    xc = xc - xc.mean(axis=0)
    xc[:, 0] = 0.5 * (xc[:, 0] - xc[m, 0])
    xc = xc / np.sqrt((xc ** 2).sum(axis=1).mean())
    tc = np.concatenate([tris, np.asarray(fans, dtype=np.int64)])
    return xc, tc, m, lmap, cap_regions


# ------------------------------------------------------------------------------------------
# 7. UV layout
# ------------------------------------------------------------------------------------------


def _mean_value_laplacian(x: np.ndarray, tris: np.ndarray) -> sp.csr_matrix:
    """Row i: sum_j w_ij (u_j - u_i) with Floater's mean-value weights (all positive)."""
    n = len(x)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, m = tris[:, k], tris[:, (k + 1) % 3], tris[:, (k + 2) % 3]
        eij = x[j] - x[i]
        eil = x[m] - x[i]
        lij = np.linalg.norm(eij, axis=1)
        lil = np.linalg.norm(eil, axis=1)
        ang = np.arccos(np.clip((eij * eil).sum(1) / (lij * lil), -1.0, 1.0))
        t = np.tan(ang / 2.0)
        rows += [i, i]
        cols += [j, m]
        vals += [t / lij, t / lil]
    W = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n))
    if W.data.min() <= 0:
        raise ValueError("non-positive mean-value weight")
    return W


def _ellipse_points(params: np.ndarray, a: float, b: float, n_table: int = 20001):
    """Points on the ellipse x = -a sin(t), y = b cos(t) at arc-length fractions in [0, 1]
    of the half from the top (t = 0) counter-clockwise to the bottom (t = pi)."""
    tt = np.linspace(0.0, np.pi, n_table)
    pts = np.stack([-a * np.sin(tt), b * np.cos(tt)], axis=1)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    s /= s[-1]
    t = np.interp(params, s, tt)
    return np.stack([-a * np.sin(t), b * np.cos(t)], axis=1)


def compute_uv(x: np.ndarray, tris: np.ndarray, mirror: np.ndarray, aspect: float,
               stretch_iters: int = 0, stretch_power: float = 1.0):
    """Flip-free symmetric UV layout of a disk mesh (before normalization to [0, 1]).

    ``x``, ``tris`` and ``mirror`` describe the capped mesh (one boundary loop); see the module
    docstring, step 7.
    """
    n = len(x)
    check_topology(tris, n, expected_boundary_loops=1)
    outer = boundary_loops(tris)[0]
    xd, td, nd = x, tris, n
    # boundary placement: outer loop runs counter-clockwise; start at the top midline vertex
    top = int(outer[np.argmax(np.where(mirror[outer] == outer, x[outer, 1], -np.inf))])
    bot = int(outer[np.argmin(np.where(mirror[outer] == outer, x[outer, 1], np.inf))])
    loop = np.roll(outer, -int(np.flatnonzero(outer == top)[0]))
    ib = int(np.flatnonzero(loop == bot)[0])
    half = loop[:ib + 1]  # top -> bottom, counter-clockwise = the subject's right (-x) side
    other = np.concatenate([loop[ib:], loop[:1]])[::-1]  # top -> bottom on the +x side
    if not np.array_equal(mirror[half], other):
        raise ValueError("outer boundary halves are not mirror images")
    if x[half[1:-1], 0].mean() >= 0:
        raise ValueError("counter-clockwise boundary half is not on the -x side")
    seg = np.linalg.norm(np.diff(x[half], axis=0), axis=1)
    frac = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    pts = _ellipse_points(frac, aspect, 1.0)
    bpos = np.zeros((nd, 2))
    bpos[half] = pts
    bpos[other] = pts * np.array([-1.0, 1.0])
    bidx = np.concatenate([half, other[1:-1]])
    # solve sum_j w_ij (u_j - u_i) = 0 on interior vertices; positive weights + convex
    # boundary => bijective (Tutte / Floater). Then stretch-minimizing reweighting
    # (Yoshizawa, Belyaev & Seidel 2004): w_ij <- w_ij / sigma_j keeps every weight positive,
    # so every iterate is still a convex-combination map and therefore flip-free.
    W0 = _mean_value_laplacian(xd, td).tocoo()
    interior = np.setdiff1d(np.arange(nd), bidx)
    a3 = 0.5 * np.linalg.norm(np.cross(xd[td[:, 1]] - xd[td[:, 0]],
                                       xd[td[:, 2]] - xd[td[:, 0]]), axis=1)

    def solve(wvals):
        W = sp.csr_matrix((wvals, (W0.row, W0.col)), shape=(nd, nd))
        L = W - sp.diags(np.asarray(W.sum(axis=1)).ravel())
        A = L[interior][:, interior].tocsc()
        rhs = -(L[interior][:, bidx] @ bpos[bidx])
        out = bpos.copy()
        out[interior] = spla.splu(A).solve(rhs)
        return out

    def stretch(u):
        p = u[td]
        q = xd[td]
        A2 = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
              - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))
        s_, t_ = p[..., 0], p[..., 1]
        Ss = (q[:, 0] * (t_[:, 1] - t_[:, 2])[:, None] + q[:, 1] * (t_[:, 2] - t_[:, 0])[:, None]
              + q[:, 2] * (t_[:, 0] - t_[:, 1])[:, None]) / A2[:, None]
        St = (q[:, 0] * (s_[:, 2] - s_[:, 1])[:, None] + q[:, 1] * (s_[:, 0] - s_[:, 2])[:, None]
              + q[:, 2] * (s_[:, 1] - s_[:, 0])[:, None]) / A2[:, None]
        scale = np.sqrt(np.abs(A2).sum() / 2 / a3.sum())  # UV area normalized to 3D area
        l2 = np.sqrt(((Ss ** 2).sum(1) + (St ** 2).sum(1)) / 2) * scale
        total = np.sqrt((a3 * l2 ** 2).sum() / a3.sum())
        num = np.zeros(nd)
        den = np.zeros(nd)
        for k in range(3):
            np.add.at(num, td[:, k], a3 * l2 ** 2)
            np.add.at(den, td[:, k], a3)
        return total, np.sqrt(num / den)

    w = W0.data.copy()
    uv = solve(w)
    best_total, sig = stretch(uv)
    best = uv
    for _ in range(stretch_iters):
        w = w / sig[W0.col] ** stretch_power
        uv = solve(w)
        total, sig = stretch(uv)
        if total >= best_total:
            break
        best_total, best = total, uv
    uv = best
    # exact symmetry: mirror of (x, y) is (-x, y)
    uv = 0.5 * (uv + uv[mirror] * np.array([-1.0, 1.0]))
    uv[mirror == np.arange(n), 0] = 0.0
    return uv


def normalize_uv(uv: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    s = (1.0 - 2 * MARGIN) / (hi - lo).max()
    out = np.empty_like(uv)
    out[:, 0] = 0.5 + s * uv[:, 0]  # uv[:, 0] is symmetric about 0
    out[:, 1] = 0.5 + s * (uv[:, 1] - 0.5 * (lo[1] + hi[1]))
    out = out.astype(np.float32)
    # make the float32 values exactly mirror-symmetric: u[m[i]] = 1 - u[i]
    pos = out[:, 0] > 0.5
    out[mirror[pos], 0] = np.float32(1.0) - out[pos, 0]
    out[mirror == np.arange(len(out)), 0] = 0.5
    return out


def choose_aspect(x, tris, mirror, candidates=None):
    """Ellipse aspect (width / height) minimizing area + angle distortion."""
    if candidates is None:
        candidates = np.linspace(0.6, 1.6, 41)
    best = None
    for a in candidates:
        uv = compute_uv(x, tris, mirror, float(a), STRETCH_ITERS, STRETCH_POWER)
        d = uv_distortion(x, tris, uv)
        if d["n_flipped"]:
            continue
        cost = np.log(d["area_ratio_p95"] / d["area_ratio_p05"]) + d["conformal_mean"] - 1.0
        if best is None or cost < best[0]:
            best = (cost, float(a))
    if best is None:
        raise ValueError("no flip-free UV layout found")
    return best[1]


# ------------------------------------------------------------------------------------------
# preview
# ------------------------------------------------------------------------------------------


def write_preview(model: FaceModel, path: Path, size: int = 1024) -> None:
    import cv2

    img = np.full((size, size, 3), 255, np.uint8)
    p = np.stack([model.uv[:, 0] * size, (1.0 - model.uv[:, 1]) * size], axis=1)
    colors = {"lips": (60, 60, 220), "left_eye": (220, 120, 0), "right_eye": (220, 120, 0),
              "left_eyebrow": (30, 120, 30), "right_eyebrow": (30, 120, 30),
              "nose": (0, 160, 220), "left_eye_cap": (120, 60, 0), "right_eye_cap": (120, 60, 0),
              "mouth_cap": (40, 40, 140)}
    for k in ("nose", "lips", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow",
              "left_eye_cap", "right_eye_cap", "mouth_cap"):
        inr = np.zeros(model.n_vertices, bool)
        inr[model.regions[k]] = True
        for t in model.triangles[inr[model.triangles].all(axis=1)]:
            cv2.fillPoly(img, [np.round(p[t] * 16).astype(np.int32)], colors[k],
                         lineType=cv2.LINE_AA, shift=4)
    for t in model.triangles:
        cv2.polylines(img, [np.round(p[t] * 16).astype(np.int32)], True, (40, 40, 40), 1,
                      lineType=cv2.LINE_AA, shift=4)
    for v in model.regions["skin"]:
        cv2.circle(img, tuple(np.round(p[v]).astype(int).tolist()), 5, (150, 150, 150), -1,
                   lineType=cv2.LINE_AA)
    if model.landmarks68 is not None:
        for v in model.landmarks68:
            c = tuple(np.round(p[v]).astype(int).tolist())
            cv2.circle(img, c, 4, (0, 0, 255), -1, lineType=cv2.LINE_AA)
    cv2.putText(img, "u right (subject's left), v up; red: landmarks68, grey dots: skin; "
                "dark: caps",
                (10, size - 10),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


# ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo_dir", nargs="?", type=Path,
                    default=REPO.parent / "shared" / "faces" / "london" / "neutral",
                    help="folder of frontal neutral photos (default ../shared/faces/london/neutral)")
    ap.add_argument("--out", type=Path, default=BUILTIN_ASSET, help="output .npz")
    ap.add_argument("--preview", type=Path, default=None, help="write a UV wireframe PNG here")
    args = ap.parse_args(argv)
    if not args.photo_dir.is_dir():
        print(f"error: photo folder {args.photo_dir} does not exist. Pass the London Set "
              f"neutral folder (Face Research Lab London Set, CC BY 4.0) as PHOTO_DIR.",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    import mediapipe

    conn = _literal_connection_lists()
    tris = orient_consistently(tessellation_triangles())
    shapes, missed = detect_landmarks(args.photo_dir)
    if len(shapes) < 10:
        raise SystemExit(f"only {len(shapes)} faces detected in {args.photo_dir}")
    t_detect = time.perf_counter() - t0
    mean, n_iter, resid = procrustes_mean(shapes)
    x, mirror, asym = mirror_and_symmetrize(mean)
    tris, flips = symmetrize_triangulation(tris, mirror, x)
    # orientation: outward normals (+z)
    n = np.cross(x[tris[:, 1]] - x[tris[:, 0]], x[tris[:, 2]] - x[tris[:, 0]]).sum(0)
    if n[2] < 0:
        tris = tris[:, [0, 2, 1]]
    stats0 = check_topology(tris, N_MESH, vertices=x, expected_boundary_loops=4)
    if stats0["n_faces"] != 852 or stats0["n_boundary_edges"] != 88:
        raise ValueError(f"unexpected topology {stats0}")
    check_mirror_index(tris, mirror)
    regions, lm68 = build_regions(conn, tris, x, mirror)
    x, tris, mirror, lmap, cap_regions = add_caps(x, tris, mirror, regions)
    regions.update(cap_regions)
    for name in CAP_NAMES:  # skin must not contain cap centres
        if np.isin(cap_regions[f"{name}_cap"][-1], regions["skin"]):
            raise ValueError(f"skin contains the {name} cap centre")
    stats = check_topology(tris, N_VERTS, vertices=x, expected_boundary_loops=1)
    if stats["n_faces"] != 904 or stats["boundary_loop_lengths"] != [36]:
        raise ValueError(f"unexpected capped topology {stats}")
    check_mirror_index(tris, mirror)
    for k, r in regions.items():  # mirror-consistent regions, cap regions included
        partner = k.replace("left", "@").replace("right", "left").replace("@", "right")
        if not np.array_equal(np.sort(mirror[r]), np.sort(regions[partner])):
            raise ValueError(f"region {k} is not mirror-consistent with {partner}")
    aspect = choose_aspect(x, tris, mirror)
    uv = normalize_uv(compute_uv(x, tris, mirror, aspect, STRETCH_ITERS, STRETCH_POWER), mirror)
    model = FaceModel(name=MODEL_NAME, vertices=x, triangles=tris, uv=uv, mirror_index=mirror,
                      regions=regions, landmarks68=lm68, landmark_map=lmap)
    dist = uv_distortion(model.vertices, model.triangles, model.uv)
    if dist["n_flipped"] or (uv_signed_areas(model.uv, model.triangles) <= 0).any():
        raise ValueError("flipped UV triangles")
    if np.abs(model.uv[mirror, 0] - (1 - model.uv[:, 0])).max() > 1e-6:
        raise ValueError("UV not symmetric")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    FaceModel.load(args.out)
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    total = time.perf_counter() - t0
    print(f"mediapipe {mediapipe.__version__}; photos used {len(shapes)}, missed {missed}")
    print(f"MediaPipe topology: {stats0}")
    print(f"capped topology: {stats}")
    print(f"procrustes: {n_iter} iterations, RMS residual {resid:.4f} (unit RMS radius); "
          f"mean asymmetry before symmetrization {asym:.4f}")
    print(f"diagonal flips for a mirror-symmetric triangulation: {flips}")
    print(f"midline vertices {int((mirror == np.arange(N_VERTS)).sum())}, "
          f"pairs {int((mirror != np.arange(N_VERTS)).sum()) // 2}")
    print("regions: " + ", ".join(f"{k} {len(v)}" for k, v in regions.items()))
    print(f"UV ellipse aspect (w/h) {aspect:.3f}; distortion: "
          + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in dist.items()))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) sha256 {sha}")
    print(f"time: detection {t_detect:.1f} s, total {total:.1f} s")
    if args.preview:
        write_preview(model, args.preview)
        print(f"preview {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
