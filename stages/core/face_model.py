"""The face model every stage uses: mean shape, triangles, UV layout, symmetry and regions.

The built-in model (``mediapipe471-v2``) uses the MediaPipe face-mesh topology (468 vertices,
852 triangles; the 10 iris points MediaPipe also returns are not mesh vertices) with its three
inner holes closed by "caps": one extra centre vertex per hole, fanned to the hole's boundary
loop. Vertex 468 is the subject's left eye centre (+x), 469 the right eye centre (-x) and 470
the mouth centre; the 16 + 16 + 20 fan triangles follow MediaPipe's 852 triangles in that order
(left eye, right eye, mouth). The mesh is a disk: 471 vertices, 904 triangles, one boundary loop
(the face oval). Cap centres are not detector landmarks: ``landmark_map`` (471 x 468, sparse)
maps the 468 MediaPipe mesh points to model vertices (identity for 0..467, the mean of the
hole's loop for 468..470); use :meth:`FaceModel.vertices_from_landmarks`.

The mean shape is a generalized-Procrustes mean of MediaPipe landmarks over the 102 frontal
neutral photos of the Face Research Lab London Set (cap centres = loop means), and the UV layout
is computed by the project (mean-value Tutte embedding of the capped disk onto an ellipse plus
stretch-minimizing positive reweighting, provably flip-free, exactly left-right symmetric; see
the manifest for the measured distortion). Three quad diagonals of MediaPipe's tessellation are
flipped so the triangulation is exactly mirror-symmetric. See ``scripts/build_face_model.py``
for the build and ``data_manifests/face_model_mediapipe.md`` for sources, licences and
measured distortion.

Conventions (``docs/CONVENTIONS.md``): model space is right-handed with x to the subject's left
(image right for a frontal face), y up and z out of the face towards the camera; triangles are
counter-clockwise seen from the front (+z), so face normals point out of the face; UVs are in
``[0, 1]`` with v up and the layout is symmetric: the mirror of ``(u, v)`` is ``(1 - u, v)``.

The :class:`FaceModel` dataclass is deliberately general (mean shape, triangles, UVs, landmark
indices, optional landmark map, optional linear shape basis) so other models (BFM, FLAME) can be
loaded into it.

Subdivision: :meth:`FaceModel.subdivided` returns a finer model that carries a sparse
``upsample`` matrix ``(V', V)``. Per-image (posed / fitted) vertices of the base model are
lifted to the subdivided mesh with ``fine.upsample_vertices(vertices)`` (or
``fine.upsample @ vertices``), which applies exactly the same linear subdivision that produced
``fine.vertices`` from the base mean. Its ``landmark_map`` is composed
(``upsample @ base.landmark_map``), so ``fine.vertices_from_landmarks(points468)`` works too.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BUILTIN_ASSET",
    "FORMAT_VERSION",
    "MEAN_ADULT_IPD_M",
    "REGION_NAMES",
    "FaceModel",
    "boundary_loops",
    "check_mirror_index",
    "check_topology",
    "load_builtin_face_model",
    "loop_subdivision_matrix",
    "midpoint_subdivision_matrix",
    "uv_distortion",
    "uv_signed_areas",
]

FORMAT_VERSION = 2
"""Version of the ``.npz`` layout written by :meth:`FaceModel.save` (2 added ``landmark_map``;
:meth:`FaceModel.load` also reads version 1 files, which have no landmark map). A model with any of
the morphable-head fields (``expression_basis``, ``landmark_embedding``, ``weld_index``) is written
as version :data:`MORPHABLE_FORMAT_VERSION`; models without them keep version 2 byte for byte."""

MORPHABLE_FORMAT_VERSION = 3
"""Version written for models with the morphable-head fields (e.g. the built-in ICT-FaceKit head)."""

_READABLE_VERSIONS = (1, 2, 3)

BUILTIN_ASSET = Path(__file__).resolve().parent.parent / "assets" / "mediapipe471_v2.npz"
"""Path of the committed built-in model asset."""

MEAN_ADULT_IPD_M = 0.063
"""Mean adult interpupillary distance in metres: "mean adult IPD is around 63 mm" (N. A. Dodgson,
"Variation and extrema of human interpupillary distance", Proc. SPIE 5291, 2004). Sets the metric
scale of exported meshes (:meth:`FaceModel.metres_per_unit`)."""

REGION_NAMES = (
    "face_oval",
    "left_eye",
    "right_eye",
    "left_eyebrow",
    "right_eyebrow",
    "lips",
    "nose",
    "skin",
    "left_eye_cap",
    "right_eye_cap",
    "mouth_cap",
)
"""Region names the built-in model defines (other models may define other names)."""


# --------------------------------------------------------------------------------------------
# Topology helpers
# --------------------------------------------------------------------------------------------


def _directed_edges(triangles: np.ndarray) -> np.ndarray:
    """Directed half-edges ``(3F, 2)`` in face order: (a,b), (b,c), (c,a) for each face."""
    t = np.asarray(triangles)
    return np.stack(
        [t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], axis=1
    ).reshape(-1, 2)


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a consistently oriented, manifold triangle mesh.

    Args:
        triangles: ``(F, 3)`` int vertex indices.

    Returns:
        A list of int arrays, one per boundary loop, each listing the loop's vertices in the
        direction of the boundary half-edges (the face lies to the left of that direction when
        the faces are counter-clockwise). Loops are sorted longest first.

    Raises:
        ValueError: If a boundary vertex has more than one outgoing boundary edge (not
            vertex-manifold) or the boundary edges do not close into loops.
    """
    he = _directed_edges(triangles)
    undirected = np.sort(he, axis=1)
    _, inv, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    b = he[counts[inv.ravel()] == 1]
    nxt: dict[int, int] = {}
    for a, c in b.tolist():
        if a in nxt:
            raise ValueError(f"boundary vertex {a} has two outgoing boundary edges")
        nxt[a] = c
    loops: list[np.ndarray] = []
    seen: set[int] = set()
    for start in list(nxt):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        cur = nxt[start]
        while cur != start:
            if cur in seen or cur not in nxt:
                raise ValueError(f"boundary edges do not close into loops (at vertex {cur})")
            loop.append(cur)
            seen.add(cur)
            cur = nxt[cur]
        loops.append(np.asarray(loop, dtype=np.int64))
    loops.sort(key=len, reverse=True)
    return loops


