"""fit/unwrap refuse what they cannot do right: bad fit.json values (file and field named), a fit
of another photo, an unwrap that sees nothing; moved output folders still find their photo; real
photos upside down are fitted the right way up, large poses are flagged."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import MissingArtifactError, NoFaceError
from stages.core.image_io import load_photo, save_png
from stages.fit import FitResult, fit_photo
from stages.unwrap import UnwrapResult, unwrap_photo
from tests.conftest import smooth_random_texture
from tests.test_unwrap_render import synthetic_fit

SIZE = 256


def _rendered_photo(model, path: Path, seed: int = 1) -> FitResult:
    """Write a face rendered at yaw 15 to ``path``; return its fit, with ``source`` = ``path``."""
    from stages.render import render_mesh

    fit = synthetic_fit(model, 15.0, SIZE)
    rgb, mask = render_mesh(smooth_random_texture(128, seed=seed), fit.screen_vertices(), model, SIZE, SIZE)
    save_png(path, np.where(mask[..., None], rgb, 0.5))
    fit.source = str(path)
    fit.source_sha256 = load_photo(path).sha256
    return fit


@pytest.fixture
def saved_fit(model, tmp_path) -> Path:
    """A valid fit.json (schema v2) next to its photo."""
    fit = _rendered_photo(model, tmp_path / "face.png")
    fit.save(tmp_path / "out" / "fit.json")
    return tmp_path / "out" / "fit.json"


def _one_line(err: Exception, *parts: str) -> None:
    msg = str(err)
    assert "\n" not in msg and "internal error" not in msg
    for part in parts:
        assert part in msg, (part, msg)


# ------------------------------------------------------------------------ fit.json validation

BAD_FIELDS = [
    ("pose.scale", 1e6), ("pose.scale", math.nan), ("pose.scale", math.inf), ("pose.scale", 0.0),
    ("pose.scale", -2.0), ("pose.translation", [1e7, 100.0, 0.0]), ("pose.translation", [100.0, math.nan, 0.0]),
    ("pose.rotation", [[2, 0, 0], [0, 1, 0], [0, 0, 1]]), ("pose.rotation", [[1, 0, 0], [0, 1, 0], [0, 0, -1]]),
    ("image_size", [0, 0]), ("image_size", [256.5, 256]), ("image_size", [10**7, 256]), ("image_size", [256]),
    ("vertices", [[0.0, 0.0, math.inf]] * 471), ("vertices", "many"), ("landmarks", [[1.0, 2.0]]),
    ("lighting_sh", [[0.0] * 3] * 8), ("face_box", [0, 0, math.nan, 1]),
    ("source_sha256", None), ("source_relative", None), ("pose", None),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_FIELDS])
def test_bad_fit_json_value_is_one_line_naming_file_and_field(saved_fit, field, value):
    data = json.loads(saved_fit.read_text())
    if value is None and field != "pose":
        del data[field]                      # a missing required field
    else:
        node, key = (data["pose"], field.split(".")[1]) if field.startswith("pose.") else (data, field)
        node[key] = value
    saved_fit.write_text(json.dumps(data))
    with pytest.raises(MissingArtifactError) as info:
        FitResult.load(saved_fit)
    _one_line(info.value, str(saved_fit), field)


def test_old_fit_json_asks_to_rerun_fit(saved_fit):
    data = json.loads(saved_fit.read_text())
    data["schema_version"] = 1
    saved_fit.write_text(json.dumps(data))
    with pytest.raises(MissingArtifactError) as info:
        FitResult.load(saved_fit)
    _one_line(info.value, str(saved_fit), "re-run `facetex fit`")


def test_fit_with_another_vertex_count_is_refused_by_unwrap(model, saved_fit):
    data = json.loads(saved_fit.read_text())
    data["vertices"] = data["vertices"][:-5]
    saved_fit.write_text(json.dumps(data))
    fit = FitResult.load(saved_fit)        # consistent on its own; not with the model
    with pytest.raises(MissingArtifactError) as info:
        unwrap_photo(load_photo(fit.photo_path()), fit, model=model, uv_size=256)
    _one_line(info.value, str(saved_fit), "vertices", str(model.n_vertices))


def test_huge_face_in_memory_does_not_allocate_a_face_sized_buffer(model):
    """A fit whose face is 10^6 times the photo (refused on load; here built in memory) runs in
    photo-sized memory: the erosion kernel follows the face's size and is bounded by the window."""
    fit = synthetic_fit(model, 0.0, SIZE)
    fit.pose = type(fit.pose)(rotation=fit.pose.rotation, scale=fit.pose.scale * 1e6,
                              translation=fit.pose.translation)
    with pytest.raises(NoFaceError, match="of the UV layout is visible"):
        unwrap_photo(np.full((SIZE, SIZE, 3), 128, np.uint8), fit, model=model, uv_size=256)


