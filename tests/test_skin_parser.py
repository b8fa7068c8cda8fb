"""The learned skin parser (issue 11): network, model folder, training on the one runner, the
occluder generator, and its hook in ``segment_skin`` / ``fit --skin-parser``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from stages.core.errors import MissingArtifactError
from stages.models.folder import save_pretrained
from stages.models.skin_parser import (MODEL_TYPE, PRESETS, SkinParser, load_skin_parser, parse_skin)
from stages.train.skin_parser import OCCLUDER_KINDS, paste_occluder, paste_occluders


def _saved_parser(path, seed=0, bias=None):
    torch.manual_seed(seed)
    net = SkinParser(PRESETS["tiny"]).eval()
    if bias is not None:
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.fill_(bias)
    save_pretrained(path, {"parser": net}, {"parser": PRESETS["tiny"].to_dict()}, model_type=MODEL_TYPE)
    return net


def test_presets_shapes_and_size():
    x = torch.zeros(2, 5, 32, 32)
    assert SkinParser(PRESETS["tiny"])(x).shape == (2, 1, 32, 32)
    small = SkinParser(PRESETS["small"])
    assert sum(p.numel() for p in small.parameters()) * 4 < 2e6     # < 2 MB of float32 weights


def test_save_load_round_trip_and_photo_projection(tmp_path):
    net = _saved_parser(tmp_path / "p", seed=3)
    loaded = load_skin_parser(tmp_path / "p")
    x = torch.randn(1, 5, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x))
    # On a photo: the probability comes back at photo size, in [0, 1], 0 outside the face's crop.
    rgb = np.full((200, 300, 3), 120, np.uint8)
    landmarks = np.random.default_rng(0).uniform([130, 80, 0], [170, 120, 1], (478, 3))
    prob = parse_skin(loaded, rgb, landmarks)
    assert prob.shape == (200, 300) and 0 <= prob.min() and prob.max() <= 1
    assert prob[100, 150] > 0 and prob[10, 10] == 0 and prob[190, 290] == 0


def test_bad_model_folder_is_one_line_naming_the_file(tmp_path):
    _saved_parser(tmp_path / "p")
    weights = tmp_path / "p" / "weights.safetensors"
    weights.write_bytes(b"garbage")
    with pytest.raises(MissingArtifactError) as err:
        load_skin_parser(tmp_path / "p")
    assert "weights.safetensors" in str(err.value) and "\n" not in str(err.value)
    config = tmp_path / "p" / "config.json"
    data = json.loads(config.read_text())
    data["model_type"] = "detail_vae"
    config.write_text(json.dumps(data))
    with pytest.raises(MissingArtifactError, match="config.json.*model_type"):
        load_skin_parser(tmp_path / "p")


def test_fit_cli_bad_parser_folder_exits_with_one_line(tmp_path, astronaut_path):
    from typer.testing import CliRunner

    from facetex_cli.main import app

    (tmp_path / "p").mkdir()
    result = CliRunner().invoke(app, ["fit", str(astronaut_path), "-o", str(tmp_path / "out"), "--skin-parser",
                                      str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "config.json" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / astronaut_path.stem / "fit.json").exists()


def _grey_crop(size=96):
    crop = np.full((size, size, 3), 128.0, np.float32)
    yy, xx = np.indices((size, size))
    face = (yy - size / 2) ** 2 / 0.35 ** 2 + (xx - size / 2) ** 2 / 0.28 ** 2 < size ** 2
    crop[face] = (200.0, 150.0, 120.0)
    return crop, face


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_occluder_generator_labels_what_it_pastes(kind):
    crop, face = _grey_crop()
    for seed in range(6):
        out, alpha = paste_occluder(crop, face, kind, np.random.default_rng(seed))
        label = alpha > 0.5
        changed = np.abs(out - crop).max(axis=2) > 8
        assert label.sum() > 20, (kind, seed)
        # Everything it changed is labelled (but the anti-aliased rim, below half coverage).
        unlabelled = changed & ~cv2.dilate(label.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert unlabelled.sum() <= 0.02 * changed.sum() + 2, (kind, seed)
        if kind == "hand":  # re-toned to the face's own colour: close to the face's mean, not grey
            mean = out[label & face].mean(axis=0) if (label & face).any() else out[label].mean(axis=0)
            assert np.abs(mean / mean.sum() - np.array([200, 150, 120]) / 470).max() < 0.03, (seed, mean)
        else:
            assert changed[label].mean() > 0.6, (kind, seed)


def test_paste_occluders_label_is_their_union():
    crop, face = _grey_crop()
    for seed in range(10):
        out, label = paste_occluders(crop, face, np.random.default_rng(seed))
        changed = np.abs(out - crop).max(axis=2) > 8
        grown = cv2.dilate(label.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert (changed & ~grown).sum() <= 0.02 * changed.sum() + 2


def test_parser_caps_the_classical_mask(train_folders):
    from stages.fit import FitResult
    from stages.occlusion import segment_skin

    fit = FitResult.load(train_folders[0] / "fit.json")
    rgb = fit.load_fitted_photo(train_folders[0] / "fit.json")
    classical = segment_skin(rgb, fit.landmarks, parser=None).prob
    assert (classical > 0.5).mean() > 0.05
    rejecting = SkinParser(PRESETS["tiny"]).eval()
    with torch.no_grad():
        rejecting.head.weight.zero_()
        rejecting.head.bias.fill_(-20.0)   # "nothing is skin"
    capped = segment_skin(rgb, fit.landmarks, parser=rejecting)
    assert capped.prob.max() < 0.01 and capped.info["parser"] == "given"


@pytest.fixture(scope="module")
def trained(train_folders, tmp_path_factory):
    from stages.train.skin_parser import SkinParserTrainConfig, train_skin_parser

    out = tmp_path_factory.mktemp("parser") / "model"
    config = SkinParserTrainConfig(preset="tiny", steps=40, batch_size=4, lr=1e-2, log_every=1, sample_every=0,
                                   checkpoint_every=0)
    result = train_skin_parser(train_folders, out, config, device="cpu")
    return out, result


def test_tiny_preset_trains_with_falling_loss(trained):
    out, result = trained
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and result["steps"] == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), losses
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE and config["train"]["preset"] == "tiny"
    assert isinstance(load_skin_parser(out), SkinParser)


def test_train_parser_cli_is_registered():
    from typer.testing import CliRunner

    from facetex_cli.main import app

    result = CliRunner().invoke(app, ["train", "parser", "--help"])
    assert result.exit_code == 0 and "--w-occluder" in result.output and "--preset" in result.output


def test_fit_cli_uses_the_given_parser(tmp_path, astronaut_path):
    """`fit --skin-parser DIR`: the parser caps the mask (here one that calls nothing skin) and the
    folder is recorded in fit.json."""
    from typer.testing import CliRunner

    from facetex_cli.main import app
    from stages.occlusion import set_default_parser

    _saved_parser(tmp_path / "p", bias=-20.0)
    try:
        result = CliRunner().invoke(app, ["fit", str(astronaut_path), "-o", str(tmp_path / "out"),
                                          "--skin-parser", str(tmp_path / "p")])
    finally:
        set_default_parser(None)   # the CLI sets the process-wide default; later tests must not see it
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / astronaut_path.stem
    assert json.loads((folder / "fit.json").read_text())["quality"]["skin"]["parser"] == str(tmp_path / "p")
    assert cv2.imread(str(folder / "skin_mask.png"), cv2.IMREAD_UNCHANGED).max() <= 2
