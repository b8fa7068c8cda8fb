"""UVAPM (issue 13): the coarse albedo/light fit, HSV composition, albedo-space mirror, the uvapm
method's outputs and the detail ratio."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from stages.albedo_fit import (
    AlbedoFit,
    AlbedoFitOptions,
    albedo_space_mirror,
    fit_albedo,
    fit_shading,
    reprojection_psnr,
    texel_normals,
    texel_shading,
)
from stages.completion.mirror import MirrorFill
from stages.completion.pca import load_pca
from stages.completion.uvapm import detail_highpass, fit_detail, hsv_compose, match_detail_gain
from stages.core.shading import SH_C0
from stages.core.uv import uv_layout
from stages.evaluate.detail import band_pass, detail_ratio, region_energy
from stages.render import render_mesh
from stages.unwrap import unwrap_photo
from tests.test_unwrap_render import synthetic_fit

PHOTO = 256
#: A side light: ambient 1 (so render_mesh's normalised light is this light itself), from +x and above.
TRUE_LIGHT = np.zeros((9, 3), np.float32)
TRUE_LIGHT[0] = 1.0 / SH_C0
TRUE_LIGHT[3] = (0.45, 0.40, 0.35)
TRUE_LIGHT[1] = 0.15


@pytest.fixture(scope="module")
def pca():
    return load_pca(None)


@pytest.fixture(scope="module")
def scene(model, pca):
    """A face rendered with a known PCA albedo and the known side light, its fit and unwrap."""
    coeffs = np.zeros((3, pca.n_components), np.float32)
    coeffs[:, 0] = -0.8 * np.sqrt(pca.variance[:, 0])
    coeffs[:, 1] = 1.0 * np.sqrt(pca.variance[:, 1])
    true = AlbedoFit(coeffs=coeffs, lighting=TRUE_LIGHT, pose=None, vertices=None)
    albedo = true.albedo(pca, 256)
    fit = synthetic_fit(model, 10.0, PHOTO)
    normals = fit.pose.rotate_normals(model.vertex_normals(fit.vertices))
    rgb, mask = render_mesh(albedo, fit.screen_vertices(), model, PHOTO, PHOTO, normals_cam=normals, sh=TRUE_LIGHT)
    photo = (np.where(mask[..., None], np.clip(rgb, 0, 1), 0.5) * 255 + 0.5).astype(np.uint8)
    unwrap = unwrap_photo(photo, fit, model=model, uv_size=256)
    return {"albedo": albedo, "fit": fit, "photo": photo, "unwrap": unwrap, "coeffs": coeffs}


def test_fit_recovers_known_albedo_and_light(model, pca, scene):
    result = fit_albedo(scene["photo"], scene["fit"], model, pca, texel_weight=scene["unwrap"].confidence,
                        options=AlbedoFitOptions(iterations=60, render_size=96))
    seen = scene["unwrap"].confidence > 0.3
    albedo = result.albedo(pca, 256)
    # Albedo and light are recovered up to their scale ambiguity (albedo * k, light / k render the same),
    # which only the priors decide: the per-channel scale within 20 %, the albedo's pattern after that
    # scale within 0.02 (mean abs, [0, 1] units), starting from the mean albedo (off by ~0.08).
    start = np.abs(AlbedoFit(np.zeros_like(scene["coeffs"]), TRUE_LIGHT, None, None).albedo(pca, 256)
                   - scene["albedo"])[seen].mean()
    scale = albedo[seen].mean(0) / scene["albedo"][seen].mean(0)
    assert start > 0.05 and np.abs(scale - 1).max() < 0.2, (start, scale)
    assert np.abs(albedo / scale - scene["albedo"])[seen].mean() < 0.02
    # Light: the fitted shading, normalised to its ambient level, within 6 % of the true one on the seen
    # normals (the PCA, built from lit photos, has gradient-like components that trade with the light);
    # the product albedo * shading (what the photo shows) within 2 %.
    normals = texel_normals(model, scene["fit"].vertices, scene["fit"].pose.rotation, 256)
    true_shade = texel_shading(normals, TRUE_LIGHT, normalise=True)[seen]
    fitted_shade = texel_shading(normals, result.lighting, normalise=True)[seen]
    assert np.abs(fitted_shade / true_shade - 1).mean() < 0.06
    product = albedo[seen] * texel_shading(normals, result.lighting)[seen]
    assert np.abs(product / (scene["albedo"][seen] * texel_shading(normals, TRUE_LIGHT)[seen]) - 1).mean() < 0.02
    assert (result.lighting[3] / result.lighting[0]).min() > 0.05  # light from +x (true: 0.10-0.13)
    assert result.info["reprojection_psnr"] > 30
    # Refinements stay small on a perfect fit.
    assert result.info["rotation_refinement_deg"] < 1.0 and abs(result.info["depth_scale"] - 1) < 0.05


def test_reprojection_psnr_renders_the_albedo_under_the_light(model, pca, scene):
    """The true albedo under the true light and pose gives the photo back (high PSNR); a 10 % darker
    albedo, or the true one without the light's side term, does not."""
    fit = scene["fit"]
    truth = AlbedoFit(scene["coeffs"], TRUE_LIGHT, fit.pose, fit.vertices)
    weight = scene["unwrap"].confidence

    def psnr(albedo, light=TRUE_LIGHT):
        return reprojection_psnr(albedo, scene["photo"], fit, model, AlbedoFit(scene["coeffs"], light, fit.pose,
                                                                               fit.vertices), texel_weight=weight)

    good = psnr(scene["albedo"])
    assert good > 35, good
    assert psnr(scene["albedo"] * 0.9) < good - 8
    flat = TRUE_LIGHT.copy()
    flat[3] = 0
    assert psnr(truth.albedo(pca, 256), flat) < good - 8


