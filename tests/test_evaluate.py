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


@pytest.fixture(scope="module")
def pca_result(astronaut_path, tmp_path_factory):
    """A `complete --method pca` result folder of the astronaut, made in-process."""
    from stages.complete import CompleteOptions, Completer

    out = tmp_path_factory.mktemp("pca_results")
    Completer(CompleteOptions(method="pca", glb=False, previews=False)).run(astronaut_path, out)
    return out


@pytest.fixture(scope="module")
def mirror_result(astronaut_path, tmp_path_factory):
    """A `complete` (mirror) result folder of the astronaut, made in-process with the default skin mask
    (reprojection scores the skin the mask keeps, so the fringe it rejects does not count)."""
    from stages.complete import CompleteOptions, Completer

    out = tmp_path_factory.mktemp("mirror_results")
    Completer(CompleteOptions(glb=False)).run(astronaut_path, out)
    return out


def _evaluate(*args: str):
    from typer.testing import CliRunner

    from facetex_cli.main import app

    return CliRunner().invoke(app, ["evaluate", *args])


def test_evaluate_cli_writes_metrics_and_report(mirror_result, tmp_path):
    from PIL import Image

    out = tmp_path / "eval"
    result = _evaluate(str(mirror_result), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped clip_i:" in result.output and "FACETEX_CLIP_MODEL" in result.output
    data = json.loads((out / "metrics.json").read_text())
    metrics = data["per_image"]["astronaut"]["metrics"]
    assert metrics["reproj_psnr"] > 30      # the visible texels reproject almost exactly
    assert 10 < metrics["hidden_psnr"] < metrics["reproj_psnr"]
    assert 0 < metrics["reproj_l1"] < 0.05 and 0 < metrics["hidden_l1"] < 0.2
    assert 0.5 < metrics["reproj_ssim"] <= 1 and 0 < metrics["hidden_ssim"] < metrics["reproj_ssim"]
    # The masked variant adds the unmasked part of the window as zero error: never below the plain PSNR.
    assert metrics["reproj_masked_psnr_inflated"] >= metrics["reproj_psnr"]
    assert 0 <= metrics["hidden_seam"] < 0.2 and 0 < metrics["symmetry_l1"] < 0.2
    assert set(data["skipped"]) >= {"clip_i", "dino_i", "fid", "lpips", "identity_cos"}
    assert data["aggregate"]["hidden_psnr"]["count"] == 1
    assert data["aggregate"]["hidden_psnr"]["mean"] == pytest.approx(metrics["hidden_psnr"])
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    header, row = csv_lines[0].split(","), csv_lines[1].split(",")
    assert header[0] == "stem" and row[0] == "astronaut"
    assert float(row[header.index("hidden_psnr")]) == pytest.approx(metrics["hidden_psnr"], rel=1e-4)
    html = (out / "report.html").read_text()
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) >= 5
    for source in sources:   # every picture the report shows is there and is a picture, not a blank
        pixels = np.asarray(Image.open(out / source).convert("RGB")).astype(float)
        assert min(pixels.shape[:2]) >= 32 and pixels.std() > 5, source
    assert "identity model not installed" in html


def test_evaluate_uses_user_supplied_torchscript_models(pca_result, tmp_path):
    """Feature metrics run when TorchScript weight files are given (tiny stand-ins here)."""
    import hashlib

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
    out = tmp_path / "eval"
    result = _evaluate(str(pca_result), "-o", str(out), "--method", "none", "--clip-model", str(embed_path),
                       "--dino-model", str(embed_path), "--lpips-model", str(lpips_path))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "metrics.json").read_text())
    metrics = data["per_image"]["astronaut"]["metrics"]
    assert 0.9 < metrics["clip_i"] <= 1.0 + 1e-9 and 0.9 < metrics["dino_i"] <= 1.0 + 1e-9
    assert 0 < metrics["lpips"] < 0.1
    assert "hidden_psnr" not in metrics
    assert data["models"]["clip"]["sha256"] == hashlib.sha256(embed_path.read_bytes()).hexdigest()
    assert "fid" in data["skipped"] and "clip_i" not in data["skipped"]
    html = (out / "report.html").read_text()
    from stages.evaluate.report import format_value

    assert "clip_i" in html and f'<td class="num">{format_value(metrics["clip_i"])}</td>' in html


# --------------------------------------------------------------------------------------------
# which method the hidden-texel test scores (issue 10)


def _record(folder: Path, method: str, completion: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "complete.json").write_text(json.dumps({"method": method,
                                                      "completion": {"method": method, **(completion or {})}}))
    return folder


