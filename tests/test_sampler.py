"""The learned UV sampler (seed 001 §3.1): alignment, training data, losses, training, save/load, inference, CLI."""

from __future__ import annotations

from stages.core.splits import split_holdout_folders

import json

import numpy as np
import pytest
import torch

from stages.core.errors import MissingArtifactError
from stages.models import alignment as AL
from stages.models import uv_sampler as NET
from stages.models.folder import save_pretrained
from stages.train import sampler as S


@pytest.fixture(scope="module")
def sampler_folders(model, tmp_path_factory):
    """Three facetex-like folders of rendered faces (yaw 0, 25, -30), each with its photo on disk,
    a fit.json whose landmarks are the (471 >= 468) mesh points, and the geometric unwrap at 256^2."""
    from tests.conftest import rendered_face_folders

    return rendered_face_folders(model, tmp_path_factory.mktemp("sampler"), (0.0, 25.0, -30.0), photo_size=256,
                                 texture_size=256, seed=20, pseudo=False)


NO_AUGMENT = {"rotate_deg": 0.0, "scale": 0.0, "shift": 0.0, "flip": 0.0}


def tiny(steps: int, **kw) -> S.SamplerTrainConfig:
    # Without augmentation, so a tiny network's loss visibly drops within a few dozen steps.
    return S.SamplerTrainConfig(preset="tiny", uv_size=32, batch_size=3, steps=steps, sample_every=0,
                                checkpoint_every=0, lr=3e-3, augment=dict(NO_AUGMENT), **kw)


def test_similarity_2d_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (6, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    lin = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = AL.similarity_2d(src, src @ lin.T + shift)
    assert np.allclose(matrix[:, :2], lin) and np.allclose(matrix[:, 2], shift)
    assert np.allclose(AL.apply_affine(AL.invert_affine(matrix), AL.apply_affine(matrix, src)), src)
    with pytest.raises(ValueError, match="coincide"):
        AL.similarity_2d(np.ones((3, 2)), src[:3])


def test_alignment_maps_the_landmarks_onto_the_template_and_crops_with_pixel_centres(model):
    template = AL.alignment_template(model)
    # A frontal mean shape seen at 3x scale, shifted: the alignment undoes exactly that.
    points = AL.frontal_mean_shape(model) * 300 + np.array([40.0, 25.0])
    matrix = AL.alignment_matrix(points, model, 64)
    assert np.allclose(AL.apply_affine(matrix, AL._group_points(points)), template * 64, atol=1e-9)
    # Warp convention: with a pure integer shift, crop pixel (i, j) is photo pixel (i + 3, j + 5).
    rgb = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    crop = AL.warp_crop(rgb, np.array([[1.0, 0.0, -5.0], [0.0, 1.0, -3.0]]), 16)
    assert np.allclose(crop * 255, rgb[3:19, 5:21], atol=0.5)
    # Grid coordinates (align_corners=False): pixel edges map to -1 and +1, the centre to 0.
    assert AL.pixels_to_grid(np.array([0.0, 32.0, 64.0]), 64).tolist() == [-1.0, 0.0, 1.0]


def test_training_samples_are_consistent_with_the_geometric_unwrap(model, sampler_folders):
    """Sampling the crop at the target grid gives the geometric unwrap, and rendering that UV map on the
    target mesh gives the crop back: the data and the Eq. 5 losses agree, mirrored samples included."""
    from stages.train.sampler import _collate

    data = S.SamplerTrainingSet(sampler_folders, model, uv_size=64, crop_size=128, augment=S.Augment(flip=0.5),
                                seed=3, epoch_length=12)
    items = [data[i] for i in range(12)]
    assert {item["flip"] for item in items} == {True, False}
    batch = _collate(items)
    assert batch["input"].shape == (12, 4, 128, 128) and batch["target_grid"].shape == (12, 64, 64, 2)
    sampled = S.sample_crop(batch["crop"], batch["target_grid"])
    uv_error = S._masked_mean((sampled - batch["texture"]).abs(), batch["confidence"])
    rendered = S.render_in_crop(sampled, batch["verts"], batch["triangle_id"], model)
    render_error = S._masked_mean((rendered - batch["crop"]).abs(), batch["region"])
    assert float(uv_error) < 0.03 and float(render_error) < 0.03
    # A wrong correspondence (the frontal mean-shape map) is clearly worse on the turned faces.
    base = torch.from_numpy(AL.mean_shape_grid(model, 64))[None].expand(12, -1, -1, -1)
    assert float(S._masked_mean((S.sample_crop(batch["crop"], base) - batch["texture"]).abs(),
                                batch["confidence"])) > 2 * float(uv_error)
    assert torch.equal(data[5]["input"], data[5]["input"]), "samples are deterministic in (seed, epoch, index)"


def test_losses_are_zero_for_perfect_predictions():
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="xy"), -1)[None]
    ones = torch.ones(1, 1, 16, 16)
    assert float(S.grid_smoothness(grid * 0.7 + 0.1, ones)) < 1e-6       # affine maps are perfectly smooth
    bent = grid + 0.05 * torch.sin(grid * 6)
    assert float(S.grid_smoothness(bent, ones)) > 1e-3
    assert float(S.coord_l1(grid, grid, ones)) == 0.0
    assert float(S.tv_l1(torch.full((1, 3, 8, 8), 0.3), torch.ones(1, 1, 8, 8))) == 0.0


