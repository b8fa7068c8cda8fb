"""Image-space training terms of the UV generator: face views, render loss, face discriminator,
identity loss, colour/lighting augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stages.core.errors import MissingArtifactError
from stages.core.image_io import load_texture
from stages.train.augment import ColourAugment, apply_colour, draw_params, shading_field
from stages.train.trainer import TrainConfig, _Renderer, train_uv_generator


def tiny(steps: int, **kw) -> TrainConfig:
    return TrainConfig(preset="tiny", uv_size=64, batch_size=2, steps=steps, sample_every=0, checkpoint_every=0,
                       rerender_fraction=0.5, lr_generator=3e-3, view_size=64, **kw)


@pytest.fixture(scope="module")
def views(model, train_folders):
    from stages.train.dataset import UVTrainingSet

    dataset = UVTrainingSet(train_folders, model, uv_size=64, view_size=96, seed=3)
    return dataset, [dataset[i] for i in range(len(train_folders))]


def test_photo_view_is_the_render_of_the_true_texture(model, train_folders, views):
    """The fixture's photos are renders of uv_pseudo.png: rendering that texture in the photo view
    (fitted z-buffer, differentiable renderer) must give the photo crop on the face mask."""
    dataset, items = views
    renderer = _Renderer(model, torch.device("cpu"))
    for folder, item in zip(train_folders, items, strict=True):
        texture = torch.from_numpy(load_texture(folder / "uv_pseudo.png")[..., :3].copy()).permute(2, 0, 1)[None]
        mask = item["view_mask"][None]
        assert mask.sum() > 0.25 * 96 * 96, "the face fills a good part of the crop"
        rendered = renderer(texture, item["view_screen"][None], item["view_triangle_id"][None], mask)
        error = ((rendered - item["view_image"][None]).abs() * mask).sum() / (3 * mask.sum())
        assert error < 0.03, float(error)
        # A wrong texture is far off: the check can fail.
        wrong = renderer(texture.flip(-2), item["view_screen"][None], item["view_triangle_id"][None], mask)
        assert ((wrong - item["view_image"][None]).abs() * mask).sum() / (3 * mask.sum()) > 2 * error


def test_novel_view_turns_the_face(model, views):
    from stages.train.face_views import novel_view

    dataset, _ = views
    data = dataset.folders[0]
    front = novel_view(model, data.vertices, data.rotation, 0.0, 0.0, 96)
    turned = novel_view(model, data.vertices, data.rotation, 40.0, 0.0, 96)
    # The nose tip (most +z vertex in model space) moves sideways on screen when the head turns.
    tip = int(np.argmax(data.vertices[:, 2]))
    assert abs(front.screen[tip, 0] - 48) < 8
    assert abs(turned.screen[tip, 0] - 48) > 10
    for view in (front, turned):
        assert view.mask.sum() > 0.2 * 96 * 96
        assert set(np.unique(view.triangle_id[view.mask > 0])) <= set(range(model.triangles.shape[0]))


def test_views_are_seeded(model, train_folders):
    from stages.train.dataset import UVTrainingSet

    a = UVTrainingSet(train_folders, model, uv_size=64, view_size=64, seed=1)
    b = UVTrainingSet(train_folders, model, uv_size=64, view_size=64, seed=1)
    assert torch.equal(a[1]["novel_triangle_id"], b[1]["novel_triangle_id"])
    b.set_epoch(1)
    assert not torch.equal(a[1]["novel_triangle_id"], b[1]["novel_triangle_id"])


def test_missing_photo_is_named(model, train_folders, tmp_path):
    import shutil

    from stages.train.dataset import UVTrainingSet

    folder = tmp_path / "face"
    shutil.copytree(train_folders[0], folder)
    fit = json.loads((folder / "fit.json").read_text())
    (folder / "fit.json").write_text(json.dumps({**fit, "source": "photo.png"}))
    UVTrainingSet([folder], model, uv_size=64, view_size=64)   # a relative source is found next to fit.json
    (folder / "photo.png").unlink()
    with pytest.raises(MissingArtifactError, match="photo .* not found"):
        UVTrainingSet([folder], model, uv_size=64, view_size=64)
    UVTrainingSet([folder], model, uv_size=64, view_size=0)     # UV losses only: the photo is not needed


def test_shading_field_and_colour():
    config = ColourAugment(probability=1.0)
    params = draw_params(config, 4, torch.Generator().manual_seed(0))
    assert torch.allclose(params.light_dir.norm(dim=1), torch.ones(4))
    assert (params.light_dir[:, 2] > 0).all(), "light comes from in front of the face"
    normals = torch.nn.functional.normalize(torch.randn(4, 3, 16, 16), dim=1)
    normals[:, 2] = normals[:, 2].abs()
    mask = torch.ones(1, 1, 16, 16)
    shade = shading_field(normals, mask, params)
    assert shade.shape == (4, 1, 16, 16)
    assert torch.allclose(shade.mean((1, 2, 3)), torch.ones(4), atol=1e-4), "mean shading 1 on the mask"
    images = torch.rand(4, 3, 16, 16)
    images[:, :, :4] = 0.0
    out = apply_colour(images, params, shade)
    assert (out[:, :, :4] == 0).all(), "unseen (zero) texels stay zero"
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[:, :, 4:], images[:, :, 4:])
    # Disabled augmentation is the identity.
    off = draw_params(ColourAugment(probability=0.0), 4, torch.Generator().manual_seed(0))
    assert torch.allclose(apply_colour(images, off, shading_field(normals, mask, off)), images, atol=1e-5)
    with pytest.raises(ValueError, match="light"):
        ColourAugment(light=1.5)


def test_augmentation_is_consistent_between_uv_and_image(model, views):
    """Relighting the texture and rendering it = rendering it and relighting the photo with the
    rendered shading field (what the trainer does to keep the render loss meaningful)."""
    dataset, items = views
    renderer = _Renderer(model, torch.device("cpu"))
    item = items[0]
    texture = torch.from_numpy(dataset.folders[0].pseudo.copy()).permute(2, 0, 1)[None]
    params = draw_params(ColourAugment(probability=1.0, gamma=0.0), 1, torch.Generator().manual_seed(5))
    shade = shading_field(item["normal"][None], item["layout"][None], params)
    args = (item["view_screen"][None], item["view_triangle_id"][None], item["view_mask"][None])
    lhs = renderer(apply_colour(texture, params, shade), *args)
    rhs = apply_colour(renderer(texture, *args), params, renderer(shade, *args)) * item["view_mask"][None]
    mask = item["view_mask"][None]
    assert ((lhs - rhs).abs() * mask).sum() / (3 * mask.sum()) < 0.01


def test_training_with_views_reduces_the_render_loss(model, train_folders, tmp_path):
    history = []
    train_uv_generator(train_folders, tmp_path / "m", tiny(40, augment={"probability": 0.0}), model=model, cpu=True,
                       progress=lambda step, total, losses: history.append(losses))
    render = [h["render"] for h in history]
    assert all(h["face"] != 0 for h in history), "the face discriminator is trained"
    assert np.mean(render[-8:]) < 0.8 * np.mean(render[:8])
    names = json.loads((tmp_path / "m" / "config.json").read_text())["configs"]
    assert "disc_face" in names


class _TinyEmbedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_identity_loss(model, train_folders, tmp_path):
    from stages.train.identity import load_identity_network

    path = tmp_path / "embedder.pt"
    torch.jit.script(_TinyEmbedder()).save(str(path))
    (tmp_path / "embedder.pt.json").write_text(json.dumps({"size": 32}))
    network = load_identity_network(path)
    photo = torch.rand(2, 3, 48, 48)
    assert float(network.loss(photo, photo)) == pytest.approx(0.0, abs=1e-5)
    rendered = torch.rand(2, 3, 48, 48, requires_grad=True)
    loss = network.loss(rendered, photo)
    loss.backward()
    assert loss.item() > 0 and rendered.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in network.extractor.model.parameters()), "the network stays frozen"

    history = []
    train_uv_generator(train_folders, tmp_path / "m", tiny(3, identity_model=str(path)), model=model, cpu=True,
                       progress=lambda step, total, losses: history.append(losses["id"]))
    assert all(h > 0 for h in history)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["identity_model_sha256"] == network.sha256

    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(MissingArtifactError, match="junk.pt"):
        load_identity_network(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="view_size"):
        TrainConfig(view_size=0, identity_model=str(path))


def test_photo_view_weights_the_render_loss_mask_by_the_skin_mask(model, tmp_path):
    """Training's photo view multiplies its face mask by the fit's skin mask: what unwrap rejected
    (hair, a hand) is never a render-loss target; without a skin mask the view is unchanged."""
    from stages.core.image_io import load_photo
    from stages.fit import FitResult
    from stages.occlusion import SkinMask, save_skin_mask
    from stages.train.face_views import load_photo_view
    from tests.conftest import rendered_face_folders

    folder = rendered_face_folders(model, tmp_path, [0.0], photo_size=192, texture_size=64, seed=3, pseudo=False)[0]
    plain = load_photo_view(folder, FitResult.load(folder / "fit.json"), model, 64)
    rgb = load_photo(folder / "photo.png").rgb
    prob = np.ones(rgb.shape[:2], np.float32)
    screen_x = FitResult.load(folder / "fit.json").screen_vertices()[:, 0]
    centre = int(round((screen_x.min() + screen_x.max()) / 2))   # the view's centre column (32)
    prob[:, :centre] = 0.0                        # the face's left half "occluded"
    save_skin_mask(SkinMask(prob=prob), folder, rgb)
    masked = load_photo_view(folder, FitResult.load(folder / "fit.json"), model, 64)
    assert plain.mask.sum() > 500
    left, right = masked.mask[:, :28], masked.mask[:, 36:]
    assert left.max() == 0.0 and np.allclose(right, plain.mask[:, 36:])
    assert np.abs(masked.image[:, :28]).max() == 0.0
