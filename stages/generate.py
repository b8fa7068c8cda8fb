"""``facetex generate``: random faces from seed 003's texture GAN, each with a coupled mesh (§3, Fig. 2 left).

Face ``i`` of a run with seed ``S``: the generator's latent ``z`` and noise inputs are drawn from a torch
generator seeded by ``(S, i)``, the mesh's whitened shape coefficients from a numpy generator seeded by
``(S, i, 1)`` (:class:`stages.shape_model.ShapeModel`; the mean shape of the face model without one), so
face ``i`` is the same whatever ``N`` is, and two runs with the same seed write the same files. Truncation
``psi`` pulls both towards their means (``w_avg + psi (w - w_avg)``; shape coefficients times ``psi``).

Geometry and texture are coupled by the seed only: the paper regresses the geometry from the same
latent through its DFR network; no such network (nor 3DMM) is available here, so the shape is drawn
independently from a PCA of fitted shapes (a departure, in docs/TEXTURE_GAN.md).

Writes ``OUT/face_NNN/`` (``uv_albedo.png``, ``textured.obj/.mtl/.glb`` through
:func:`stages.render.export_textured_mesh`, ``views.png`` through :func:`stages.render.render_views`
under a soft frontal light), ``OUT/contact_sheet.png`` (one row per face: albedo | views) and
``OUT/generate.json`` (settings, model files with checksums, seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from stages.core.face_model import FaceModel

#: Light of the preview renders: ambient 1 plus a little from the front and above (SH order of
#: :func:`stages.core.lighting.sh_terms`: Y00, y, z, x, ...). Only previews; the texture is the albedo.
PREVIEW_SH = np.array([[1.0] * 3, [0.25] * 3, [0.45] * 3] + [[0.0] * 3] * 6, dtype=np.float32)
VIEW_YAWS = (-60, -30, 0, 30, 60)


def face_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for face ``index`` of a run seeded ``seed`` (``stream`` 0: texture, 1: shape)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(stream)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def generate_albedo(generator, seed: int, index: int, truncation: float = 1.0,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """``(S, S, 3)`` float32 albedo in ``[0, 1]`` of face ``index`` (latent and noise seeded by ``(seed, index)``)."""
    rng = torch.Generator().manual_seed(face_seed(seed, index, 0))
    z = torch.randn(1, generator.config.z_dim, generator=rng)
    noise = [n.to(device) for n in generator.make_noise(1, rng)]
    with torch.no_grad():
        out = generator(z.to(device), truncation=truncation, noise=noise)
    return out[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32)


@dataclass
class GenerateOptions:
    """Settings of :func:`generate_faces`."""

    n: int = 8
    seed: int = 0
    truncation: float = 0.7
    view_size: int = 256
    subdivide: int = 1
    device: str = "auto"


def generate_faces(model_dir: str | Path, out_dir: str | Path, face_model: FaceModel, *,
                   shape_model_path: str | Path | None = None, options: GenerateOptions | None = None,
                   progress=None) -> dict:
    """Write ``options.n`` random textured faces into ``out_dir`` (module docstring).

    Raises:
        MissingArtifactError: a bad model folder or shape model (one line, named).
        ValueError: ``n < 1`` or a truncation outside ``(0, 2]``.
    """
    from stages.core.atomic import write_json
    from stages.core.checksums import model_file_record
    from stages.core.image_io import save_png
    from stages.models.device import resolve_device
    from stages.models.texture_gan import load_texture_generator
    from stages.render import compose_views, export_textured_mesh, render_views
    from stages.shape_model import ShapeModel

    opts = options or GenerateOptions()
    if opts.n < 1:
        raise ValueError(f"n must be >= 1, got {opts.n}")
    if not 0.0 < opts.truncation <= 2.0:
        raise ValueError(f"truncation must be in (0, 2], got {opts.truncation}")
    device = resolve_device(opts.device)
    generator, config = load_texture_generator(model_dir, map_location=device)
    if config.get("face_model", face_model.name) != face_model.name:
        from stages.core.errors import MissingArtifactError

        raise MissingArtifactError(Path(model_dir) / "config.json",
                                   f"trained on face model {config.get('face_model')!r}, not {face_model.name!r}")
    shapes = ShapeModel.load(shape_model_path, face_model) if shape_model_path is not None else None
    out_dir = Path(out_dir)
    rows, faces, start = [], [], time.perf_counter()
    gen_seconds = 0.0
    for i in range(opts.n):
        t0 = time.perf_counter()
        albedo = generate_albedo(generator, opts.seed, i, opts.truncation, device)
        gen_seconds += time.perf_counter() - t0
        rng = np.random.default_rng(face_seed(opts.seed, i, 1))
        vertices = shapes.sample(rng, opts.truncation) if shapes is not None else \
            np.asarray(face_model.vertices, dtype=np.float64)
        folder = out_dir / f"face_{i:03d}"
        save_png(folder / "uv_albedo.png", albedo)
        export_textured_mesh(folder, albedo, vertices, face_model, label=f"face_{i:03d}", name="textured",
                             subdivide=opts.subdivide, texture_file="uv_albedo.png")
        # render_views reads only the shape (``.vertices``) of the fit it is given.
        views = render_views(albedo, SimpleNamespace(vertices=vertices), face_model, yaws=VIEW_YAWS,
                             size=opts.view_size, sh=PREVIEW_SH, subdivide=opts.subdivide)
        sheet = compose_views(views)
        save_png(folder / "views.png", sheet)
        import cv2

        tile = cv2.resize(albedo, (opts.view_size, opts.view_size), interpolation=cv2.INTER_AREA)
        rows.append(np.concatenate([tile, sheet], axis=1))
        faces.append({"folder": folder.name, "texture_seed": face_seed(opts.seed, i, 0),
                      "shape_seed": face_seed(opts.seed, i, 1)})
        if progress is not None:
            progress(i + 1, opts.n)
    save_png(out_dir / "contact_sheet.png", np.concatenate(rows, axis=0))
    record = {"schema": "facetex.generate", "schema_version": 1, "n": opts.n, "seed": opts.seed,
              "truncation": opts.truncation, "model": model_file_record(model_dir),
              "shape_model": model_file_record(shape_model_path) if shape_model_path is not None else None,
              "geometry": "shape PCA sample" if shapes is not None
              else "mean shape of the face model (no --shape-model)",
              "uv_size": int(generator.config.uv_size), "device": str(device), "faces": faces,
              "seconds": round(time.perf_counter() - start, 3),
              "generator_seconds_per_face": round(gen_seconds / opts.n, 4)}
    write_json(out_dir / "generate.json", record)
    return record
