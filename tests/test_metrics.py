"""Tests of the evaluate stage's metric functions (stages.evaluate.metrics)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import scipy.ndimage
import torch

from stages.evaluate import metrics as M


def _smooth(rng, shape, sigma=2.0) -> np.ndarray:
    x = scipy.ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(sigma, sigma, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return x


# --------------------------------------------------------------------------------------------
# pixel metrics


def test_identical_images():
    rng = np.random.default_rng(0)
    a = rng.random((32, 40, 3)).astype(np.float32)
    assert M.psnr(a, a) == float("inf")
    assert M.l1(a, a) == 0.0
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(M.ssim_map(a, a), 1.0)


def test_psnr_of_gaussian_noise():
    rng = np.random.default_rng(1)
    sigma = 0.05
    a = np.full((256, 256, 3), 0.5, np.float32)
    b = (a + rng.normal(0.0, sigma, a.shape)).astype(np.float32)
    assert abs(M.psnr(a, b) - 20 * np.log10(1.0 / sigma)) < 0.3
    assert M.l1(a, b) == pytest.approx(sigma * np.sqrt(2 / np.pi), rel=0.02)
    # data range scales as expected: R = 255 with images scaled by 255 gives the same PSNR
    assert M.psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(M.psnr(a, b), abs=1e-3)


def test_l1_psnr_known_values():
    a = np.zeros((4, 4, 3))
    b = np.zeros((4, 4, 3))
    b[..., 0] = 0.3  # one channel of three off by 0.3
    assert M.l1(a, b) == pytest.approx(0.1)
    assert M.psnr(a, b) == pytest.approx(10 * np.log10(1 / (0.09 / 3)))


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image not installed")
def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    a = _smooth(rng, (48, 56, 3))
    b = np.clip(a + 0.3 * (_smooth(rng, (48, 56, 3), sigma=1.0) - 0.5), 0, 1)
    mssim, smap = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1, channel_axis=2, full=True)
    ours = M.ssim_map(a, b)
    assert ours.shape == a.shape[:2]
    assert np.abs(ours - smap.mean(axis=2)).max() < 1e-3
    # skimage's mean crops (win_size - 1) / 2 = 5 pixels on each side
    inner = np.zeros(a.shape[:2], bool)
    inner[5:-5, 5:-5] = True
    assert abs(M.ssim(a, b, inner) - mssim) < 1e-3
    assert M.ssim(a, b) < 1.0


def test_ssim_shift_lowers():
    rng = np.random.default_rng(3)
    a = _smooth(rng, (40, 40, 3), sigma=1.5)
    shifted = np.roll(a, 3, axis=1)
    assert M.ssim(a, shifted) < M.ssim(a, a) - 0.05


def test_masks_restrict():
    rng = np.random.default_rng(4)
    a = rng.random((30, 30, 3))
    b = a + 0.01 * rng.standard_normal(a.shape)
    mask = np.zeros((30, 30), bool)
    mask[5:15, 5:15] = True
    b2 = b.copy()
    b2[20:, 20:] += 0.5  # outside the mask, far enough from it for the 11x11 SSIM window
    assert M.l1(a, b2, mask) == M.l1(a, b, mask)
    assert M.psnr(a, b2, mask) == M.psnr(a, b, mask)
    assert M.ssim(a, b2, mask) == pytest.approx(M.ssim(a, b, mask), abs=1e-12)
    assert M.psnr(a, b2) < M.psnr(a, b)  # but it does count without a mask
    assert np.isnan(M.l1(a, b, np.zeros((30, 30), bool)))


def test_masked_variant_is_inflated():
    rng = np.random.default_rng(5)
    photo = rng.random((40, 40, 3))
    render = np.clip(photo + 0.05 * rng.standard_normal(photo.shape), 0, 1)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    variant = M.masked_variant_ssim_psnr(render, photo, mask)
    assert set(variant) >= {"psnr", "ssim", "data_range", "mask_fraction"}
    assert variant["data_range"] == 1.0 and variant["mask_fraction"] == pytest.approx(mask.mean())
    # whole-image MSE over zeroed background = masked MSE * fraction of masked pixels
    expected = M.psnr(render, photo, mask) - 10 * np.log10(mask.mean())
    assert variant["psnr"] == pytest.approx(expected, abs=1e-9)
    assert variant["psnr"] > M.psnr(render, photo, mask)
    assert variant["ssim"] > M.ssim(render, photo, mask)
    same = M.masked_variant_ssim_psnr(photo, photo, mask)
    assert same["psnr"] == float("inf") and same["ssim"] == 1.0
    assert np.isnan(M.masked_variant_ssim_psnr(render, photo, np.zeros((40, 40), bool))["psnr"])


def test_masked_variant_never_below_plain_for_a_dark_face():
    """A dim face (values <= 0.3) on half the image: a data range taken from the render (0.3) cost
    -10.5 dB, more than the +3 dB the zero background gives, so the "inflated" PSNR came out lower than
    the plain one (12 of 72 photos in issue 10). With the fixed range it is plain + 3.01 dB."""
    rng = np.random.default_rng(11)
    photo = 0.3 * rng.random((32, 32, 3))
    render = np.clip(photo + 0.02 * rng.standard_normal(photo.shape), 0, 0.3)
    mask = np.zeros((32, 32), bool)
    mask[:, :16] = True
    plain = M.psnr(render, photo, mask)
    variant = M.masked_variant_ssim_psnr(render, photo, mask)
    assert variant["psnr"] >= plain
    assert variant["psnr"] - plain == pytest.approx(-10 * np.log10(0.5), abs=1e-9)
    for fraction in (0.1, 0.5, 1.0):  # any mask: never below, equal when it covers everything
        m = np.zeros((32, 32), bool)
        m.flat[: round(fraction * m.size)] = True
        assert M.masked_variant_ssim_psnr(render, photo, m)["psnr"] >= M.psnr(render, photo, m) - 1e-12


# --------------------------------------------------------------------------------------------
# texture metrics


def test_seam_score():
    rng = np.random.default_rng(6)
    ref = 0.4 + 0.1 * _smooth(rng, (32, 32, 3), sigma=4.0)  # gradients much smaller than the offset
    kept = np.zeros((32, 32), bool)
    kept[:, :16] = True
    filled = ~kept
    assert M.seam_score(ref, ref, kept, filled) == 0.0
    offset = np.array([0.3, -0.2, 0.1])
    completed = ref.copy()
    completed[filled] += offset
    assert M.seam_score(completed, ref, kept, filled) == pytest.approx(np.linalg.norm(offset), abs=0.03)
    # no boundary pair: filled is empty, or kept and filled do not touch
    assert np.isnan(M.seam_score(completed, ref, kept, np.zeros_like(kept)))
    far = np.zeros_like(kept)
    far[:, 20:] = True
    assert np.isnan(M.seam_score(completed, ref, kept, far))


def test_seam_score_exact_small_case():
    # 1 x 3 strip: kept | filled | other; only pair (0,0)-(0,1) counts
    ref = np.zeros((1, 3, 2))
    comp = ref.copy()
    comp[0, 1] = [3.0, 4.0]
    kept = np.array([[True, False, False]])
    filled = np.array([[False, True, False]])
    assert M.seam_score(comp, ref, kept, filled) == pytest.approx(5.0)
    # vertical pairs count too
    assert M.seam_score(comp.transpose(1, 0, 2), ref.transpose(1, 0, 2), kept.T, filled.T) == pytest.approx(5.0)


def test_symmetry_score():
    rng = np.random.default_rng(7)
    half = rng.random((16, 8, 3))
    sym = np.concatenate([half, half[:, ::-1]], axis=1)
    assert M.symmetry_score(sym, np.ones((16, 16), bool)) == 0.0
    # known asymmetric case: left half 0, right half 1 on channel 0 only -> |diff| = 1 on 1 of 3 channels
    t = np.zeros((4, 6, 3))
    t[:, 3:, 0] = 1.0
    assert M.symmetry_score(t) == pytest.approx(1 / 3)
    # the mask needs both a texel and its mirror: only column 0 <-> 5 qualifies here
    t2 = np.zeros((4, 6, 1))
    t2[:, 5] = 0.8
    t2[:, 4] = 0.4  # column 4's mirror (1) is masked out
    mask = np.zeros((4, 6), bool)
    mask[:, [0, 4, 5]] = True
    assert M.symmetry_score(t2, mask) == pytest.approx(0.8)
    assert np.isnan(M.symmetry_score(t2, np.zeros((4, 6), bool)))


# --------------------------------------------------------------------------------------------
# embeddings


def test_cosine_similarity():
    assert M.cosine_similarity([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert M.cosine_similarity([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(M.cosine_similarity(a, b), [-1.0, 1 / np.sqrt(2)])
    assert M.cosine_similarity(a, a).shape == (2,)


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(8)
    d = 5
    mu = rng.standard_normal(d)
    a = rng.standard_normal((d, d))
    sigma = a @ a.T + np.eye(d)
    assert M.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.random(d) + 0.1, rng.random(d) + 0.1
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert M.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-8)
    # singular covariances take the eps-offset path and stay finite
    z = np.zeros((d, d))
    assert M.frechet_distance(mu1, z, mu2, z) == pytest.approx(np.sum((mu1 - mu2) ** 2), abs=1e-4)


def test_frechet_distance_from_features():
    rng = np.random.default_rng(9)
    d, n = 4, 20000
    mu1, mu2 = np.array([0.0, 1.0, 0.0, -1.0]), np.array([0.5, 1.0, 0.0, 0.0])
    s1, s2 = np.array([1.0, 0.5, 2.0, 1.0]), np.array([1.0, 1.0, 0.5, 2.0])
    f1 = mu1 + rng.standard_normal((n, d)) * np.sqrt(s1)
    f2 = mu2 + rng.standard_normal((n, d)) * np.sqrt(s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert M.frechet_distance_from_features(f1, f2) == pytest.approx(expected, abs=0.05)
    assert M.frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        M.frechet_distance_from_features(f1[:1], f2)


# --------------------------------------------------------------------------------------------
# user-supplied networks (tiny TorchScript stand-ins built here)


class _TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)


class _Probe(torch.nn.Module):
    """Returns the per-channel input means and the input's H and W: shows what embed fed it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = torch.tensor([float(x.shape[2]), float(x.shape[3])]).expand(x.shape[0], 2)
        return torch.cat([x.mean(dim=(2, 3)), hw], dim=1)


