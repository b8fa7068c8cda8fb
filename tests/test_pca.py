"""The per-channel PCA albedo model (``build-pca``): EM-PCA on incomplete synthetic unwraps, fit, io, CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from stages.core.errors import BadInputError, MissingArtifactError
from stages.core.uv import uv_layout
from stages.pca import AlbedoPCA, build_albedo_pca, component_sheet, downsample_unwrap, mirror_index
from stages.unwrap import UnwrapResult

R = 32          # model resolution of the synthetic tests
S = 64          # unwrap size (UnwrapResult.save/load work at any size uv_layout supports)
RANK = 3        # true rank of the synthetic texture set
N_TRAIN = 60


def smooth_field(rng: np.random.Generator, size: int, grid: int = 5) -> np.ndarray:
    coarse = rng.uniform(-1, 1, (grid, grid, 3)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def synthetic_truth(mask: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` maps ``(n, R, R, 3)`` = mean + RANK smooth components with random coefficients (zeros outside)."""
    rng = np.random.default_rng(1234)              # the model (mean, components) is fixed ...
    mean = 0.5 + 0.15 * smooth_field(rng, R)
    comps = np.stack([smooth_field(rng, R) * a for a in (0.06, 0.04, 0.03)])     # (RANK, R, R, 3)
    rng = np.random.default_rng(seed)              # ... the coefficients vary with the seed
    coeffs = np.clip(rng.standard_normal((n, RANK)), -2, 2)
    maps = mean + np.einsum("nk,kijc->nijc", coeffs, comps)
    maps[:, ~mask] = 0
    return maps.astype(np.float32), mean, comps


