"""Seed 003's texture GAN (issue 15): the networks, training composites, the model folder, the shape
model, ``facetex generate`` and ``complete --method gan`` (inversion)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stages.core.errors import MissingArtifactError
from stages.models.texture_gan import (PRESETS, ModulatedConv2d, PhotoDiscriminator, TextureGANConfig,
                                       TextureGenerator, load_texture_generator)

TINY = PRESETS["tiny"]


def _lit(folder, sh: np.ndarray) -> None:
    from stages.fit import FitResult

    fit = FitResult.load(folder / "fit.json")
    dataclasses.replace(fit, lighting=sh.astype(np.float32)).save(folder / "fit.json")


@pytest.fixture(scope="module")
def gan_folders(train_folders, tmp_path_factory):
    """The shared rendered training folders with a light in fit.json (theirs is zero): ambient plus a
    light from the left, as a fit would estimate it."""
    root = tmp_path_factory.mktemp("gan_data")
    out = []
    for folder in train_folders:
        shutil.copytree(folder, root / folder.name)
        sh = np.zeros((9, 3))
        sh[0], sh[3] = 2.0, 0.4
        _lit(root / folder.name, sh)
        out.append(root / folder.name)
    # Distinct shapes (theirs are all the mean shape), for the shape model: face k widened by 4 k %.
    from stages.fit import FitResult

    for k, folder in enumerate(out):
        fit = FitResult.load(folder / "fit.json")
        widened = fit.vertices * np.array([1.0 + 0.04 * k, 1.0, 1.0])
        dataclasses.replace(fit, vertices=widened).save(folder / "fit.json")
    return out


# ---------------------------------------------------------------- networks

def test_presets_shapes_and_bad_configs():
    assert PRESETS["base"].uv_size == 512 and PRESETS["base"].w_dim == 512
    assert PRESETS["small"].uv_size == 128
    g, d = TextureGenerator(TINY), PhotoDiscriminator(TINY)
    out = g(torch.randn(3, TINY.z_dim))
    assert out.shape == (3, 3, 32, 32) and g.num_ws == 8 == len(g.layers) + 1
    assert d(torch.rand(3, 3, 32, 32)).shape == (3,)
    with pytest.raises(ValueError, match="power of two"):
        TextureGANConfig(uv_size=48)
    with pytest.raises(ValueError, match="unknown"):
        TextureGANConfig.from_dict({"uv_size": 32, "bogus": 1})
    with pytest.raises(ValueError, match="ws must be"):
        g.synthesis(torch.zeros(1, 3, TINY.w_dim))


def test_modulated_conv_demodulates():
    """Demodulation: scaling a style (the input channel scales) does not change the output's scale."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 4, 3, 16)
    x, w = torch.randn(2, 8, 8, 8), torch.randn(2, 16)
    out = conv(x, w)
    with torch.no_grad():
        conv.affine.bias.mul_(5.0)
        conv.affine.weight.mul_(5.0)
    assert torch.allclose(conv(x, w), out, atol=1e-4)
    # without demodulation the same change scales the output
    conv.demodulate = False
    assert not torch.allclose(conv(x, w), out, atol=1e-2)


def test_truncation_and_noise():
    torch.manual_seed(0)
    g = TextureGenerator(TINY).eval()
    noise = g.make_noise(2, torch.Generator().manual_seed(1))
    z = torch.randn(2, TINY.z_dim)
    a = g(z, truncation=0.0, noise=noise)
    assert torch.allclose(a[0], a[1], atol=1e-6)          # psi = 0: every z gives w_avg
    b = g(z, noise=noise)
    assert not torch.allclose(b[0], b[1], atol=1e-3)
    with torch.no_grad():
        for layer in g.layers:
            layer.noise_strength.fill_(1.0)
    other = g.make_noise(2, torch.Generator().manual_seed(2))
    assert not torch.allclose(g(z, noise=noise), g(z, noise=other))


# ---------------------------------------------------------------- training composites

