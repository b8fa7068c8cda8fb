"""Morphable heads in facetex's :class:`~stages.core.face_model.FaceModel` form, whatever their source.

One conversion for every morphable model facetex reads (the built-in ICT-FaceKit head, and the
user's own BFM and FLAME files, :mod:`stages.core.bfm`, :mod:`stages.core.flame`): the source mean,
triangles, optional UVs and bases go in, a ``FaceModel`` with ``shape_basis`` / ``expression_basis``,
``landmark_embedding``, ``mirror_index``, regions and (for UVs split at seams) ``weld_index`` comes
out, fitted by :func:`stages.core.ict.fit_morphable` like the ICT head.

The correspondence to the 468 MediaPipe points is built once, at conversion, by registering the
model's mean to the built-in ``mediapipe471-v2`` mean (:func:`mediapipe_points_on`): a similarity
into the built-in model's frame (through 51 inner iBUG-68 points when the source has them, as ICT
does; otherwise :func:`align_without_landmarks`), an optional thin-plate warp through those points,
then each MediaPipe point projected onto the closest triangle of the model's face; the embedding
row holds its barycentric weights.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree

from stages.core.camera import umeyama
from stages.core.face_model import FaceModel, load_builtin_face_model

#: The 51 inner iBUG-68 points (brows, nose, eyes, mouth): the contour 0..16 is no fixed surface point.
INNER68 = np.arange(17, 68)
#: A mean adult head is about this tall in metres (chin to crown 0.23 m; a face-only mask ~0.2 m,
#: a head with neck ~0.3 m): :func:`source_metres_per_unit` picks the power of ten that makes the
#: mean about this tall, which tells micrometres (BFM 2009), millimetres (BFM 2017), centimetres
#: (ICT) and metres (FLAME) apart.
HEAD_HEIGHT_M = 0.25
#: Rigid ICP iterations of :func:`align_without_landmarks`, and the share of MediaPipe points kept
#: per iteration (the closest ones: the MediaPipe mask may reach past a cropped model's border).
ICP_ITERATIONS = 30
ICP_KEEP = 0.8


def closest_on_triangles(points: np.ndarray, verts: np.ndarray, tris: np.ndarray, k: int = 24):
    """Closest point of each query on a triangle set.

    Args:
        points: ``(N, 3)`` queries.
        verts: ``(V, 3)`` positions; tris: ``(F, 3)`` triangles.
        k: candidate triangles per query (nearest centroids).

    Returns:
        ``(triangle index (N,), barycentrics (N, 3), distance (N,))``.
    """
    centroids = verts[tris].mean(axis=1)
    k = min(k, len(tris))
    _, cand = cKDTree(centroids).query(points, k=k)
    cand = cand.reshape(len(points), k)
    best_d = np.full(len(points), np.inf)
    best_t = np.zeros(len(points), dtype=np.int64)
    best_b = np.zeros((len(points), 3))
    for j in range(k):
        t = cand[:, j]
        a, b, c = (verts[tris[t, i]] for i in range(3))
        bary = _closest_barycentric(points, a, b, c)
        q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
        d = np.linalg.norm(q - points, axis=1)
        better = d < best_d
        best_d[better], best_t[better], best_b[better] = d[better], t[better], bary[better]
    return best_t, best_b, best_d


def _closest_barycentric(p, a, b, c):
    """Barycentrics of the closest point on triangles ``(a, b, c)`` to ``p`` (all ``(N, 3)``):
    the plane projection clamped into the triangle by projecting onto the nearest edge if outside."""
    ab, ac = b - a, c - a
    n = np.cross(ab, ac)
    nn = np.maximum((n * n).sum(1), 1e-300)
    w = p - a
    beta = (np.cross(w, ac) * n).sum(1) / nn
    gamma = (np.cross(ab, w) * n).sum(1) / nn
    bary = np.stack([1 - beta - gamma, beta, gamma], axis=1)
    inside = (bary >= 0).all(axis=1)
    out = bary.copy()
    if (~inside).any():
        best = np.full(len(p), np.inf)
        corners = (a, b, c)
        for i, j in ((0, 1), (1, 2), (2, 0)):
            e0, e1 = corners[i], corners[j]
            d = e1 - e0
            s = np.clip(((p - e0) * d).sum(1) / np.maximum((d * d).sum(1), 1e-30), 0, 1)
            q = e0 + s[:, None] * d
            dist = np.linalg.norm(p - q, axis=1)
            take = ~inside & (dist < best)
            best[take] = dist[take]
            row = np.zeros((take.sum(), 3))
            row[:, i] = 1 - s[take]
            row[:, j] = s[take]
            out[take] = row
    return out


def mediapipe_points_on(vertices: np.ndarray, triangles: np.ndarray, anchors: np.ndarray | None = None):
    """Place the 468 MediaPipe points of the built-in mean on a surface already in its frame.

    Args:
        vertices: ``(V, 3)`` the model's mean, moved into the built-in model's frame.
        triangles: ``(F, 3)`` the triangles the points may land on (e.g. the face part only).
        anchors: optional ``(51, 3)`` positions of the inner iBUG-68 points on ``vertices``: the
            built-in mean is first bent onto them by a thin-plate warp (a non-rigid step that puts
            eye corners on eye corners where the two means' proportions differ).

    Returns:
        ``(embedding (468, V) sparse barycentric rows, distance (468,) from the (warped) point to
        the surface, in built-in model units)``.
    """
    mp = load_builtin_face_model()
    points = mp.vertices.astype(np.float64)[:468]
    if anchors is not None:
        dst = mp.vertices.astype(np.float64)[mp.landmarks68[INNER68]]
        warp = RBFInterpolator(dst, np.asarray(anchors, dtype=np.float64) - dst, kernel="thin_plate_spline",
                               smoothing=1e-3)
        points = points + warp(points)
    tri = np.asarray(triangles, dtype=np.int64)
    t_id, bary, dist = closest_on_triangles(points, np.asarray(vertices, dtype=np.float64), tri)
    rows = np.repeat(np.arange(len(points)), 3)
    embedding = sp.csr_matrix((bary.ravel(), (rows, tri[t_id].ravel())), shape=(len(points), len(vertices)))
    return embedding, dist


def source_metres_per_unit(vertices: np.ndarray) -> float:
    """The source's unit in metres (a power of ten) from the mean's height (:data:`HEAD_HEIGHT_M`)."""
    height = float(np.ptp(np.asarray(vertices, dtype=np.float64)[:, 1]))
    if not np.isfinite(height) or height <= 0:
        raise ValueError("the mean shape has no height (all vertices at one y)")
    return float(10.0 ** np.round(np.log10(HEAD_HEIGHT_M / height)))


def align_without_landmarks(vertices: np.ndarray, triangles: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, dict]:
    """Similarity ``x -> s R x + t`` taking a head mean into the built-in model's frame, without landmarks.

    Assumes the source's axes are the usual ones (y up, z out of the face, x the subject's left: BFM,
    FLAME, ICT). The scale is physical, not fitted (a surface registration can shrink a face mask
    onto any patch): the source unit (:func:`source_metres_per_unit`) over the built-in model's
    metres per unit, so both means keep their real size. Rotation and translation: the nose tips
    (the most forward vertex) put on each other, then rigid ICP of the built-in mean's 468 points onto
    the surface, each iteration keeping the :data:`ICP_KEEP` closest points.

    Returns:
        ``(s, R (3, 3), t (3,), info)`` with ``info``: ``source_metres_per_unit``, ``icp_rms``
        (kept points' distance, built-in units) and ``icp_median``.
    """
    mp = load_builtin_face_model()
    target = mp.vertices.astype(np.float64)[:468]
    src = np.asarray(vertices, dtype=np.float64)
    unit = source_metres_per_unit(src)
    s = unit / mp.metres_per_unit()
    scaled = s * src
    rotation = np.eye(3)
    translation = target[np.argmax(target[:, 2])] - scaled[np.argmax(scaled[:, 2])]
    tri = np.asarray(triangles, dtype=np.int64)
    # Move the MediaPipe points into the (scaled) source frame instead of the surface: one tree.
    for _ in range(ICP_ITERATIONS):
        query = (target - translation) @ rotation          # inverse rigid: R^T (p - t)
        t_id, bary, dist = closest_on_triangles(query, scaled, tri, k=12)
        on = (bary[:, :, None] * scaled[tri[t_id]]).sum(axis=1)
        keep = dist <= np.quantile(dist, ICP_KEEP)
        _, rotation, _ = umeyama(on[keep], target[keep])          # rigid: the scale stays physical
        translation = target[keep].mean(axis=0) - rotation @ on[keep].mean(axis=0)
    query = (target - translation) @ rotation
    _, _, dist = closest_on_triangles(query, scaled, tri, k=12)
    keep = dist <= np.quantile(dist, ICP_KEEP)
    info = {"source_metres_per_unit": unit, "icp_rms": float(np.sqrt(np.mean(dist[keep] ** 2))),
            "icp_median": float(np.median(dist))}
    return s, rotation, translation, info


def split_uv_seams(triangles: np.ndarray, uv: np.ndarray, uv_triangles: np.ndarray):
    """Split a mesh with per-corner texture coordinates (OBJ ``f v/vt``) into one vertex per (vertex, uv) pair.

    Args:
        triangles: ``(F, 3)`` geometry vertex indices; uv: ``(T, 2)``; uv_triangles: ``(F, 3)`` uv indices.

    Returns:
        ``(geo (V,) source vertex of each split vertex, uv (V, 2), triangles (F, 3) split, weld (V,)
        the first split copy of the same source vertex)``; copies of one source vertex are contiguous.
    """
    pairs, corner = np.unique(np.stack([np.asarray(triangles).ravel(), np.asarray(uv_triangles).ravel()], 1),
                              axis=0, return_inverse=True)
    geo = pairs[:, 0]
    weld = np.searchsorted(geo, geo)           # pairs are sorted by source vertex
    return geo, np.asarray(uv, dtype=np.float64)[pairs[:, 1]], corner.reshape(-1, 3), weld


def mirror_partners(positions: np.ndarray, uv: np.ndarray, weld: np.ndarray) -> tuple[np.ndarray, float]:
    """Left/right partner of every vertex of a mesh in the built-in frame (midline x = 0).

    The geometric partner is the vertex nearest the reflected position (source topologies need not
    be exactly symmetric); among its UV-seam copies the one whose UV is nearest ``(1 - u, v)``.

    Returns:
        ``(mirror_index (V,), max distance of a reflected vertex to its partner (model units))``.
    """
    pos = np.asarray(positions, dtype=np.float64)
    canonical = np.unique(weld)
    dist, nearest = cKDTree(pos[canonical]).query(pos * np.array([-1.0, 1.0, 1.0]))
    partner_geo = canonical[nearest]                             # first copy of the partner's point
    copies: dict[int, np.ndarray] = {}
    order = np.argsort(weld, kind="stable")
    starts = np.searchsorted(weld[order], canonical)
    ends = np.searchsorted(weld[order], canonical, side="right")
    for c, a, b in zip(canonical.tolist(), starts.tolist(), ends.tolist(), strict=True):
        copies[c] = order[a:b]
    mirror = np.empty(len(pos), dtype=np.int64)
    want = np.stack([1.0 - uv[:, 0], uv[:, 1]], 1)
    for v in range(len(pos)):
        cand = copies[int(partner_geo[v])]
        mirror[v] = cand[0] if len(cand) == 1 else cand[np.argmin(((uv[cand] - want[v]) ** 2).sum(1))]
    return mirror, float(dist.max())


def disk_uv(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """A UV layout for a model without one (BFM): the mesh flattened onto a disk.

    Floater's mean-value parameterization: the longest boundary loop (a face mask's outer border) is
    laid on a circle by arc length, starting at its lowest vertex (the chin's midline, so a
    symmetric mesh gets a nearly symmetric layout), and every other vertex is the mean-value
    average of its neighbours. The weights are positive, so the layout has no flipped triangles
    (Tutte / Floater); texel density falls towards the border (ears, forehead edge), as for any disk map.

    Args:
        positions: ``(V, 3)``; triangles: ``(F, 3)`` counter-clockwise seen from outside.

    Returns:
        ``(V, 2)`` in ``[0.01, 0.99]``, v up.

    Raises:
        ValueError: the mesh has no boundary or a non-manifold one (give the model a UV file instead).
    """
    from stages.core.face_model import boundary_loops

    p = np.asarray(positions, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    loops = boundary_loops(t)
    if not loops:
        raise ValueError("the mesh is closed: no border to flatten onto a disk (pass --uv FILE)")
    loop = loops[0]                       # runs with the faces on its left: counter-clockwise on the disk
    loop = np.roll(loop, -int(np.argmin(p[loop, 1])))
    seg = np.linalg.norm(p[np.roll(loop, -1)] - p[loop], axis=1)
    angle = -np.pi / 2 + 2 * np.pi * np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    rows, cols, vals = [], [], []
    for k in range(3):                                  # corner i of each triangle, neighbours j, m
        i, j, m = t[:, k], t[:, (k + 1) % 3], t[:, (k + 2) % 3]
        a, b = p[j] - p[i], p[m] - p[i]
        la, lb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.clip((a * b).sum(1) / np.maximum(la * lb, 1e-30), -1.0, 1.0)
        half_tan = np.tan(np.arccos(cos) / 2)
        rows += [i, i]
        cols += [j, m]
        vals += [half_tan / np.maximum(la, 1e-30), half_tan / np.maximum(lb, 1e-30)]
    n = len(p)
    w = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    system = (sp.diags(np.asarray(w.sum(axis=1)).ravel()) - w).tolil()
    rhs = np.zeros((n, 2))
    boundary = np.zeros(n, dtype=bool)
    boundary[loop] = True
    fixed = np.stack([np.cos(angle), np.sin(angle)], 1)
    used = np.zeros(n, dtype=bool)
    used[t.ravel()] = True
    pinned = boundary | ~used                            # unused vertices: pinned at the centre
    rhs[loop] = fixed
    system = system.tocsr()
    free = ~pinned
    uv = rhs.copy()
    a = system[free][:, free].tocsc()
    uv[free] = spla.splu(a).solve(-(system[free][:, pinned] @ rhs[pinned]))
    return 0.5 + 0.49 * uv


def morphable_face_model(name: str, vertices: np.ndarray, triangles: np.ndarray, identity: np.ndarray,
                         expression: np.ndarray | None = None, uv: np.ndarray | None = None,
                         uv_triangles: np.ndarray | None = None) -> tuple[FaceModel, dict]:
    """Convert a morphable model (no landmarks of its own) to a :class:`FaceModel` in the built-in frame.

    Args:
        name: the model's ``FaceModel.name`` (what ``fit.json`` records).
        vertices: ``(V, 3)`` mean in the source's units and axes (y up, z out of the face).
        triangles: ``(F, 3)`` counter-clockwise seen from outside (reversed here if not).
        identity: ``(K, V, 3)`` displacement per unit coefficient (coefficients ~ N(0, 1)).
        expression: optional ``(K_e, V, 3)`` likewise. Both PCA bases share the N(0, 1) prior, so
            they are stored together as ``shape_basis`` (identity first); ``expression_basis``
            stays for blendshape weights in [0, 1] (ICT).
        uv, uv_triangles: ``(T, 2)`` and ``(F, 3)`` texture coordinates (v up) per triangle corner;
            None: :func:`disk_uv` of the mean.

    Returns:
        ``(model, info)``: ``info`` holds the alignment (source unit, ICP residuals), the embedding's
        distances, the mirror error and the layout's flipped-triangle share.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    s, rotation, translation, info = align_without_landmarks(v, tri)
    aligned = s * v @ rotation.T + translation
    bases = [np.asarray(identity, dtype=np.float64)]
    if expression is not None and len(expression):
        bases.append(np.asarray(expression, dtype=np.float64))
    basis = s * np.concatenate(bases) @ rotation.T                     # (K, V, 3) built-in units
    # Orientation: the nose tip's normal must point forward (+z).
    tip = int(np.argmax(aligned[:, 2]))
    around = tri[(tri == tip).any(axis=1)]
    normal = np.cross(aligned[around[:, 1]] - aligned[around[:, 0]], aligned[around[:, 2]] - aligned[around[:, 0]])
    if normal.sum(axis=0)[2] < 0:
        tri = tri[:, ::-1]
        if uv_triangles is not None:
            uv_triangles = np.asarray(uv_triangles)[:, ::-1]
    if uv is None:
        geo, uv_split, tri_split, weld = np.arange(len(v)), disk_uv(aligned, tri), tri, None
        uv_source = "disk (mean-value)"
    else:
        geo, uv_split, tri_split, weld = split_uv_seams(tri, uv, uv_triangles)
        if len(np.unique(weld)) == len(weld):
            weld = None
        uv_source = "given"
    pos = aligned[geo]
    mirror, mirror_err = mirror_partners(pos, uv_split, np.arange(len(pos)) if weld is None else weld)
    embedding, dist = mediapipe_points_on(pos, tri_split)
    regions, landmarks68 = _regions_from_embedding(embedding, pos)
    uvt = uv_split[tri_split]
    signed = np.cross(uvt[:, 1] - uvt[:, 0], uvt[:, 2] - uvt[:, 0])
    model = FaceModel(name=name, vertices=pos, triangles=tri_split, uv=np.clip(uv_split, 0.0, 1.0),
                      mirror_index=mirror, regions=regions, landmarks68=landmarks68, shape_basis=basis[:, geo],
                      landmark_embedding=embedding, weld_index=weld)
    info.update({"scale_to_mediapipe": s, "uv": uv_source, "uv_flipped_share": float((signed <= 0).mean()),
                 "embedding_distance_p50_mm": float(np.median(dist) * model.metres_per_unit() * 1000),
                 "embedding_distance_max_mm": float(dist.max() * model.metres_per_unit() * 1000),
                 "mirror_error_max_mm": mirror_err * model.metres_per_unit() * 1000,
                 "n_vertices": model.n_vertices, "n_triangles": model.n_triangles, "n_modes": int(len(basis))})
    return model, info


