"""Build the built-in ICT-FaceKit head asset (``stages/assets/ict_facekit_v1.npz``).

Source: ICT-FaceKit Light (``FaceXModel/`` of the public repository ICT-VGL/ICT-FaceKit, MIT licence;
see ``data_manifests/ict_facekit.md``). Give the repository either as a checkout folder or as a bare
git directory (read with ``git show``)::

    python scripts/build_ict_model.py /work/.mirror/ICT-VGL+ICT-FaceKit/repo

What the asset holds (a :class:`stages.core.face_model.FaceModel`, format version 3):

* The textured surface is the skin: geometry #0 "Face" and #1 "Head and Neck" (source vertices
  0..11247, 11144 quads). Eye sockets, mouth socket, gums, teeth, eyeballs, lacrimal fluid and
  eyelashes are left out: a photo shows too little of them to texture, and their own materials
  would need textures this project cannot recover (the skin's eye and mouth openings stay open).
* Vertices are split along the UV seams (one vertex per distinct (position, uv) pair);
  ``weld_index`` ties the copies of one surface point together.
* Quads are split along the diagonal that is shorter summed over the quad and its mirror image, so
  the triangulation is exactly mirror-symmetric (ties broken by a mirror-invariant index key).
* UVs: ICT's two UDIM tiles (1001 face, 1002 head and neck; ``u`` in [0, 2]) side by side in one
  square, ``u' = u / 2``: the left half of a facetex texture is tile 1001, the right half tile 1002,
  each squeezed 2:1 horizontally (resize a half to a square to get ICT's own tile). Each tile is
  left/right symmetric about its own centre, so the whole layout is not symmetric under
  ``u -> 1 - u``; mirroring goes through the 3D mirror (``FaceModel.uv_symmetric`` is False).
* Model space: the ICT mean is moved by one similarity (Umeyama on the 51 inner iBUG-68 points)
  onto the built-in ``mediapipe471-v2`` mean, so both models share axes (x subject's left, y up,
  z out of the face) and scale (fit scores and tolerances mean the same); the factor back to the
  source's centimetres is printed and recorded in the manifest. Exported meshes are in metres
  through ``FaceModel.metres_per_unit`` like every model.
* Identity basis: all 100 modes (``identityNNN.obj - neutral``, coefficients ~ N(0, 1)); expression
  basis: the 53 ARKit-style blendshapes (weights in [0, 1]); both stored as float16.
* ``landmark_embedding`` (468 x V): where each of the 468 MediaPipe mesh points lies on the ICT
  surface. Built once here with :func:`stages.core.morphable.mediapipe_points_on` (which BFM and
  FLAME use too): the built-in mean is brought onto the aligned ICT mean by a thin-plate warp through
  the 51 inner iBUG-68 points (the non-rigid step after the similarity), then each point is projected
  onto the closest face-tile triangle; the row holds its barycentric weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.core.camera import umeyama  # noqa: E402
from stages.core.face_model import FaceModel, boundary_loops, load_builtin_face_model  # noqa: E402
from stages.core.morphable import INNER68, mediapipe_points_on  # noqa: E402

OUT = REPO / "stages" / "assets" / "ict_facekit_v1.npz"
LICENCE_OUT = REPO / "stages" / "assets" / "ict_facekit_LICENSE.txt"
NAME = "ict-facekit-v1"
N_SKIN_VERTICES = 11248        # geometries #0 Face + #1 Head and Neck
N_SKIN_QUADS = 11144
N_FACE_QUADS = 9230            # geometry #0 (UV tile 1001)
N_NARROW_FACE_VERTICES = 6706  # the README's "narrow face area"
#: The README's Multi-PIE 68 landmark vertex indices (0-based, iBUG order).
LANDMARKS68 = [1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088,
               3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140,
               2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725,
               3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711,
               5533, 6216, 6207, 6470, 5517, 5966]


class Snapshot:
    """Files of the ICT-FaceKit repository, from a checkout folder or a bare git directory."""

    def __init__(self, root: Path):
        self.root = root
        self.bare = not (root / "FaceXModel").is_dir()
        self.commit = self._git("rev-parse", "HEAD").strip() if self.bare or (root / ".git").exists() else "unknown"

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", f"--git-dir={self.root}" if self.bare else f"--git-dir={self.root / '.git'}",
                               *args], check=True, capture_output=True, text=True).stdout

    def read(self, name: str) -> bytes:
        if self.bare:
            return subprocess.run(["git", f"--git-dir={self.root}", "show", f"HEAD:{name}"], check=True,
                                  capture_output=True).stdout
        return (self.root / name).read_bytes()


def parse_vertices(data: bytes, count: int) -> np.ndarray:
    """The first ``count`` ``v`` lines of an OBJ as ``(count, 3)`` float64."""
    lines = [ln for ln in data.split(b"\n") if ln.startswith(b"v ")][:count]
    return np.array([ln.split()[1:4] for ln in lines], dtype=np.float64)


def parse_neutral(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``(N, 3)``, texture coordinates ``(T, 2)`` and the skin quads' ``(Q, 4, 2)``
    (vertex, texcoord) 0-based corner indices of the neutral mesh."""
    v, vt, quads = [], [], []
    for ln in data.split(b"\n"):
        if ln.startswith(b"v "):
            v.append(ln.split()[1:4])
        elif ln.startswith(b"vt "):
            vt.append(ln.split()[1:3])
        elif ln.startswith(b"f ") and len(quads) < N_SKIN_QUADS:
            corners = [c.split(b"/") for c in ln.split()[1:]]
            if len(corners) != 4:
                raise SystemExit(f"expected quads in the skin geometry, got a {len(corners)}-gon")
            quads.append([(int(c[0]) - 1, int(c[1]) - 1) for c in corners])
    return np.array(v, dtype=np.float64), np.array(vt, dtype=np.float64), np.array(quads, dtype=np.int64)


