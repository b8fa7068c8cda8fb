"""UVAPM's detail VAE (issue 13, seed 002 §3.4): the network, its training on the one runner, the
model folder, the CLI and its use by ``complete --method uvapm --model DIR``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stages.core.errors import MissingArtifactError
from stages.models.detail_vae import PRESETS, DetailDecoder, DetailVAEConfig, load_detail_decoder


def test_presets_latent_shapes():
    assert PRESETS["base"].latent_shape == (4, 32, 32)           # the paper's latent
    assert PRESETS["small"].latent_shape == (4, 32, 32)
    cfg = PRESETS["tiny"]
    z = torch.zeros(2, *cfg.latent_shape)
    assert DetailDecoder(cfg)(z).shape == (2, 1, cfg.uv_size, cfg.uv_size)
    with pytest.raises(ValueError, match="multiple"):
        DetailVAEConfig(uv_size=30, channels=(4, 8, 8))


def test_laplacian_pyramid_loss_is_masked_and_sees_detail():
    from stages.train.detail_vae import laplacian_pyramid_l1

    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.normal(0, 1, (1, 1, 32, 32)).astype(np.float32))
    weight = torch.zeros(1, 1, 32, 32)
    weight[..., :16] = 1
    garbage = target + torch.where(weight > 0, 0.0, 5.0)            # wrong only where unseen
    assert float(laplacian_pyramid_l1(garbage, target, weight)) < 1e-6
    assert float(laplacian_pyramid_l1(torch.zeros_like(target), target, weight)) > 0.5


@pytest.fixture(scope="module")
def trained(train_folders, model, tmp_path_factory):
    """A tiny detail VAE trained for 30 steps through the CLI (the runner, the model folder)."""
    from facetex_cli.main import app

    out = tmp_path_factory.mktemp("detail") / "vae"
    result = CliRunner().invoke(app, ["train", "detail-vae", "--data", str(train_folders[0].parent), "-o", str(out),
                                      "--preset", "tiny", "--steps", "30", "--batch-size", "3", "--log-every", "1",
                                      "--sample-every", "30", "--device", "cpu", "--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    return out


def test_training_lowers_the_loss_and_writes_a_model_folder(trained):
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 30
    first, last = np.mean([r["rec"] for r in log[:5]]), np.mean([r["rec"] for r in log[-5:]])
    assert last < 0.8 * first, (first, last)
    config = json.loads((trained / "config.json").read_text())
    assert config["model_type"] == "detail_vae" and set(config["configs"]) == {"encoder", "decoder"}
    assert config["residual"] == "V(unwrap) - V(pca_texture)" and config["steps"] == 30
    assert (trained / "samples" / "step_000030.png").is_file()


def test_save_load_round_trip(trained):
    from safetensors.torch import load_file

    decoder, config = load_detail_decoder(trained)
    saved = load_file(str(trained / "weights.safetensors"))
    for key, value in decoder.state_dict().items():
        assert torch.equal(value, saved[f"decoder.{key}"])
    assert decoder.latent_shape == (4, 16, 16)
    z = torch.randn(1, *decoder.latent_shape, generator=torch.Generator().manual_seed(0))
    again, _ = load_detail_decoder(trained)
    assert torch.equal(decoder(z), again(z))


def test_bad_model_folder_is_one_line(tmp_path, trained):
    with pytest.raises(MissingArtifactError, match="model folder not found"):
        load_detail_decoder(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((trained / "config.json").read_text().replace(
        '"detail_vae"', '"uv_generator"'))
    with pytest.raises(MissingArtifactError, match="model_type"):
        load_detail_decoder(tmp_path / "bad")


def test_training_skips_london_holdout_people(tmp_path, train_folders):
    import shutil

    from facetex_cli.main import app

    held = tmp_path / "london" / "005_03"           # person 5 (a multiple of 5): hold-out
    shutil.copytree(train_folders[0], held)
    fit = json.loads((held / "fit.json").read_text())
    (held / "fit.json").write_text(json.dumps({**fit, "source": str(held / "005_03.jpg")}))
    result = CliRunner().invoke(app, ["train", "detail-vae", "--data", str(held), "-o", str(tmp_path / "m"),
                                      "--preset", "tiny", "--steps", "1", "--device", "cpu"])
    assert result.exit_code == 2 and "hold-out" in result.output