def test_turn_view_is_a_rigid_yaw(model):
    """Turning the frontal fit's screen vertices by 20 degrees equals projecting the mesh at yaw 20."""
    from stages.core.camera import Pose, euler_to_matrix
    from stages.train.texture_gan import turn_view

    verts = np.asarray(model.vertices)
    pose0 = Pose(euler_to_matrix(0, 0, 0), 50.0, np.array([100.0, 100.0, 0.0]))
    pose20 = Pose(euler_to_matrix(20, 0, 0), 50.0, np.array([100.0, 100.0, 0.0]))
    normals = pose0.rotate_normals(model.vertex_normals(verts))
    turned, n_turned = turn_view(pose0.to_screen(verts), normals, 20.0)
    expected = pose20.to_screen(verts)
    expected += turned.mean(axis=0) - expected.mean(axis=0)      # about the centre
    assert np.abs(turned - expected).max() < 1e-3
    assert np.abs(n_turned - pose20.rotate_normals(model.vertex_normals(verts))).max() < 1e-5
    same, _ = turn_view(pose0.to_screen(verts), normals, 0.0)
    assert np.abs(same - pose0.to_screen(verts)).max() < 1e-4


def test_composite_renders_lit_albedo_into_the_photo(gan_folders, model):
    """A constant albedo under the fit's light on the mask, the photo elsewhere; the light matters."""
    from stages.train.texture_gan import PhotoCompositeSet, composite

    data = PhotoCompositeSet(gan_folders[:1], model, view_size=32)
    batch = {k: v[None] for k, v in data[0].items()}
    tris = torch.from_numpy(model.triangles.astype(np.int64))
    uv = torch.from_numpy(np.array(model.uv, dtype=np.float32))
    albedo = torch.full((1, 3, 32, 32), 0.5)
    out, lit = composite(albedo, batch, tris, uv)
    mask = batch["mask"][0, 0] > 0.99
    off = batch["mask"][0, 0] == 0
    assert mask.sum() > 100 and off.sum() > 100
    assert torch.allclose(out[0][:, off], batch["crop"][0][:, off])          # the photo outside the mask
    # Shading = 1 + (0.4 / 2) * (Y11 / Y00) * n_x: left and right of the face differ, the mean is ~0.5.
    face = lit[0, 0][mask]
    assert 0.4 < float(face.mean()) < 0.6 and float(face.max() - face.min()) > 0.1
    assert torch.allclose(out[0][:, mask], lit[0][:, mask], atol=1e-5)


def test_bad_lighting_is_one_line(gan_folders, model, tmp_path):
    from stages.train.texture_gan import PhotoCompositeSet

    bad = tmp_path / "bad"
    shutil.copytree(gan_folders[0], bad)
    _lit(bad, np.zeros((9, 3)))
    with pytest.raises(MissingArtifactError, match=r"fit.json: lighting_sh: .*ambient") as info:
        PhotoCompositeSet([bad], model, view_size=32)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def trained(gan_folders, tmp_path_factory):
    """A tiny texture GAN trained for 40 steps through the CLI (the runner, the model folder)."""
    from facetex_cli.main import app

    out = tmp_path_factory.mktemp("gan") / "gan"
    result = CliRunner().invoke(app, ["train", "texture-gan", "--data", str(gan_folders[0].parent), "-o", str(out),
                                      "--preset", "tiny", "--steps", "40", "--batch-size", "3", "--log-every", "1",
                                      "--sample-every", "40", "--device", "cpu", "--r1-every", "4"])
    assert result.exit_code == 0, result.output
    return out


def test_training_runs_and_the_discriminator_learns(trained):
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 40 and all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in log)
    first, last = np.mean([r["d_loss"] for r in log[:8]]), np.mean([r["d_loss"] for r in log[-8:]])
    assert last < first, (first, last)
    # and it learned the right way round: real crops score above the composites
    assert np.mean([r["d_real"] - r["d_fake"] for r in log[-8:]]) > 0
    assert any("r1" in r for r in log)
    config = json.loads((trained / "config.json").read_text())
    assert config["model_type"] == "texture_gan" and set(config["configs"]) == {"generator", "discriminator"}
    assert config["steps"] == 40 and config["train"]["preset"] == "tiny"
    assert (trained / "samples" / "step_000040.png").is_file()


