"""UVAPM's coarse albedo fit (seed 002, §3.2-3.3): PCA albedo + SH light by analysis-by-synthesis.

The face is rendered at its fitted pose with the differentiable deferred renderer
(:func:`stages.core.shading.render`: fixed visibility, ``grid_sample`` texture lookup, SH shading)
in an ``R x R`` crop of the photo (:func:`stages.face_view.photo_view`), and the
unknowns are optimised so the render matches the photo where the face's skin was seen:

- the albedo: per-channel PCA coefficients ``p (C, K)`` of :class:`stages.pca.AlbedoPCA`, optimised
  whitened (``p = z * sqrt(variance)``) so the Gaussian prior is ``||z||^2``;
- the light: 9x3 SH coefficients in camera space (x right, y up, z to the camera), the shading of
  a normal ``n`` being ``sh_basis(n) @ L`` (absolute: the albedo is not folded in, unlike
  ``fit.json``'s ``lighting_sh``);
- small pose and shape refinements: a rotation (axis-angle) about the face's centroid, a log
  scale, an image translation, and a log depth scale of the per-image shape (the built-in model has
  no shape basis, so the depth scale is the one shape degree of freedom; it changes the normals).

Losses (each a mean, so the weights do not depend on the crop size):

- photometric: the per-pixel L2 norm of ``render - photo`` (robust to outliers, as in the paper),
  weighted by the face mask x the skin probability of ``FitResult.skin`` (when the fit has one) x
  whether the texel under the pixel was seen (``texel_weight``: the partial unwrap's confidence, so
  a texel a caller hides is never fitted to);
- landmarks: squared distance of the refined projections of the landmark vertices to the detected
  points (the fit puts the mesh vertices on them), over the face size squared;
- regularisation: the PCA prior ``||z||^2``, an SH prior pulling the non-ambient terms to zero, and
  a prior on the pose/shape refinement.

Multi-stage as §3.2: stage 1 fits light, pose/shape and the leading :data:`COARSE_COMPONENTS`
components; stage 2 fits everything. Adam, seeded, deterministic on CPU.

``device``: the optimisation runs where its tensors are created (CPU or CUDA). The visibility (the numba
rasterizer's triangle ids) and the per-pixel weights are computed on the CPU once and moved once; the
loop makes no host-device copies (the photometric start value is read after it).

The light is initialised in closed form (least squares under the mean albedo), which is what makes
a few dozen iterations enough.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from stages.core.camera import Pose
from stages.core.face_model import FaceModel
# The texel shading helpers are numpy (stages.core.lighting), shared with `mirror`, which must not import torch.
from stages.core.lighting import (  # noqa: F401  (re-exported)
    MIN_SHADING, albedo_space_mirror, fit_shading, sh_basis_np, texel_normals, texel_shading,
)
from stages.core.poisson import pull_push_fill
from stages.core.shading import render
from stages.fit import FitResult
from stages.pca import AlbedoPCA

#: Default number of Adam iterations (both stages together).
DEFAULT_ITERATIONS = 40
#: Side of the square image-space crop the fit renders into.
DEFAULT_RENDER_SIZE = 96
#: Components per channel free in stage 1.
COARSE_COMPONENTS = 5


@dataclass
class AlbedoFitOptions:
    """Settings of :func:`fit_albedo` (weights are multipliers of mean losses)."""

    iterations: int = DEFAULT_ITERATIONS
    render_size: int = DEFAULT_RENDER_SIZE
    stage1_fraction: float = 0.4
    lr: float = 0.1
    w_landmark: float = 10.0
    w_coeff: float = 2e-4
    w_sh: float = 1e-3
    w_pose: float = 1.0
    refine_pose: bool = True
    seed: int = 0


@dataclass
class AlbedoFit:
    """The result of :func:`fit_albedo`.

    Attributes:
        coeffs: ``(C, K)`` PCA coefficients of the albedo.
        lighting: ``(9, 3)`` absolute SH light in camera space.
        pose: the refined pose.
        vertices: ``(V, 3)`` the refined per-image shape (depth-scaled), model space.
        info: losses, iterations, seconds, refinements, reprojection PSNR on the fitted pixels.
    """

    coeffs: np.ndarray
    lighting: np.ndarray
    pose: Pose
    vertices: np.ndarray
    info: dict = field(default_factory=dict)

    def albedo(self, pca: AlbedoPCA, size: int) -> np.ndarray:
        """``(size, size, 3)`` float32 albedo in ``[0, 1]``: the PCA reconstruction, padded beyond the
        layout (pull-push) and upsampled bicubically (as :func:`stages.pseudo_gt.pca_texture`)."""
        import cv2

        low = pull_push_fill(pca.reconstruct(self.coeffs), pca.mask)
        return np.clip(cv2.resize(low.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous setting.

    The fit's tensors are small (an ``R x R`` crop, a 64^2 basis), so threads only add
    synchronisation; on a shared 2-core machine two threads made the fit 10x slower (spinning)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.lru_cache(maxsize=None)
def _skew_index(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the off-diagonal entries of a 3x3 skew matrix, made once per device (so the
    fit's loop copies nothing from the host)."""
    return (torch.tensor([0, 0, 1, 1, 2, 2], device=device), torch.tensor([1, 2, 0, 2, 0, 1], device=device))


