"""The Makefile chains the stages: per-stage flags, settings stamps, incremental re-runs, the whole chain."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

# This checkout's code, whatever facetex is installed.
FACETEX = f"{sys.executable} -m facetex_cli.main"


def make(*args: str, dry: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    env.pop("MAKEFLAGS", None)
    cmd = ["make", "--no-print-directory", "-C", str(REPO), *(["-n"] if dry else []), f"FACETEX={FACETEX}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def stage_lines(stdout: str) -> dict[str, list[str]]:
    """The facetex command lines of a make run, by stage (``fit``, ``unwrap``, ``train``, ...)."""
    lines: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith(FACETEX + " "):
            rest = line[len(FACETEX) + 1:].split()
            stage = rest[1] if rest[0] == "train" else rest[0]
            lines.setdefault(stage, []).append(line)
    return lines


@pytest.fixture
def photos(astronaut_path, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(astronaut_path, folder / "astronaut.png")
    return folder


def test_dry_run_passes_each_setting_to_its_own_stage_only(photos, tmp_path):
    out = tmp_path / "out"
    flags = {"fit": "--max-side 2048", "unwrap": "--erosion 0.05", "complete": "--subdivide 0",
             "render": "--pitch 5"}
    proc = make("renders", f"PHOTOS={photos}", f"OUT={out}", "METHOD=pca", "UV_SIZE=384",
                *(f"{stage.upper()}_FLAGS={value}" for stage, value in flags.items()), dry=True)
    lines = stage_lines(proc.stdout)
    assert sorted(lines) == ["complete", "fit", "render", "unwrap"]
    for stage in flags:
        assert len(lines[stage]) == 1
        for other, other_value in flags.items():
            assert (other_value in lines[stage][0]) == (other == stage), (stage, other, lines[stage])
    assert "--method pca" in lines["complete"][0]
    assert "--uv-size 384" in lines["unwrap"][0] and "--uv-size 384" in lines["complete"][0]
    assert not out.exists(), "a dry run writes nothing"


def test_dry_run_of_the_chain_runs_every_stage_in_order(photos, tmp_path):
    out = tmp_path / "out"
    shutil.copy(photos / "astronaut.png", photos / "second.jpg")  # two photos, two extensions
    proc = make("chain", f"PHOTOS={photos}", f"OUT={out}", "TRAIN_FLAGS=--preset tiny --steps 3",
                "PCA_UV_SIZE=64", dry=True)
    lines = stage_lines(proc.stdout)
    order = [stage for stage in (line.split()[len(FACETEX.split())] for line in proc.stdout.splitlines()
                                 if line.startswith(FACETEX + " "))]
    assert order.index("pseudo-gt") < order.index("build-pca") < order.index("train")
    assert order.index("train") < order.index("complete") < order.index("render") < order.index("evaluate")
    for stage in ("fit", "unwrap", "pseudo-gt", "complete", "render"):
        assert len(lines[stage]) == 2, stage
    assert any("second.jpg" in line for line in lines["fit"])
    (train,) = lines["unet"]
    assert f"--data {out}/astronaut --data {out}/second" in train and "--preset tiny --steps 3" in train
    assert f"-o {out}/models/unet" in train
    assert all(f"--method unet --uv-size 512 --model {out}/models/unet" in line for line in lines["complete"])
    (pca,) = lines["build-pca"]
    assert f"-o {out}/albedo_pca.h5 --uv-size 64" in pca
    # METHOD= overrides the trained generator; pca then uses the PCA model the chain builds.
    lines = stage_lines(make("chain", f"PHOTOS={photos}", f"OUT={out}", "METHOD=pca", dry=True).stdout)
    assert all(f"--method pca --uv-size 512 --pca {out}/albedo_pca.h5" in line for line in lines["complete"])


def test_pipeline_is_incremental_and_reruns_what_a_changed_setting_touches(photos, tmp_path):
    """A tiny real `make pipeline`: a second make is a no-op, METHOD reruns only complete, UV_SIZE unwrap on."""
    out = tmp_path / "out"
    common = [f"PHOTOS={photos}", f"OUT={out}", "UV_SIZE=256", "COMPLETE_FLAGS=--no-glb --no-previews"]
    proc = make("pipeline", *common)
    assert sorted(stage_lines(proc.stdout)) == ["complete", "fit", "unwrap"]
    folder = out / "astronaut"
    result = json.loads((folder / "complete.json").read_text())
    assert result["method"] == "mirror" and result["unwrap"]["uv_size"] == 256
    from PIL import Image

    assert Image.open(folder / "uv_complete.png").size == (256, 256)

    def mtimes() -> dict[str, int]:
        return {name: (folder / name).stat().st_mtime_ns for name in ("fit.json", "unwrap.json", "complete.json")}

    before = mtimes()
    assert stage_lines(make("pipeline", *common).stdout) == {}
    assert mtimes() == before, "a second make recomputes nothing"

    proc = make("pipeline", *common, "METHOD=pca")
    assert sorted(stage_lines(proc.stdout)) == ["complete"]
    after = mtimes()
    assert after["fit.json"] == before["fit.json"] and after["unwrap.json"] == before["unwrap.json"]
    assert after["complete.json"] > before["complete.json"]
    assert json.loads((folder / "complete.json").read_text())["method"] == "pca"
    assert stage_lines(make("pipeline", *common, "METHOD=pca").stdout) == {}

    # A changed UV size recomputes unwrap and complete, not fit (dry run: nothing is written).
    proc = make("pipeline", *[c for c in common if not c.startswith("UV_SIZE")], "METHOD=pca", "UV_SIZE=320",
                dry=True)
    assert sorted(stage_lines(proc.stdout)) == ["complete", "unwrap"]
    assert re.search(r"unwrap .*--uv-size 320", proc.stdout)
    assert mtimes() == after


def test_pipeline_batch_runs_each_stage_once_over_what_is_out_of_date(photos, tmp_path):
    """`make pipeline-batch`: one facetex process per stage (with the worker pool) instead of one per photo per
    stage, the same staleness rules as `make pipeline`."""
    from PIL import Image, ImageOps

    ImageOps.mirror(Image.open(photos / "astronaut.png")).save(photos / "flipped.png")
    out = tmp_path / "out"
    common = [f"PHOTOS={photos}", f"OUT={out}", "UV_SIZE=256", "COMPLETE_FLAGS=--no-glb --no-previews", "WORKERS=1"]
    proc = make("pipeline-batch", *common[:-1], "WORKERS=2", dry=True)
    lines = stage_lines(proc.stdout)
    assert sorted(lines) == ["complete", "fit", "unwrap"] and all(len(v) == 1 for v in lines.values())
    assert f"fit {photos}/astronaut.png {photos}/flipped.png -o {out}" in lines["fit"][0]
    assert f"complete {out}/astronaut {out}/flipped -o {out} --method mirror --uv-size 256" in lines["complete"][0]
    assert all("--workers 2" in v[0] for v in lines.values())
    assert not out.exists(), "a dry run writes nothing"
    # (one process per stage here: the worker pool has its own tests, tests/test_batch_workers.py)

    proc = make("pipeline-batch", *common)
    assert sorted(stage_lines(proc.stdout)) == ["complete", "fit", "unwrap"]
    assert "pipeline-batch: 2 photos" in proc.stdout and not (out / ".batch").exists()
    for stem in ("astronaut", "flipped"):
        assert json.loads((out / stem / "complete.json").read_text())["unwrap"]["uv_size"] == 256
    assert stage_lines(make("pipeline-batch", *common).stdout) == {}, "a second make recomputes nothing"
    # The same rules as `make pipeline`: a changed method reruns complete only, of both photos, in one batch.
    lines = stage_lines(make("pipeline-batch", *common, "METHOD=pca").stdout)
    assert sorted(lines) == ["complete"] and f"{out}/astronaut {out}/flipped" in lines["complete"][0]
    assert json.loads((out / "flipped" / "complete.json").read_text())["method"] == "pca"
    assert stage_lines(make("pipeline", *common, "METHOD=pca").stdout) == {}


@pytest.mark.slow
def test_the_whole_chain_with_a_tiny_generator(photos, tmp_path):
    """photos -> fit -> unwrap -> pseudo-gt -> build-pca -> train -> complete (unet) -> render -> evaluate."""
    from PIL import Image, ImageOps

    ImageOps.mirror(Image.open(photos / "astronaut.png")).save(photos / "flipped.png")
    out = tmp_path / "out"
    common = [f"PHOTOS={photos}", f"OUT={out}", "UV_SIZE=256", "PCA_UV_SIZE=64",
              "BUILD_PCA_FLAGS=--components 1 --iterations 1",
              "TRAIN_FLAGS=--preset tiny --steps 2 --batch-size 2 --uv-size 64 --view-size 0 --sample-every 0 "
              "--checkpoint-every 0 --cpu",
              "COMPLETE_FLAGS=--no-glb --no-previews", "RENDER_FLAGS=--size 64 --yaws 0 --no-glb",
              "EVALUATE_FLAGS=--no-identity"]
    proc = make("chain", *common)
    assert sorted(stage_lines(proc.stdout)) == sorted(["fit", "unwrap", "pseudo-gt", "build-pca", "unet",
                                                       "complete", "render", "evaluate"])
    config = json.loads((out / "models" / "unet" / "config.json").read_text())
    assert config["steps"] == 2 and sorted(Path(d).name for d in config["data"]) == ["astronaut", "flipped"]
    for stem in ("astronaut", "flipped"):
        result = json.loads((out / stem / "complete.json").read_text())
        assert result["method"] == "unet"
        assert (out / stem / "turntable.gif").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    # evaluate reruns what made each folder: the trained generator, identified by its checksum.
    assert metrics["settings"]["hidden_texel"]["method"].startswith("the method recorded")
    for stem in ("astronaut", "flipped"):
        scored = metrics["per_image"][stem]["hidden_texel"]
        if scored is not None:  # only near-frontal photos get the hidden-texel test
            assert scored["method"] == "unet"
            assert Path(scored["model_files"]["model_path"]["path"]) == (out / "models" / "unet").resolve()
    assert (out / "albedo_pca.h5").is_file()
    assert stage_lines(make("chain", *common).stdout) == {}, "a second make recomputes nothing"
