"""The completion registry and the mirror/Poisson baseline."""

from __future__ import annotations

import numpy as np
import pytest

from stages.completion import MIRRORED, MODEL, VISIBLE, available_methods, get_method
from stages.core.uv import uv_layout
from stages.unwrap import UnwrapResult


def make_unwrap(texture: np.ndarray, confidence: np.ndarray, layout_mask: np.ndarray) -> UnwrapResult:
    size = texture.shape[0]
    return UnwrapResult(texture=np.where(confidence[..., None] > 0, texture, 0).astype(np.float32),
                        confidence=confidence.astype(np.float32), position=np.zeros((size, size, 3), np.float32),
                        layout_mask=layout_mask, stem="t", info={})


def symmetric_texture(size: int) -> np.ndarray:
    """A texture symmetric under u -> 1 - u (column flip), with detail."""
    rng = np.random.default_rng(3)
    half = rng.uniform(0, 1, (size, size // 2, 3)).astype(np.float32)
    return np.concatenate([half, half[:, ::-1]], axis=1)


def test_registry_lists_mirror():
    methods = available_methods()
    assert "mirror" in methods
    assert get_method("mirror").name == "mirror"
    with pytest.raises(KeyError, match="unknown completion method"):
        get_method("does-not-exist")


def test_method_table_names_each_class_where_it_lives():
    """METHODS (what the CLI lists without importing) and the registered classes agree: each name's module
    registers a class of that name, and a class cannot register a name the table does not list."""
    from stages.completion import METHODS, CompletionMethod, method_names, register_method

    assert method_names() == tuple(sorted(METHODS)) and {"mirror", "telea", "unet", "uvapm"} <= set(METHODS)
    for name, cls in available_methods().items():
        assert cls.name == name and cls.__module__ == METHODS[name].module and METHODS[name].description

    class Stray(CompletionMethod):
        name = "stray"

    with pytest.raises(ValueError, match="METHODS does not list"):
        register_method(Stray)


@pytest.mark.parametrize("solve_size", [None, 64])
def test_mirror_fill_is_exact_on_symmetric_texture(model, solve_size):
    """With the left half hidden and the right half visible, a symmetric texture comes back.

    Exactly with the exact solve; with the coarse solve (the default path) up to small errors at
    region borders, where a coarse cell mixes visible and mirrored texels of a white-noise texture.
    """
    size = 256
    layout = uv_layout(model, size)
    texture = symmetric_texture(size)
    confidence = np.zeros((size, size), np.float32)
    confidence[:, size // 2:] = 0.9
    confidence[~layout.mask] = 0
    method = get_method("mirror").load(model, solve_size=solve_size)
    result = method.complete(make_unwrap(texture, confidence, layout.mask))
    mirrored = result.provenance == MIRRORED
    assert mirrored.sum() > 0.3 * layout.mask.sum()
    error = np.abs(result.texture[mirrored] - texture[mirrored])
    if solve_size is None:
        assert error.max() < 1e-4
    else:
        assert error.mean() < 0.01 and np.percentile(error, 95) < 0.05
    visible = result.provenance == VISIBLE
    assert np.abs(result.texture[visible] - texture[visible]).max() < 1e-6


def test_mirror_fill_blends_lighting_difference(model):
    """If the visible side is brighter than the mirrored data, the fill follows the visible side at the seam."""
    size = 256
    layout = uv_layout(model, size)
    base = np.full((size, size, 3), 0.5, np.float32)
    texture = base.copy()
    texture[:, : size // 2 + 20] = 0.5      # the side that stays visible
    confidence = np.zeros((size, size), np.float32)
    confidence[:, : size // 2 + 20] = 0.9   # visible: left half plus a strip across the midline
    confidence[:, size - 60:] = 0.1         # a weakly seen strip on the right, darker in the photo
    texture[:, size - 60:] = 0.3
    confidence[~layout.mask] = 0
    result = get_method("mirror").load(model, solve_size=None).complete(make_unwrap(texture, confidence, layout.mask))
    # The weakly seen strip is replaced by its (well seen) mirror partner, Poisson-blended: no 0.3 remains.
    strip = (result.provenance == MIRRORED)[:, size - 60:]
    assert strip.any()
    assert np.abs(result.texture[:, size - 60:][strip] - 0.5).max() < 1e-3


def test_fill_covers_layout_and_pads_outside(model):
    size = 256
    layout = uv_layout(model, size)
    confidence = np.zeros((size, size), np.float32)
    confidence[size // 3: size // 2, size // 3: 2 * size // 3] = 1.0
    confidence[~layout.mask] = 0
    texture = np.full((size, size, 3), 0.6, np.float32)
    result = get_method("mirror").load(model).complete(make_unwrap(texture, confidence, layout.mask))
    assert np.isfinite(result.texture).all()
    # A constant visible patch fills everything (inside and the padding outside) with that constant.
    assert np.abs(result.texture - 0.6).max() < 2e-3
    assert (result.provenance[layout.mask] == MODEL).any()
    assert result.provenance_image().shape == (size, size, 3)


def test_telea_fills_holes_and_keeps_visible(model):
    size = 256
    layout = uv_layout(model, size)
    texture = np.full((size, size, 3), 0.4, np.float32)
    confidence = np.where(layout.mask, 0.9, 0).astype(np.float32)
    confidence[100:140, 100:140] = 0   # a hole inside the layout
    result = get_method("telea").load(model).complete(make_unwrap(texture, confidence, layout.mask))
    hole = np.zeros_like(layout.mask)
    hole[100:140, 100:140] = True
    hole &= layout.mask
    assert (result.provenance[hole] == MODEL).all()
    assert np.abs(result.texture[hole] - 0.4).max() < 4 / 255  # 8-bit fast marching: a few grey levels
    visible = confidence > 0
    assert np.array_equal(result.texture[visible], texture[visible])


def test_pca_completion_records_its_model_file_and_evaluate_rebuilds_it(model, tmp_path):
    """A pca completion records the PCA file it loaded (path + sha256), and evaluate's resolver rebuilds
    that exact method from the record (no "default model" note); a changed file is refused."""
    import json
    import shutil

    from stages.completion.pca import BUILTIN_PCA
    from stages.core.checksums import file_sha256
    from stages.evaluate.stage import MethodResolver

    pca_file = tmp_path / "albedo.h5"
    shutil.copy(BUILTIN_PCA, pca_file)
    method = get_method("pca").load(model, pca_path=str(pca_file))
    size = 64
    layout = uv_layout(model, size).mask
    confidence = np.zeros((size, size), np.float32)
    confidence[:, size // 2:] = 1.0
    completion = method.complete(make_unwrap(symmetric_texture(size), confidence * layout, layout))
    record = completion.info["model_files"]["pca_path"]
    assert record == {"path": str(pca_file.resolve()), "sha256": file_sha256(pca_file)}

    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "complete.json").write_text(json.dumps({"method": "pca", "completion": completion.info}))
    scored = MethodResolver(model).resolve(folder)
    assert scored.description["model_files"]["pca_path"]["sha256"] == record["sha256"]
    assert scored.description["note"] is None
    with open(pca_file, "ab") as fh:  # the model changed after the result was made
        fh.write(b"\0")
    with pytest.raises(Exception, match="not scoring another model"):
        MethodResolver(model).resolve(folder)