def _rodrigues(w: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(3,)`` -> rotation ``(3, 3)`` on ``w``'s device (differentiable, exact at 0)."""
    theta2 = (w * w).sum()
    k = torch.zeros(3, 3, dtype=w.dtype, device=w.device)
    k = k.index_put(_skew_index(w.device), torch.stack([-w[2], w[1], w[2], -w[0], -w[1], w[0]]))
    theta = torch.sqrt(theta2 + 1e-12)
    a = torch.sin(theta) / theta
    b = (1 - torch.cos(theta)) / (theta2 + 1e-12)
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * k + b * (k @ k)


def _padded_basis(pca: AlbedoPCA) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(C, R*R)`` and bases ``(C, K, R*R)`` as full images padded beyond the layout by pull-push
    (linear in the values for a fixed mask), so bilinear lookups at the layout border read no black."""
    c, k, _ = pca.bases.shape
    stack = np.concatenate([pca.mean[:, None], pca.bases], axis=1)            # (C, K+1, D)
    images = pca.to_image(stack.reshape(c * (k + 1), -1))                      # (R, R, C*(K+1))
    padded = pull_push_fill(images, pca.mask).reshape(-1, c, k + 1)            # (R*R, C, K+1)
    full = torch.from_numpy(np.ascontiguousarray(padded.transpose(1, 2, 0), dtype=np.float32))
    return full[:, 0], full[:, 1:]


def seen_weight(view, model: FaceModel, texel_weight: np.ndarray | None) -> np.ndarray:
    """``(R, R)``: 1 where the pixel's texel was seen (``texel_weight > 0``), by nearest lookup."""
    if texel_weight is None:
        return np.ones(view.triangle_id.shape, dtype=np.float32)
    tid = torch.from_numpy(view.triangle_id)
    from stages.core.shading import barycentrics_from_ids, interpolate, sample_texture

    tris = torch.from_numpy(model.triangles.astype(np.int64))
    bary = barycentrics_from_ids(torch.from_numpy(view.screen).double(), tris, tid)
    uv = interpolate(torch.from_numpy(model.uv.astype(np.float64)), tris, tid, bary)
    seen = torch.from_numpy((texel_weight > 0).astype(np.float32))[None, None]
    return (sample_texture(seen, uv.float())[0, 0].numpy() > 0.5).astype(np.float32)


def _fitted_view(photo: np.ndarray, fit: FitResult, model: FaceModel, size: int,
                 texel_weight: np.ndarray | None):
    """The photo crop of the fitted face and its per-pixel weight (face mask x skin probability x seen
    texel). Returns ``(view, weight (R, R) float32, k, offset (2,))`` where crop = ``k * photo + offset``."""
    from stages.face_view import photo_view

    view = photo_view(fit, model, photo, size)
    screen = fit.screen_vertices()
    # photo_view maps screen -> crop by one scale and offset; recover them to go back and forth.
    k = float(np.std(view.screen[:, 0]) / max(np.std(screen[:, 0]), 1e-9))
    offset = view.screen[:, :2].mean(axis=0) - k * screen[:, :2].mean(axis=0)
    weight = view.mask * seen_weight(view, model, texel_weight)
    if fit.skin is not None:
        centres = (np.stack(np.meshgrid(np.arange(size), np.arange(size)), axis=-1) + 0.5 - offset) / k
        weight = weight * fit.skin.sample(centres)
    return view, weight.astype(np.float32), k, offset


def reprojection_psnr(albedo: np.ndarray, rgb: np.ndarray, fit: FitResult, model: FaceModel, result: AlbedoFit, *,
                      texel_weight: np.ndarray | None = None, size: int = 256,
                      device: torch.device | str = "cpu") -> float:
    """PSNR (dB) of a UV albedo rendered under the fitted light at the refined pose against the photo, on
    the visible face (face mask x skin probability x seen texels, as the fit's photometric term).

    Args:
        albedo: ``(S, S, 3)`` float UV albedo in ``[0, 1]`` (``uv_albedo.png``, or the PCA albedo).
        rgb: ``(H, W, 3)`` the photo, uint8 or float in ``[0, 1]``.
        fit, model: the photo's fit and face model.
        result: the :class:`AlbedoFit` (pose, shape, light).
        texel_weight: ``(S', S')`` which texels were seen (None: all).
        size: side of the image crop rendered into.
        device: where the render runs (a resolved device, :func:`stages.models.device.resolve_device`).
    """
    photo = np.asarray(rgb, dtype=np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    refined = dataclasses.replace(fit, pose=result.pose, vertices=np.asarray(result.vertices, dtype=np.float64))
    view, weight, _, _ = _fitted_view(photo, refined, model, size, texel_weight)
    normals = np.asarray(model.vertex_normals(refined.vertices), dtype=np.float64) @ result.pose.rotation.T
    texture = torch.from_numpy(np.ascontiguousarray(np.clip(albedo, 0, 1), dtype=np.float32)).permute(2, 0, 1)[None]

    def dev(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device)

    with torch.no_grad(), torch_threads(1):
        image, _ = render(dev(view.screen), dev(model.triangles.astype(np.int64)), dev(model.uv.astype(np.float32)),
                          texture.to(device), dev(view.triangle_id), vert_normals=dev(normals.astype(np.float32)),
                          sh_coeffs=dev(np.asarray(result.lighting, dtype=np.float32)))
    error = ((image[0].permute(1, 2, 0).cpu().numpy() - view.image) ** 2).mean(axis=2)
    mse = float((error * weight).sum() / max(float(weight.sum()), 1e-9))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def fit_albedo(rgb: np.ndarray, fit: FitResult, model: FaceModel, pca: AlbedoPCA, *,
               texel_weight: np.ndarray | None = None,
               options: AlbedoFitOptions | None = None, device: torch.device | str = "cpu") -> AlbedoFit:
    """Fit the PCA albedo, SH light and a pose/shape refinement to one photo (module docstring).

    Args:
        rgb: ``(H, W, 3)`` the fitted photo, uint8 or float in ``[0, 1]``.
        fit: its fit (pose, per-image shape, ``skin`` probability when fitted with the mask).
        model: the face model of the fit (its UV layout must be the PCA model's).
        pca: the albedo model.
        texel_weight: ``(S, S)`` per-texel confidence of what may be fitted to (a partial unwrap's
            confidence); pixels whose texel is 0 there are left out. None: every skin pixel.
        options: settings.
        device: where the optimisation runs (a resolved device, :func:`stages.models.device.resolve_device`;
            CPU results are deterministic, CUDA's differ from them by float rounding, see tests/test_uvapm.py).

    Returns:
        :class:`AlbedoFit` (numpy arrays; ``info["device"]`` says where it ran).
    """
    # One thread matters on the CPU (see torch_threads); with CUDA it only covers the small host-side setup.
    with torch_threads(1):
        return _fit_albedo(rgb, fit, model, pca, texel_weight, options or AlbedoFitOptions(), torch.device(device))


def _fit_albedo(rgb: np.ndarray, fit: FitResult, model: FaceModel, pca: AlbedoPCA, texel_weight: np.ndarray | None,
                opts: AlbedoFitOptions, device: torch.device) -> AlbedoFit:
    start = time.perf_counter()
    torch.manual_seed(opts.seed)
    photo = np.asarray(rgb, dtype=np.float32)
    if rgb.dtype == np.uint8:
        photo = photo / 255.0
    size = opts.render_size
    view, weight, k, offset = _fitted_view(photo, fit, model, size, texel_weight)
    n_fit = float(weight.sum())
    if n_fit < 50:
        raise ValueError(f"only {n_fit:.0f} skin pixels to fit the albedo to")

    def dev(array: np.ndarray) -> torch.Tensor:      # numpy -> the fit's device, once (a no-op on the CPU)
        return torch.from_numpy(array).to(device)

    mean_img, basis_img = (t.to(device) for t in _padded_basis(pca))  # (C, P), (C, K, P)
    res = pca.resolution
    n_comp = pca.n_components
    sigma = dev(np.sqrt(np.maximum(pca.variance, 1e-12)).astype(np.float32))  # (C, K)
    tris = dev(model.triangles.astype(np.int64))
    uv = dev(model.uv.astype(np.float32))
    tid = dev(view.triangle_id.astype(np.int64))                     # the rasterizer's ids (CPU), moved once
    target = dev(view.image).permute(2, 0, 1)[None]                  # (1, 3, R, R)
    w = dev(weight.astype(np.float32))[None, None]

    # Refinement about the face's centroid, in crop coordinates.
    vertices0 = np.asarray(fit.vertices, dtype=np.float64)
    centroid = vertices0.mean(axis=0)
    rot0 = dev(fit.pose.rotation.astype(np.float32))
    verts = dev((vertices0 - centroid).astype(np.float32))
    centre_screen = dev((fit.pose.to_screen(centroid[None])[0, :2] * k + offset).astype(np.float32))
    s0 = float(fit.pose.scale) * k
    lm_idx = dev(np.asarray(model.landmarks68 if model.landmarks68 is not None
                            else np.arange(model.n_vertices), dtype=np.int64))
    lm_target = dev(view.screen[:, :2].astype(np.float32))[lm_idx]
    face_size = float(np.ptp(view.screen[:, 0]))

    z = torch.zeros(3, n_comp, device=device, requires_grad=True)
    rot_w = torch.zeros(3, device=device, requires_grad=True)
    log_s = torch.zeros(1, device=device, requires_grad=True)
    shift = torch.zeros(2, device=device, requires_grad=True)
    log_depth = torch.zeros(1, device=device, requires_grad=True)
    ones2 = torch.ones(2, device=device)

    def geometry():
        rotation = _rodrigues(rot_w) @ rot0
        local = verts * torch.cat([ones2, torch.exp(log_depth)])
        cam = local @ rotation.T
        xy = torch.stack([cam[:, 0], -cam[:, 1]], dim=1) * (s0 * torch.exp(log_s)) + centre_screen + shift
        screen_v = torch.cat([xy, -cam[:, 2:3] * s0], dim=1)
        # Normals of the depth-scaled shape: scaling z by a scales normal z by 1/a (then rotate).
        normals = normals_model * torch.cat([ones2, torch.exp(-log_depth)])
        normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-9)
        return screen_v, normals @ rotation.T, rotation

    normals_model = dev(model.vertex_normals(vertices0).astype(np.float32))

    def albedo_texture():
        coeffs = z * sigma                                              # (C, K)
        flat = mean_img + torch.einsum("ck,ckp->cp", coeffs, basis_img)
        return flat.reshape(1, 3, res, res)

    # Closed-form initial light: least squares of photo = albedo_mean * (sh_basis(n) @ L) on the fitted pixels.
    with torch.no_grad():
        screen_v, normals_cam, _ = geometry()
        from stages.core.shading import barycentrics_from_ids, interpolate

        bary = barycentrics_from_ids(screen_v, tris, tid)
        n_px = interpolate(normals_cam, tris, tid, bary)[0]
        n_px = n_px / n_px.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        albedo_px, _ = render(screen_v, tris, uv, albedo_texture(), tid)
    sel = weight > 0.5
    basis = sh_basis_np(n_px.cpu().numpy()[sel].astype(np.float64))              # (N, 9)
    a_px = albedo_px[0].permute(1, 2, 0).cpu().numpy()[sel].astype(np.float64)   # (N, 3)
    t_px = view.image[sel].astype(np.float64)
    light0 = np.zeros((9, 3))
    reg = np.diag([0.0] + [1e-2 * len(basis)] * 8)
    for ch in range(3):
        design = basis * a_px[:, ch:ch + 1]
        light0[:, ch] = np.linalg.solve(design.T @ design + reg, design.T @ t_px[:, ch])
    light = torch.tensor(light0, dtype=torch.float32, device=device, requires_grad=True)
    ambient0 = torch.tensor(light0[0], dtype=torch.float32, device=device)

    coarse_mask = torch.zeros(3, n_comp, device=device)
    coarse_mask[:, :min(COARSE_COMPONENTS, n_comp)] = 1.0
    pose_params = [rot_w, log_s, shift, log_depth] if opts.refine_pose else []
    optimiser = torch.optim.Adam([{"params": [z], "lr": opts.lr}, {"params": [light], "lr": opts.lr * 0.2},
                                  {"params": pose_params, "lr": opts.lr * 0.02}])
    n_stage1 = int(round(opts.iterations * opts.stage1_fraction))
    photometric_start = None     # a tensor until the loop ends: reading it inside would sync every step

    def losses():
        screen_v, normals_cam, _ = geometry()
        image, _ = render(screen_v, tris, uv, albedo_texture(), tid, vert_normals=normals_cam, sh_coeffs=light)
        diff = torch.sqrt(((image - target) ** 2).sum(1, keepdim=True) + 1e-8)
        photometric = (diff * w).sum() / n_fit
        landmark = ((screen_v[lm_idx, :2] - lm_target) ** 2).sum(1).mean() / face_size ** 2
        coeff = (z ** 2).sum()
        sh = ((light[1:] ** 2).sum() + ((light[0] - ambient0) ** 2).sum() * 0.1)
        pose = (rot_w ** 2).sum() + log_s ** 2 + log_depth ** 2 + ((shift / face_size) ** 2).sum()
        total = (photometric + opts.w_landmark * landmark + opts.w_coeff * coeff + opts.w_sh * sh
                 + opts.w_pose * pose.sum())
        return total, photometric.detach()

    for it in range(opts.iterations):
        optimiser.zero_grad()
        total, photometric = losses()
        total.backward()
        if it < n_stage1:
            z.grad *= coarse_mask
        optimiser.step()
        if it == 0:
            photometric_start = photometric

    with torch.no_grad():
        screen_v, normals_cam, rotation = geometry()
        image, _ = render(screen_v, tris, uv, albedo_texture(), tid, vert_normals=normals_cam, sh_coeffs=light)
        mse = float((((image - target) ** 2).mean(1) * w[0]).sum() / n_fit)
        final_photo = float(losses()[1])
    scale = float(torch.exp(log_s.detach())) * fit.pose.scale
    depth = float(torch.exp(log_depth.detach()))
    # Back to the photo's frame: the centroid moved by `shift` (crop px) = shift / k photo px.
    rot = rotation.cpu().numpy().astype(np.float64)
    refined_vertices = centroid + (vertices0 - centroid) * np.array([1.0, 1.0, depth])
    centre_photo = (centre_screen.cpu().numpy() + shift.detach().cpu().numpy() - offset) / k
    cam_centroid = rot @ centroid * scale
    tz = float(fit.pose.translation[2])
    translation = np.array([centre_photo[0] - cam_centroid[0], centre_photo[1] + cam_centroid[1], tz])
    pose = Pose(rotation=rot, scale=scale, translation=translation)
    angle = math.degrees(float(rot_w.detach().norm()))
    info = {"iterations": opts.iterations, "stage1_iterations": n_stage1, "render_size": size,
            "fitted_pixels": int(n_fit),
            "photometric_start": None if photometric_start is None else round(float(photometric_start), 5),
            "photometric_end": round(final_photo, 5),
            "reprojection_psnr": round(10 * math.log10(1.0 / max(mse, 1e-12)), 3),
            "rotation_refinement_deg": round(angle, 3), "scale_refinement": round(float(torch.exp(log_s.detach())), 5),
            "depth_scale": round(depth, 5), "shift_px": np.round(shift.detach().cpu().numpy() / k, 3).tolist(),
            "seconds": round(time.perf_counter() - start, 3), "seed": opts.seed, "device": str(device)}
    return AlbedoFit(coeffs=(z * sigma).detach().cpu().numpy().astype(np.float32),
                     lighting=light.detach().cpu().numpy().astype(np.float32), pose=pose,
                     vertices=refined_vertices, info=info)
