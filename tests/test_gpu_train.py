"""scripts/gpu_train.py: every learned model trained, exported and benchmarked in one process (tiny
presets on CPU: the CI test of the GPU command), and the runner's time limit it relies on."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_train  # noqa: E402


def synthetic_pack(model, root: Path) -> Path:
    """A pack as ``gpu_train.py --pack`` writes it, from rendered faces (no landmark detector): London-named
    training photos (3 people, TRAIN split) and 2 near-frontal benchmark photos, each a JPEG with the
    ``fit.json`` of the known pose and nothing else: the unwraps and pseudo-GT are left to gpu_train."""
    from stages.core.image_io import load_photo, save_png
    from stages.render import render_mesh
    from tests.conftest import smooth_random_texture
    from tests.test_unwrap_render import synthetic_fit

    size = 256
    jobs = [("train", f"{n:03d}_03", yaw) for n, yaw in ((1, 0.0), (2, 20.0), (3, -25.0))]
    jobs += [("bench/synthetic", f"b{k}", yaw) for k, yaw in enumerate((0.0, 8.0))]
    for k, (where, stem, yaw) in enumerate(jobs):
        fit = synthetic_fit(model, yaw, size)
        rgb, mask = render_mesh(smooth_random_texture(256, seed=k), fit.screen_vertices(), model, size, size)
        folder = root / where / stem
        path = folder / f"{stem}.jpg"
        save_png(folder / "render.png", np.where(mask[..., None], rgb, 0.5))
        from PIL import Image

        Image.open(folder / "render.png").convert("RGB").save(path, quality=95)
        (folder / "render.png").unlink()
        photo = load_photo(path)
        light = np.zeros((9, 3), np.float32)
        light[0] = 1.0    # plain ambient light: the texture GAN relights with the fit's SH
        dataclasses.replace(fit, source=str(path), stem=stem, source_sha256=photo.sha256,
                            lighting=light).save(folder / "fit.json")
    (root / "pack.json").write_text(json.dumps({"source": "synthetic"}))
    return root


def test_parse_budget():
    assert gpu_train.parse_budget("8m") == 480
    assert gpu_train.parse_budget("90") == 90
    assert gpu_train.parse_budget("1.5h") == 5400
    for bad in ("8 minutes", "0", "-3m", ""):
        with pytest.raises(gpu_train.GpuTrainError):
            gpu_train.parse_budget(bad)


def test_missing_data_is_one_line(tmp_path, capsys):
    code = gpu_train.main(["--budget", "1m", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "nope"),
                           "--presets", "tiny"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error {tmp_path / 'nope'}: data not found") and "\n" not in err


def test_registry_rows_are_complete():
    """Every row names an importable trainer, config, loader and tiny + gpu settings the config accepts."""
    names = [e.name for e in gpu_train.REGISTRY]
    assert len(set(names)) == len(names)
    for entry in gpu_train.REGISTRY:
        assert entry.share > 0
        gpu_train._symbol(entry.train), gpu_train._symbol(entry.load)
        config = gpu_train._symbol(entry.config)
        for kind in ("tiny", "gpu"):
            settings = {**entry.presets[kind], **{k: "base-folder" for k in entry.needs}}
            config(**settings, time_limit=1.0)
        assert all(other in names[:names.index(entry.name)] for other in entry.needs.values())


def test_time_limit_stops_training_and_still_writes_the_model(model, train_folders, tmp_path):
    """A run whose time limit passes during its data loading makes no step, yet runs every phase's start
    (the diffusion autoencoder's latent scaling) and writes a folder that loads."""
    from stages.models.diffusion import load_modules, read_meta
    from stages.train.diffusion import train_diffusion
    from stages.train.diffusion_config import DiffusionTrainConfig

    config = DiffusionTrainConfig(kind="appearance", preset="tiny", vae_steps=50, steps=50, batch_size=2,
                                  sample_every=0, time_limit=1e-6)
    result = train_diffusion(train_folders, tmp_path / "app", config, model=model, device="cpu")
    assert result["steps"] == 0 and result["vae_steps"] == 0
    meta = read_meta(tmp_path / "app", "appearance")
    assert math.isfinite(meta["scaling_factor"]) and meta["scaling_factor"] > 0
    load_modules(tmp_path / "app", kind="appearance")
    # Without a limit the same run takes its steps.
    config = dataclasses.replace(config, vae_steps=1, steps=2, time_limit=0.0)
    assert train_diffusion(train_folders, tmp_path / "app2", config, model=model, device="cpu")["steps"] == 2


@pytest.mark.slow
def test_tiny_run_trains_exports_and_benchmarks_every_model(model, tmp_path):
    import tarfile

    data = synthetic_pack(model, tmp_path / "pack")
    with tarfile.open(tmp_path / "pack.tgz", "w:gz") as tar:     # what travels: the .tgz --pack writes
        tar.add(data, arcname="pack")
    out = tmp_path / "out"
    code = gpu_train.main(["--budget", "10m", "--out", str(out), "--data", str(tmp_path / "pack.tgz"),
                           "--presets", "tiny",
                           "--sets", "synthetic", "--methods", "mirror", "unet", "diffusion", "--bench-uv", "256",
                           "--bring-back", str(tmp_path / "back"), "--bring-back-mib", "0.05"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {e.name for e in gpu_train.REGISTRY}
    for entry in gpu_train.REGISTRY:
        record = summary["models"][entry.name]
        assert "error" not in record, record
        assert record["steps"] == entry.presets["tiny"]["steps"] and record["loads"] is True
        assert record["losses"] and all(math.isfinite(v) for v in record["losses"].values())
        folder = out / "models" / entry.name
        assert (folder / entry.weights).is_file() and not (folder / "training_state").exists()
        assert "London Set's TRAINING people only" in (folder / "README.md").read_text()
    # Training folders were unwrapped from the pack's fits (no landmark detector), at UV 256.
    assert summary["run"]["train_folders"] == 3
    unpacked = out / "data" / "pack" / "pack"
    assert json.loads((unpacked / "train" / "001_03" / "unwrap.json").read_text())["uv_size"] == 256
    bench = summary["benchmark"]["synthetic"]
    assert bench["scored"] == 2
    for label in ("mirror", "unet", "unet (new)", "diffusion (new)", "diffusion (new, from blend)"):
        assert math.isfinite(bench["methods"][label]["hidden_psnr"]), label
    # each row scored on its own (results are cached per label and weights)
    assert bench["methods"]["diffusion (new, from blend)"] != bench["methods"]["diffusion (new)"]
    assert "diffusion" not in bench["methods"]   # no default diffusion weights: skipped, said on stderr
    assert "| unet (new) |" in (out / "summary.md").read_text()
    # What a device machine returns: the summary and the models that fit the cap, as tar parts.
    back = summary["bring_back"]
    assert back["archived"] and back["left_out"]
    assert set(back["archived"]) | set(back["left_out"]) == set(summary["models"])
    import tarfile
    whole = tmp_path / "whole.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in sorted((tmp_path / "back").glob("models.tar.*"))))
    with tarfile.open(whole) as tar:
        assert {n.split("/")[1] for n in tar.getnames() if n.count("/") >= 1} == set(back["archived"])
    assert json.loads((tmp_path / "back" / "summary.json").read_text())["bring_back"] == back