#: A model vertex is face skin when the built-in mean's skin surface is within this distance (built-in
#: units, ~5 mm) after the registration.
SKIN_DISTANCE = 0.1


def _regions_from_embedding(embedding: sp.csr_matrix, positions: np.ndarray) -> tuple[dict, np.ndarray]:
    """Regions and iBUG-68 vertices of a registered model from the built-in model's: an eye / lips point
    goes to the model vertex that carries most of its embedding row; ``skin`` is every vertex within
    :data:`SKIN_DISTANCE` of the built-in mean's skin triangles (what the lighting fit samples)."""
    mp = load_builtin_face_model()
    heaviest = np.asarray(embedding.argmax(axis=1)).ravel()             # (468,) model vertex per point
    regions = {}
    for key, name in (("left_eye", "left_eye"), ("right_eye", "right_eye"), ("lips", "mouth")):
        pts = mp.regions[key][mp.regions[key] < 468]
        regions[name] = heaviest[pts]
    in_skin = np.zeros(mp.n_vertices, dtype=bool)
    in_skin[mp.regions["skin"]] = True
    skin_tris = mp.triangles[in_skin[mp.triangles].all(axis=1)]
    _, _, dist = closest_on_triangles(np.asarray(positions, dtype=np.float64), mp.vertices.astype(np.float64),
                                      skin_tris.astype(np.int64), k=8)
    regions["skin"] = np.flatnonzero(dist < SKIN_DISTANCE)
    return regions, heaviest[mp.landmarks68]
