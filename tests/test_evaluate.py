"""The hidden-texel protocol hides what it claims, scores what it claims; evaluate writes its outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stages.completion import Completion, CompletionMethod
from stages.evaluate.protocol import HIDDEN_VIEWS, hide_texels, run_hidden_texel_protocol
from stages.render import render_mesh
from stages.unwrap import unwrap_photo
from tests.conftest import smooth_random_texture
from tests.test_unwrap_render import synthetic_fit


@pytest.fixture(scope="module")
def frontal_case(model):
    size = 384
    fit = synthetic_fit(model, 0.0, size)
    texture = smooth_random_texture(256, seed=4)
    rgb, mask = render_mesh(texture, fit.screen_vertices(), model, size, size)
    photo = (np.where(mask[..., None], rgb, 0.5) * 255 + 0.5).astype(np.uint8)
    return fit, unwrap_photo(photo, fit, model=model, uv_size=256)


class Oracle(CompletionMethod):
    """Returns the frontal unwrap's texture: a perfect completion on every texel the photo saw."""

    name = "oracle"

    def __init__(self, model, reference):
        super().__init__(model)
        self.reference = reference

    def complete(self, unwrap):
        return Completion(texture=self.reference.copy(), provenance=np.zeros(unwrap.confidence.shape, np.uint8),
                          info={})


class Grey(CompletionMethod):
    name = "grey"

    def complete(self, unwrap):
        texture = np.where(unwrap.visible[..., None], unwrap.texture, 0.5).astype(np.float32)
        return Completion(texture=texture, provenance=np.zeros(unwrap.confidence.shape, np.uint8), info={})


@pytest.mark.parametrize("view", list(HIDDEN_VIEWS))
def test_hide_texels_partitions_the_seen_texels(model, frontal_case, view):
    fit, unwrap = frontal_case
    case = hide_texels(unwrap, fit, model, view, *HIDDEN_VIEWS[view])
    seen = unwrap.confidence > 0
    assert not (case.hidden & case.kept).any()
    assert np.array_equal(case.hidden | case.kept, seen)
    assert np.array_equal(case.partial.confidence > 0, case.kept)
    assert not case.partial.texture[case.hidden].any()
    assert case.hidden.sum() > 0.02 * seen.sum()


def test_hidden_texels_are_where_the_pose_turns_away(model, frontal_case):
    fit, unwrap = frontal_case
    cols = np.arange(unwrap.size)[None, :].repeat(unwrap.size, 0)
    rows = cols.T
    right = hide_texels(unwrap, fit, model, "yaw+50", 50.0, 0.0)
    # Positive yaw turns the +x cheek (u > 0.5, right half of the UV image) away from the camera.
    assert cols[right.hidden].mean() > cols[right.kept].mean() + 20
    left = hide_texels(unwrap, fit, model, "yaw-50", -50.0, 0.0)
    assert cols[left.hidden].mean() < cols[left.kept].mean() - 20
    down = hide_texels(unwrap, fit, model, "pitch+30", 0.0, 30.0)
    # Looking down hides the under-chin: low v, i.e. the bottom rows of the UV image.
    assert rows[down.hidden].mean() > rows[down.kept].mean()


def test_protocol_scores_only_hidden_texels(model, frontal_case):
    fit, unwrap = frontal_case
    perfect = run_hidden_texel_protocol(unwrap, fit, model, Oracle(model, unwrap.texture))
    assert perfect["hidden_l1"] == 0 and perfect["hidden_psnr"] == float("inf")
    assert perfect["hidden_seam"] == pytest.approx(0.0, abs=1e-12)
    grey = run_hidden_texel_protocol(unwrap, fit, model, Grey(model), views={"yaw+50": HIDDEN_VIEWS["yaw+50"]})
    case = hide_texels(unwrap, fit, model, "yaw+50", *HIDDEN_VIEWS["yaw+50"])
    expected = np.abs(unwrap.texture[case.hidden] - 0.5).mean()
    assert grey["hidden_l1"] == pytest.approx(expected, rel=1e-6)


def test_evaluate_cli_writes_metrics_and_report(astronaut_path, tmp_path):
    from tests.test_cli import run_facetex

    results = tmp_path / "results"
    assert run_facetex("complete", str(astronaut_path), "-o", str(results), "--no-glb").returncode == 0
    out = tmp_path / "eval"
    proc = run_facetex("evaluate", str(results), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "skipped clip_i:" in proc.stderr and "FACETEX_CLIP_MODEL" in proc.stderr
    data = json.loads((out / "metrics.json").read_text())
    metrics = data["per_image"]["astronaut"]["metrics"]
    for key in ("reproj_l1", "reproj_psnr", "reproj_ssim", "reproj_masked_psnr_inflated", "hidden_psnr",
                "hidden_ssim", "hidden_l1", "hidden_seam", "symmetry_l1"):
        assert isinstance(metrics[key], float), key
    assert metrics["reproj_psnr"] > 30      # the visible texels reproject almost exactly
    assert 10 < metrics["hidden_psnr"] < metrics["reproj_psnr"]
    assert set(data["skipped"]) >= {"clip_i", "dino_i", "fid", "lpips", "identity_cos"}
    assert data["aggregate"]["hidden_psnr"]["count"] == 1
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("stem,") and csv_lines[1].startswith("astronaut,")
    html = (out / "report.html").read_text()
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) >= 8
    assert all((out / s).is_file() for s in sources)
    assert "identity model not installed" in html


def test_evaluate_uses_user_supplied_torchscript_models(astronaut_path, tmp_path, monkeypatch):
    """Feature metrics run when TorchScript weight files are given (tiny stand-ins here)."""
    import torch

    class Embed(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    class Distance(torch.nn.Module):
        def forward(self, a, b):
            return ((a - b) ** 2).mean(dim=(1, 2, 3))

    embed_path = tmp_path / "embed.pt"
    torch.jit.script(Embed()).save(str(embed_path))
    lpips_path = tmp_path / "lpips.pt"
    torch.jit.script(Distance()).save(str(lpips_path))
    from tests.test_cli import run_facetex

    results = tmp_path / "results"
    assert run_facetex("complete", str(astronaut_path), "-o", str(results), "--no-glb", "--no-previews").returncode == 0
    out = tmp_path / "eval"
    proc = run_facetex("evaluate", str(results), "-o", str(out), "--method", "none", "--clip-model", str(embed_path),
                       "--dino-model", str(embed_path), "--lpips-model", str(lpips_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "metrics.json").read_text())
    metrics = data["per_image"]["astronaut"]["metrics"]
    assert 0.9 < metrics["clip_i"] <= 1.0 + 1e-9 and 0.9 < metrics["dino_i"] <= 1.0 + 1e-9
    assert 0 <= metrics["lpips"] < 0.1
    assert "hidden_psnr" not in metrics
    assert data["models"]["clip"]["sha256"] == __import__("hashlib").sha256(embed_path.read_bytes()).hexdigest()
    assert "fid" in data["skipped"] and "clip_i" not in data["skipped"]
    assert Path(out / "report.html").is_file()