def test_fit_uses_only_seen_texels(model, pca, scene):
    """A texel weight of zero everywhere leaves nothing to fit (the hidden-texel test relies on it)."""
    with pytest.raises(ValueError, match="skin pixels"):
        fit_albedo(scene["photo"], scene["fit"], model, pca, texel_weight=np.zeros((256, 256), np.float32),
                   options=AlbedoFitOptions(iterations=1))


def test_hsv_composition_keeps_hue_and_saturation():
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0.2, 0.7, (32, 32, 3)).astype(np.float32)
    detail = rng.uniform(-0.15, 0.15, (32, 32)).astype(np.float32)
    out = hsv_compose(coarse, detail)
    before, after = cv2.cvtColor(coarse, cv2.COLOR_RGB2HSV), cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
    assert np.allclose(after[..., 0], before[..., 0], atol=0.05)       # hue in degrees
    assert np.allclose(after[..., 1], before[..., 1], atol=1e-4)
    assert np.allclose(after[..., 2], before[..., 2] + detail, atol=1e-4)
    assert np.array_equal(hsv_compose(coarse, None), coarse)


def test_stage3_detail_seam_fits_a_decoder():
    """fit_detail optimises a decoder's latent to the target's V residual; no decoder: zeros."""
    import torch

    size = 32
    coarse = np.full((size, size, 3), 0.5, np.float32)
    pattern = np.sin(np.arange(size) / 2.0)[None, :].repeat(size, 0).astype(np.float32) * 0.1
    target = coarse + pattern[..., None]
    assert not fit_detail(coarse, target, np.ones((size, size)), None).any()
    basis = torch.from_numpy(np.stack([pattern, pattern.T]))          # a linear decoder, 2 latents

    def decoder(z):
        return torch.einsum("bk,khw->bhw", z.reshape(1, 2), basis)[:, None]

    detail = fit_detail(coarse, target, np.ones((size, size)), decoder, latent_shape=(2,), iterations=200)
    assert np.abs(detail - pattern).mean() < 0.01


