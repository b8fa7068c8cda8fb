"""Layout-bound completion methods on the ICT head (stages/completion/via_builtin.py): run on the built-in
layout, moved into ICT's face region by the UV transfer, the rest of the head from mirror's head prior."""

from __future__ import annotations

import numpy as np
import pytest

from stages.completion import MIRRORED, MODEL, OUTSIDE, VISIBLE, get_method
from stages.core.face_model import load_builtin_face_model
from stages.core.ict import load_face_model

SIZE = 256


@pytest.fixture(scope="module")
def ict():
    return load_face_model("ict")


@pytest.fixture(scope="module")
def astronaut_ict(ict, landmarker, astronaut_path):
    """``(photo rgb, ICT fit, ICT unwrap at SIZE)`` of the astronaut."""
    from stages.core.image_io import load_photo
    from stages.fit import fit_photo
    from stages.unwrap import unwrap_photo

    photo = load_photo(astronaut_path)
    fit = fit_photo(photo, landmarker, model=ict)[0]
    return photo.rgb, fit, unwrap_photo(photo, fit, model=ict, uv_size=SIZE)


@pytest.fixture(scope="module")
def pca_on_ict(ict, astronaut_ict):
    rgb, fit, unwrap = astronaut_ict
    method = get_method("pca").load(ict)
    return method, method.complete_fitted(unwrap, fit, rgb)


def test_the_unwrap_moves_to_the_builtin_layout(ict, astronaut_ict, pca_on_ict, landmarker, astronaut_path):
    """The wrapped method sees the ICT unwrap in the built-in layout: seen where ICT saw the same point,
    about as much of the face as the built-in model's own unwrap of the photo, in the same colours."""
    from stages.core.image_io import load_photo
    from stages.fit import fit_photo
    from stages.unwrap import unwrap_photo

    rgb, fit, unwrap = astronaut_ict
    method, _ = pca_on_ict
    moved, moved_fit, _ = method.on_builtin(unwrap, fit, rgb)
    builtin = load_builtin_face_model()
    assert moved_fit.model_id == builtin.name and moved.info["model_id"] == builtin.name
    photo = load_photo(astronaut_path)
    own = unwrap_photo(photo, fit_photo(photo, landmarker)[0], uv_size=SIZE)
    assert abs(moved.info["coverage"] - own.info["coverage"]) < 0.12
    both = moved.visible & own.visible
    assert both.sum() > 0.6 * own.visible.sum()
    assert np.median(np.abs(moved.texture[both] - own.texture[both])) < 0.03


def test_pca_fills_the_face_region_and_mirror_the_head(ict, astronaut_ict, pca_on_ict):
    """Deep in the face region every texel is the built-in layout's pca fill moved by transfer_texture;
    off it, mirror's completion of the ICT unwrap (seen, mirrored, head prior) unchanged; provenance follows."""
    from stages.completion.via_builtin import feather_weight
    from stages.transfer import transfer_texture

    rgb, fit, unwrap = astronaut_ict
    method, done = pca_on_ict
    _, _, inner = method.on_builtin(unwrap, fit, rgb)
    moved = transfer_texture(inner.texture, fit, load_builtin_face_model(), ict)
    region = moved.found & unwrap.layout_mask
    assert 0.2 < region.sum() / unwrap.layout_mask.sum() < 0.35      # the face part of tile 1001
    weight = feather_weight(unwrap.position, region, unwrap.layout_mask)
    deep, off = weight == 1.0, unwrap.layout_mask & ~region
    assert deep.sum() > 0.6 * region.sum()
    assert np.abs(done.texture[deep] - moved.texture[deep, :3]).max() < 1e-5
    head = get_method("mirror").load(ict).complete_fitted(unwrap, fit, rgb)
    assert np.abs(done.texture[off] - head.texture[off]).max() < 1e-5
    # pca keeps no photo texel: the face region is all model; the head keeps mirror's codes.
    assert (done.provenance[weight >= 0.5] == MODEL).all()
    assert np.array_equal(done.provenance[off], head.provenance[off])
    assert (done.provenance[off] == VISIBLE).any() and (done.provenance[off] == MIRRORED).any()
    assert (done.provenance[~unwrap.layout_mask] == OUTSIDE).all()
    assert done.info["method"] == "pca" and done.info["via_layout"]["layout"] == load_builtin_face_model().name
    assert done.info["model_files"]["pca_path"]["sha256"]


def test_no_seam_at_the_face_region_border(ict, astronaut_ict, pca_on_ict):
    """Across the border of the face region the colour steps no more than mirror's head alone does there
    (whose photo texels have steps of their own) plus a little, and no more than inside the face: the
    cross-fade hides the pca fill's difference from the head prior (a hard paste steps up to ~0.2 more)."""
    from stages.transfer import texel_map

    rgb, fit, unwrap = astronaut_ict
    _, done = pca_on_ict
    head = get_method("mirror").load(ict).complete_fitted(unwrap, fit, rgb).texture
    region = texel_map(fit, load_builtin_face_model(), ict, SIZE).found
    layout = unwrap.layout_mask

    def steps(tex, inside_a, inside_b):
        """Colour steps between layout texels and their right / lower neighbours, where the pair qualifies."""
        out = []
        for a, b in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                     ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
            pair = layout[a] & layout[b] & (region[a] == inside_a) & (region[b] == inside_b)
            # Neighbours on the surface too (not two rims of an eye or mouth opening, 0.2 units apart).
            pair &= np.linalg.norm(unwrap.position[a] - unwrap.position[b], axis=-1) < 0.1
            out.append(np.abs(tex[a] - tex[b]).max(-1)[pair])
        return np.concatenate(out)

    def border(tex):
        return np.concatenate([steps(tex, True, False), steps(tex, False, True)])

    assert border(done.texture).size > 100
    excess = border(done.texture) - border(head)
    assert excess.max() < 0.05
    assert np.percentile(border(done.texture), 99) < max(0.03, np.percentile(steps(done.texture, True, True), 99))


def test_layout_bound_method_without_a_fit_says_so(ict, astronaut_ict):
    from stages.core.errors import FacetexError

    _, _, unwrap = astronaut_ict
    with pytest.raises(FacetexError, match="needs the fit") as exc:
        get_method("pca").load(ict).complete(unwrap)
    assert "\n" not in str(exc.value)


def test_cli_pca_on_ict_records_and_evaluates(astronaut_path, tmp_path):
    """`complete --method pca --face-model ict` writes the head; complete.json says how; `evaluate`
    rebuilds the same wrapped method for its hidden-texel test."""
    import json

    from typer.testing import CliRunner

    from facetex_cli.main import app

    runner = CliRunner()
    out = tmp_path / "out"
    done = runner.invoke(app, ["complete", str(astronaut_path), "--face-model", "ict", "--method", "pca",
                               "--uv-size", str(SIZE), "--no-previews", "-o", str(out)])
    assert done.exit_code == 0, done.output
    record = json.loads((out / "astronaut" / "complete.json").read_text())
    assert record["method"] == "pca" and record["completion"]["via_layout"]["layout"] == "mediapipe471-v2"
    assert 0.2 < record["completion"]["via_layout"]["face_share"] < 0.35
    scored = runner.invoke(app, ["evaluate", str(out), "--no-identity", "-o", str(tmp_path / "eval")])
    assert scored.exit_code == 0, scored.output
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["per_image"]["astronaut"]["hidden_texel"]["method"] == "pca"
    assert 10 < report["per_image"]["astronaut"]["metrics"]["hidden_psnr"] < 40