def test_resolver_uses_the_recorded_method_and_verifies_its_model_file(model, tmp_path):
    import shutil

    from stages.completion.mirror import MirrorFill
    from stages.completion.pca import BUILTIN_PCA, PCAFill
    from stages.core.errors import MissingArtifactError
    from stages.evaluate.metrics import file_sha256
    from stages.evaluate.stage import MODEL_FILES_KEY, MethodResolver, describe_method

    pca_file = tmp_path / "my_pca.h5"
    shutil.copy(BUILTIN_PCA, pca_file)
    sha = file_sha256(pca_file)
    resolver = MethodResolver(model)
    scored = resolver.resolve(_record(tmp_path / "a", "pca", {MODEL_FILES_KEY: {
        "pca_path": {"path": str(pca_file), "sha256": sha}}}))
    assert isinstance(scored.method, PCAFill) and not isinstance(scored.method, MirrorFill)
    assert scored.description["method"] == "pca" and scored.description["source"] == "complete.json"
    assert scored.description["model_files"] == {"pca_path": {"path": str(pca_file), "sha256": sha}}
    assert f"sha256 {sha[:12]}" in describe_method(scored.description) and str(pca_file) in describe_method(
        scored.description)
    # Same method and file: built once for the whole run.
    assert resolver.resolve(_record(tmp_path / "b", "pca", {MODEL_FILES_KEY: {
        "pca_path": {"path": str(pca_file), "sha256": sha}}})).method is scored.method

    # A changed or missing model file fails that folder in one line; nothing else is scored instead.
    changed = _record(tmp_path / "c", "pca", {MODEL_FILES_KEY: {"pca_path": {"path": str(pca_file),
                                                                            "sha256": "0" * 64}}})
    with pytest.raises(MissingArtifactError, match=f"sha256 000000000000, but that file now has {sha[:12]}") as err:
        resolver.resolve(changed)
    assert "\n" not in str(err.value) and str(changed / "complete.json") in str(err.value)
    gone = _record(tmp_path / "d", "blend", {MODEL_FILES_KEY: {"pca_path": {"path": str(tmp_path / "gone.h5"),
                                                                           "sha256": sha}}})
    with pytest.raises(MissingArtifactError, match="gone.h5 .pca_path., which no longer exists"):
        resolver.resolve(gone)
    with pytest.raises(MissingArtifactError, match="records method 'nope', which this facetex does not have"):
        resolver.resolve(_record(tmp_path / "e", "nope"))
    with pytest.raises(MissingArtifactError, match="complete.json: missing"):
        resolver.resolve(tmp_path / "f")

    # Not recorded (older results): the default model, and the description says so.
    legacy = resolver.resolve(_record(tmp_path / "g", "pca"))
    assert isinstance(legacy.method, PCAFill) and "does not record the model file" in legacy.description["note"]
    assert isinstance(resolver.resolve(_record(tmp_path / "h", "mirror")).method, MirrorFill)


def test_resolver_override_says_what_made_the_folder(model, tmp_path):
    from stages.completion.mirror import MirrorFill
    from stages.evaluate.stage import MethodResolver, describe_method

    scored = MethodResolver(model, override="mirror").resolve(_record(tmp_path / "a", "pca"))
    assert isinstance(scored.method, MirrorFill)
    assert scored.description["source"] == "--method override" and scored.description["made_by"] == "pca"
    assert describe_method(scored.description) == "mirror (--method override; folder made by pca)"


def test_evaluate_scores_the_recorded_method_and_says_so(pca_result, tmp_path):
    out = tmp_path / "recorded"
    result = _evaluate(str(pca_result), "-o", str(out), "--no-identity")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "metrics.json").read_text())
    image = data["per_image"]["astronaut"]
    assert image["hidden_texel"]["method"] == "pca" and image["hidden_texel"]["source"] == "complete.json"
    assert data["settings"]["hidden_texel"]["images_per_method"] == {"pca": 1}
    # settings, counts and what is aggregated
    assert data["settings"]["uv_size"] == 512 and type(data["settings"]["uv_size"]) is int
    assert all(type(stats["count"]) is int for stats in data["aggregate"].values())
    assert {"yaw", "pitch", "roll", "coverage", "seconds_per_fill"} <= set(image["descriptive"])
    assert not {"yaw", "pitch", "roll", "coverage", "seconds_per_fill"} & set(data["aggregate"])
    assert not any(k.startswith("hidden_fraction") for k in data["aggregate"])
    assert {"hidden_psnr", "hidden_l1", "reproj_psnr"} <= set(data["aggregate"])
    assert (out / "metrics.csv").read_text().splitlines()[1].startswith("astronaut,pca,")
    html = (out / "report.html").read_text()
    assert "hidden-texel method" in html and "pca (complete.json)" in html
    # The report pictures one view of the hidden-texel test, with the colour bar's range in its caption.
    view = image["hidden_texel"]["example_view"]
    assert view in HIDDEN_VIEWS and f"{view}: per-texel L1 on hidden texels, colour bar 0 to 0.25" in html
    assert "error heat map" not in html
    for name in ("hidden_view", "hidden_completed", "hidden_photo", "hidden_error"):
        assert f"astronaut__{name}.jpg" in html and (out / "report_files" / f"astronaut__{name}.jpg").is_file()

    # --method mirror overrides it, and metrics.json and the report say so and what made the folder.
    over = tmp_path / "override"
    result = _evaluate(str(pca_result), "-o", str(over), "--no-identity", "--method", "mirror")
    assert result.exit_code == 0, result.output
    other = json.loads((over / "metrics.json").read_text())["per_image"]["astronaut"]
    assert other["hidden_texel"]["method"] == "mirror" and other["hidden_texel"]["made_by"] == "pca"
    assert other["hidden_texel"]["source"] == "--method override"
    assert "mirror (--method override; folder made by pca)" in (over / "report.html").read_text()
    assert other["metrics"]["hidden_psnr"] != pytest.approx(image["metrics"]["hidden_psnr"], abs=0.05)


