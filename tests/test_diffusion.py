"""FreeUV-style diffusion completion (seed 000) with tiny diffusers models: real code paths, seconds on CPU."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from stages.core.errors import MissingArtifactError  # noqa: E402
from stages.diffusion import MissingDependencyError  # noqa: E402
from stages.diffusion.colour import lab_statistics, match_colour_lab  # noqa: E402
from stages.train.diffusion_config import DiffusionTrainConfig  # noqa: E402
from stages.models.extractor import DetailExtractor  # noqa: E402


def tiny(kind: str, **kw) -> DiffusionTrainConfig:
    settings = {"steps": 1, "batch_size": 2, "sample_every": 0, "checkpoint_every": 0, **kw}
    return DiffusionTrainConfig(kind=kind, preset="tiny", **settings)


@pytest.fixture(scope="module")
def photo_folders(model, tmp_path_factory):
    """Two training folders of rendered faces whose fit.json names a real photo file next to them."""
    from tests.conftest import rendered_face_folders

    return rendered_face_folders(model, tmp_path_factory.mktemp("diffusion_data"), (0.0, 25.0), photo_size=160,
                                 texture_size=128, seed=20)


@pytest.fixture(scope="module")
def trained(model, photo_folders, tmp_path_factory):
    """One tiny appearance network (2 autoencoder + 1 diffusion step) and one structure network on its base."""
    from stages.train.diffusion import train_diffusion

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("diffusion_models")
    appearance, structure = root / "appearance", root / "structure"
    res_a = train_diffusion(photo_folders, appearance, tiny("appearance", sample_every=1), model=model, cpu=True)
    res_s = train_diffusion(photo_folders, structure, tiny("structure", base=str(appearance)), model=model, cpu=True)
    return appearance, structure, res_a, res_s


# -- colour matching ---------------------------------------------------------------------------


def test_colour_matching_matches_lab_mean_and_variance():
    rng = np.random.default_rng(0)
    source = np.clip(0.5 + 0.08 * rng.normal(size=(32, 32, 3)), 0.2, 0.8).astype(np.float32)
    source[..., 0] += 0.1                                        # reddish, higher contrast
    reference = np.clip(np.array([0.45, 0.4, 0.5]) + 0.03 * rng.normal(size=(24, 24, 3)), 0, 1).astype(np.float32)
    ref_mask = np.zeros((24, 24), bool)
    ref_mask[4:20, 2:22] = True
    out = match_colour_lab(source, reference, reference_mask=ref_mask)
    mean_out, std_out = lab_statistics(out, np.ones((32, 32), bool))
    mean_ref, std_ref = lab_statistics(reference, ref_mask)
    # Lab units (L in [0, 100]); the RGB round trip clips a few out-of-gamut values, hence 0.2.
    np.testing.assert_allclose(mean_out, mean_ref, atol=0.2)
    np.testing.assert_allclose(std_out, std_ref, rtol=0.05, atol=0.05)
    mean_src, std_src = lab_statistics(source, np.ones((32, 32), bool))
    assert np.abs(mean_src - mean_ref).max() > 5 and np.abs(std_src - std_ref).max() > 1  # a real change
    with pytest.raises(ValueError, match="empty mask"):
        match_colour_lab(source, reference, reference_mask=np.zeros((24, 24), bool))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        match_colour_lab(source[..., 0], reference)


# -- extractor and config ------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["channel", "self"])
def test_extractor_tokens_shapes_gradients_and_round_trip(attention, tmp_path):
    torch.manual_seed(0)
    extractor = DetailExtractor({"encoder": "cnn", "channels": [4, 8], "tokens": 3, "heads": 2,
                                 "attention": attention, "out_dim": 6})
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    tokens = extractor(images)
    assert tokens.shape == (2, 9, 6)
    tokens.square().mean().backward()
    assert extractor.encoder.stages[0][0].weight.grad.abs().sum() > 0
    assert (extractor.position is not None) == (attention == "self")
    extractor.save_pretrained(tmp_path / "x")
    again = DetailExtractor.from_pretrained(tmp_path / "x")
    torch.testing.assert_close(again(images), extractor.eval()(images))
    (tmp_path / "x" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(MissingArtifactError, match="weights.safetensors: corrupt"):
        DetailExtractor.from_pretrained(tmp_path / "x")


def test_clip_encoder_from_a_local_folder_is_frozen_and_not_copied(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=3,
                                           num_attention_heads=2, image_size=32, patch_size=8)
    transformers.CLIPVisionModel(config).save_pretrained(tmp_path / "clip")
    extractor = DetailExtractor({"encoder": "clip", "encoder_path": str(tmp_path / "clip"), "layers": [-1, -2],
                                 "attention": "self", "heads": 2, "out_dim": 6})
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    assert extractor(images).shape == (2, 17, 6)                       # 16 patches + class token
    assert not any(p.requires_grad for p in extractor.encoder.parameters())
    extractor.save_pretrained(tmp_path / "x")
    assert not any(k.startswith("encoder.model.") for k in extractor.trainable_state())
    torch.testing.assert_close(DetailExtractor.from_pretrained(tmp_path / "x")(images), extractor.eval()(images))
    with pytest.raises(MissingArtifactError, match="CLIP vision model folder not found"):
        DetailExtractor({"encoder": "clip", "encoder_path": str(tmp_path / "none"), "out_dim": 6})


def test_config_validation():
    assert tiny("appearance").attention == "channel"                   # the paper's choices
    assert tiny("structure", base="x").attention == "self"
    with pytest.raises(ValueError, match="--base APPEARANCE_MODEL_DIR"):
        tiny("structure")
    with pytest.raises(ValueError, match="needs --base"):
        DiffusionTrainConfig(kind="appearance", preset="sd15")
    with pytest.raises(ValueError, match="attention"):
        tiny("appearance", attention="cross")
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny("appearance", image_size=40)
    config = tiny("appearance", landmarks=False)
    assert DiffusionTrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# -- datasets ---------------------------------------------------------------------------------


def test_appearance_samples(model, photo_folders):
    from stages.train.diffusion_data import AppearanceSet

    data = AppearanceSet(photo_folders, model, image_size=32, uv_size=32)
    item = data[1]
    assert item["source"].shape == (3, 32, 32) and item["control"].shape == (4, 32, 32)
    assert item["target"].shape == (3, 32, 32)
    face = item["control"][:3].abs().sum(0) > 0                        # rendered position map = face region
    assert 0.2 < face.float().mean() < 0.8
    assert (item["target"][:, ~face] == -1).all()                     # masked photo: black off the face
    assert item["target"][:, face].mean() > -0.5
    assert item["control"][3].sum() > 10                              # landmark dots
    assert AppearanceSet(photo_folders, model, image_size=32, uv_size=32, landmarks=False)[0]["control"].shape[0] == 3


def test_appearance_set_names_a_missing_photo(model, photo_folders, tmp_path):
    import shutil

    from stages.train.diffusion_data import AppearanceSet

    folder = tmp_path / "copy"
    shutil.copytree(photo_folders[0], folder)
    (folder / "photo.png").unlink()
    fit = json.loads((folder / "fit.json").read_text())
    fit["source"] = str(tmp_path / "gone.png")
    (folder / "fit.json").write_text(json.dumps(fit))
    with pytest.raises(MissingArtifactError, match="fit.json: its source photo .*gone.png is not found"):
        AppearanceSet([folder], model, image_size=32, uv_size=32)


def test_structure_samples_are_pixel_aligned(model):
    from stages.completion.pca import load_pca
    from stages.train.diffusion_data import StructureSet

    data = StructureSet([model.vertices], model, load_pca(None), image_size=64, uv_size=64, seed=3)
    a, b = data.sample(0), data.sample(0)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])                 # deterministic in (seed, epoch, index)
    assert not np.array_equal(a["source"], data.sample(1)["source"])
    seen = np.abs(a["control"]).sum(0) > 0
    assert 0.1 < seen.mean() < 0.9
    assert (a["target"][:, ~seen] == -1).all()                         # the target exists exactly where seen
    assert (a["target"][:, seen] > -1).any(axis=0).mean() > 0.99
    assert a["source"].shape == (3, 64, 64)


# -- training, cross-assembly, sampling -------------------------------------------------------------


def test_one_training_step_of_each_network(trained):
    appearance, structure, res_a, res_s = trained
    assert res_a["steps"] == 1 and res_a["vae_steps"] == 2 and np.isfinite(res_a["loss"])
    assert res_s["steps"] == 1 and res_s["vae_steps"] == 0 and np.isfinite(res_s["loss"])
    for sub in ("unet", "vae", "controlnet", "extractor", "scheduler", "training_state"):
        assert (appearance / sub).is_dir(), sub
    assert not (structure / "unet").exists() and (structure / "controlnet").is_dir()
    meta_a = json.loads((appearance / "config.json").read_text())
    meta_s = json.loads((structure / "config.json").read_text())
    assert meta_a["base"]["path"] is None and meta_a["conditioning_channels"] == 4
    assert meta_s["base"]["fingerprint"] == meta_a["base"]["fingerprint"]
    assert meta_s["scaling_factor"] == meta_a["scaling_factor"] > 0
    assert (appearance / "samples" / "step_000001.png").is_file()


def test_training_resumes_from_its_checkpoint(model, photo_folders, tmp_path):
    from stages.train.diffusion import train_diffusion

    calls = []
    config = tiny("appearance", steps=2, vae_steps=1, checkpoint_every=1)
    train_diffusion(photo_folders, tmp_path / "m", config, model=model, cpu=True)
    assert json.loads((tmp_path / "m" / "training_state" / "step.json").read_text())["step"] == 2
    more = tiny("appearance", steps=3, vae_steps=1, checkpoint_every=1)
    result = train_diffusion(photo_folders, tmp_path / "m", more, model=model, cpu=True,
                             progress=lambda step, total, losses: calls.append(step))
    assert result["steps"] == 3 and calls == [4]                      # only the missing step ran (1 vae + 3)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["steps"] == 3


def test_cross_assembly_sampling_shape_range_and_seeds(trained, photo_folders, model):
    from stages.diffusion.pipeline import CrossAssemblyPipeline, prepare_unwrap
    from stages.unwrap import UnwrapResult

    appearance, structure, _, _ = trained
    pipe = CrossAssemblyPipeline.from_folders(appearance, structure)
    unwraps = [UnwrapResult.load(f, model) for f in photo_folders]
    prep = [prepare_unwrap(u.texture, u.confidence, u.position, u.layout_mask, source_size=pipe.source_size,
                           uv_size=pipe.uv_size) for u in unwraps]
    source, position = np.stack([p.source for p in prep]), np.stack([p.position for p in prep])
    out = pipe(source, position, steps=2, seed=7)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, pipe(source, position, steps=2, seed=7))           # same seed
    np.testing.assert_allclose(out[1:], pipe(source[1:], position[1:], steps=2, seed=7), atol=1e-5)  # batch-free
    assert not np.allclose(out, pipe(source, position, steps=2, seed=8))
    dpm = pipe(source, position, steps=2, seed=7, scheduler="dpm", guidance=1.0, batch_size=1)
    assert dpm.shape == out.shape and np.isfinite(dpm).all()
    with pytest.raises(ValueError, match="position must be"):
        pipe(source, position[:, :, :16, :16], steps=2)
    with pytest.raises(ValueError, match="guidance"):
        pipe(source, position, steps=2, guidance=0.5)


def test_sampling_from_a_fill_keeps_what_it_is_told_to(trained, photo_folders, model):
    """init + keep: latents under the kept mask end as the fill's own latents, so the decoded sample there is
    the autoencoder's reconstruction of the fill; a small strength stays near the fill everywhere."""
    from stages.diffusion.pipeline import CrossAssemblyPipeline, prepare_unwrap, sample, make_scheduler
    from stages.unwrap import UnwrapResult

    appearance, structure, _, _ = trained
    pipe = CrossAssemblyPipeline.from_folders(appearance, structure)
    u = UnwrapResult.load(photo_folders[0], model)
    prep = prepare_unwrap(u.texture, u.confidence, u.position, u.layout_mask, source_size=pipe.source_size,
                          uv_size=pipe.uv_size)
    source, position = prep.source[None], prep.position[None]
    init = np.random.default_rng(0).uniform(-0.6, 0.6, (1, 3, pipe.uv_size, pipe.uv_size)).astype(np.float32)
    with torch.no_grad():
        known = pipe.vae.encode(torch.from_numpy(init)).latent_dist.mode()
        recon = ((pipe.vae.decode(known).sample.clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).numpy()
    everywhere = np.ones((1, 1, pipe.uv_size, pipe.uv_size), np.float32)
    kept = pipe(source, position, steps=3, seed=1, init=init, strength=1.0, keep=everywhere)[0]
    np.testing.assert_allclose(kept, recon, atol=1e-4)
    free = pipe(source, position, steps=3, seed=1)[0]
    assert np.abs(free - recon).mean() > 20 * np.abs(kept - recon).mean()
    near = pipe(source, position, steps=10, seed=1, init=init, strength=0.1)[0]     # 1 of 10 steps, from t ~ 100
    assert np.abs(near - recon).mean() < 0.5 * np.abs(free - recon).mean()
    with pytest.raises(ValueError, match="keep needs init"):
        sample(vae=pipe.vae, unet=pipe.unet, controlnet=pipe.controlnet, extractor=pipe.extractor,
               source=torch.from_numpy(source), control=torch.from_numpy(position),
               scheduler=make_scheduler("ddim", pipe.scheduler_config), steps=2, guidance=1.0, seed=0,
               scaling_factor=pipe.scaling_factor, factor=pipe.factor, keep=torch.from_numpy(everywhere))
    # The completion method: init from the blend fill, photo texels held; bad combinations are refused.
    from stages.completion import get_method

    options = {"model_path": str(appearance), "structure_path": str(structure), "steps": 2, "device": "cpu"}
    result = get_method("diffusion").load(model, init="blend", strength=0.5, keep_seen=True, **options).complete(u)
    assert result.info["init"] == "blend" and result.info["keep_seen"] is True and np.isfinite(result.texture).all()
    with pytest.raises(ValueError, match="need a fill to start from"):
        get_method("diffusion").load(model, keep_seen=True, **options)
    # residual: only the sampler's change reaches the texture; a sample equal to the autoencoder's
    # reconstruction of the fill gives back the full-resolution fill exactly.
    method = get_method("diffusion").load(model, init="blend", strength=0.5, residual=True, **options)
    method.pipeline.__class__ = type("Echo", (type(method.pipeline),),
                                     {"__call__": lambda self, *a, init, **kw: self.reconstruct(init)})
    blend = get_method("blend").load(model).complete(u).texture
    np.testing.assert_allclose(method.predict([u])[0], blend, atol=1e-5)
    assert method.complete(u).info["residual"] is True
    with pytest.raises(KeyError, match="unknown completion method"):
        get_method("diffusion").load(model, init="nope", strength=0.5, **options)


def test_cross_assembly_refuses_modules_of_different_bases(trained, photo_folders, model, tmp_path):
    from stages.diffusion.pipeline import CrossAssemblyPipeline
    from stages.train.diffusion import train_diffusion

    appearance, structure, _, _ = trained
    other = tmp_path / "other_appearance"
    train_diffusion(photo_folders, other, tiny("appearance", seed=1, vae_steps=1), model=model, cpu=True)
    with pytest.raises(MissingArtifactError, match="trained on another base model"):
        CrossAssemblyPipeline.from_folders(other, structure)
    with pytest.raises(MissingArtifactError, match="holds the structure network, expected the appearance network"):
        CrossAssemblyPipeline.from_folders(structure, structure)


def test_external_frozen_base_like_stable_diffusion(model, photo_folders, tmp_path):
    """--preset sd15 with a stand-in base folder in the SD diffusers layout (tiny unet/ + vae/): the base
    stays frozen and outside the model folders, which record its path and fingerprint."""
    from stages.train.diffusion_config import PRESETS
    from stages.models.diffusion import build_unet, build_vae
    from stages.diffusion.pipeline import CrossAssemblyPipeline
    from stages.train.diffusion import train_diffusion

    base = tmp_path / "sd"
    torch.manual_seed(0)
    vae = build_vae(PRESETS["tiny"]["vae"], 32)
    build_unet(PRESETS["tiny"]["unet"], 4, 16).save_pretrained(base / "unet")
    vae.save_pretrained(base / "vae")
    before = (base / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    folders = {}
    for kind in ("appearance", "structure"):
        config = DiffusionTrainConfig(kind=kind, preset="sd15", base=str(base), steps=1, batch_size=2, image_size=32,
                                      uv_size=32, sample_every=0, checkpoint_every=0,
                                      extractor={"encoder": "cnn", "channels": [4, 8], "tokens": 2, "heads": 2})
        folders[kind] = tmp_path / kind
        result = train_diffusion(photo_folders, folders[kind], config, model=model, cpu=True)
        assert result["vae_steps"] == 0 and np.isfinite(result["loss"])
        assert not (folders[kind] / "unet").exists()
    assert (base / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before      # frozen
    meta = json.loads((folders["appearance"] / "config.json").read_text())
    assert meta["base"]["path"] == str(base.resolve()) and meta["scaling_factor"] == vae.config.scaling_factor
    pipe = CrossAssemblyPipeline.from_folders(folders["appearance"], folders["structure"])
    assert pipe.info["base"] == str(base.resolve())
    (base / "unet" / "config.json").write_text((base / "unet" / "config.json").read_text() + " ")
    with pytest.raises(MissingArtifactError, match="not the one the appearance model was trained on"):
        CrossAssemblyPipeline.from_folders(folders["appearance"], folders["structure"])


def test_completion_method_diffusion(trained, photo_folders, model, monkeypatch):
    from stages.completion import VISIBLE, get_method
    from stages.unwrap import UnwrapResult

    appearance, structure, _, _ = trained
    method = get_method("diffusion").load(model, model_path=str(appearance), structure_path=str(structure), steps=2,
                                          device="cpu")
    unwraps = [UnwrapResult.load(f, model) for f in photo_folders]
    results = method.complete_batch(unwraps)
    single = method.complete(unwraps[0])
    for result, unwrap in zip(results, unwraps, strict=True):
        assert result.texture.shape == (256, 256, 3) and 0 <= result.texture.min() and result.texture.max() <= 1
        seen = unwrap.confidence > 0.5
        assert (result.provenance[seen] == VISIBLE).mean() > 0.95
        assert result.info["method"] == "diffusion" and result.info["steps"] == 2
    np.testing.assert_allclose(single.texture, results[0].texture, atol=5e-3)   # batched = one by one
    plain = get_method("diffusion").load(model, model_path=str(appearance), structure_path=str(structure), steps=2,
                                         colour_match=False, paste_visible=False).complete(unwraps[0])
    assert plain.info["colour_matched"] is False and results[0].info["colour_matched"] is True

    def detail_error(texture, unwrap):      # the seen texels up to their mean colour (Poisson keeps gradients)
        seen = unwrap.confidence > 0.5
        a, b = texture[seen], unwrap.texture[seen]
        return np.abs((a - a.mean(0)) - (b - b.mean(0))).mean()

    assert detail_error(results[0].texture, unwraps[0]) < 0.5 * detail_error(plain.texture, unwraps[0])

    monkeypatch.setenv("FACETEX_DIFFUSION_MODEL", str(appearance))          # e.g. for bench_completion.py
    monkeypatch.setenv("FACETEX_DIFFUSION_STRUCTURE_MODEL", str(structure))
    assert get_method("diffusion").load(model, steps=1).pipeline.info["structure"] == str(structure)
    monkeypatch.delenv("FACETEX_DIFFUSION_MODEL", raising=False)
    monkeypatch.delenv("FACETEX_DIFFUSION_STRUCTURE_MODEL", raising=False)
    with pytest.raises(MissingArtifactError, match="--model APPEARANCE_DIR --structure-model STRUCTURE_DIR"):
        get_method("diffusion").load(model, model_path=str(appearance))
    monkeypatch.setitem(sys.modules, "diffusers", None)                  # diffusers not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'facetex\[diffusion\]'"):
        get_method("diffusion").load(model, model_path=str(appearance), structure_path=str(structure))


def test_cli_train_and_complete(trained, photo_folders, tmp_path):
    from typer.testing import CliRunner

    from facetex_cli.main import app

    appearance, structure, _, _ = trained
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["complete", str(photo_folders[1]), "-o", str(out), "--method", "diffusion", "--model", str(appearance),
            "--structure-model", str(structure), "--steps", "2", "--seed", "3", "--no-previews", "--no-glb"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / photo_folders[1].name / "complete.json").read_text())
    assert (out / photo_folders[1].name / "uv_complete.png").is_file()
    assert "diffusion" in json.dumps(info)
    result = runner.invoke(app, ["complete", str(photo_folders[1]), "-o", str(out), "--method", "diffusion",
                                 "--model", str(appearance)])
    assert result.exit_code == 2 and "--structure-model" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["complete", str(photo_folders[1]), "-o", str(out), "--steps", "3"])
    assert result.exit_code == 2 and "--steps goes with --method diffusion" in result.output

    model_dir = tmp_path / "cli_structure"
    result = runner.invoke(app, ["train", "diffusion-structure", "--data", str(photo_folders[0]), "-o", str(model_dir),
                                 "--preset", "tiny", "--steps", "1", "--batch-size", "1", "--base", str(appearance),
                                 "--sample-every", "0", "--cpu"])
    assert result.exit_code == 0, result.output
    assert (model_dir / "config.json").is_file()
    result = runner.invoke(app, ["train", "diffusion-structure", "--data", str(photo_folders[0]), "-o", str(model_dir),
                                 "--preset", "tiny", "--steps", "1"])
    assert result.exit_code == 2 and "--base" in result.output