# ------------------------------------------------------------------------ fit/photo mismatch

def test_unwrap_refuses_a_photo_the_fit_was_not_made_from(model, tmp_path, saved_fit):
    fit = FitResult.load(saved_fit)
    own = load_photo(tmp_path / "face.png")
    assert unwrap_photo(own, fit, model=model, uv_size=256).info["coverage"] > 0.3

    _rendered_photo(model, tmp_path / "other.png", seed=7)     # same size, another face
    with pytest.raises(MissingArtifactError) as info:
        unwrap_photo(load_photo(tmp_path / "other.png"), fit, model=model, uv_size=256)
    _one_line(info.value, str(saved_fit), "another photo", "re-run `facetex fit`")

    wide = np.zeros((SIZE, 2 * SIZE, 3), np.uint8)             # pixels only: the size check
    with pytest.raises(MissingArtifactError) as info:
        unwrap_photo(wide, fit, model=model, uv_size=256)
    _one_line(info.value, str(saved_fit), f"{SIZE}x{SIZE}", f"{2 * SIZE}x{SIZE}")

    # The same file loaded smaller (--max-side) is the same photo: the pose is rescaled.
    half = load_photo(tmp_path / "face.png", max_side=SIZE // 2)
    small = unwrap_photo(half, fit, model=model, uv_size=256)
    full = unwrap_photo(own, fit, model=model, uv_size=256)
    both = (small.confidence > 0.3) & (full.confidence > 0.3)
    assert both.sum() > 0.8 * (full.confidence > 0.3).sum()
    assert np.abs(small.texture[both] - full.texture[both]).mean() < 0.03


# ------------------------------------------------------------------------ zero coverage

def test_unwrap_folder_with_zero_alpha_is_refused(model, tmp_path, saved_fit):
    fit = FitResult.load(saved_fit)
    out = saved_fit.parent
    unwrap_photo(load_photo(fit.photo_path()), fit, model=model, uv_size=256).save(out)
    assert UnwrapResult.load(out, model).visible.any()
    rgba = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "uv_texture.png"), dtype=np.uint8).copy()
    rgba[..., 3] = 0
    save_png(out / "uv_texture.png", rgba)
    with pytest.raises(MissingArtifactError) as info:
        UnwrapResult.load(out, model)
    _one_line(info.value, str(out / "uv_texture.png"), "visible")


def test_unwrap_of_a_face_outside_the_photo_is_refused(model):
    fit = synthetic_fit(model, 0.0, SIZE)
    fit.pose = type(fit.pose)(rotation=fit.pose.rotation, scale=fit.pose.scale,
                              translation=np.array([-3.0 * SIZE, SIZE / 2, 0.0]))
    with pytest.raises(NoFaceError) as info:
        unwrap_photo(np.full((SIZE, SIZE, 3), 128, np.uint8), fit, model=model, uv_size=256)
    _one_line(info.value, "0.0% of the UV layout is visible")