class _LpipsLike(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)


@pytest.fixture
def encoder_file(tmp_path):
    p = tmp_path / "enc.pt"
    torch.jit.script(_TinyEncoder()).save(str(p))
    return p


@pytest.fixture
def probe_file(tmp_path):
    p = tmp_path / "probe.pt"
    torch.jit.script(_Probe()).save(str(p))
    return p


def test_feature_extractor_embed(encoder_file):
    fx = M.FeatureExtractor(encoder_file, size=32)
    rng = np.random.default_rng(10)
    imgs = rng.random((3, 40, 50, 3)).astype(np.float32)
    e = fx.embed(imgs)
    assert e.shape == (3, 8) and e.dtype == np.float64
    np.testing.assert_allclose(M.cosine_similarity(e, fx.embed(imgs.copy())), 1.0, atol=1e-12)
    # inputs of different sizes map to the same embedding size
    assert fx.embed(rng.random((2, 17, 64, 3))).shape == (2, 8)
    assert fx.embed(imgs[0]).shape == (1, 8)  # one image = batch of 1
    assert len(fx.sha256) == 64


def test_feature_extractor_resizes_and_normalises(probe_file):
    fx = M.FeatureExtractor(probe_file, size=24, mean=0.5, std=0.25)
    img = np.full((2, 10, 70, 3), 0.75, np.float32)
    out = fx.embed(img)
    np.testing.assert_allclose(out[:, 3:], 24.0)  # resized to size x size
    np.testing.assert_allclose(out[:, :3], (0.75 - 0.5) / 0.25, atol=1e-5)
    # defaults: 224 and ImageNet mean/std
    out = M.FeatureExtractor(probe_file).embed(img)
    np.testing.assert_allclose(out[0, 3:], 224.0)
    np.testing.assert_allclose(out[0, :3], (0.75 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
                               atol=1e-5)


def test_feature_extractor_sidecar(probe_file):
    sidecar = probe_file.parent / (probe_file.name + ".json")
    sidecar.write_text(json.dumps({"size": 16, "mean": [0.0, 0.0, 0.0], "std": [1.0, 0.5, 0.25]}))
    fx = M.FeatureExtractor(probe_file, size=224)
    assert fx.size == 16
    out = fx.embed(np.full((1, 8, 8, 3), 0.5, np.float32))
    np.testing.assert_allclose(out[0], [0.5, 1.0, 2.0, 16.0, 16.0], atol=1e-6)
    sidecar.write_text("{not json")
    with pytest.raises(M.MetricUnavailable, match="sidecar"):
        M.FeatureExtractor(probe_file)


def test_loading_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothere.pt"
    with pytest.raises(M.MetricUnavailable, match="nothere.pt"):
        M.FeatureExtractor(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a TorchScript archive")
    with pytest.raises(M.MetricUnavailable, match="junk.pt") as info:
        M.FeatureExtractor(junk)
    assert "\n" not in str(info.value)
    state = tmp_path / "state_dict.pt"
    torch.save(_TinyEncoder().state_dict(), str(state))
    with pytest.raises(M.MetricUnavailable, match="state_dict.pt"):
        M.FeatureExtractor(state)
    with pytest.raises(M.MetricUnavailable, match="junk.pt"):
        M.LPIPSModel(junk)


def test_feature_extractor_from_env(monkeypatch, encoder_file, probe_file):
    for kind in ("clip", "dino", "inception"):
        env = f"FACETEX_{kind.upper()}_MODEL"
        monkeypatch.delenv(env, raising=False)
        with pytest.raises(M.MetricUnavailable) as info:
            M.feature_extractor_from_env(kind)
        assert str(info.value) == (
            f"{kind.upper()} weights not provided: set {env} or --{kind}-model to a TorchScript file "
            "(see data_manifests/evaluation_models.md)"
        )
    monkeypatch.setenv("FACETEX_DINO_MODEL", str(encoder_file))
    fx = M.feature_extractor_from_env("dino")
    assert fx.path == encoder_file and fx.size == 224
    # an explicit path wins over the env var
    assert M.feature_extractor_from_env("dino", path=probe_file).path == probe_file
    monkeypatch.setenv("FACETEX_INCEPTION_MODEL", str(probe_file))
    inc = M.feature_extractor_from_env("inception")
    assert inc.size == 299
    out = inc.embed(np.zeros((1, 8, 8, 3), np.float32))
    np.testing.assert_allclose(out[0], [-1, -1, -1, 299, 299], atol=1e-6)  # [0, 1] -> [-1, 1]
    with pytest.raises(ValueError):
        M.feature_extractor_from_env("vgg")


def test_lpips_model(tmp_path, monkeypatch):
    p = tmp_path / "lpips.pt"
    torch.jit.script(_LpipsLike()).save(str(p))
    monkeypatch.delenv("FACETEX_LPIPS_MODEL", raising=False)
    with pytest.raises(M.MetricUnavailable, match="FACETEX_LPIPS_MODEL"):
        M.lpips_model_from_env()
    monkeypatch.setenv("FACETEX_LPIPS_MODEL", str(p))
    model = M.lpips_model_from_env()
    a = np.zeros((2, 16, 16, 3), np.float32)
    b = np.ones((2, 16, 16, 3), np.float32)
    d = model.distance(a, b)
    assert d.shape == (2,)
    np.testing.assert_allclose(d, 4.0)  # inputs are mapped to [-1, 1]: (1 - (-1))^2
    np.testing.assert_allclose(model.distance(a, a), 0.0)


def test_identity_model_unavailable(monkeypatch):
    monkeypatch.setattr(M, "_has_module", lambda name: False)
    with pytest.raises(M.MetricUnavailable) as info:
        M.IdentityModel.load()
    assert str(info.value) == (
        "identity model not installed: pip install dlib face-recognition-models (builds dlib from source, ~7 min)"
    )


@pytest.mark.skipif(importlib.util.find_spec("dlib") is not None, reason="dlib is installed here")
def test_identity_model_unavailable_without_dlib():
    with pytest.raises(M.MetricUnavailable, match="identity model not installed"):
        M.IdentityModel.load()


def test_model_sha256_of_files_and_folders(tmp_path):
    import hashlib

    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (folder / "sub" / "config.json").write_text("{}")
    assert M.model_sha256(folder / "weights.bin") == hashlib.sha256(b"\x00\x01" * 100).hexdigest()
    before = M.model_sha256(folder)
    assert before == M.model_sha256(folder) and len(before) == 64
    (folder / "sub" / "config.json").write_text('{"a": 1}')  # any file of the model changes the checksum
    assert M.model_sha256(folder) != before
    with pytest.raises(FileNotFoundError):
        M.model_sha256(tmp_path / "nothing")


def test_file_sha256(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert M.file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_metric_unavailable_is_one_line():
    assert str(M.MetricUnavailable("a\nb  c")) == "a b c"