def check_topology(
    triangles: np.ndarray,
    n_vertices: int,
    *,
    vertices: np.ndarray | None = None,
    expected_boundary_loops: int | None = None,
    allow_unused_vertices: bool = False,
) -> dict:
    """Validate a triangle mesh's topology and return statistics.

    Checks: shape and index range; no degenerate faces (repeated index); no duplicate faces
    (same vertex set); every edge belongs to 1 or 2 faces (edge-manifold); consistent
    orientation (each interior edge is traversed in opposite directions by its two faces, i.e.
    no directed edge occurs twice); every vertex is manifold (its faces form a single fan);
    boundary edges close into loops; optionally no unused vertices, a given number of boundary
    loops, and (when ``vertices`` are given) outward normals, i.e. the area-weighted normal sum
    has positive z (front of the face towards +z).

    Args:
        triangles: ``(F, 3)`` int vertex indices.
        n_vertices: Number of vertices ``V``.
        vertices: Optional ``(V, 3)`` positions for the orientation (+z) check.
        expected_boundary_loops: If given, the required number of boundary loops.
        allow_unused_vertices: Whether vertices referenced by no face are allowed.

    Returns:
        Dict with ``n_vertices``, ``n_faces``, ``n_edges``, ``n_boundary_edges``,
        ``n_interior_edges``, ``boundary_loop_lengths`` (list, longest first),
        ``euler_characteristic`` (V - E + F over used vertices), ``n_unused_vertices`` and,
        when vertices are given, ``mean_normal_z`` (z of the normalized area-weighted normal sum).

    Raises:
        ValueError: Describing the first failed check.
    """
    t = np.asarray(triangles)
    if t.ndim != 2 or t.shape[1] != 3 or t.shape[0] == 0:
        raise ValueError(f"triangles must have shape (F, 3) with F > 0, got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"triangles must be integers, got dtype {t.dtype}")
    t = t.astype(np.int64)
    if t.min() < 0 or t.max() >= n_vertices:
        raise ValueError(
            f"triangle indices out of range [0, {n_vertices}): min {t.min()}, max {t.max()}"
        )
    degenerate = (t[:, 0] == t[:, 1]) | (t[:, 1] == t[:, 2]) | (t[:, 2] == t[:, 0])
    if degenerate.any():
        i = int(np.flatnonzero(degenerate)[0])
        raise ValueError(f"{int(degenerate.sum())} degenerate faces, e.g. face {i} = {t[i]}")
    _, first, counts = np.unique(np.sort(t, axis=1), axis=0, return_index=True,
                                 return_counts=True)
    if (counts > 1).any():
        i = int(first[np.flatnonzero(counts > 1)[0]])
        raise ValueError(f"{int((counts > 1).sum())} duplicate faces, e.g. face {i} = {t[i]}")

    he = _directed_edges(t)
    und = np.sort(he, axis=1)
    uedges, inv, ecount = np.unique(und, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    if (ecount > 2).any():
        e = uedges[np.flatnonzero(ecount > 2)[0]]
        raise ValueError(
            f"{int((ecount > 2).sum())} non-manifold edges (more than 2 faces), e.g. {e.tolist()}"
        )
    _, dcount = np.unique(he, axis=0, return_counts=True)
    if (dcount > 1).any():
        bad = np.unique(he, axis=0)[np.flatnonzero(dcount > 1)[0]]
        raise ValueError(
            f"inconsistent orientation: {int((dcount > 1).sum())} directed edges are used by two "
            f"faces, e.g. {bad.tolist()}"
        )

    # Vertex manifoldness: the faces around each vertex must be connected through shared edges.
    F = t.shape[0]
    face_of_he = np.repeat(np.arange(F), 3)
    # For each face corner (vertex v in face f), the two edges of f incident to v.
    vf_faces: dict[int, list[int]] = {}
    for f, tri in enumerate(t.tolist()):
        for v in tri:
            vf_faces.setdefault(v, []).append(f)
    edge_faces: dict[int, list[int]] = {}
    for k, e in enumerate(inv.tolist()):
        edge_faces.setdefault(e, []).append(int(face_of_he[k]))
    edge_id = {tuple(e): i for i, e in enumerate(uedges.tolist())}
    for v, faces in vf_faces.items():
        if len(faces) == 1:
            continue
        fset = set(faces)
        stack = [faces[0]]
        reached = {faces[0]}
        while stack:
            f = stack.pop()
            for w in t[f].tolist():
                if w == v:
                    continue
                eid = edge_id[(min(v, w), max(v, w))]
                for g in edge_faces[eid]:
                    if g in fset and g not in reached:
                        reached.add(g)
                        stack.append(g)
        if len(reached) != len(fset):
            raise ValueError(f"vertex {v} is not manifold: its faces form more than one fan")

    loops = boundary_loops(t)
    used = np.unique(t)
    n_unused = int(n_vertices - used.size)
    if n_unused and not allow_unused_vertices:
        raise ValueError(f"{n_unused} vertices are used by no face, e.g. vertex "
                         f"{int(np.setdiff1d(np.arange(n_vertices), used)[0])}")
    if expected_boundary_loops is not None and len(loops) != expected_boundary_loops:
        raise ValueError(
            f"expected {expected_boundary_loops} boundary loops, found {len(loops)} "
            f"(lengths {[len(lp) for lp in loops]})"
        )
    n_b = int((ecount == 1).sum())
    stats = {
        "n_vertices": int(n_vertices),
        "n_faces": int(F),
        "n_edges": int(uedges.shape[0]),
        "n_boundary_edges": n_b,
        "n_interior_edges": int((ecount == 2).sum()),
        "boundary_loop_lengths": [len(lp) for lp in loops],
        "euler_characteristic": int(used.size - uedges.shape[0] + F),
        "n_unused_vertices": n_unused,
    }
    if vertices is not None:
        x = np.asarray(vertices, dtype=np.float64)
        if x.shape != (n_vertices, 3):
            raise ValueError(f"vertices must have shape ({n_vertices}, 3), got {x.shape}")
        n = np.cross(x[t[:, 1]] - x[t[:, 0]], x[t[:, 2]] - x[t[:, 0]]).sum(axis=0)
        nz = float(n[2] / max(np.linalg.norm(n), 1e-300))
        if nz <= 0:
            raise ValueError(
                f"faces are oriented inwards: area-weighted normal sum has z = {nz:.3f} <= 0"
            )
        stats["mean_normal_z"] = nz
    return stats


def check_mirror_index(triangles: np.ndarray, mirror_index: np.ndarray) -> None:
    """Verify a left/right vertex pairing is an orientation-reversing topology automorphism.

    Args:
        triangles: ``(F, 3)`` int vertex indices.
        mirror_index: ``(V,)`` int, the mirror partner of every vertex (itself on the midline).

    Raises:
        ValueError: If the map is not an involution, or some triangle ``(a, b, c)`` does not map
            to a mesh triangle with reversed orientation, i.e. ``(m[a], m[c], m[b])`` up to
            cyclic rotation.
    """
    m = np.asarray(mirror_index).astype(np.int64)
    t = np.asarray(triangles).astype(np.int64)
    V = m.shape[0]
    if m.ndim != 1 or m.min() < 0 or m.max() >= V:
        raise ValueError("mirror_index must be a (V,) array of indices in [0, V)")
    if not np.array_equal(m[m], np.arange(V)):
        bad = int(np.flatnonzero(m[m] != np.arange(V))[0])
        raise ValueError(f"mirror_index is not an involution (vertex {bad})")

    def canon(tri: np.ndarray) -> np.ndarray:
        # rotate each row so its smallest index comes first (keeps orientation)
        k = np.argmin(tri, axis=1)
        idx = (k[:, None] + np.arange(3)[None, :]) % 3
        return np.take_along_axis(tri, idx, axis=1)

    faces = {tuple(r) for r in canon(t).tolist()}
    mapped = canon(m[t][:, [0, 2, 1]])
    for i, r in enumerate(mapped.tolist()):
        if tuple(r) not in faces:
            raise ValueError(
                f"mirror_index is not an orientation-reversing automorphism: face {i} "
                f"{t[i].tolist()} maps to {r}, which is not a mesh face"
            )


# --------------------------------------------------------------------------------------------
# UV measurements
# --------------------------------------------------------------------------------------------


def uv_signed_areas(uv: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas ``(F,)`` of the triangles in UV space (positive = counter-clockwise, v up)."""
    p = np.asarray(uv, dtype=np.float64)[np.asarray(triangles)]
    d1 = p[:, 1] - p[:, 0]
    d2 = p[:, 2] - p[:, 0]
    return 0.5 * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])


def uv_distortion(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray) -> dict:
    """Distortion of a UV layout relative to a 3D surface.

    Args:
        vertices: ``(V, 3)`` 3D positions.
        triangles: ``(F, 3)`` int.
        uv: ``(V, 2)`` UV coordinates.

    Returns:
        Dict of floats: ``area_ratio_p05``, ``area_ratio_p50``, ``area_ratio_p95`` (per-triangle
        normalized area ratio ``(A_uv / sum A_uv) / (A_3d / sum A_3d)``, 1 is ideal),
        ``area_ratio_min``, ``area_ratio_max``, ``angle_error_mean_deg`` and
        ``angle_error_p95_deg`` (absolute difference of corresponding triangle angles),
        ``conformal_mean`` (mean over triangles of the singular-value ratio
        ``sigma_max / sigma_min`` of the 3D-to-UV map, 1 is conformal), ``n_flipped``
        (UV triangles with non-positive signed area).
    """
    x = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles)
    a_uv = uv_signed_areas(uv, t)
    p3 = x[t]
    a_3d = 0.5 * np.linalg.norm(np.cross(p3[:, 1] - p3[:, 0], p3[:, 2] - p3[:, 0]), axis=1)
    ratio = (a_uv / a_uv.sum()) / (a_3d / a_3d.sum())

    def angles(p: np.ndarray) -> np.ndarray:
        out = []
        for i in range(3):
            e1 = p[:, (i + 1) % 3] - p[:, i]
            e2 = p[:, (i + 2) % 3] - p[:, i]
            c = (e1 * e2).sum(1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))
            out.append(np.arccos(np.clip(c, -1.0, 1.0)))
        return np.stack(out, axis=1)

    p2 = np.asarray(uv, dtype=np.float64)[t]
    ang_err = np.degrees(np.abs(angles(p3) - angles(p2)))
    # Singular values of the linear map from the triangle's local 2D frame to UV.
    e1 = p3[:, 1] - p3[:, 0]
    e2 = p3[:, 2] - p3[:, 0]
    l1 = np.linalg.norm(e1, axis=1)
    ax = e1 / l1[:, None]
    nrm = np.cross(e1, e2)
    ay = np.cross(nrm / np.linalg.norm(nrm, axis=1)[:, None], ax)
    S = np.stack([np.stack([l1, np.zeros_like(l1)], 1),
                  np.stack([(e2 * ax).sum(1), (e2 * ay).sum(1)], 1)], axis=2)  # (F,2,2) cols
    U = np.stack([p2[:, 1] - p2[:, 0], p2[:, 2] - p2[:, 0]], axis=2)
    J = U @ np.linalg.inv(S)
    sv = np.linalg.svd(J, compute_uv=False)
    return {
        "area_ratio_p05": float(np.percentile(ratio, 5)),
        "area_ratio_p50": float(np.percentile(ratio, 50)),
        "area_ratio_p95": float(np.percentile(ratio, 95)),
        "area_ratio_min": float(ratio.min()),
        "area_ratio_max": float(ratio.max()),
        "angle_error_mean_deg": float(ang_err.mean()),
        "angle_error_p95_deg": float(np.percentile(ang_err, 95)),
        "conformal_mean": float((sv[:, 0] / np.maximum(sv[:, 1], 1e-300)).mean()),
        "n_flipped": int((a_uv <= 0).sum()),
    }


# --------------------------------------------------------------------------------------------
# Subdivision operators
# --------------------------------------------------------------------------------------------


def _edge_table(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges ``(E, 2)`` (sorted pairs) and the ``(F, 3)`` edge id of each
    face edge (edge k of a face joins corners k and k+1)."""
    he = _directed_edges(triangles)
    edges, inv = np.unique(np.sort(he, axis=1), axis=0, return_inverse=True)
    return edges, inv.reshape(-1, 3)


def _subdivided_triangles(triangles: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """1-to-4 split. Returns (new triangles (4F, 3), edges (E, 2)); edge e's new vertex is
    ``n_vertices + e``. Orientation is preserved."""
    t = np.asarray(triangles, dtype=np.int64)
    edges, fe = _edge_table(t)
    m = n_vertices + fe  # m[:,0] on edge (a,b), m[:,1] on (b,c), m[:,2] on (c,a)
    a, b, c = t[:, 0], t[:, 1], t[:, 2]
    new = np.concatenate([
        np.stack([a, m[:, 0], m[:, 2]], 1),
        np.stack([m[:, 0], b, m[:, 1]], 1),
        np.stack([m[:, 2], m[:, 1], c], 1),
        np.stack([m[:, 0], m[:, 1], m[:, 2]], 1),
    ])
    return new, edges


def midpoint_subdivision_matrix(triangles: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Linear operator ``(V + E, V)`` of one 1-to-4 midpoint subdivision step.

    Old vertices keep their index and value; the vertex of edge ``e`` (in the sorted unique
    edge order used by :func:`_subdivided_triangles`) is the average of the edge's endpoints.
    """
    edges, _ = _edge_table(np.asarray(triangles, dtype=np.int64))
    E = edges.shape[0]
    rows = np.concatenate([np.arange(n_vertices), np.repeat(n_vertices + np.arange(E), 2)])
    cols = np.concatenate([np.arange(n_vertices), edges.ravel()])
    vals = np.concatenate([np.ones(n_vertices), np.full(2 * E, 0.5)])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_vertices + E, n_vertices))


def loop_subdivision_matrix(triangles: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Linear operator ``(V + E, V)`` of one Loop subdivision step (with boundary rules).

    Interior edge vertex: 3/8 of each endpoint + 1/8 of each opposite vertex. Boundary edge
    vertex: midpoint. Interior old vertex with valence n: ``(1 - n*beta) * self + beta * sum``
    with Warren's ``beta = 3/(8n)`` (``3/16`` for n = 3). Boundary old vertex:
    ``3/4 * self + 1/8 * (its two boundary neighbours)`` (cubic B-spline along the boundary),
    so boundary curves only depend on boundary vertices. Vertices used by no face are kept.
    """
    t = np.asarray(triangles, dtype=np.int64)
    edges, fe = _edge_table(t)
    E = edges.shape[0]
    # opposite vertex of each face edge
    opp = t[:, [2, 0, 1]]
    eopp: list[list[int]] = [[] for _ in range(E)]
    for e, o in zip(fe.ravel().tolist(), opp.ravel().tolist(), strict=True):
        eopp[e].append(o)
    is_bedge = np.array([len(o) == 1 for o in eopp])
    rows, cols, vals = [], [], []
    for e in range(E):
        a, b = edges[e]
        r = n_vertices + e
        if is_bedge[e]:
            rows += [r, r]
            cols += [a, b]
            vals += [0.5, 0.5]
        else:
            o1, o2 = eopp[e]
            rows += [r] * 4
            cols += [a, b, o1, o2]
            vals += [0.375, 0.375, 0.125, 0.125]
    nbrs: list[set[int]] = [set() for _ in range(n_vertices)]
    bnbrs: list[list[int]] = [[] for _ in range(n_vertices)]
    for e in range(E):
        a, b = edges[e]
        nbrs[a].add(int(b))
        nbrs[b].add(int(a))
        if is_bedge[e]:
            bnbrs[a].append(int(b))
            bnbrs[b].append(int(a))
    for v in range(n_vertices):
        if bnbrs[v]:
            rows += [v] * (1 + len(bnbrs[v]))
            cols += [v] + bnbrs[v]
            w = 0.125 if len(bnbrs[v]) == 2 else 0.0
            vals += [1.0 - w * len(bnbrs[v])] + [w] * len(bnbrs[v])
        elif nbrs[v]:
            n = len(nbrs[v])
            beta = 3.0 / 16.0 if n == 3 else 3.0 / (8.0 * n)
            rows += [v] * (1 + n)
            cols += [v] + sorted(nbrs[v])
            vals += [1.0 - n * beta] + [beta] * n
        else:
            rows.append(v)
            cols.append(v)
            vals.append(1.0)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_vertices + E, n_vertices))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _readonly(a: np.ndarray | None, dtype) -> np.ndarray | None:
    if a is None:
        return None
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class FaceModel:
    """A triangle face model: mean shape, topology, UV layout, symmetry, regions, landmarks.

    All arrays are stored as read-only copies (the built-in model is cached and shared).

    Attributes:
        name: Model identifier, e.g. ``"mediapipe471-v2"``.
        vertices: ``(V, 3)`` float32 mean shape in model space (x subject's left, y up,
            z towards the camera).
        triangles: ``(F, 3)`` int32, counter-clockwise seen from the front (+z).
        uv: ``(V, 2)`` float32 in ``[0, 1]``, v up.
        mirror_index: ``(V,)`` int32, the left/right partner of each vertex (itself on the
            midline). It is an involution and maps every triangle to a triangle with reversed
            orientation.
        regions: Name -> sorted int32 vertex index array. The built-in model defines
            ``face_oval, left_eye, right_eye, left_eyebrow, right_eyebrow, lips, nose, skin``
            (``left`` = the subject's left, model +x) and ``left_eye_cap, right_eye_cap,
            mouth_cap`` (a cap's centre vertex plus its boundary loop); ``skin`` contains no
            cap centre.
        landmarks68: Optional ``(68,)`` int32 mesh vertex indices approximating the iBUG-68
            points (0-based iBUG order), or None.
        shape_basis: Optional ``(K, V, 3)`` float32 linear shape basis, or None.
        upsample: Optional sparse ``(V, V_base)`` matrix, set on models produced by
            :meth:`subdivided`: ``vertices == upsample @ base.vertices`` and any per-image
            base-model vertex array lifts the same way (see :meth:`upsample_vertices`).
        landmark_map: Optional sparse ``(V, L)`` matrix mapping ``L`` detector landmark points
            to the model's vertices (``vertices_from_landmarks``). None means the landmarks
            are the vertices (``L = V``). The built-in model maps the 468 MediaPipe mesh points:
            identity rows for vertices 0..467, the mean of the hole's loop for the cap centres
            468..470. Subdivided models carry ``upsample @ base.landmark_map``.
        expression_basis: Optional ``(K_e, V, 3)`` float32 expression (blendshape) deltas; a
            morphable model's shape is ``vertices + c_id . shape_basis + c_ex . expression_basis``.
        landmark_embedding: Optional sparse ``(L, V)`` matrix placing ``L`` detector landmarks on
            the surface (barycentric rows: 3 weights summing to 1), the opposite direction of
            ``landmark_map``: a morphable model is *fitted* to the landmarks through it
            (:mod:`stages.core.ict`) instead of taking its vertices from them.
        weld_index: Optional ``(V,)`` int32: for a mesh split along UV seams, the lowest index of
            the vertex copies that share one surface point (``weld_index[v] == v`` for the first
            copy); None means no seams (every vertex is its own).
    """

    name: str
    vertices: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    mirror_index: np.ndarray
    regions: dict[str, np.ndarray]
    landmarks68: np.ndarray | None = None
    shape_basis: np.ndarray | None = None
    upsample: sp.csr_matrix | None = field(default=None, repr=False)
    landmark_map: sp.csr_matrix | None = field(default=None, repr=False)
    expression_basis: np.ndarray | None = field(default=None, repr=False)
    landmark_embedding: sp.csr_matrix | None = field(default=None, repr=False)
    weld_index: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vertices", _readonly(self.vertices, np.float32))
        object.__setattr__(self, "triangles", _readonly(self.triangles, np.int32))
        object.__setattr__(self, "uv", _readonly(self.uv, np.float32))
        object.__setattr__(self, "mirror_index", _readonly(self.mirror_index, np.int32))
        object.__setattr__(
            self, "regions",
            {str(k): _readonly(np.unique(np.asarray(v, dtype=np.int64)), np.int32)
             for k, v in self.regions.items()},
        )
        object.__setattr__(self, "landmarks68", _readonly(self.landmarks68, np.int32))
        object.__setattr__(self, "shape_basis", _readonly(self.shape_basis, np.float32))
        if self.upsample is not None:
            object.__setattr__(self, "upsample", sp.csr_matrix(self.upsample, dtype=np.float64))
        if self.landmark_map is not None:
            lm = sp.csr_matrix(self.landmark_map, dtype=np.float64, copy=True)
            lm.sum_duplicates()
            lm.sort_indices()
            object.__setattr__(self, "landmark_map", lm)
        object.__setattr__(self, "expression_basis", _readonly(self.expression_basis, np.float32))
        object.__setattr__(self, "weld_index", _readonly(self.weld_index, np.int32))
        if self.landmark_embedding is not None:
            emb = sp.csr_matrix(self.landmark_embedding, dtype=np.float64, copy=True)
            emb.sum_duplicates()
            emb.sort_indices()
            object.__setattr__(self, "landmark_embedding", emb)
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        """Return a description of the first shape/range inconsistency, or None."""
        V = self.vertices.shape[0] if self.vertices.ndim == 2 else -1
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or V == 0:
            return f"vertices must have shape (V, 3), got {self.vertices.shape}"
        if not np.isfinite(self.vertices).all():
            return "vertices contain non-finite values"
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3 or len(self.triangles) == 0:
            return f"triangles must have shape (F, 3), got {self.triangles.shape}"
        if self.triangles.min() < 0 or self.triangles.max() >= V:
            return f"triangle indices out of range [0, {V})"
        if self.uv.shape != (V, 2):
            return f"uv must have shape ({V}, 2), got {self.uv.shape}"
        if not np.isfinite(self.uv).all() or self.uv.min() < 0 or self.uv.max() > 1:
            return "uv must be finite and in [0, 1]"
        if self.mirror_index.shape != (V,):
            return f"mirror_index must have shape ({V},), got {self.mirror_index.shape}"
        if self.mirror_index.min() < 0 or self.mirror_index.max() >= V:
            return f"mirror_index values out of range [0, {V})"
        for k, r in self.regions.items():
            if r.ndim != 1 or (r.size and (r.min() < 0 or r.max() >= V)):
                return f"region {k!r} must be a 1-D array of vertex indices in [0, {V})"
        if self.landmarks68 is not None:
            lm = self.landmarks68
            if lm.shape != (68,) or lm.min() < 0 or lm.max() >= V:
                return f"landmarks68 must have shape (68,) with indices in [0, {V})"
        if self.shape_basis is not None:
            b = self.shape_basis
            if b.ndim != 3 or b.shape[1:] != (V, 3):
                return f"shape_basis must have shape (K, {V}, 3), got {b.shape}"
        if self.upsample is not None and self.upsample.shape[0] != V:
            return f"upsample must have {V} rows, got shape {self.upsample.shape}"
        if self.landmark_map is not None:
            lmap = self.landmark_map
            if lmap.shape[0] != V or lmap.shape[1] == 0:
                return f"landmark_map must have shape ({V}, L) with L > 0, got {lmap.shape}"
            if not np.isfinite(lmap.data).all():
                return "landmark_map contains non-finite values"
        if self.expression_basis is not None:
            b = self.expression_basis
            if b.ndim != 3 or b.shape[1:] != (V, 3):
                return f"expression_basis must have shape (K, {V}, 3), got {b.shape}"
        if self.landmark_embedding is not None:
            emb = self.landmark_embedding
            if emb.shape[1] != V or emb.shape[0] == 0 or not np.isfinite(emb.data).all():
                return f"landmark_embedding must have shape (L, {V}) with finite weights, got {emb.shape}"
        if self.weld_index is not None:
            w = self.weld_index
            if w.shape != (V,) or w.min() < 0 or w.max() >= V or (w > np.arange(V)).any():
                return f"weld_index must have shape ({V},) with weld_index[v] <= v"
        return None

    # ---------------------------------------------------------------- properties
    @property
    def n_vertices(self) -> int:
        """Number of vertices ``V``."""
        return int(self.vertices.shape[0])

    @property
    def n_triangles(self) -> int:
        """Number of triangles ``F``."""
        return int(self.triangles.shape[0])

    @property
    def n_landmarks(self) -> int:
        """Number ``L`` of detector landmark points :meth:`vertices_from_landmarks` expects
        (``landmark_map.shape[1]``; ``V`` when there is no landmark map)."""
        if self.landmark_embedding is not None:
            return int(self.landmark_embedding.shape[0])
        if self.landmark_map is None:
            return self.n_vertices
        return int(self.landmark_map.shape[1])

    @functools.cached_property
    def uv_symmetric(self) -> bool:
        """Whether the UV layout is mirror-symmetric in UV space: the mirror partner of every
        vertex sits at ``(1 - u, v)`` (within 1e-5). When False, mirroring a UV map needs a
        texel-level map built from 3D (:meth:`stages.core.uv.UVLayout.mirror`)."""
        partner = self.uv[self.mirror_index]
        return bool(np.abs(partner[:, 0] - (1.0 - self.uv[:, 0])).max() < 1e-5
                    and np.abs(partner[:, 1] - self.uv[:, 1]).max() < 1e-5)

    def vertices_from_landmarks(self, points: np.ndarray) -> np.ndarray:
        """Model vertices from detector landmark points (``landmark_map @ points``).

        Args:
            points: ``(L, C)`` or ``(B, L, C)`` per-landmark data with ``L = n_landmarks``,
                e.g. the 468 MediaPipe mesh points of one image mapped to model space (drop
                the 10 iris points first), or their pixel positions.

        Returns:
            ``(V, C)`` or ``(B, V, C)`` float64. Without a landmark map, a float64 copy of
            ``points`` (``L = V``).

        Raises:
            ValueError: If the shape does not match ``(..., n_landmarks, C)``.
        """
        x = np.asarray(points)
        L = self.n_landmarks
        if x.ndim not in (2, 3) or x.shape[-2] != L:
            raise ValueError(f"expected ({L}, C) or (B, {L}, C) landmark points for model "
                             f"{self.name!r}, got {x.shape}")
        x = x.astype(np.float64)
        if self.landmark_map is None:
            return x.copy()
        if x.ndim == 2:
            return np.asarray(self.landmark_map @ x)
        B, _, C = x.shape
        flat = np.asarray(self.landmark_map @ x.transpose(1, 0, 2).reshape(L, B * C))
        return flat.reshape(-1, B, C).transpose(1, 0, 2).copy()

    # ---------------------------------------------------------------- geometry
    def metres_per_unit(self) -> float:
        """Metres per model unit: :data:`MEAN_ADULT_IPD_M` over the mean shape's eye distance.

        Model space is metric-free (the built-in mean shape has unit RMS radius). The eye centres
        are the centroids of the ``left_eye`` and ``right_eye`` regions (the eye-opening contours;
        for a forward gaze their centres are the pupils). For the built-in model this is about
        0.052 m per unit, so the mean face is ~0.165 m from mid-forehead to chin.

        Raises:
            ValueError: if the model defines no ``left_eye``/``right_eye`` regions.
        """
        if not {"left_eye", "right_eye"} <= self.regions.keys():
            raise ValueError(f"model {self.name!r} has no left_eye/right_eye regions to set a metric scale")
        v = self.vertices.astype(np.float64)
        eyes = np.linalg.norm(v[self.regions["left_eye"]].mean(axis=0) - v[self.regions["right_eye"]].mean(axis=0))
        return MEAN_ADULT_IPD_M / float(eyes)

    def vertex_normals(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """Unit area-weighted vertex normals.

        Args:
            vertices: ``(V, 3)`` or ``(B, V, 3)`` posed vertices in any right-handed frame
                (default: the mean shape). Pass model-space or camera-space positions, not
                screen-space ones with a flipped axis (that would flip the normals).

        Returns:
            ``(V, 3)`` or ``(B, V, 3)`` float32 unit normals (sum of the incident faces'
            cross products, i.e. area-weighted; pointing out of the face for the built-in
            model). Vertices with no face get ``(0, 0, 1)``.
        """
        x = self.vertices if vertices is None else np.asarray(vertices)
        x = x.astype(np.float64)
        if x.shape[-2:] != (self.n_vertices, 3):
            raise ValueError(f"vertices must have shape (..., {self.n_vertices}, 3), "
                             f"got {x.shape}")
        t = self.triangles
        xb = x.reshape(-1, self.n_vertices, 3)
        fn = np.cross(xb[:, t[:, 1]] - xb[:, t[:, 0]], xb[:, t[:, 2]] - xb[:, t[:, 0]])  # (B, F, 3)
        # Each face's normal added to its three corners (|fn| = 2 * area, so the sum is
        # area-weighted): one bincount per batch item and axis over the corners in (corner, face)
        # order, the summation order of the np.add.at loop this replaced.
        corners = t.T.reshape(-1)                                                         # (3F,)
        n = np.empty_like(xb)                                                             # (B, V, 3)
        for b in range(xb.shape[0]):
            for c in range(3):
                n[b, :, c] = np.bincount(corners, weights=np.tile(fn[b, :, c], 3), minlength=self.n_vertices)
        n = n.reshape(x.shape)
        length = np.linalg.norm(n, axis=-1, keepdims=True)
        out = np.where(length > 1e-30, n / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0]))
        return out.astype(np.float32)

    def upsample_vertices(self, vertices: np.ndarray) -> np.ndarray:
        """Lift base-model per-vertex data to this (subdivided) model.

        Args:
            vertices: ``(V_base, C)`` or ``(B, V_base, C)`` per-vertex data of the base model
                (e.g. a posed or fitted shape, per-vertex colours).

        Returns:
            ``(V, C)`` or ``(B, V, C)`` float array, ``upsample @ vertices`` per batch item.

        Raises:
            ValueError: If this model has no ``upsample`` matrix (it was not produced by
                :meth:`subdivided`) or the shapes do not match.
        """
        if self.upsample is None:
            raise ValueError(f"model {self.name!r} has no upsample matrix (not subdivided)")
        x = np.asarray(vertices)
        nb = self.upsample.shape[1]
        if x.ndim == 2 and x.shape[0] == nb:
            return np.asarray(self.upsample @ x)
        if x.ndim == 3 and x.shape[1] == nb:
            return np.stack([np.asarray(self.upsample @ xi) for xi in x])
        raise ValueError(f"expected (..., {nb}, C) base-model vertices, got {x.shape}")

    def subdivided(self, levels: int = 1, scheme: str = "loop") -> FaceModel:
        """Return a finer model (each level splits every triangle into 4).

        Geometry (mean shape and shape basis) uses ``scheme``: ``"loop"`` (default; Loop
        subdivision with boundary rules, a smoother surface) or ``"midpoint"`` (same
        piecewise-linear surface). UVs are always midpoint-interpolated, which keeps the layout
        flip-free and exactly symmetric. Old vertices keep their indices ``0..V-1`` (so regions,
        landmarks68 and mirror pairs of old vertices stay valid); the vertex of edge ``(a, b)``
        mirrors to the vertex of edge ``(mirror[a], mirror[b])`` and belongs to a region iff
        both endpoints do. The returned model's ``upsample`` (``(V', V_base)``, composed over
        levels and with any existing ``upsample``) lifts per-image vertices of the base model:
        ``fine.upsample_vertices(posed_base_vertices)``. Its ``landmark_map`` is
        ``upsample @ base.landmark_map`` (``upsample`` itself when the base has none), so
        ``fine.vertices_from_landmarks(points) == fine.upsample_vertices(
        base.vertices_from_landmarks(points))``.

        Args:
            levels: Number of subdivision steps (0 returns ``self``).
            scheme: ``"loop"`` or ``"midpoint"`` for the geometry.

        Returns:
            The subdivided :class:`FaceModel` named ``f"{name}-sub{levels}"``.
        """
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        if scheme not in ("loop", "midpoint"):
            raise ValueError(f"scheme must be 'loop' or 'midpoint', got {scheme!r}")
        if levels == 0:
            return self
        if self.weld_index is not None or self.expression_basis is not None:
            raise ValueError(f"model {self.name!r} is a morphable head split along UV seams; it is dense "
                             "enough as it is and Loop subdivision would open cracks at the seams (use 0 levels)")
        model = self
        for _ in range(levels):
            model = model._subdivide_once(scheme)
        name = f"{_strip_sub(self.name)}-sub{_sub_level(self.name) + levels}"
        object.__setattr__(model, "name", name)
        return model

    def _subdivide_once(self, scheme: str) -> FaceModel:
        V = self.n_vertices
        tri = self.triangles.astype(np.int64)
        geo = (loop_subdivision_matrix if scheme == "loop" else midpoint_subdivision_matrix)(
            tri, V)
        mid = midpoint_subdivision_matrix(tri, V)
        new_tri, edges = _subdivided_triangles(tri, V)
        m = self.mirror_index.astype(np.int64)
        edge_id = {(int(a), int(b)): i for i, (a, b) in enumerate(edges.tolist())}
        me = np.sort(m[edges], axis=1)
        mirror_new = np.array([V + edge_id[(int(a), int(b))] for a, b in me.tolist()],
                              dtype=np.int64)
        regions = {}
        for k, r in self.regions.items():
            inr = np.zeros(V, dtype=bool)
            inr[r] = True
            both = inr[edges[:, 0]] & inr[edges[:, 1]]
            regions[k] = np.concatenate([r.astype(np.int64), V + np.flatnonzero(both)])
        basis = None
        if self.shape_basis is not None:
            basis = np.stack([geo @ b.astype(np.float64) for b in self.shape_basis])
        return FaceModel(
            name=self.name,
            vertices=geo @ self.vertices.astype(np.float64),
            triangles=new_tri,
            uv=mid @ self.uv.astype(np.float64),
            mirror_index=np.concatenate([m, mirror_new]),
            regions=regions,
            landmarks68=self.landmarks68,
            shape_basis=basis,
            upsample=geo if self.upsample is None else geo @ self.upsample,
            landmark_map=(geo if self.landmark_map is None
                          else (geo @ self.landmark_map).tocsr()),
        )

    # ---------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike, basis_dtype=None) -> None:
        """Write the model to an ``.npz`` file (deterministic bytes for identical content).

        Keys: ``format_version``, ``name``, ``vertices``, ``triangles``, ``uv``,
        ``mirror_index``, ``region_names`` and ``region__<name>`` per region, and when present
        ``landmarks68``, ``shape_basis``, ``upsample_{data,indices,indptr,shape}``,
        ``landmark_map_{data,indices,indptr,shape}``, ``expression_basis``,
        ``landmark_embedding_{data,indices,indptr,shape}``, ``weld_index``.

        Args:
            basis_dtype: dtype the shape and expression bases are stored in (e.g. ``np.float16``
                for a compact asset; loading converts back to float32). None: as held (float32).
        """
        morphable = (self.expression_basis is not None or self.landmark_embedding is not None
                     or self.weld_index is not None)
        version = MORPHABLE_FORMAT_VERSION if morphable else FORMAT_VERSION
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(version, dtype=np.int64),
            "name": np.array(self.name),
            "vertices": self.vertices,
            "triangles": self.triangles,
            "uv": self.uv,
            "mirror_index": self.mirror_index,
            "region_names": np.array(sorted(self.regions), dtype=str),
        }
        for k in sorted(self.regions):
            arrays[f"region__{k}"] = self.regions[k]
        if self.landmarks68 is not None:
            arrays["landmarks68"] = self.landmarks68
        for key in ("shape_basis", "expression_basis"):
            basis = getattr(self, key)
            if basis is not None:
                arrays[key] = basis if basis_dtype is None else basis.astype(basis_dtype)
        for prefix, matrix in (("upsample", self.upsample), ("landmark_map", self.landmark_map),
                               ("landmark_embedding", self.landmark_embedding)):
            if matrix is not None:
                arrays.update(_sparse_arrays(prefix, matrix))
        if self.weld_index is not None:
            arrays["weld_index"] = self.weld_index
        path = Path(path)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for k, a in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.array(a, order="C"), allow_pickle=False)
                info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaceModel:
        """Read a model written by :meth:`save`.

        Raises:
            ValueError: Naming the file and the problem, if it cannot be read, has an
                unsupported ``format_version``, misses a key, or has inconsistent shapes.
            FileNotFoundError: If the file does not exist.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: face model file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as e:
            raise ValueError(f"{path}: cannot read face model npz ({type(e).__name__}: {e})") \
                from e
        try:
            fv = int(d["format_version"])
        except KeyError:
            raise ValueError(f"{path}: not a face model file (no 'format_version' key)") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: invalid 'format_version' ({e})") from None
        if fv not in _READABLE_VERSIONS:
            raise ValueError(f"{path}: unsupported format_version {fv} "
                             f"(this code reads {list(_READABLE_VERSIONS)})")
        required = ["name", "vertices", "triangles", "uv", "mirror_index", "region_names"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        regions = {}
        for k in np.atleast_1d(d["region_names"]).tolist():
            key = f"region__{k}"
            if key not in d:
                raise ValueError(f"{path}: missing key {key!r} listed in region_names")
            regions[str(k)] = d[key]
        def sparse(prefix: str) -> sp.csr_matrix | None:
            keys = [f"{prefix}_{k}" for k in ("data", "indices", "indptr", "shape")]
            present = [k in d for k in keys]
            if not any(present):
                return None
            if not all(present):
                raise ValueError(f"{path}: incomplete {prefix} matrix (missing "
                                 f"{[k for k, p in zip(keys, present, strict=True) if not p]})")
            try:
                shape = tuple(int(s) for s in d[keys[3]])
                if len(shape) != 2:
                    raise ValueError(f"shape {shape} is not 2-D")
                mat = sp.csr_matrix((d[keys[0]], d[keys[1]], d[keys[2]]), shape=shape)
                mat.check_format(full_check=True)
                return mat
            except Exception as e:
                raise ValueError(f"{path}: invalid {prefix} matrix ({e})") from e

        upsample = sparse("upsample")
        landmark_map = sparse("landmark_map")
        landmark_embedding = sparse("landmark_embedding")
        if fv < 2 and landmark_map is not None:
            raise ValueError(f"{path}: format_version {fv} file has a landmark_map")
        for k in ("triangles", "mirror_index", "landmarks68", "weld_index"):
            if k in d and not np.issubdtype(d[k].dtype, np.integer):
                raise ValueError(f"{path}: {k} must be integers, got dtype {d[k].dtype}")
        try:
            return cls(
                name=str(d["name"]),
                vertices=d["vertices"],
                triangles=d["triangles"],
                uv=d["uv"],
                mirror_index=d["mirror_index"],
                regions=regions,
                landmarks68=d.get("landmarks68"),
                shape_basis=d.get("shape_basis"),
                upsample=upsample,
                landmark_map=landmark_map,
                expression_basis=d.get("expression_basis"),
                landmark_embedding=landmark_embedding,
                weld_index=d.get("weld_index"),
            )
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: invalid face model: {e}") from e


def _sub_level(name: str) -> int:
    _, sep, tail = name.rpartition("-sub")
    return int(tail) if sep and tail.isdigit() else 0


def _strip_sub(name: str) -> str:
    head, sep, tail = name.rpartition("-sub")
    return head if sep and tail.isdigit() else name


def _sparse_arrays(prefix: str, matrix: sp.spmatrix) -> dict[str, np.ndarray]:
    """The CSR parts of ``matrix`` as npz entries ``PREFIX_{data,indices,indptr,shape}``."""
    csr = matrix.tocsr()
    return {f"{prefix}_data": csr.data, f"{prefix}_indices": csr.indices.astype(np.int64),
            f"{prefix}_indptr": csr.indptr.astype(np.int64), f"{prefix}_shape": np.array(csr.shape, dtype=np.int64)}


@functools.lru_cache(maxsize=8)
def load_builtin_face_model(subdivide: int = 0) -> FaceModel:
    """The built-in ``mediapipe471-v2`` model, optionally Loop-subdivided (cached).

    Args:
        subdivide: Number of subdivision levels (0: 471 vertices / 904 triangles; 1: 1845 /
            3616; 2: 7305 / 14464). Subdivided models carry ``upsample`` to lift per-image
            vertices of the 471-vertex model and a composed ``landmark_map`` to build their
            vertices straight from the 468 MediaPipe mesh points.

    Returns:
        The shared, read-only :class:`FaceModel`.
    """
    model = FaceModel.load(BUILTIN_ASSET)
    return model.subdivided(subdivide) if subdivide else model