# ------------------------------------------------------------------------ moved output folders

def test_moved_output_and_photo_folders_still_find_the_photo(model, tmp_path):
    from stages.complete import CompleteOptions, Completer
    from stages.train.face_views import resolve_photo

    root = tmp_path / "project"
    (root / "photos").mkdir(parents=True)
    fit = _rendered_photo(model, root / "photos" / "face.png")
    out = root / "out" / "face"
    fit.save(out / "fit.json")
    unwrap_photo(load_photo(root / "photos" / "face.png"), fit, model=model, uv_size=256).save(out)
    assert json.loads((out / "fit.json").read_text())["source_relative"] == "../../photos/face.png"

    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(root, moved)
    new_out = moved / "out" / "face"
    loaded = FitResult.load(new_out / "fit.json")
    assert not Path(loaded.source).exists()
    assert loaded.photo_path() == new_out / "../../photos/face.png"
    assert resolve_photo(loaded, new_out).resolve() == (moved / "photos" / "face.png").resolve()

    completer = Completer(CompleteOptions(uv_size=256, view_size=64), model=model, landmarker=object())
    done = completer.run_from_unwrap(new_out, tmp_path / "completed")
    preview = load_photo(done / "render_fitted.png").rgb
    assert preview.std() > 5                # the photo was found and the preview drawn

    (moved / "photos" / "face.png").unlink()  # now neither place has it: one line naming both
    with pytest.raises(MissingArtifactError) as info:
        loaded.photo_path()
    _one_line(info.value, str(new_out / "fit.json"), fit.source, "../../photos/face.png")


# ------------------------------------------------------------------------ real photos (MediaPipe)