def hide(mask: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``(n, R, R)`` visibility: every third map loses a whole half (self-occlusion), the others random blocks."""
    rng = np.random.default_rng(seed)
    visible = np.ones((n, R, R), dtype=bool)
    for i in range(n):
        if i % 3 == 0:
            if (i // 3) % 2:
                visible[i, :, : R // 2] = False
            else:
                visible[i, :, R // 2:] = False
        else:
            while (visible[i] & mask).sum() > 0.5 * mask.sum():
                y, x = rng.integers(0, R - 4, 2)
                h, w = rng.integers(3, 9, 2)
                visible[i, y:y + h, x:x + w] = False
    return visible & mask


def write_unwraps(root: Path, model, maps: np.ndarray, visible: np.ndarray) -> list[Path]:
    """Unwrap folders at ``S`` (block-upsampled truth, confidence 0.8 where visible)."""
    layout = uv_layout(model, S)
    f = S // R
    folders = []
    for i, (image, vis) in enumerate(zip(maps, visible, strict=True)):
        texture = np.repeat(np.repeat(image, f, axis=0), f, axis=1)
        conf = np.repeat(np.repeat(vis, f, axis=0), f, axis=1) * layout.mask * np.float32(0.8)
        texture = texture * (conf > 0)[..., None]
        folder = root / f"face{i:03d}"
        UnwrapResult(texture=texture.astype(np.float32), confidence=conf.astype(np.float32),
                     position=np.zeros((S, S, 3), np.float32), layout_mask=layout.mask.copy(), stem=folder.name,
                     info={"coverage": float(vis.mean())}).save(folder)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def training(model, tmp_path_factory):
    mask = uv_layout(model, R).mask
    maps, mean, comps = synthetic_truth(mask, N_TRAIN, seed=0)
    visible = hide(mask, N_TRAIN, seed=1)
    folders = write_unwraps(tmp_path_factory.mktemp("unwraps"), model, maps, visible)
    return {"mask": mask, "maps": maps, "mean": mean, "comps": comps, "visible": visible, "folders": folders}


@pytest.fixture(scope="module")
def built(training, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("pca") / "albedo_pca.h5"
    calls = []
    pca = build_albedo_pca(training["folders"], out, model=model, resolution=R, n_components=RANK, iterations=30,
                           seed=0, chunk_size=16, progress=lambda message, fraction: calls.append(fraction))
    return pca, out, calls


def test_downsample_unwrap_is_a_confidence_weighted_area_average():
    rng = np.random.default_rng(0)
    texture = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    conf = rng.uniform(0, 1, (8, 8)).astype(np.float32)
    conf[:4, :4] = 0
    image, weight = downsample_unwrap(texture, conf, 2)
    block = (slice(4, 8), slice(0, 4))
    expected = (texture[block] * conf[block][..., None]).sum(axis=(0, 1)) / conf[block].sum()
    np.testing.assert_allclose(image[1, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(weight[1, 0], conf[block].mean(), rtol=1e-5)
    assert weight[0, 0] == 0 and (image[0, 0] == 0).all()
    # Not a multiple: INTER_AREA of texture*conf and conf; a constant texture stays constant.
    image, weight = downsample_unwrap(np.full((10, 10, 3), 0.3, np.float32), np.full((10, 10), 0.5, np.float32), 4)
    np.testing.assert_allclose(image, 0.3, atol=1e-5)
    np.testing.assert_allclose(weight, 0.5, atol=1e-5)


def test_mirror_index_pairs_columns(model):
    mask = uv_layout(model, R).mask
    partner = mirror_index(mask)
    rows, cols = np.nonzero(mask)
    assert (rows[partner] == rows).all() and (cols[partner] == R - 1 - cols).all()


def test_em_pca_recovers_hidden_texels_and_the_subspace(built, training):
    pca, _, calls = built
    mask, maps, visible = training["mask"], training["maps"], training["visible"]
    assert pca.resolution == R and pca.bases.shape == (3, RANK, int(mask.sum()))
    assert calls and calls[-1] == pytest.approx(1.0) and all(np.diff(calls) >= 0)
    # Orthonormal rows per channel, variances descending.
    for c in range(3):
        np.testing.assert_allclose(pca.bases[c] @ pca.bases[c].T, np.eye(RANK), atol=1e-4)
        assert (np.diff(pca.variance[c]) <= 0).all()
    # About half of the texels were missing.
    assert 0.4 < pca.info["missing_fraction"] < 0.65
    # The hidden texels of the training maps, reconstructed from what each map showed.
    seen_once = (visible & mask).any(axis=0)
    errors = []
    for image, vis in zip(maps, visible, strict=True):
        coeffs = pca.fit(image * vis[..., None], vis.astype(np.float32), lam=1e-4)
        recon = pca.reconstruct(coeffs)
        hidden = ~vis & mask & seen_once
        errors.append(((recon - image)[hidden] ** 2).ravel())
    rmse = float(np.sqrt(np.concatenate(errors).mean()))
    assert rmse < 0.02, rmse
    # The true per-channel subspace: principal angles near zero.
    comps = training["comps"]
    for c in range(3):
        truth, _ = np.linalg.qr(comps[:, mask, c].T.astype(np.float64))           # (D, RANK)
        cosines = np.linalg.svd(truth.T @ pca.bases[c].T.astype(np.float64), compute_uv=False)
        assert cosines.min() > 0.99, (c, cosines)
    np.testing.assert_allclose(pca.mean, pca.from_image(training["mean"] * mask[..., None]), atol=0.03)
    assert min(pca.info["explained_variance_ratio"]) > 0.95


def test_more_components_reconstruct_held_out_maps_better(built, training):
    pca, _, _ = built
    mask = training["mask"]
    held_out, _, _ = synthetic_truth(mask, 10, seed=99)
    full = mask.astype(np.float32)
    errors = []
    for k in (1, 2, 3):
        sq = [((pca.reconstruct(pca.fit(m, full, lam=1e-6, n_components=k)) - m)[mask] ** 2).mean() for m in held_out]
        errors.append(float(np.sqrt(np.mean(sq))))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.01


def random_model(model, k: int = 6, seed: int = 0) -> AlbedoPCA:
    mask = uv_layout(model, R).mask
    d = int(mask.sum())
    rng = np.random.default_rng(seed)
    bases = np.stack([np.linalg.qr(rng.standard_normal((d, k)))[0].T for _ in range(3)]).astype(np.float32)
    variance = np.sort(rng.uniform(0.1, 2.0, (3, k)), axis=1)[:, ::-1].astype(np.float32)
    mean = rng.uniform(0.3, 0.7, (3, d)).astype(np.float32)
    return AlbedoPCA(resolution=R, mask=mask, mean=mean, bases=bases, variance=variance, model_id=model.name,
                     info={"sources": 0})


def test_fit_is_the_projection_and_recovers_model_maps_from_half_the_texels(model):
    pca = random_model(model)
    rng = np.random.default_rng(1)
    mask = pca.mask
    image = np.zeros((R, R, 3), np.float32)
    image[mask] = rng.uniform(0, 1, (int(mask.sum()), 3))
    coeffs = pca.fit(image, mask.astype(np.float32), lam=1e-12)
    projection = np.einsum("ckd,cd->ck", pca.bases, pca.from_image(image) - pca.mean)
    np.testing.assert_allclose(coeffs, projection, atol=1e-4)
    # A map from the model's span, with half of the texels unknown (weight 0, garbage values).
    truth = rng.normal(0, 0.3, (3, pca.n_components)).astype(np.float32)
    target = pca.reconstruct(truth)
    weights = mask.astype(np.float32)
    weights[:, : R // 2] = 0
    corrupted = target.copy()
    corrupted[:, : R // 2] = 5.0
    np.testing.assert_allclose(pca.fit(corrupted, weights, lam=0.0), truth, atol=1e-3)
    np.testing.assert_allclose(pca.reconstruct(pca.fit(corrupted, weights, lam=1e-9)), target, atol=1e-4)
    # Ridge shrinks.
    assert np.abs(pca.fit(corrupted, weights, lam=10.0)).sum() < np.abs(truth).sum()
    # to_image / from_image are inverse on the layout.
    np.testing.assert_array_equal(pca.from_image(pca.to_image(pca.mean)), pca.mean)
    assert (pca.to_image(pca.mean)[~mask] == 0).all()


def test_save_load_round_trip_and_bad_files(model, tmp_path):
    pca = random_model(model)
    path = tmp_path / "m.h5"
    pca.save(path)
    assert not list(tmp_path.glob("*.part*"))
    back = AlbedoPCA.load(path)
    assert back.resolution == R and back.model_id == model.name and back.info == pca.info
    np.testing.assert_array_equal(back.mask, pca.mask)
    np.testing.assert_allclose(back.mean, pca.mean, atol=1e-3)
    np.testing.assert_allclose(back.bases, pca.bases, atol=2e-3)
    np.testing.assert_allclose(back.variance, pca.variance)
    for c in range(3):
        np.testing.assert_allclose(back.bases[c] @ back.bases[c].T, np.eye(pca.n_components), atol=1e-5)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(path.read_bytes()[:300])
    for bad in (corrupt, tmp_path / "missing.h5"):
        with pytest.raises(MissingArtifactError, match=bad.name):
            AlbedoPCA.load(bad)
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("x", data=np.zeros(3))
    with pytest.raises(MissingArtifactError, match="other.h5"):
        AlbedoPCA.load(tmp_path / "other.h5")


def test_build_is_deterministic_and_checks_the_count(training, model, tmp_path):
    folders = training["folders"][:20]
    kwargs = {"model": model, "resolution": R, "n_components": 4, "iterations": 2, "chunk_size": 8}
    a = build_albedo_pca(folders, None, seed=5, **kwargs)
    b = build_albedo_pca(folders, None, seed=5, **kwargs)
    np.testing.assert_array_equal(a.bases, b.bases)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert a.info["sources_sha256"] == b.info["sources_sha256"] and a.info["sources"] == 20
    with pytest.raises(BadInputError, match="only 20 readable"):
        build_albedo_pca(folders, None, seed=5, **{**kwargs, "n_components": 20})
    # An unreadable folder is skipped with a warning; the build goes on.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "unwrap.json").write_text("{not json")
    warnings = []
    c = build_albedo_pca([*folders, broken], None, seed=5, warn=warnings.append, **kwargs)
    assert c.info["sources"] == 20 and len(warnings) == 1 and "broken" in warnings[0]


def test_component_sheet(built):
    pca, _, _ = built
    sheet = component_sheet(pca, n=5)
    assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.dtype == np.float32
    n = min(5, pca.n_components)
    assert sheet.shape[1] == (1 + n) * 128
    # Two rows of 128^2 tiles under an 18-pixel label band: mean and PCs at +2 sigma on top; the
    # model's std and the PCs at -2 sigma below.
    band, tile = 18, 128

    def cell(row: int, col: int) -> np.ndarray:
        y = row * (band + tile) + band
        return sheet[y:y + tile, col * tile:(col + 1) * tile]

    def expected(vectors: np.ndarray) -> np.ndarray:
        return cv2.resize(np.clip(pca.to_image(vectors), 0, 1), (tile, tile), interpolation=cv2.INTER_NEAREST)

    np.testing.assert_allclose(cell(0, 0), expected(pca.mean), atol=1e-6)
    sigma = np.sqrt(pca.variance)
    for k in range(n):
        delta = 2.0 * sigma[:, k:k + 1] * pca.bases[:, k]
        np.testing.assert_allclose(cell(0, k + 1), expected(pca.mean + delta), atol=1e-6)
        np.testing.assert_allclose(cell(1, k + 1), expected(pca.mean - delta), atol=1e-6)
        assert np.abs(cell(0, k + 1) - cell(1, k + 1)).max() > 0.05, "each component visibly changes the face"
    std = cell(1, 0)
    assert std.max() == pytest.approx(1.0, abs=1e-6), "the std tile is scaled to its maximum"
    assert (std[expected(pca.mean).sum(axis=2) == 0] == 0).all(), "nothing outside the layout"
    # The label bands are white with dark text.
    assert sheet[:band].max() == 1.0 and sheet[:band].min() < 0.5


@pytest.fixture(scope="module")
def cli_app():
    from facetex_cli.build_pca import build_pca_command

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("build-pca")(build_pca_command)

    @app.callback()
    def _root() -> None:  # a group, so the command is invoked by name as in `facetex build-pca`
        pass

    return app


def test_cli_builds_model_and_sheet(cli_app, training, tmp_path):
    root = training["folders"][0].parent
    out = tmp_path / "models" / "faces.h5"
    # Resolution 64 is the CLI's minimum; the unwraps are 64^2.
    result = CliRunner().invoke(cli_app, ["build-pca", str(root), "-o", str(out), "--components", "4",
                                          "--iterations", "2", "--resolution", "64"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (out.parent / "faces.png").is_file()
    assert f"{N_TRAIN} maps" in result.output and "explained variance" in result.output
    pca = AlbedoPCA.load(out)
    assert pca.resolution == 64 and pca.n_components == 4


def test_cli_errors_are_one_line(cli_app, training, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    result = runner.invoke(cli_app, ["build-pca", str(empty), "-o", str(tmp_path / "m.h5")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any("no unwrap folders found" in line for line in lines)
    assert len([line for line in lines if line.startswith("error")]) == 1
    assert not (tmp_path / "m.h5").exists()
    # Too few maps for the components: one line naming the count.
    folders = [str(f) for f in training["folders"][:3]]
    result = runner.invoke(cli_app, ["build-pca", *folders, "-o", str(tmp_path / "m.h5"), "--resolution", "64"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "only 3 readable" in result.output
