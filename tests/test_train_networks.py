"""UV generator / discriminators, model folders and training losses (seed 001 §3.2–3.3); fast, CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stages.core.errors import MissingArtifactError
from stages.train import losses as L
from stages.models.folder import load_pretrained, save_pretrained
from stages.models.uv_generator import (
    TINY_DISCRIMINATOR,
    TINY_GENERATOR,
    DiscriminatorConfig,
    PatchDiscriminator,
    UVGenerator,
    UVGeneratorConfig,
)


def _inputs(b: int, s: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, 1, s, s, generator=g) > 0.5).float()
    partial = torch.rand(b, 3, s, s, generator=g) * mask
    position = torch.randn(b, 3, s, s, generator=g)
    return partial, mask, position


BUILDERS = {
    "generator": lambda c: UVGenerator(UVGeneratorConfig.from_dict(c)),
    "disc": lambda c: PatchDiscriminator(DiscriminatorConfig.from_dict(c)),
}


# --- networks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [32, 64])
def test_generator_shape_and_range(s):
    torch.manual_seed(0)
    net = UVGenerator(TINY_GENERATOR)
    partial, mask, position = _inputs(2, s)
    with torch.no_grad():
        out = net(partial, mask, position)
        out_none = net(partial, mask, None)
    assert out.shape == (2, 3, s, s)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert out_none.shape == (2, 3, s, s)


def test_generator_rejects_bad_sizes():
    net = UVGenerator(TINY_GENERATOR)  # depth 2 -> S divisible by 4
    partial, mask, position = _inputs(1, 30)
    with pytest.raises(ValueError, match="divisible"):
        net(partial, mask, position)
    partial, mask, _ = _inputs(1, 32)
    with pytest.raises(ValueError):
        net(partial[:, :2], mask, None)  # wrong channel count


def test_generator_gradients_reach_all_parameters():
    torch.manual_seed(0)
    net = UVGenerator(TINY_GENERATOR)
    partial, mask, position = _inputs(2, 32)
    net(partial, mask, position).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_config_dict_round_trip_and_unknown_keys():
    assert UVGeneratorConfig.from_dict(TINY_GENERATOR.to_dict()) == TINY_GENERATOR
    assert DiscriminatorConfig.from_dict(TINY_DISCRIMINATOR.to_dict()) == TINY_DISCRIMINATOR
    with pytest.raises(ValueError, match="unknown"):
        UVGeneratorConfig.from_dict({**TINY_GENERATOR.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown"):
        DiscriminatorConfig.from_dict({"layer": 3})
    with pytest.raises(ValueError):
        UVGeneratorConfig(depth=0)


@pytest.mark.parametrize("sn", [True, False])
def test_discriminator_output_shape(sn):
    cfg = DiscriminatorConfig(base_channels=4, layers=2, spectral_norm=sn)
    d = PatchDiscriminator(cfg)
    assert d(torch.rand(3, 3, 32, 24)).shape == (3, 1, 8, 6)
    assert PatchDiscriminator(DiscriminatorConfig(base_channels=4))(torch.rand(2, 3, 64, 64)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError):
        d(torch.rand(1, 3, 3, 32))
    if sn:
        assert any("parametrizations" in k for k in d.state_dict())


# --- model folders ------------------------------------------------------------------------------------


def _save_pair(tmp_path, gen_cfg=TINY_GENERATOR, disc_cfg=TINY_DISCRIMINATOR):
    torch.manual_seed(1)
    gen, disc = UVGenerator(gen_cfg), PatchDiscriminator(disc_cfg)
    disc(torch.rand(2, 3, 32, 32))  # a training-mode forward: spectral norm's power iteration moves u, v
    out = save_pretrained(tmp_path / "model", {"generator": gen, "disc": disc},
                          {"generator": gen_cfg.to_dict(), "disc": disc_cfg.to_dict()},
                          model_type="uv_generator", extra={"uv_size": 32})
    return out, gen.eval(), disc.eval()


def test_save_load_round_trip(tmp_path):
    folder, gen, disc = _save_pair(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["schema"] == "facetex.model" and cfg["format_version"] == 1
    assert cfg["model_type"] == "uv_generator" and cfg["uv_size"] == 32 and "facetex_version" in cfg
    assert cfg["configs"]["generator"] == TINY_GENERATOR.to_dict()

    models, config_json = load_pretrained(folder, BUILDERS, model_type="uv_generator")
    assert config_json == cfg
    partial, mask, position = _inputs(2, 32, seed=3)
    with torch.no_grad():
        assert torch.equal(models["generator"](partial, mask, position), gen(partial, mask, position))
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(models["disc"](x), disc(x))

    only, _ = load_pretrained(folder, BUILDERS, model_type="uv_generator", names=["generator"])
    assert list(only) == ["generator"]


def test_save_replaces_existing_folder_and_keeps_entries(tmp_path):
    folder, _, _ = _save_pair(tmp_path)
    (folder / "samples").mkdir()
    (folder / "samples" / "a.txt").write_text("x")
    (folder / "junk.txt").write_text("old")
    gen = UVGenerator(TINY_GENERATOR)
    save_pretrained(folder, {"generator": gen}, {"generator": TINY_GENERATOR.to_dict()},
                    model_type="uv_generator", keep=("samples",))
    assert (folder / "samples" / "a.txt").read_text() == "x"
    assert not (folder / "junk.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    models, _ = load_pretrained(folder, {"generator": BUILDERS["generator"]}, model_type="uv_generator")
    assert list(models) == ["generator"]


def test_save_rejects_bad_arguments(tmp_path):
    gen = UVGenerator(TINY_GENERATOR)
    with pytest.raises(ValueError):
        save_pretrained(tmp_path / "m", {"gen": gen}, {}, model_type="x")
    with pytest.raises(ValueError):
        save_pretrained(tmp_path / "m", {"a.b": gen}, {"a.b": {}}, model_type="x")
    with pytest.raises(ValueError):
        save_pretrained(tmp_path / "m", {"gen": gen}, {"gen": {}}, model_type="x", extra={"schema": "y"})


def _raises_naming(path, fn):
    with pytest.raises(MissingArtifactError) as info:
        fn()
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    return msg


def test_load_errors(tmp_path):
    load = lambda d, **kw: load_pretrained(d, BUILDERS, model_type=kw.pop("model_type", "uv_generator"), **kw)  # noqa: E731

    missing = tmp_path / "nope"
    _raises_naming(missing, lambda: load(missing))

    folder, _, _ = _save_pair(tmp_path)
    weights, config = folder / "weights.safetensors", folder / "config.json"
    msg = _raises_naming(config, lambda: load(folder, model_type="other"))
    assert "model_type" in msg
    _raises_naming(folder, lambda: load_pretrained(folder, {"x": BUILDERS["disc"]}, model_type="uv_generator"))

    good = weights.read_bytes()
    weights.write_bytes(b"\x00garbage" * 10)
    _raises_naming(weights, lambda: load(folder))
    weights.write_bytes(good[: len(good) // 2])  # truncated
    _raises_naming(weights, lambda: load(folder))
    weights.unlink()
    _raises_naming(weights, lambda: load(folder))
    weights.write_bytes(good)
    load(folder)

    cfg_text = config.read_text()
    cfg = json.loads(cfg_text)
    cfg["configs"]["generator"]["base_channels"] = 8  # the weights no longer fit
    config.write_text(json.dumps(cfg))
    msg = _raises_naming(weights, lambda: load(folder))
    assert "shape" in msg
    cfg["configs"]["generator"]["depth"] = 3  # more layers than saved
    config.write_text(json.dumps(cfg))
    msg = _raises_naming(weights, lambda: load(folder))
    assert "missing keys" in msg
    cfg = json.loads(cfg_text)
    cfg["configs"]["generator"]["depth"] = 1  # fewer layers than saved
    config.write_text(json.dumps(cfg))
    msg = _raises_naming(weights, lambda: load(folder))
    assert "unexpected keys" in msg

    config.write_text("{not json")
    _raises_naming(config, lambda: load(folder))
    config.write_text(json.dumps({"schema": "something.else"}))
    _raises_naming(config, lambda: load(folder))
    config.unlink()
    _raises_naming(config, lambda: load(folder))


# --- losses -------------------------------------------------------------------------------------------


def test_weighted_l1_known_value():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    weight = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # (1 + 4 + 1 + 1) / (2 * 2)
    assert math.isclose(float(L.weighted_l1(pred, target, weight)), 7 / 4, rel_tol=1e-6)
    assert math.isclose(float(L.weighted_l1(pred, target, torch.ones(1, 1, 2, 2))), 14 / 8, rel_tol=1e-6)
    assert float(L.weighted_l1(pred, target, torch.zeros(1, 1, 2, 2))) == 0.0
    # a (1, 1, S, S) weight broadcasts over the batch like a (B, 1, S, S) one
    p2, t2 = pred.expand(3, -1, -1, -1), target.expand(3, -1, -1, -1)
    batch_weight = weight.expand(3, -1, -1, -1)
    assert math.isclose(float(L.weighted_l1(p2, t2, weight)), float(L.weighted_l1(p2, t2, batch_weight)))


def test_symmetry_loss():
    x = torch.rand(2, 3, 8, 8)
    sym = 0.5 * (x + x.flip(-1))
    assert float(L.symmetry_loss(sym, torch.ones(1, 1, 8, 8))) < 1e-7
    img = torch.zeros(1, 1, 1, 4)
    img[..., 0] = 1.0  # |x - flip(x)| = [1, 0, 0, 1]
    assert math.isclose(float(L.symmetry_loss(img, torch.ones(1, 1, 1, 4))), 0.5, rel_tol=1e-6)
    # a mask on the left only: mask * mask.flip(-1) is empty -> 0
    mask = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    assert float(L.symmetry_loss(img, mask)) == 0.0
    assert math.isclose(float(L.symmetry_loss(img)), 0.5, rel_tol=1e-6)


def test_tv_loss():
    assert float(L.tv_loss(torch.full((2, 3, 8, 8), 0.3))) == 0.0
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # horizontal diffs 1, 1; vertical 0, 0
    assert math.isclose(float(L.tv_loss(x)), 0.5, rel_tol=1e-6)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])  # only the left vertical pair counts
    assert float(L.tv_loss(x, mask)) == 0.0


def test_gan_losses_known_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, 1] -> 0.5; relu(1 + fake) = [0, 1.5] -> 0.75
    assert math.isclose(float(L.d_hinge_loss(real, fake)), 1.25, rel_tol=1e-6)
    assert math.isclose(float(L.g_hinge_loss(fake)), 0.75, rel_tol=1e-6)
    zero = torch.zeros(4)
    assert math.isclose(float(L.d_bce_loss(zero, zero)), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(L.g_bce_loss(zero)), math.log(2), rel_tol=1e-6)
    r, f = torch.tensor([1.5]), torch.tensor([-0.5])
    expected = -math.log(1 / (1 + math.exp(-1.5))) - math.log(1 - 1 / (1 + math.exp(0.5)))
    assert math.isclose(float(L.d_bce_loss(r, f)), expected, rel_tol=1e-6)


# --- UV crops -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [32, 64])
def test_uv_crops_shapes_and_mirror(s):
    x = torch.rand(2, 3, s, s)
    c = L.uv_crops(x, centre=L.DEFAULT_CENTRE_CROP, side=L.DEFAULT_SIDE_CROP)
    r0, c0, r1, c1 = L.box_pixels(L.DEFAULT_CENTRE_CROP, s, s)
    assert c["centre"].shape == (2, 3, r1 - r0, c1 - c0)
    r0, c0, r1, c1 = L.box_pixels(L.DEFAULT_SIDE_CROP, s, s)
    assert c["left"].shape == c["right"].shape == (2, 3, r1 - r0, c1 - c0)
    assert c["side"].shape == (4, 3, r1 - r0, c1 - c0)
    assert torch.equal(c["side"][:2], c["left"]) and torch.equal(c["side"][2:], c["right"])

    m = L.uv_crops(x.flip(-1), centre=L.DEFAULT_CENTRE_CROP, side=L.DEFAULT_SIDE_CROP)
    assert torch.equal(m["left"], c["right"]) and torch.equal(m["right"], c["left"])
    assert torch.equal(m["side"], torch.cat([c["side"][2:], c["side"][:2]]))
    assert torch.equal(m["centre"], c["centre"].flip(-1))  # the default centre box is symmetric


def test_uv_crops_centre_pixel():
    s = 48
    x = torch.zeros(1, 1, s, s)
    top, left, bottom, right = L.DEFAULT_CENTRE_CROP
    x[..., int((top + bottom) / 2 * s), int((left + right) / 2 * s)] = 1.0
    c = L.uv_crops(x)
    assert float(c["centre"].sum()) == 1.0
    assert float(c["side"].sum()) == 0.0
    y = torch.zeros(1, 1, s, s)
    y[..., s // 2, 1] = 1.0  # on the far left: in the left crop only
    c = L.uv_crops(y)
    assert float(c["centre"].sum()) == 0.0 and float(c["left"].sum()) == 1.0 and float(c["right"].sum()) == 0.0


def test_uv_crops_rejects_bad_boxes():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError):
        L.uv_crops(x, centre=(0.5, 0.2, 0.4, 0.8), side=L.DEFAULT_SIDE_CROP)
    with pytest.raises(ValueError):
        L.uv_crops(x, centre=L.DEFAULT_CENTRE_CROP, side=(0.0, 0.0, 1.0, 0.01))  # empty at 16 px


def test_masked_nose():
    x = torch.rand(2, 3, 32, 32) + 0.1
    nose = L.box_mask(L.DEFAULT_NOSTRIL_BOX, 32)
    out = L.masked_nose(x, nose)
    assert out.shape == x.shape
    assert float(out[..., nose[0, 0] > 0].abs().sum()) == 0.0
    assert torch.equal(out[..., nose[0, 0] == 0], x[..., nose[0, 0] == 0])
    # the nostril box is inside the centre crop
    c = L.uv_crops(nose)
    assert float(c["centre"].sum()) == float(nose.sum()) and float(c["side"].sum()) == 0.0