def _rot180(points: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.column_stack([width - points[:, 0], height - points[:, 1]])


def _upside_down_case(landmarker, model, path: Path, tmp_path: Path):
    from PIL import Image

    upright = fit_photo(load_photo(path), landmarker, model=model)[0]
    flipped_path = tmp_path / f"{path.stem}_180.png"
    Image.open(path).convert("RGB").rotate(180).save(flipped_path)
    flipped = fit_photo(load_photo(flipped_path), landmarker, model=model)[0]
    width, height = flipped.image_size
    error = np.linalg.norm(flipped.landmarks[:468, :2] - _rot180(upright.landmarks[:468], width, height), axis=1)
    return upright, flipped, float(np.median(error)) / (upright.face_box[2] - upright.face_box[0])


def test_upside_down_astronaut_is_fitted_upside_down(landmarker, model, astronaut_path, tmp_path):
    upright, flipped, rel_error = _upside_down_case(landmarker, model, astronaut_path, tmp_path)
    assert not upright.quality["upside_down"] and abs(upright.pose.euler[2]) < 20
    assert flipped.quality["upside_down"] and abs(flipped.pose.euler[2]) > 160
    assert rel_error < 0.05                 # the same landmarks as upright, turned around
    assert flipped.quality["warnings"] == []


def test_upside_down_london_photo_is_fitted_upside_down(landmarker, model, shared_faces, tmp_path):
    upright, flipped, rel_error = _upside_down_case(
        landmarker, model, shared_faces / "london" / "neutral" / "001_03.jpg", tmp_path)
    assert abs(flipped.pose.euler[2]) > 160 and rel_error < 0.05


def test_near_frontal_london_photos_have_no_warnings(landmarker, model, shared_faces):
    for name in ("001_03.jpg", "014_03.jpg", "140_03.jpg"):
        path = shared_faces / "london" / "neutral" / name
        if not path.exists():
            continue
        fit = fit_photo(load_photo(path), landmarker, model=model)[0]
        assert fit.quality["warnings"] == [] and not fit.quality["upside_down"], (name, fit.quality)


def test_profile_photo_is_flagged(landmarker, model, shared_faces):
    """AFLW2000 image00181 is a near-90-degree profile; MediaPipe puts it at about yaw -58."""
    path = shared_faces / "wild" / "deca_AFLW2000_image00181.jpg"
    if not path.exists():
        pytest.skip("the AFLW2000 profile photo is not in ../shared/faces/wild")
    fit = fit_photo(load_photo(path), landmarker, model=model)[0]
    assert any(note.startswith("large pose") for note in fit.quality["warnings"])
    assert any(note.startswith("unreliable fit") for note in fit.quality["warnings"])


def test_face_found_only_upside_down_is_mapped_back(model):
    """A detector that sees the face only in the 180-degree rotated photo (as MediaPipe does for some
    upside-down faces): the fit's landmarks are in the photo's own coordinates, roll near 180."""
    from pathlib import Path as _Path

    from stages.core.image_io import Photo
    from tests.test_fit import posed

    upright = posed(model, 0, 0, 0, scale=60.0, centre=(100.0, 90.0)).to_screen(model.vertices[:468])

    class UprightOnly:
        name, version, kind = "fake", "0", "dense"

        def detect(self, rgb):  # the marker pixel is top-left only in the rotated photo
            return [upright.copy()] if rgb[0, 0, 0] == 255 else []

    rgb = np.full((SIZE, SIZE, 3), 150, np.uint8)
    rgb[-1, -1] = 255
    photo = Photo(rgb=rgb, path=_Path("flipped.png"), scale=1.0, original_size=(SIZE, SIZE))
    fit = fit_photo(photo, UprightOnly(), model=model)[0]
    assert np.allclose(fit.landmarks[:, :2], _rot180(upright, SIZE, SIZE))
    assert fit.quality["upside_down"] and abs(fit.pose.euler[2]) > 179


def test_large_yaw_is_flagged_and_a_clean_fit_is_not(model):
    """Without a detector: landmarks of the mean shape at yaw 60 (beyond the 45-degree limit) give a
    'large pose' warning; at yaw 20 none. fit.json records the photo's size and checksum."""
    from tests.test_fit import FakeLandmarker, gray_photo, posed

    def fit_at(yaw):
        points = posed(model, yaw, 0, 0).to_screen(model.vertices[:468])
        photo = gray_photo()
        photo = type(photo)(rgb=photo.rgb, path=photo.path, scale=1.0, original_size=(512, 512), sha256="ab" * 32)
        return fit_photo(photo, FakeLandmarker([points]), model=model)[0]

    assert [w.split(" (")[0] for w in fit_at(60.0).quality["warnings"]] == ["large pose"]
    clean = fit_at(20.0)
    assert clean.quality["warnings"] == [] and clean.source_sha256 == "ab" * 32
    data = clean.to_dict()
    assert data["source_sha256"] == "ab" * 32 and data["image_size"] == [512, 512]


def test_fit_and_complete_print_the_warning_of_a_doubtful_pose(shared_faces, tmp_path):
    """A kept-but-flagged fit is said on the console (one ``warning <photo>: ...`` line) and recorded
    in complete.json's notes, not only buried in fit.json."""
    from typer.testing import CliRunner

    from facetex_cli.main import app

    photo = shared_faces / "wild" / "deca_AFLW2000_image00181.jpg"
    runner = CliRunner()
    fit = runner.invoke(app, ["fit", str(photo), "-o", str(tmp_path / "fit")])
    assert fit.exit_code == 0, fit.output
    warning_lines = [line for line in fit.output.splitlines() if line.startswith("warning")]
    assert warning_lines and all(photo.name in line for line in warning_lines)
    done = runner.invoke(app, ["complete", str(photo), "-o", str(tmp_path / "complete"), "--no-previews"])
    assert done.exit_code == 0, done.output
    assert any(line.startswith("warning") and photo.name in line for line in done.output.splitlines())
    record = json.loads((tmp_path / "complete" / photo.stem / "complete.json").read_text())
    assert record["notes"] and "yaw" in " ".join(record["notes"])