def test_stage3_keeps_a_prior_sample_where_the_photo_saw_nothing():
    """Latents under unseen texels keep their prior sample (detail), those under seen texels are fitted."""
    import torch

    size = 32
    coarse = np.full((size, size, 3), 0.5, np.float32)
    target = coarse.copy()
    target[:, : size // 2] += 0.05                                       # the seen half is brighter
    weight = np.zeros((size, size), np.float32)
    weight[:, : size // 2] = 1.0

    def decoder(z):                                                     # one latent per 4 x 4 block
        return torch.nn.functional.interpolate(z, scale_factor=4, mode="nearest") * 0.05

    detail = fit_detail(coarse, target, weight, decoder, latent_shape=(1, 8, 8), iterations=150)
    assert np.abs(detail[:, : size // 2] - 0.05).mean() < 0.01          # fitted
    sample = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert np.allclose(detail[:, size // 2:], decoder(sample)[0, 0, :, size // 2:].numpy(), atol=1e-5)
    assert detail[:, size // 2:].std() > 0.03                          # a prior sample's detail, not the mean


def test_stage3_anchor_keeps_latents_at_the_seen_border_near_their_sample():
    """A decoder whose latents reach across the seen border (each 4 x 4 block blurred into its
    neighbours) and a seen target far beyond the sample's scale: without the anchor, the unseen latents
    next to the border are driven to extremes (the block artifacts stage 3 once showed); with the
    default anchor, the unseen half stays close to the prior sample's detail."""
    import torch

    from stages.completion.uvapm import DETAIL_ANCHOR

    size = 32
    coarse = np.full((size, size, 3), 0.3, np.float32)
    target = coarse.copy()
    target[:, : size // 2] += 0.5
    weight = np.zeros((size, size), np.float32)
    weight[:, : size // 2] = 1.0
    kernel = torch.ones(1, 1, 9, 9) / 81.0

    def decoder(z):
        return torch.nn.functional.conv2d(torch.nn.functional.interpolate(z, scale_factor=4, mode="nearest"),
                                          kernel, padding=4) * 0.05

    sample = decoder(0.5 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)))[0, 0].numpy()
    border = slice(size // 2, size // 2 + 8)                            # unseen texels next to the seen half

    def drift(w_anchor):
        detail = fit_detail(coarse, target, weight, decoder, latent_shape=(1, 8, 8), iterations=50,
                            init_scale=0.5, w_anchor=w_anchor)
        return np.abs(detail[:, border] - sample[:, border]).mean()

    assert drift(0.0) > 0.03                                            # what the anchor is for (0.058)
    assert drift(DETAIL_ANCHOR) < 0.2 * drift(0.0)                     # (0.004)


def _noise(seed: int, size: int = 128, amplitude: float = 0.05) -> np.ndarray:
    """``(size, size)`` float32 detail-like noise (blurred at 1 texel) around 0."""
    noise = np.random.default_rng(seed).normal(0, amplitude, (size, size)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 1.0)


def test_detail_gain_matches_the_photos_band_energy():
    """match_detail_gain: the filled half gets ``strength`` times the seen half's band energy, counting
    the coarse albedo's own detail (a correlated coarse and residual too); 0 when the coarse is already
    detailed enough; nan without a region to match."""
    size = 128
    seen = np.zeros((size, size), bool)
    seen[:, : size // 2] = True
    fill = ~seen
    reference = 0.5 + _noise(0)
    detail = _noise(1, amplitude=0.02)
    for coarse in (np.full((size, size), 0.5, np.float32), 0.5 + _noise(2, amplitude=0.01),
                   0.5 + 0.2 * detail + _noise(3, amplitude=0.005)):
        for strength in (0.5, 1.0):
            gain = match_detail_gain(coarse, detail, reference, seen, fill, strength)
            achieved = region_energy(band_pass(coarse + gain * detail), fill)
            wanted = strength * region_energy(band_pass(reference), seen)
            assert gain > 0 and abs(achieved / wanted - 1) < 1e-3, (gain, achieved, wanted)
    detailed_coarse = 0.5 + _noise(4, amplitude=0.1)
    assert match_detail_gain(detailed_coarse, detail, reference, seen, fill, 0.5) == 0.0
    assert np.isnan(match_detail_gain(reference, detail, reference, seen, np.zeros_like(fill), 1.0))
    assert np.isnan(match_detail_gain(reference, np.zeros_like(detail), reference, seen, fill, 1.0))


def test_detail_highpass_removes_the_low_frequencies_only():
    """The high-pass keeps most of the band the detail ratio measures (the gain makes up the rest) and
    drops a smooth offset."""
    size = 128
    fine = _noise(0)
    smooth = 0.05 * np.sin(np.arange(size) / 20.0)[None, :].repeat(size, 0).astype(np.float32)
    out = detail_highpass(fine + smooth, 8.0)
    inner = (slice(16, -16),) * 2
    assert np.abs(out - fine)[inner].mean() < 0.2 * np.abs(smooth)[inner].mean()
    everywhere = np.ones((size, size), bool)
    assert region_energy(band_pass(out), everywhere) > 0.8 * region_energy(band_pass(fine), everywhere)


def _half_lit(model, fit, size, light):
    """A texture of a uniform albedo 0.5 shaded by ``light`` (normalised) at the fit's normals."""
    return np.clip(0.5 * fit_shading(model, fit, size) if light is not None else np.full((size, size, 3), 0.5), 0, 1)


def test_albedo_space_mirror_is_plain_mirror_under_uniform_light(model, scene):
    fit = scene["fit"]
    unwrap = scene["unwrap"]
    uniform = np.zeros((9, 3), np.float32)
    uniform[0] = 2.0
    fit_uniform = type(fit)(**{**fit.__dict__, "lighting": uniform})
    shading = fit_shading(model, fit_uniform, unwrap.size)
    mirrored = albedo_space_mirror(unwrap.texture, shading, uv_layout(model, unwrap.size))
    assert np.allclose(mirrored, unwrap.texture[:, ::-1], atol=1e-6)
    plain = MirrorFill(model).complete(unwrap).texture
    albedo = MirrorFill(model, albedo_space=True).complete_fitted(unwrap, fit_uniform).texture
    assert np.allclose(plain, albedo, atol=1e-6)


def test_mirror_is_in_albedo_space_by_default_when_fitted(model, scene):
    """complete_fitted (what complete/evaluate call) mirrors in albedo space unless told not to; complete
    (no fit, no light) mirrors plainly, and each says which in its info."""
    fit = type(scene["fit"])(**{**scene["fit"].__dict__, "lighting": TRUE_LIGHT})
    unwrap = scene["unwrap"]
    default = MirrorFill(model).complete_fitted(unwrap, fit)
    albedo = MirrorFill(model, albedo_space=True).complete_fitted(unwrap, fit)
    plain = MirrorFill(model, albedo_space=False).complete_fitted(unwrap, fit)
    assert default.info["albedo_space"] and not plain.info["albedo_space"]
    assert np.array_equal(default.texture, albedo.texture)
    assert np.abs(default.texture - plain.texture)[unwrap.layout_mask].max() > 0.02
    no_fit = MirrorFill(model).complete(unwrap)
    assert not no_fit.info["albedo_space"] and np.array_equal(no_fit.texture, plain.texture)


def test_albedo_space_mirror_pairs_texels_through_the_layout():
    """A layout that is not left-right symmetric (ICT) pairs texels through its own mirror, not a flip."""
    class Shifted:                                      # a stand-in layout whose partner is 3 columns away
        @staticmethod
        def mirror(image):
            return np.roll(image, 3, axis=1)

    rng = np.random.default_rng(1)
    texture = rng.uniform(0.2, 0.8, (16, 16, 3)).astype(np.float32)
    shading = rng.uniform(0.5, 1.5, (16, 16, 3)).astype(np.float32)
    expected = np.clip(np.roll(texture / shading, 3, axis=1) * shading, 0, 1)
    assert np.allclose(albedo_space_mirror(texture, shading, Shifted()), expected, atol=1e-6)


def test_albedo_space_mirror_removes_a_light_gradient(model, scene):
    """A uniform albedo lit from one side: the plain mirror copies the lit side's shading across, the
    albedo-space mirror gives each texel its own side's shading (the truth)."""
    fit = type(scene["fit"])(**{**scene["fit"].__dict__, "lighting": TRUE_LIGHT})
    size = 256
    truth = _half_lit(model, fit, size, TRUE_LIGHT)
    shading = fit_shading(model, fit, size)
    layout = scene["unwrap"].layout_mask
    plain = truth[:, ::-1]
    albedo_space = albedo_space_mirror(truth, shading, uv_layout(model, size))
    plain_err = np.abs(plain - truth)[layout].mean()
    assert plain_err > 0.05
    assert np.abs(albedo_space - truth)[layout].mean() < 0.1 * plain_err


def test_uvapm_writes_albedo_and_lighting(model, scene, tmp_path):
    """The method's outputs carry values: the albedo is the true albedo (the photo divided by the light),
    lighting.json holds the side light, uv_complete keeps the photo's texels; complete.py writes them."""
    from stages.complete import COMPLETION_FILES, Completer, CompleteOptions

    options = CompleteOptions(method="uvapm", previews=False, glb=False, occlusion_mask=False,
                              method_options={"iterations": 40})
    completer = Completer(options, model=model, landmarker=object())
    unwrap, fit = scene["unwrap"], scene["fit"]
    completer._complete_face(scene["photo"], fit, unwrap, tmp_path, {})
    from stages.core.image_io import load_texture

    albedo = load_texture(tmp_path / "uv_albedo.png")[..., :3]
    complete = load_texture(tmp_path / "uv_complete.png")[..., :3]
    lighting = json.loads((tmp_path / "lighting.json").read_text())
    seen = unwrap.confidence > 0.3
    scale = albedo[seen].mean(0) / scene["albedo"][seen].mean(0)        # see the fit test: scale ambiguity
    assert np.abs(scale - 1).max() < 0.2 and np.abs(albedo / scale - scene["albedo"])[seen].mean() < 0.02
    assert np.abs(complete - unwrap.texture)[seen].mean() < 0.01
    sh = np.asarray(lighting["lighting_sh"])
    assert sh.shape == (9, 3) and (sh[3] / sh[0]).min() > 0.03  # 40 iterations: light from +x
    record = json.loads((tmp_path / "complete.json").read_text())
    assert record["completion"]["fit"]["iterations"] == 40
    # Where it ran (auto: CUDA when available) and how long stage 3 took (bench_uvapm --time-fit reads both).
    from stages.models.device import resolve_device

    assert record["completion"]["fit"]["device"] == str(resolve_device("auto"))
    assert record["completion"]["detail_seconds"] > 0
    assert record["completion"]["reprojection_psnr_256"]["albedo"] > 35   # photo / shading, shaded back
    assert {"uv_albedo.png", "lighting.json"} <= set(COMPLETION_FILES)


def test_uvapm_without_photo_is_one_clear_error(model, scene):
    from stages.completion import get_method
    from stages.core.errors import FacetexError

    method = get_method("uvapm").load(model, iterations=1)
    with pytest.raises(FacetexError, match="needs the"):
        method.complete(scene["unwrap"])
    with pytest.raises(FacetexError, match="needs the fitted photo"):
        method.complete_fitted(scene["unwrap"], scene["fit"], None)


def test_detail_ratio():
    rng = np.random.default_rng(0)
    size = 128
    noise = rng.normal(0, 0.05, (size, size)).astype(np.float32)
    detailed = np.clip(0.5 + cv2.GaussianBlur(noise, (0, 0), 1.0)[..., None].repeat(3, 2), 0, 1)
    seen = np.zeros((size, size), bool)
    seen[:, : size // 2] = True
    region = np.ones((size, size), bool)
    assert abs(detail_ratio(detailed, seen, ~seen, region) - 1.0) < 0.2       # same detail both sides
    smooth = detailed.copy()
    smooth[:, size // 2:] = 0.5
    assert detail_ratio(smooth, seen, ~seen, region) < 0.01                   # a flat fill
    assert np.isnan(detail_ratio(detailed, seen, np.zeros_like(seen), region))


@pytest.fixture(scope="module")
def tiny_detail_vae(tmp_path_factory):
    """A tiny detail VAE model folder (seeded initial weights: the plumbing, not the quality, is tested)."""
    import torch

    from stages.models.detail_vae import MODEL_TYPE, PRESETS, DetailDecoder, DetailEncoder
    from stages.models.folder import save_pretrained

    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    out = tmp_path_factory.mktemp("detail_vae") / "vae"
    save_pretrained(out, {"encoder": DetailEncoder(cfg), "decoder": DetailDecoder(cfg)},
                    {"encoder": cfg.to_dict(), "decoder": cfg.to_dict()}, model_type=MODEL_TYPE)
    return out


def test_uvapm_detail_model_changes_v_only_where_the_photo_saw_nothing(model, scene, tmp_path, tiny_detail_vae):
    """``--model DETAIL_VAE``: stage 3 adds the decoder's V residual; the photo's seen texels stay as they
    were, the hidden ones change in value (brightness) and hardly in hue/saturation; the filled skin whose
    mirror partner was seen gets ``detail_strength`` times the seen skin's band energy (de-lit, in
    uv_albedo.png); complete.json records the model folder and the strength so evaluate can rebuild it."""
    import dataclasses

    from stages.complete import Completer, CompleteOptions
    from stages.core.image_io import load_texture
    from stages.evaluate.stage import skin_uv_mask

    unwrap = scene["unwrap"]
    # The synthetic render is smooth: give the seen texels skin-like detail to match.
    noisy = np.clip(unwrap.texture + _noise(5, unwrap.size, 0.15)[..., None], 0, 1)
    unwrap = dataclasses.replace(unwrap, texture=np.where(unwrap.confidence[..., None] > 0, noisy, unwrap.texture))

    def run(out, **extra):
        options = CompleteOptions(method="uvapm", previews=False, glb=False, occlusion_mask=False,
                                  method_options={"iterations": 8, **extra})
        Completer(options, model=model, landmarker=object())._complete_face(scene["photo"], scene["fit"], unwrap,
                                                                            out, {})
        return load_texture(out / "uv_albedo.png")[..., :3]

    plain = run(tmp_path / "plain")
    seen = unwrap.confidence > 0
    hidden = unwrap.layout_mask & ~seen
    skin = skin_uv_mask(model, unwrap.size)
    fill = skin & hidden & seen[:, ::-1]
    assert hidden.sum() > 1000 and fill.sum() > 1000
    ratios = {}
    for strength in (0.5, 1.0):
        detailed = run(tmp_path / f"detail{strength}", model_path=str(tiny_detail_vae), detail_strength=strength)
        assert np.abs(detailed - plain)[seen].max() < 2 / 255                  # the photo's texels kept
        hsv_plain, hsv_detail = (cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2HSV) for x in (plain, detailed))
        dv = np.abs(hsv_detail[..., 2] - hsv_plain[..., 2])[hidden].mean()
        ds = np.abs(hsv_detail[..., 1] - hsv_plain[..., 1])[hidden].mean()
        assert dv > 0.003 and ds < 0.25 * dv, (dv, ds)
        band = band_pass(detailed)
        ratios[strength] = region_energy(band, fill) / region_energy(band, skin & seen)
        record = json.loads((tmp_path / f"detail{strength}" / "complete.json").read_text())["completion"]
        assert record["detail"] is True and record["detail_strength"] == strength
        assert record["detail_matched"] == "mirror-seen"
        assert record["model_files"]["model_path"]["path"].endswith("vae")
    assert abs(ratios[0.5] - 0.5) < 0.15 and abs(ratios[1.0] - 1.0) < 0.25, ratios


def test_shipped_detail_vae_is_the_default_and_evaluate_rebuilds_it(model, scene, tmp_path, monkeypatch):
    """The shipped detail VAE loads, its weights are the ones its card names, it was trained on London
    training people only; ``uvapm`` uses it by default and records it (and ``detail=False`` records that)
    so ``evaluate`` rebuilds the same method; a missing one is a one-line error."""
    import hashlib
    from pathlib import Path

    from stages.complete import Completer, CompleteOptions
    from stages.completion import uvapm
    from stages.core.errors import MissingArtifactError
    from stages.core.splits import london_split
    from stages.evaluate.stage import MethodResolver

    folder = uvapm.SHIPPED_DETAIL_VAE
    card = (folder / "README.md").read_text()
    assert f"sha256: `{hashlib.sha256((folder / 'weights.safetensors').read_bytes()).hexdigest()}`" in card
    config = json.loads((folder / "config.json").read_text())
    assert len(config["data"]) == 172 and all(london_split(Path(d).name + ".jpg") == "train" for d in config["data"])
    assert not any(d.startswith("/") for d in config["data"])        # no local paths shipped
    resolver = MethodResolver(model)
    for name, extra in (("default", {}), ("off", {"detail": False})):
        options = CompleteOptions(method="uvapm", previews=False, glb=False, occlusion_mask=False,
                                  method_options={"iterations": 2, **extra})
        Completer(options, model=model, landmarker=object())._complete_face(
            scene["photo"], scene["fit"], scene["unwrap"], tmp_path / name, {})
        rebuilt = resolver.resolve(tmp_path / name)
        if name == "default":
            assert rebuilt.description["model_files"]["model_path"]["path"] == str(folder.resolve())
            assert rebuilt.method.detail_decoder.latent_shape == (4, 32, 32)
        else:
            assert "model_path" not in rebuilt.description["model_files"]
            assert rebuilt.method.detail_decoder is None and rebuilt.description["options"]["detail"] is False
    with pytest.raises(ValueError, match="detail off"):
        uvapm.UVAPMFill(model, model_path=str(folder), detail=False)
    monkeypatch.setattr(uvapm, "SHIPPED_DETAIL_VAE", tmp_path / "absent")
    with pytest.raises(MissingArtifactError, match="shipped detail VAE is missing") as info:
        uvapm.UVAPMFill(model)
    assert "\n" not in str(info.value)


def test_complete_detail_flags_go_with_uvapm_only(tmp_path):
    from typer.testing import CliRunner

    from facetex_cli.main import app

    def error(*args: str) -> str:
        result = CliRunner().invoke(app, ["complete", str(tmp_path), "-o", str(tmp_path / "o"), *args])
        assert result.exit_code == 2
        return " ".join(result.output.replace("│", " ").split())        # the error box, unwrapped

    assert "--detail-strength goes with --method uvapm" in error("--method", "mirror", "--detail-strength", "0.5")
    assert "--detail goes with --method uvapm" in error("--method", "pca", "--no-detail")
    assert "goes with --detail, not --no-detail" in error("--method", "uvapm", "--no-detail", "--model", str(tmp_path))


def test_detail_gain_falls_back_to_all_unseen_skin(model, tiny_detail_vae):
    """When the hidden skin's mirror partners are hidden too (a view from below), the gain is matched
    over all the unseen skin (not left at 1): its band energy is ``detail_strength`` times the seen skin's."""
    from stages.completion.uvapm import UVAPMFill
    from stages.evaluate.stage import skin_uv_mask

    size = 256
    fill = UVAPMFill(model, model_path=str(tiny_detail_vae), detail_strength=0.8)
    skin = skin_uv_mask(model, size)
    confidence = np.ones((size, size), np.float32)
    confidence[size // 2:] = 0.0                                    # the lower half, on both sides
    coarse = np.full((size, size, 3), 0.5, np.float32)
    delit = np.clip(coarse + _noise(6, size, 0.15)[..., None], 0, 1)
    residual, info = fill.synthesize_detail(coarse, delit, confidence)
    assert info["detail_matched"] == "all unseen" and info["detail_gain"] > 0
    band = band_pass(0.5 + residual)
    ratio = region_energy(band, skin & (confidence <= 0)) / region_energy(band_pass(delit), skin & (confidence > 0))
    assert abs(ratio - 0.8) < 0.01, ratio


def test_uvapm_device_without_cuda_is_one_line_error(model, tmp_path):
    """``--device cuda`` where there is no CUDA: one line naming the problem (the method and the CLI), before
    any fitting; ``--device`` with a method that has no device is a usage error."""
    import torch
    from typer.testing import CliRunner

    from facetex_cli.main import app
    from stages.completion.uvapm import UVAPMFill
    from stages.models.device import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available") as info:
        UVAPMFill(model, detail=False, device="cuda")
    assert "\n" not in str(info.value)
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    result = CliRunner().invoke(app, ["complete", str(photo), "-o", str(tmp_path / "o"), "--method", "uvapm",
                                      "--device", "cuda"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error --device cuda: CUDA is not available on this machine (use --device cpu)"], result.output
    assert not (tmp_path / "o" / "face").exists()
    result = CliRunner().invoke(app, ["complete", str(tmp_path), "-o", str(tmp_path / "o"), "--method", "mirror",
                                      "--device", "cpu"])
    assert result.exit_code == 2 and "goes with --method unet, diffusion, gan or uvapm" in " ".join(
        result.output.replace("│", " ").split())


def _fit_on(device, model, pca, scene, decoder_dir):
    """The coarse fit and stage 3 of the synthetic scene on ``device`` (numpy results)."""
    from stages.completion.uvapm import UVAPMFill

    method = UVAPMFill(model, iterations=40, model_path=str(decoder_dir), device=device)
    result = fit_albedo(scene["photo"], scene["fit"], model, pca, texel_weight=scene["unwrap"].confidence,
                        options=method.fit_options, device=method.device)
    coarse = result.albedo(pca, 256)
    target = np.clip(scene["unwrap"].texture + _noise(7, 256, 0.1)[..., None], 0, 1)
    residual = fit_detail(coarse, target, scene["unwrap"].confidence, method.detail_decoder,
                          method.detail_latent_shape, iterations=30, init_scale=0.5, w_anchor=0.1,
                          device=method.device)
    return result, coarse, residual


def test_uvapm_fit_is_deterministic_on_cpu_and_records_its_device(model, pca, scene, tiny_detail_vae):
    """Same seed, same device: the same numbers to the bit (the CPU path), and the fit says where it ran."""
    first, second = (_fit_on("cpu", model, pca, scene, tiny_detail_vae) for _ in range(2))
    assert first[0].info["device"] == "cpu"
    for a, b in zip(first, second, strict=True):
        a, b = (x.lighting if isinstance(x, AlbedoFit) else x for x in (a, b))
        assert np.array_equal(a, b)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_uvapm_fit_on_cuda_matches_cpu(model, pca, scene, tiny_detail_vae):
    """The fit and stage 3 on CUDA give the CPU's result within float rounding amplified by Adam: the albedo
    within 0.003 (mean abs, [0, 1]; the fit itself is within 0.02 of the truth), the normalised shading within
    0.5 %, the refinements within 0.05 degrees / 0.002, the stage-3 residual within 5 % of its size."""
    cpu, cuda = (_fit_on(device, model, pca, scene, tiny_detail_vae) for device in ("cpu", "cuda"))
    assert cuda[0].info["device"].startswith("cuda")
    seen = scene["unwrap"].confidence > 0.3
    assert np.abs(cuda[1] - cpu[1])[seen].mean() < 0.003
    normals = texel_normals(model, scene["fit"].vertices, scene["fit"].pose.rotation, 256)
    shades = [texel_shading(normals, r[0].lighting, normalise=True)[seen] for r in (cpu, cuda)]
    assert np.abs(shades[1] / shades[0] - 1).mean() < 0.005
    for key, tolerance in (("rotation_refinement_deg", 0.05), ("depth_scale", 0.002), ("scale_refinement", 0.002)):
        assert abs(cuda[0].info[key] - cpu[0].info[key]) < tolerance, key
    assert np.abs(cuda[2] - cpu[2]).mean() < 0.05 * np.abs(cpu[2]).mean()