def test_evaluate_on_a_folder_without_results_says_what_is_wrong(tmp_path):
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "face.jpg").write_bytes(b"not used")
    result = _evaluate(str(empty), str(empty / "face.jpg"), str(tmp_path / "absent"), "-o", str(tmp_path / "e"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"{empty}: exists but holds no `facetex complete` results (no complete.json" in text
    assert "facetex complete PHOTOS -o OUT" in text
    assert f"{empty / 'face.jpg'}: is a file, not a `facetex complete` result folder" in text
    assert f"{tmp_path / 'absent'}: no such file" in text
    assert f"{empty}: no such file" not in text
    assert not (tmp_path / "e" / "metrics.json").exists()


# --------------------------------------------------------------------------------------------
# the hidden-texel pictures


def test_hidden_error_picture_colours_known_errors_and_has_a_colour_bar():
    import matplotlib

    from stages.evaluate.protocol import HiddenTexelCase
    from stages.evaluate.stage import HEATMAP_MAX_ERROR, hidden_error_map, hidden_texel_pictures

    size = 64
    layout = np.zeros((size, size), bool)
    layout[8:56, 8:56] = True
    hidden = np.zeros_like(layout)
    hidden[20:40, 32:50] = True
    kept = layout & ~hidden
    reference = np.full((size, size, 3), 0.4, np.float32)
    completed = reference.copy()
    completed[25, 35] += 0.125                    # half the scale
    completed[30, 40] += np.array([0.5, 0.0, 0.0])  # mean over RGB 0.1667
    completed[35, 45] -= 0.4                      # 0.4: beyond the scale, top colour
    completed[25, 20] += 0.3                      # a kept texel: not under test
    case = HiddenTexelCase(view="v", partial=None, hidden=hidden, kept=kept)
    error = hidden_error_map(completed, reference, hidden)
    assert np.isnan(error[25, 20]) and error[20, 32] == 0 and error[30, 40] == pytest.approx(0.5 / 3, abs=1e-6)
    assert np.nanmean(error) == pytest.approx(np.abs(completed - reference)[hidden].mean())  # = hidden_l1

    pictures = hidden_texel_pictures(case, completed, reference, layout)
    heat = pictures["hidden_error"]
    assert heat.dtype == np.uint8 and heat.shape[1] == size and heat.shape[0] > size

    def cmap(x):
        return np.round(np.asarray(matplotlib.colormaps["viridis"](x)[:3]) * 255)

    for (r, c), value in {(20, 32): 0.0, (25, 35): 0.125, (30, 40): 0.5 / 3, (35, 45): 0.4}.items():
        np.testing.assert_allclose(heat[r, c], cmap(min(value / HEATMAP_MAX_ERROR, 1.0)), atol=1.5)
    assert np.ptp(heat[25, 20]) == 0  # the kept texel is a grey backdrop, whatever its error
    # The colour bar below the map runs from the colour of 0 (left) to that of the scale's top (right).
    bar = heat[size:].astype(int)
    rows = [r for r in range(bar.shape[0]) if np.abs(bar[r] - cmap(0.0)).max(axis=1).min() <= 3
            and np.abs(bar[r] - cmap(1.0)).max(axis=1).min() <= 3]
    assert rows, "no colour-bar row"
    row = bar[rows[len(rows) // 2]]
    left = np.abs(row - cmap(0.0)).max(axis=1).argmin()
    right = np.abs(row - cmap(1.0)).max(axis=1).argmin()
    assert left < size // 4 and right > 3 * size // 4
    assert (bar < 60).all(axis=2).sum() > 10  # dark title and tick labels on the white strip
    # The other pictures: hidden texels magenta in the view, true and completed colours side by side.
    assert pictures["hidden_view"][30, 40, 1] < pictures["hidden_view"][30, 40, 0]
    np.testing.assert_allclose(pictures["hidden_completed"][30, 40], completed[30, 40])
    np.testing.assert_allclose(pictures["hidden_photo"][30, 40], reference[30, 40])