def test_generator_loss_falls_against_a_fixed_discriminator(gan_folders, model):
    """The generator's update direction is right: G steps against a frozen D lower its loss."""
    from stages.train.texture_gan import PhotoCompositeSet, TextureGANTrainConfig, composite, generator_loss

    torch.manual_seed(0)
    data = PhotoCompositeSet(gan_folders, model, view_size=32)
    batch = {k: torch.stack([data[i][k] for i in range(3)]) for k in data[0]}
    tris = torch.from_numpy(model.triangles.astype(np.int64))
    uv = torch.from_numpy(np.array(model.uv, dtype=np.float32))
    g, d = TextureGenerator(TINY), PhotoDiscriminator(TINY).requires_grad_(False)
    opt = torch.optim.Adam(g.parameters(), lr=TextureGANTrainConfig().lr, betas=(0.0, 0.99))
    z = torch.randn(3, TINY.z_dim)
    noise = g.make_noise(3, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(15):
        loss = generator_loss(d, composite(g(z, noise=noise), batch, tris, uv)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_save_load_round_trip(trained):
    gen, config = load_texture_generator(trained)
    assert isinstance(gen, TextureGenerator) and config["uv_size"] == 32
    assert not any(p.requires_grad for p in gen.parameters())
    from safetensors.torch import load_file

    weights = load_file(str(trained / "weights.safetensors"))
    for key, value in gen.state_dict().items():
        assert torch.equal(weights[f"generator.{key}"], value), key
    assert float(gen.mapping.w_avg.abs().sum()) > 0                      # the running w_avg was saved


def test_bad_model_folders_are_one_line(trained, tmp_path, astronaut_path):
    with pytest.raises(MissingArtifactError, match="model folder not found"):
        load_texture_generator(tmp_path / "nope")
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "detail_vae"}))
    with pytest.raises(MissingArtifactError, match="model_type is 'detail_vae'"):
        load_texture_generator(other)
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(MissingArtifactError, match="corrupt weights") as info:
        load_texture_generator(broken)
    assert "\n" not in str(info.value)
    from facetex_cli.main import app

    result = CliRunner().invoke(app, ["generate", "-n", "1", "--model", str(broken), "-o", str(tmp_path / "g")])
    assert result.exit_code == 2 and "corrupt weights" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["complete", str(astronaut_path), "--method", "gan", "--model", str(broken),
                                      "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "corrupt weights" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- shape model and generate

@pytest.fixture(scope="module")
def shape_file(gan_folders, tmp_path_factory):
    from facetex_cli.main import app

    out = tmp_path_factory.mktemp("shape") / "shape.npz"
    result = CliRunner().invoke(app, ["build-pca", "--shape", str(gan_folders[0].parent), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_shape_model_from_fits(shape_file, gan_folders, model, tmp_path):
    from stages.fit import FitResult
    from stages.shape_model import ShapeModel

    shapes = ShapeModel.load(shape_file, model)
    fits = np.stack([FitResult.load(f / "fit.json").vertices for f in gan_folders])
    assert np.allclose(shapes.mean, fits.mean(axis=0)) and shapes.n_components == 2
    assert np.allclose(shapes.shape(np.zeros(2)), shapes.mean)
    # the first component is the widening: +-1 sigma changes the width, not the height
    wide, narrow = shapes.shape(np.array([1.0, 0.0])), shapes.shape(np.array([-1.0, 0.0]))
    assert abs(np.ptp(wide[:, 0]) - np.ptp(narrow[:, 0])) > 0.03 * np.ptp(shapes.mean[:, 0])
    assert abs(np.ptp(wide[:, 1]) - np.ptp(narrow[:, 1])) < 1e-6 * np.ptp(shapes.mean[:, 1]) + 1e-9
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(MissingArtifactError, match="not a readable shape model"):
        ShapeModel.load(bad)


def test_generate_is_seeded_and_reproducible(trained, shape_file, tmp_path):
    from facetex_cli.main import app
    from stages.core.image_io import load_texture

    def run(name: str, n: int, seed: int):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["generate", "-n", str(n), "--seed", str(seed), "--model", str(trained),
                                          "--shape-model", str(shape_file), "-o", str(out), "--view-size", "64"])
        assert result.exit_code == 0, result.output
        return out

    a, b, c, one = run("a", 2, 3), run("b", 2, 3), run("c", 2, 4), run("one", 1, 3)
    tex = {k: load_texture(p / "face_000" / "uv_albedo.png") for k, p in (("a", a), ("b", b), ("c", c), ("1", one))}
    assert np.array_equal(tex["a"], tex["b"]) and np.array_equal(tex["a"], tex["1"])   # face i is face i for any N
    assert not np.array_equal(tex["a"], tex["c"])
    assert not np.array_equal(tex["a"], load_texture(a / "face_001" / "uv_albedo.png"))
    def vertices(path):
        return [line for line in path.read_text().splitlines() if line.startswith("v ")]

    assert vertices(a / "face_000" / "textured.obj") == vertices(b / "face_000" / "textured.obj")
    assert vertices(a / "face_000" / "textured.obj") != vertices(a / "face_001" / "textured.obj")  # own shapes
    assert (a / "face_000" / "textured.glb").stat().st_size > 0
    from PIL import Image

    with Image.open(a / "contact_sheet.png") as sheet:
        assert sheet.size == (6 * 64, 2 * 64)                 # albedo + 5 views per face, one row per face
    record = json.loads((a / "generate.json").read_text())
    assert record["geometry"] == "shape PCA sample" and record["n"] == 2


# ---------------------------------------------------------------- inversion (complete --method gan)

def test_inversion_lowers_its_loss_on_a_synthetic_render(model, gan_folders):
    """Render a generated albedo on a fitted face; inverting from w_avg approaches it."""
    from stages.completion.gan import invert_texture, render_albedo
    from stages.train.texture_gan import PhotoCompositeSet

    torch.manual_seed(0)
    g = TextureGenerator(TINY).eval().requires_grad_(False)
    with torch.no_grad():
        g.mapping.w_avg.copy_(g.mapping(torch.randn(256, TINY.z_dim)).mean(0))
    data = PhotoCompositeSet(gan_folders[:1], model, view_size=32)
    item = data[0]
    geometry = {"screen": item["screen"][None], "triangles": torch.from_numpy(model.triangles.astype(np.int64)),
                "vert_uv": torch.from_numpy(np.array(model.uv, dtype=np.float32)), "tid": item["tid"][None],
                "normals": item["normals"][None], "sh": item["sh"][None]}
    noise = g.make_noise(1, torch.Generator().manual_seed(5))
    with torch.no_grad():
        target = render_albedo(g(torch.randn(1, TINY.z_dim), noise=noise), **geometry)
    weight = item["mask"][None]
    _, history = invert_texture(g, target, weight, geometry, iterations=40, lr=0.05)
    assert history[-1] < 0.5 * history[0], history[::10]


def test_complete_gan_keeps_the_photo_texels(trained, gan_folders, model):
    from stages.completion import VISIBLE, get_method
    from stages.fit import FitResult
    from stages.unwrap import UnwrapResult

    folder = gan_folders[0]
    fit = FitResult.load(folder / "fit.json")
    unwrap = UnwrapResult.load(folder, model)
    photo = fit.load_fitted_photo(folder / "fit.json")
    method = get_method("gan").load(model, model_path=str(trained), iterations=10, render_size=64)
    result = method.complete_fitted(unwrap, fit, photo)
    kept = result.provenance == VISIBLE
    assert kept.sum() > 0.2 * unwrap.layout_mask.sum()
    assert np.abs(result.texture[kept] - unwrap.texture[kept]).max() < 1e-5
    assert result.info["inversion"]["loss_end"] < result.info["inversion"]["loss_start"]
    assert result.info["model_files"]["model_path"]["sha256"]
    assert np.isfinite(result.texture).all() and result.texture.shape == unwrap.texture.shape


def test_shipped_texture_gan_loads_matches_its_card_and_is_the_default(tmp_path, monkeypatch):
    """The shipped generator loads, its weights are the ones the model card names, it was trained on
    London training people only, ``complete --method gan`` and ``generate`` use it without ``--model``,
    and a missing one is a one-line error."""
    import hashlib
    import re

    from stages.completion import gan
    from stages.core.face_model import load_builtin_face_model
    from stages.core.splits import london_split

    folder = gan.SHIPPED_TEXTURE_GAN
    card = (folder / "README.md").read_text()
    digest = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    assert f"sha256: `{digest}`" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["data"] and all(london_split(Path(d).name + ".jpg") == "train" for d in config["data"])
    assert not any(d.startswith("/") for d in config["data"])        # no local paths shipped
    fill = gan.GANFill(load_builtin_face_model())
    assert fill.model_files["model_path"]["path"] == str(folder.resolve())   # recorded for evaluate
    generator, _ = load_texture_generator(folder)
    assert generator.config.uv_size == 128
    monkeypatch.setattr(gan, "SHIPPED_TEXTURE_GAN", tmp_path / "absent")
    with pytest.raises(MissingArtifactError, match="shipped texture GAN is missing") as info:
        gan.GANFill(load_builtin_face_model())
    assert "\n" not in str(info.value)
    assert re.search(r"texture_gan_london_v1", card)