def geometric_mirror(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Partner of every point under ``x -> -x`` (nearest neighbour); must be an involution."""
    dist, partner = cKDTree(points).query(points * np.array([-1.0, 1.0, 1.0]))
    if dist.max() > tolerance or not np.array_equal(partner[partner], np.arange(len(points))):
        raise SystemExit(f"the ICT skin is not mirror-symmetric within {tolerance} (max {dist.max():.4g})")
    return partner


def build(snapshot: Snapshot) -> tuple[FaceModel, dict]:
    neutral_bytes = snapshot.read("FaceXModel/generic_neutral_mesh.obj")
    v_all, vt, quads = parse_neutral(neutral_bytes)
    v = v_all[:N_SKIN_VERTICES]
    if quads[..., 0].max() >= N_SKIN_VERTICES:
        raise SystemExit("skin quads reference vertices beyond the skin range")
    mg = geometric_mirror(v, tolerance=0.01)  # centimetres

    # ---- split along UV seams: one vertex per (position, texcoord) pair, copies contiguous
    pairs, corner_vertex = np.unique(quads.reshape(-1, 2), axis=0, return_inverse=True)
    corner_vertex = corner_vertex.reshape(-1, 4)                       # (Q, 4) split vertex per corner
    geo = pairs[:, 0]                                                  # (V,) source vertex of each split vertex
    first_copy = np.searchsorted(geo, geo)                             # pairs are sorted by source vertex
    uv = vt[pairs[:, 1]] * np.array([0.5, 1.0])

    # ---- quad mirror and mirror-consistent diagonals
    qgeo = quads[..., 0]
    key = {tuple(sorted(q)): i for i, q in enumerate(qgeo.tolist())}
    mq = np.array([key[tuple(sorted(mg[q]))] for q in qgeo.tolist()])
    assert np.array_equal(mq[mq], np.arange(len(mq)))

    def diag_len(q, i, j):
        return np.linalg.norm(v[qgeo[q, i]] - v[qgeo[q, j]], axis=-1)

    qi = np.arange(len(qgeo))
    # mirrored diagonal lengths: the corners of the mirror quad holding the mirrored endpoints
    def mirrored_len(i, j):
        a, b = mg[qgeo[qi, i]], mg[qgeo[qi, j]]
        return np.linalg.norm(v[a] - v[b], axis=1)

    l02 = diag_len(qi, 0, 2) + mirrored_len(0, 2)
    l13 = diag_len(qi, 1, 3) + mirrored_len(1, 3)

    def canon(i, j):
        a, b = qgeo[qi, i], qgeo[qi, j]
        e = np.sort(np.stack([a, b], 1), 1)
        me = np.sort(np.stack([mg[a], mg[b]], 1), 1)
        return np.minimum(e[:, 0] * 100000 + e[:, 1], me[:, 0] * 100000 + me[:, 1])

    use02 = np.where(np.abs(l02 - l13) > 1e-9 * l02, l02 < l13, canon(0, 2) < canon(1, 3))
    cv = corner_vertex
    tri = np.where(use02[:, None, None],
                   np.stack([cv[:, [0, 1, 2]], cv[:, [0, 2, 3]]], 1),
                   np.stack([cv[:, [0, 1, 3]], cv[:, [1, 2, 3]]], 1)).reshape(-1, 3)
    face_tri = np.repeat(qi < N_FACE_QUADS, 2)

    # ---- split-vertex mirror: the corner of the mirror quad that holds the mirrored source vertex
    mirror = np.full(len(pairs), -1, dtype=np.int64)
    for q in range(len(qgeo)):
        partner = mq[q]
        for k in range(4):
            target = mg[qgeo[q, k]]
            kk = int(np.flatnonzero(qgeo[partner] == target)[0])
            c, c2 = cv[q, k], cv[partner, kk]
            if mirror[c] not in (-1, c2):
                raise SystemExit(f"UV seams are not mirror-symmetric at vertex {geo[c]}")
            mirror[c] = c2

    # ---- bases
    names = json.loads(snapshot.read("FaceXModel/vertex_indices.json"))["expressions"]
    id_files = [f"FaceXModel/identity{i:03d}.obj" for i in range(100)]
    identity = np.stack([parse_vertices(snapshot.read(f), N_SKIN_VERTICES) - v for f in id_files])
    expression = np.stack([parse_vertices(snapshot.read(f"FaceXModel/{n}.obj"), N_SKIN_VERTICES) - v
                           for n in names])

    # ---- similarity onto the built-in model's frame (51 inner iBUG points)
    mp = load_builtin_face_model()
    src = v[np.array(LANDMARKS68)[INNER68]]
    dst = mp.vertices.astype(np.float64)[mp.landmarks68[INNER68]]
    scale, rotation, translation = umeyama(src, dst)
    v_al = scale * v @ rotation.T + translation
    identity = scale * identity @ rotation.T
    expression = scale * expression @ rotation.T

    # ---- MediaPipe correspondence: thin-plate warp through the 51 points, then closest face point
    embedding, dist = mediapipe_points_on(v_al[geo], tri[face_tri], anchors=v_al[np.array(LANDMARKS68)[INNER68]])

    # ---- regions
    split_of = {int(g): int(i) for i, g in reversed(list(enumerate(geo)))}  # first copy per source vertex
    welded = first_copy[tri]
    loops = boundary_loops(welded)
    lm = np.array([split_of[g] for g in LANDMARKS68])
    pos = v_al[geo]

    def loop_near(point):
        return min(loops, key=lambda lp: np.linalg.norm(pos[lp].mean(0) - point))

    right_eye_loop = loop_near(pos[lm[36:42]].mean(0))
    left_eye_loop = loop_near(pos[lm[42:48]].mean(0))
    mouth_loop = loop_near(pos[lm[60:68]].mean(0))

    def copies(source_vertices):
        return np.flatnonzero(np.isin(geo, source_vertices))

    face_vertices = np.unique(tri[face_tri])
    regions = {
        "face": face_vertices,
        "head_neck": np.unique(tri[~face_tri]),
        "skin": copies(np.arange(N_NARROW_FACE_VERTICES)),
        "left_eye": copies(geo[left_eye_loop]),
        "right_eye": copies(geo[right_eye_loop]),
        "mouth": copies(geo[mouth_loop]),
    }
    model = FaceModel(name=NAME, vertices=pos, triangles=tri, uv=uv, mirror_index=mirror, regions=regions,
                      landmarks68=lm, shape_basis=identity[:, geo], expression_basis=expression[:, geo],
                      landmark_embedding=embedding, weld_index=first_copy)
    info = {"commit": snapshot.commit, "scale_to_mediapipe": float(scale),
            "centimetres_per_unit": float(1.0 / scale), "expressions": names,
            "embedding_distance_max": float(dist.max() * 1.0), "embedding_distance_p50": float(np.median(dist)),
            "boundary_loops": [len(lp) for lp in loops], "identity_rms": np.sqrt((identity ** 2).mean(axis=(1, 2))
                                                                                )[:5].round(4).tolist(),
            "neutral_sha256": hashlib.sha256(neutral_bytes).hexdigest()}
    return model, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", type=Path, help="ICT-FaceKit checkout or bare git directory")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    snapshot = Snapshot(args.snapshot)
    model, info = build(snapshot)
    model.save(args.out, basis_dtype=np.float16)
    LICENCE_OUT.write_bytes(snapshot.read("LICENSE"))
    info["asset_sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
    info["asset_bytes"] = args.out.stat().st_size
    info["n_vertices"], info["n_triangles"] = model.n_vertices, model.n_triangles
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