def test_training_reduces_the_loss(model, sampler_folders, tmp_path):
    history = []
    result = S.train_uv_sampler(sampler_folders, tmp_path / "m", tiny(30), model=model, cpu=True,
                                progress=lambda step, total, losses: history.append(losses))
    assert len(history) == 30 and result["steps"] == 30
    first = np.mean([h["loss"] for h in history[:5]])
    last = np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.6 * first, (first, last)
    assert np.mean([h["err_px"] for h in history[-5:]]) < 0.6 * np.mean([h["err_px"] for h in history[:5]])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "uv_sampler" and config["steps"] == 30 and config["uv_size"] == 32
    assert config["configs"]["sampler"]["crop_size"] == 32
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [25] and log[0]["loss"] == pytest.approx(history[24]["loss"], abs=1e-4)


def test_save_load_resume_and_determinism(model, sampler_folders, tmp_path):
    S.train_uv_sampler(sampler_folders, tmp_path / "a", tiny(4), model=model, cpu=True)
    S.train_uv_sampler(sampler_folders, tmp_path / "b", tiny(4), model=model, cpu=True)
    net_a, _ = NET.load_sampler(tmp_path / "a")
    net_b, cfg = NET.load_sampler(tmp_path / "b")
    assert cfg["face_model"] == model.name
    x = torch.rand(2, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        grid_a, vis_a = net_a.predict(x, 48)
        grid_b, vis_b = net_b.predict(x, 48)
    assert grid_a.shape == (2, 48, 48, 2) and vis_a.shape == (2, 1, 48, 48)
    assert torch.equal(grid_a, grid_b) and torch.equal(vis_a, vis_b), "same seed and data: identical on CPU"
    # Round trip: load -> save -> load gives identical outputs.
    save_pretrained(tmp_path / "c", {"sampler": net_a}, {"sampler": net_a.config.to_dict()},
                      model_type=NET.MODEL_TYPE, extra={"face_model": model.name})
    net_c, _ = NET.load_sampler(tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(net_c.predict(x, 48)[0], grid_a)
    # Export for shipping: float16 weights, no training state, same network within float16 precision.
    NET.export_sampler(tmp_path / "a", tmp_path / "shipped")
    assert sorted(p.name for p in (tmp_path / "shipped").iterdir()) == ["config.json", "weights.safetensors"]
    net_h, cfg_h = NET.load_sampler(tmp_path / "shipped")
    assert cfg_h["weights_dtype"] == "float16" and cfg_h["face_model"] == model.name
    with torch.no_grad():
        assert torch.allclose(net_h.predict(x, 48)[0], grid_a, atol=2e-3)
    from tests.test_train import assert_resumes_from_the_checkpoint

    assert_resumes_from_the_checkpoint(lambda steps, **kw: S.train_uv_sampler(
        sampler_folders, tmp_path / "a", tiny(steps), model=model, cpu=True, **kw), tmp_path / "a", 4)


def test_missing_model_or_data_gives_one_line_errors(model, sampler_folders, tmp_path):
    with pytest.raises(MissingArtifactError, match="facetex train sampler"):
        NET.load_sampler(None)
    with pytest.raises(MissingArtifactError, match="model folder not found"):
        NET.load_sampler(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{ not json")
    with pytest.raises(MissingArtifactError, match="config.json: unreadable") as info:
        NET.load_sampler(tmp_path / "bad")
    assert "\n" not in str(info.value)
    # Training folders: the first missing file is named with the command that writes it.
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "fit.json").write_text((sampler_folders[0] / "fit.json").read_text())
    with pytest.raises(MissingArtifactError, match=r"unwrap.json: missing \(run `facetex unwrap` first\)"):
        S.SamplerTrainingSet([incomplete], model)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("unwrap.json", "uv_texture.png"):
        (moved / name).write_bytes((sampler_folders[0] / name).read_bytes())
    fit = json.loads((sampler_folders[0] / "fit.json").read_text())
    (moved / "fit.json").write_text(json.dumps({**fit, "source": str(tmp_path / "gone.png")}))
    with pytest.raises(MissingArtifactError, match="source photo .* is not on disk"):
        S.check_sampler_folder(moved)


def test_holdout_people_are_never_trained_on(tmp_path):
    folders = []
    for name in ("010_03", "011_08"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "fit.json").write_text(json.dumps({"source": f"/x/london/neutral/{name}.jpg"}))
        folders.append(tmp_path / name)
    keep, held = split_holdout_folders(folders)
    assert [f.name for f in keep] == ["011_08"] and [f.name for f in held] == ["010_03"]


def test_learned_unwrap_with_the_exact_map_matches_the_geometric_unwrap(model, sampler_folders):
    """A sampler whose prediction is the frontal mean-shape map is exact for a frontal mean-shape face:
    the learned unwrap (network -> crop -> inverse alignment -> full-res photo) then equals the geometric one."""
    from stages.core.image_io import load_photo
    from stages.fit import FitResult
    from stages.learned_unwrap import LearnedUnwrapper
    from stages.unwrap import UnwrapResult

    net = NET.UVSampler(NET.SamplerConfig.from_dict({**S.PRESETS["tiny"], "grid_size": 64}))
    with torch.no_grad():
        net.sampler_head[-1].weight.zero_()
        net.vis_head[-1].weight.zero_()
    net.init_base(AL.mean_shape_grid(model, 64), np.full((8, 8), 6.0))
    unwrapper = LearnedUnwrapper.__new__(LearnedUnwrapper)
    unwrapper.face_model, unwrapper.net, unwrapper.crop_size = model, net.eval(), 32
    unwrapper.device, unwrapper.threshold, unwrapper.model_dir, unwrapper.config = torch.device("cpu"), 0.5, None, {}
    folder = sampler_folders[0]                                   # yaw 0: the mean shape, frontal
    fit = FitResult.load(folder / "fit.json")
    result = unwrapper.unwrap_with_fit(load_photo(fit.source), folder / "fit.json", uv_size=256)
    geometric = UnwrapResult.load(folder, model)
    both = result.visible & geometric.visible
    assert both.sum() > 0.8 * geometric.visible.sum()
    error = np.abs(result.texture[both] - geometric.texture[both])
    assert np.median(error) < 0.01 and np.percentile(error, 95) < 0.04
    assert result.position.shape == (256, 256, 3) and result.info["method"] == "learned"
    assert np.allclose(result.position[result.layout_mask], S.uv_layout(model, 256).interpolate(
        np.asarray(model.vertices, dtype=np.float64))[result.layout_mask])


def test_cli_train_then_unwrap_learned(sampler_folders, astronaut_path, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from facetex_cli.main import app
    from stages import learned_unwrap

    runner = CliRunner()
    root = sampler_folders[0].parent
    model_dir = tmp_path / "model"
    result = runner.invoke(app, ["train", "sampler", "--data", str(root), "-o", str(model_dir), "--preset", "tiny",
                                 "--steps", "3", "--batch-size", "2", "--uv-size", "32", "--sample-every", "2",
                                 "--cpu"])
    assert result.exit_code == 0, result.output
    assert "trained 3 steps" in result.output
    assert (model_dir / "weights.safetensors").is_file() and (model_dir / "samples" / "step_000002.png").is_file()
    # Learned unwrap from a fit (its 2D landmarks only), and from detection (astronaut); in a batch, a
    # photo without a detectable face (the synthetic render) fails alone with a one-line reason.
    photo = sampler_folders[1] / "photo.png"
    result = runner.invoke(app, ["unwrap", str(photo), str(sampler_folders[1] / "fit.json"), "-o",
                                 str(tmp_path / "out"), "--method", "learned", "--model", str(model_dir),
                                 "--uv-size", "256"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "face1"
    for name in ("uv_texture.png", "uv_mask.png", "uv_position.npy", "unwrap.json"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "unwrap.json").read_text())["method"] == "learned"
    result = runner.invoke(app, ["unwrap", str(astronaut_path), str(photo), "-o", str(tmp_path / "det"),
                                 "--method", "learned", "--model", str(model_dir), "--uv-size", "256"])
    assert result.exit_code == 1, result.output
    assert (tmp_path / "det" / "astronaut" / "uv_texture.png").is_file()
    assert "no face found" in result.output and "1 ok" in result.output
    # One-line errors: no model (none shipped), a corrupt model, geometric without FIT.
    monkeypatch.setattr(learned_unwrap, "DEFAULT_SAMPLER_DIR", tmp_path / "not_shipped")
    assert learned_unwrap.default_sampler_dir() is None
    result = runner.invoke(app, ["unwrap", str(photo), "-o", str(tmp_path / "o2"), "--method", "learned"])
    assert result.exit_code == 2 and "facetex train sampler" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("[]")
    result = runner.invoke(app, ["unwrap", str(photo), "-o", str(tmp_path / "o3"), "--method", "learned", "--model",
                                 str(tmp_path / "broken")])
    assert result.exit_code == 2 and "broken" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["unwrap", str(photo), "-o", str(tmp_path / "o4")])
    assert result.exit_code == 2 and "needs the FIT argument" in result.output


def test_shipped_sampler_unwraps_a_photo_without_a_fit(model, astronaut_path, landmarker):
    """The shipped London sampler (if installed) loads by default and gives a plausible unwrap."""
    from stages.core.image_io import load_photo
    from stages.learned_unwrap import LearnedUnwrapper, default_sampler_dir

    if default_sampler_dir() is None:
        pytest.skip("no UV sampler ships in stages/assets")
    unwrapper = LearnedUnwrapper(face_model=model)
    assert unwrapper.config["model_type"] == "uv_sampler" and unwrapper.config["weights_dtype"] == "float16"
    result = unwrapper.unwrap_photo(load_photo(astronaut_path), landmarker, uv_size=256)[0]
    assert 0.5 < result.info["coverage"] < 1.0
    skin = result.texture[result.visible]
    # Skin tones, not background: mostly red > blue, mid brightness.
    assert np.mean(skin[:, 0] > skin[:, 2]) > 0.8 and 0.25 < skin.mean() < 0.8
