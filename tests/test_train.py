"""train unet: tiny configurations train for real in seconds; save/load, resume, determinism, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stages.core.errors import MissingArtifactError
from stages.train.trainer import TrainConfig, train_uv_generator


def tiny(steps: int, **kw) -> TrainConfig:
    # A 4-channel network needs a larger step size than the default to move in a few dozen steps.
    return TrainConfig(preset="tiny", uv_size=64, batch_size=2, steps=steps, sample_every=0, checkpoint_every=0,
                       rerender_fraction=0.5, lr_generator=3e-3, **kw)


def test_real_partial_uvs_are_the_photos_texels(model, train_folders):
    from stages.train.dataset import UVTrainingSet

    sample = UVTrainingSet(train_folders, model, uv_size=64, seed=0).sample(0)
    seen = sample.seen[0] > 0
    assert seen.any() and not sample.real[:, ~seen].any()
    if sample.kind == "photo":
        assert np.array_equal(sample.real[:, seen], sample.target[:, seen])


def test_training_reduces_the_reconstruction_loss(model, train_folders, tmp_path):
    history = []
    train_uv_generator(train_folders, tmp_path / "m", tiny(40), model=model, cpu=True,
                       progress=lambda step, total, losses: history.append(losses["rec"]))
    assert len(history) == 40
    assert np.mean(history[-8:]) < 0.8 * np.mean(history[:8])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "uv_generator" and config["steps"] == 40 and config["uv_size"] == 64


def test_save_load_resume_and_determinism(model, train_folders, tmp_path):
    from stages.completion.unet import load_generator

    train_uv_generator(train_folders, tmp_path / "a", tiny(6), model=model, cpu=True)
    train_uv_generator(train_folders, tmp_path / "b", tiny(6), model=model, cpu=True)
    gen_a, size = load_generator(tmp_path / "a")
    gen_b, _ = load_generator(tmp_path / "b")
    assert size == 64
    x = torch.rand(1, 3, 64, 64)
    m = (torch.rand(1, 1, 64, 64) > 0.5).float()
    p = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(gen_a(x, m, p), gen_b(x, m, p)), "same seed, same data: identical weights on CPU"
    assert_resumes_from_the_checkpoint(lambda steps, **kw: train_uv_generator(
        train_folders, tmp_path / "a", tiny(steps), model=model, cpu=True, **kw), tmp_path / "a", 6)


def assert_resumes_from_the_checkpoint(train, folder, done: int) -> None:
    """``train(steps, progress=...)`` resumes the run in ``folder`` that stopped after ``done`` steps.

    What resuming guarantees (the interrupted epoch's data order starts over, so the weights are not
    those of an uninterrupted run): the networks start from the checkpoint bit for bit, only the
    missing steps run, and the optimizer state (Adam's step count) carries on.
    """
    from safetensors.torch import load_file

    before = load_file(folder / "weights.safetensors")
    calls: list[int] = []
    train(done, progress=lambda step, total, losses: calls.append(step))   # nothing left to do
    assert calls == []
    again = load_file(folder / "weights.safetensors")
    assert again.keys() == before.keys() and all(torch.equal(again[k], before[k]) for k in before), \
        "resumed networks are the checkpoint's"
    result = train(2 * done, progress=lambda step, total, losses: calls.append(step))
    assert result["steps"] == 2 * done and calls == list(range(done + 1, 2 * done + 1))
    assert json.loads((folder / "config.json").read_text())["steps"] == 2 * done
    optimizer = torch.load(folder / "training_state" / "optimizer.bin", weights_only=False)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {2 * done}, "Adam's state carried on"
    after = load_file(folder / "weights.safetensors")
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_missing_or_corrupt_model_folder(tmp_path, monkeypatch):
    from stages.completion import unet
    from stages.completion.unet import load_generator

    monkeypatch.setattr(unet, "SHIPPED_GENERATOR", tmp_path / "absent")
    with pytest.raises(MissingArtifactError, match="shipped UV generator is missing"):
        load_generator(None)
    with pytest.raises(MissingArtifactError, match=str(tmp_path / "nope")):
        load_generator(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{ not json")
    with pytest.raises(MissingArtifactError, match="bad"):
        load_generator(tmp_path / "bad")


@pytest.mark.slow  # about 25 s: three CLI processes
def test_train_cli_and_complete_with_the_trained_model(train_folders, astronaut_path, tmp_path):
    from tests.test_cli import run_facetex

    root = train_folders[0].parent
    proc = run_facetex("train", "unet", "--data", str(root), "-o", str(tmp_path / "model"), "--preset", "tiny",
                       "--steps", "3", "--batch-size", "2", "--uv-size", "64", "--sample-every", "2", "--cpu")
    assert proc.returncode == 0, proc.stderr
    assert "trained 3 steps" in proc.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["steps"] == 3 and config["uv_size"] == 64 and config["train"]["preset"] == "tiny"
    assert sorted(config["data"]) == sorted(str(f) for f in train_folders)
    assert (tmp_path / "model" / "samples" / "step_000002.png").is_file()
    proc = run_facetex("complete", str(astronaut_path), "-o", str(tmp_path / "out"), "--method", "unet", "--model",
                       str(tmp_path / "model"), "--no-previews", "--no-glb", "--uv-size", "256")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "astronaut" / "complete.json").read_text())
    assert result["method"] == "unet" and result["completion"]["method"] == "unet"
    proc = run_facetex("complete", str(astronaut_path), "-o", str(tmp_path / "out2"), "--method", "unet", "--model",
                       str(tmp_path / "no-such-model"))
    assert proc.returncode == 2 and "model folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_keeps_only_the_generator(train_folders, model, tmp_path):
    from stages.completion.unet import load_generator
    from stages.models.folder import export_pretrained
    from stages.models.uv_generator import UVGenerator, UVGeneratorConfig
    from stages.train.trainer import MODEL_TYPE

    train_uv_generator(train_folders, tmp_path / "full", tiny(2), model=model, cpu=True)
    export_pretrained(tmp_path / "full", tmp_path / "lean", {"generator": lambda c: UVGenerator(
        UVGeneratorConfig.from_dict(c))}, model_type=MODEL_TYPE, names=["generator"], extra={"note": "x"})
    config = json.loads((tmp_path / "lean" / "config.json").read_text())
    assert list(config["configs"]) == ["generator"] and config["steps"] == 2 and config["note"] == "x"
    assert not (tmp_path / "lean" / "training_state").exists()
    full, _ = load_generator(tmp_path / "full")
    lean, _ = load_generator(tmp_path / "lean")
    for (k, a), (_, b) in zip(full.state_dict().items(), lean.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_shipped_generator_loads():
    from stages.completion.unet import SHIPPED_GENERATOR, load_generator

    if not SHIPPED_GENERATOR.is_dir():
        pytest.skip("no shipped generator in this checkout")
    generator, size = load_generator(None)
    assert size == 256
    with torch.no_grad():
        out = generator(torch.rand(1, 3, size, size), torch.ones(1, 1, size, size), torch.zeros(1, 3, size, size))
    assert out.shape == (1, 3, size, size) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert (SHIPPED_GENERATOR / "README.md").is_file(), "model card"


def test_unet_batch_equals_single(train_folders, model, tmp_path):
    """complete_batch (one forward pass for all) gives what one-by-one completion gives."""
    from stages.completion import get_method
    from stages.unwrap import UnwrapResult

    train_uv_generator(train_folders, tmp_path / "m", tiny(2), model=model, cpu=True)
    method = get_method("unet").load(model, model_path=str(tmp_path / "m"), device="cpu")
    unwraps = [UnwrapResult.load(folder, model) for folder in train_folders]
    batch = method.complete_batch(unwraps)
    for unwrap, together in zip(unwraps, batch, strict=True):
        alone = method.complete(unwrap)
        assert np.allclose(alone.texture, together.texture, atol=1e-5)
        assert np.array_equal(alone.provenance, together.provenance)


def test_keep_photo_composition_keeps_seen_texels_and_follows_the_prediction(model):
    """Seen texels stay exactly the photo's; hidden ones take the prediction's shape (its gradients),
    shifted to meet the photo at the border instead of shifting the photo."""
    from stages.completion.unet import keep_photo_fill_prediction
    from stages.core.uv import uv_layout
    from stages.unwrap import UnwrapResult

    size = 64
    layout = uv_layout(model, size).mask
    rng = np.random.default_rng(0)
    photo = np.full((size, size, 3), 0.6, np.float32) + 0.05 * rng.random((size, size, 3), dtype=np.float32)
    confidence = np.where(layout, 1.0, 0.0).astype(np.float32)
    confidence[:, size // 2:] = 0.0                              # the right half is hidden
    unwrap = UnwrapResult(texture=photo, confidence=confidence, position=np.zeros((size, size, 3), np.float32),
                          layout_mask=layout, stem="t", info={})
    ramp = np.linspace(0.0, 0.3, size, dtype=np.float32)[None, :, None] * np.ones((size, 1, 3), np.float32)
    prediction = 0.2 + ramp                                      # darker than the photo, with a gradient
    texture, provenance = keep_photo_fill_prediction(prediction, unwrap, solve_size=None)
    seen = layout & (confidence > 0)
    hidden = layout & ~seen
    assert np.allclose(texture[seen], photo[seen], atol=1e-6)
    # The hidden half keeps the prediction's horizontal gradient, at the photo's level, not the prediction's.
    rows = np.where(hidden.any(1))[0]
    r = rows[len(rows) // 2]
    cols = np.where(hidden[r])[0]
    assert abs(float(np.diff(texture[r, cols, 0]).mean()) - 0.3 / (size - 1)) < 0.002
    assert abs(float(texture[r, cols[0], 0]) - float(photo[r, cols[0] - 1, 0])) < 0.05
    assert (provenance[seen] == 1).all() and (provenance[hidden] == 3).all()


def test_keep_photo_composition_with_mirror(model):
    """mirror=True: hidden texels whose mirror partner was seen follow the partner's colours."""
    from stages.completion.unet import keep_photo_fill_prediction
    from stages.core.uv import uv_layout
    from stages.unwrap import UnwrapResult

    size = 64
    layout = uv_layout(model, size).mask
    photo = 0.4 + 0.4 * np.random.default_rng(1).random((size, size, 3), dtype=np.float32)
    confidence = np.where(layout, 1.0, 0.0).astype(np.float32)
    confidence[:, size // 2:] = 0.0
    unwrap = UnwrapResult(texture=photo, confidence=confidence, position=np.zeros((size, size, 3), np.float32),
                          layout_mask=layout, stem="t", info={})
    prediction = np.full((size, size, 3), 0.1, np.float32)
    texture, provenance = keep_photo_fill_prediction(prediction, unwrap, solve_size=None, mirror=True)
    mirrored = provenance == 2
    assert mirrored.sum() > 0.3 * layout.sum()
    error = np.abs(texture[mirrored] - photo[:, ::-1][mirrored]).mean()
    assert error < 0.03, error                                   # the partner's colours, not the prediction's


def test_worker_processes_train_the_same_weights(model, train_folders, tmp_path):
    """``num_workers`` only moves the per-sample rasterization into worker processes: each sample is
    seeded from (seed, epoch, index), so one worker trains the same weights as none; the dataset
    survives pickling (spawned workers receive it pickled)."""
    import pickle

    from safetensors.torch import load_file

    from stages.train.dataset import UVTrainingSet

    dataset = UVTrainingSet(train_folders, model, uv_size=64, seed=0, view_size=32)
    dataset.set_epoch(1)
    clone = pickle.loads(pickle.dumps(dataset))
    a, b = dataset[1], clone[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    steps = len(dataset) // 2 + 1        # into the second epoch (its epoch number must reach the worker)
    for workers in (0, 1):
        train_uv_generator(train_folders, tmp_path / f"w{workers}", tiny(steps, view_size=32), model=model,
                           cpu=True, num_workers=workers)
    w0, w1 = load_file(tmp_path / "w0" / "weights.safetensors"), load_file(tmp_path / "w1" / "weights.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
