"""Training pairs without ground truth (seed 001, §3.2): re-posing, photo and re-render samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.core.camera import Pose, euler_to_matrix
from stages.core.errors import MissingArtifactError
from stages.core.image_io import load_texture
from stages.core.uv import uv_layout
from stages.models.inputs import POSITION_SCALE
from stages.train.dataset import UVTrainingSet
from stages.train.reposing import PoseRange, reposed_confidence, sample_pose
from stages.unwrap import texel_visibility

S = 256
PHOTO = 384


@pytest.fixture(scope="module")
def folders(train_folders):
    return train_folders


def _loaded(folder):
    rgba = load_texture(folder / "uv_texture.png")
    pseudo = load_texture(folder / "uv_pseudo.png")[..., :3]
    return rgba[..., :3], rgba[..., 3], pseudo


def _reposed_pose(vertices, yaw, pitch, roll, size):
    """The pose recipe of stages.render.view_pose, with a roll, written out independently."""
    rotation = euler_to_matrix(yaw, pitch, roll)
    cam = vertices @ rotation.T
    scale = 0.8 * size / max(np.ptp(cam[:, 0]), np.ptp(cam[:, 1]))
    centre = (cam.max(axis=0) + cam.min(axis=0)) / 2
    return Pose(rotation=rotation, scale=scale,
                translation=np.array([size / 2 - scale * centre[0], size / 2 + scale * centre[1], 10 * size]))


@pytest.mark.parametrize("angles", [(60.0, 0.0, 0.0), (-35.0, 15.0, 12.0)])
def test_reposed_confidence_matches_texel_visibility(model, angles):
    vertices = np.asarray(model.vertices, dtype=np.float64)
    conf = reposed_confidence(model, vertices, *angles, S, image_size=PHOTO)
    direct = texel_visibility(model, vertices, _reposed_pose(vertices, *angles, PHOTO), PHOTO, PHOTO, S).confidence
    assert conf.shape == (S, S) and conf.dtype == np.float32
    np.testing.assert_array_equal(conf, direct)
    assert (conf > 0).sum() > 0.2 * uv_layout(model, S).mask.sum()


def test_positive_yaw_hides_the_plus_x_side(model):
    conf = reposed_confidence(model, np.asarray(model.vertices, dtype=np.float64), 60.0, 0.0, 0.0, S)
    seen = conf > 0
    left, right = seen[:, : S // 2].sum(), seen[:, S // 2:].sum()
    assert left > 3 * right


def test_sample_pose_in_range_and_reproducible():
    ranges = PoseRange(max_yaw=40.0, max_pitch=10.0, max_roll=5.0)
    poses = np.array([sample_pose(np.random.default_rng(s), ranges) for s in range(300)])
    assert (np.abs(poses) <= [40.0, 10.0, 5.0]).all()
    assert (np.abs(poses).max(axis=0) > [35.0, 8.0, 4.0]).all()          # spans the range
    assert sample_pose(np.random.default_rng(7), ranges) == sample_pose(np.random.default_rng(7), ranges)
    assert all(isinstance(a, float) for a in sample_pose(np.random.default_rng(0)))


def test_photo_sample(model, folders):
    data = UVTrainingSet(folders, model, uv_size=S, rerender_fraction=0.0, pseudo_weight=0.3, seed=3)
    layout = uv_layout(model, S).mask
    hid_some = False
    for i in range(len(folders)):
        sample = data[i]
        assert sample["kind"] == "photo"
        texture, confidence, pseudo = _loaded(folders[i])
        seen = confidence > 0
        mask = sample["mask"][0].numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert (mask[~seen] == 0).all()                              # subset of the original seen texels
        hid_some |= bool((seen & (mask == 0)).sum() > 100)
        partial = sample["partial"].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(partial[mask > 0], texture[mask > 0], atol=1e-6)
        assert (partial[mask == 0] == 0).all()
        target = sample["target"].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(target[seen], texture[seen], atol=1e-6)
        np.testing.assert_allclose(target[layout & ~seen], pseudo[layout & ~seen], atol=1e-6)
        weight = sample["weight"][0].numpy()
        assert (weight[~layout] == 0).all()
        np.testing.assert_allclose(weight[layout & ~seen], 0.3)
        np.testing.assert_allclose(weight[seen], confidence[seen], atol=1e-6)
        np.testing.assert_array_equal(sample["layout"][0].numpy(), layout.astype(np.float32))
        position = np.load(folders[i] / "uv_position.npy")
        np.testing.assert_allclose(sample["position"].numpy().transpose(1, 2, 0), position / POSITION_SCALE,
                                   atol=1e-6)
        assert 0.7 < np.abs(sample["position"].numpy()).max() < 1.2              # about [-1, 1]
        assert np.abs(sample["pose"].numpy()).max() <= 75.0
    assert hid_some


def test_rerender_sample(model, folders):
    data = UVTrainingSet(folders, model, uv_size=S, rerender_fraction=1.0, seed=5)
    layout = uv_layout(model, S).mask
    for i in range(len(folders)):
        sample = data[i]
        assert sample["kind"] == "rerender"
        _, _, pseudo = _loaded(folders[i])
        mask = sample["mask"][0].numpy() > 0
        assert mask.sum() > 0.15 * layout.sum() and not mask[~layout].any()
        partial = sample["partial"].numpy().transpose(1, 2, 0)
        error = np.abs(partial[mask] - pseudo[mask])
        assert np.median(error) < 0.02
        assert (partial[~mask] == 0).all()
        np.testing.assert_allclose(sample["target"].numpy().transpose(1, 2, 0), pseudo, atol=1e-6)
        np.testing.assert_array_equal(sample["weight"][0].numpy(), layout.astype(np.float32))


def test_determinism(model, folders):
    a = UVTrainingSet(folders, model, uv_size=S, rerender_fraction=0.5, seed=11, epoch_length=6)
    b = UVTrainingSet(folders, model, uv_size=S, rerender_fraction=0.5, seed=11, epoch_length=6)
    assert len(a) == 6
    for i in (0, 4):
        x, y = a[i], b[i]
        assert x["kind"] == y["kind"]
        for key in ("partial", "mask", "target", "weight", "pose"):
            assert torch.equal(x[key], y[key]), key
    before = a[1]["pose"]
    a.set_epoch(1)
    assert not torch.equal(a[1]["pose"], before)
    a.set_epoch(0)
    assert torch.equal(a[1]["pose"], before)
    c = UVTrainingSet(folders, model, uv_size=S, rerender_fraction=0.5, seed=12)
    assert not torch.equal(c[1]["pose"], before)


def test_missing_artifacts(model, folders, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    (broken / "uv_pseudo.png").unlink()
    with pytest.raises(MissingArtifactError, match="pseudo-gt") as info:
        UVTrainingSet([folders[1], broken], model, uv_size=S)
    assert info.value.path.name == "uv_pseudo.png"
    assert "uv_pseudo.png" in str(info.value)
    (broken / "fit.json").unlink()
    with pytest.raises(MissingArtifactError, match="fit.json"):
        UVTrainingSet([broken], model, uv_size=S)
    with pytest.raises(ValueError, match="no training folders"):
        UVTrainingSet([], model)


def test_smaller_uv_size_resizes(model, folders):
    data = UVTrainingSet(folders[:1], model, uv_size=128, rerender_fraction=0.0)
    sample = data[0]
    assert sample["partial"].shape == (3, 128, 128) and sample["weight"].shape == (1, 128, 128)
    layout = uv_layout(model, 128).mask
    assert (sample["mask"][0].numpy()[~layout] == 0).all()
    assert sample["mask"].sum() > 0.2 * layout.sum()


def test_dataloader_batches(model, folders):
    data = UVTrainingSet(folders, model, uv_size=S, rerender_fraction=0.5, seed=1, epoch_length=4)
    loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert batch["partial"].shape == (2, 3, S, S) and batch["partial"].dtype == torch.float32
        assert batch["mask"].shape == (2, 1, S, S)
        assert batch["position"].shape == (2, 3, S, S)
        assert batch["target"].shape == (2, 3, S, S)
        assert batch["weight"].shape == (2, 1, S, S)
        assert batch["layout"].shape == (2, 1, S, S)
        assert batch["pose"].shape == (2, 3)
        assert len(batch["kind"]) == 2 and set(batch["kind"]) <= {"photo", "rerender"}
