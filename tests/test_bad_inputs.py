"""The bad-input corpus: one ``facetex complete`` batch over a folder of broken and awkward inputs.

Every bad input gets exactly one line naming it, no traceback, no "internal error", no partial
output folder and no hang; the good-but-awkward photos (grayscale, CMYK, alpha, 16-bit, EXIF-rotated)
succeed. The batch runs in a real subprocess with a timeout, so a hang (a FIFO opened for reading)
fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import invoke, run_facetex
from tests.test_image_io import _damaged


def write_corpus(folder: Path, astronaut_path: Path) -> dict[str, str]:
    """Write bad and awkward inputs into ``folder``; return name -> expected fragment of its one line
    ('' = must succeed)."""
    astro = Image.open(astronaut_path).convert("RGB")
    astro.save(folder / "full.jpg", quality=90)
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "middle_removed.jpg").write_bytes(_damaged(data, "middle_removed"))  # decodes half grey
    (folder / "full.jpg").unlink()
    astro.rotate(180).save(folder / "upside_down.png")  # fitted the right way round, not scrambled
    (folder / "notes.jpg").write_text("this is not an image\n")
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (300, 300), (120, 120, 120)).save(folder / "noface.png")
    Image.new("RGB", (12, 12), (120, 120, 120)).save(folder / "tiny.png")
    astro.convert("L").save(folder / "gray.png")
    astro.convert("CMYK").save(folder / "cmyk.jpg")
    rgba = astro.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "alpha.png")
    gray16 = (np.asarray(astro.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(folder / "deep16.png")
    # Stored rotated 90 degrees counter-clockwise, with EXIF orientation 6 ("rotate 90 CW to view").
    exif = Image.Exif()
    exif[0x0112] = 6
    astro.rotate(90, expand=True).save(folder / "exif_rotated.jpg", exif=exif, quality=92)
    # Entries a folder expansion leaves out, each with its reason.
    (folder / "album.jpg").mkdir()
    os.mkfifo(folder / "pipe.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    astro.save(folder / "anim.gif")
    (folder / "README").write_text("no suffix")
    return {"truncated.jpg": "corrupt or truncated", "middle_removed.jpg": "corrupt JPEG data",
            "notes.jpg": "not an image", "empty.png": "not an image",
            "noface.png": "no face found", "tiny.png": "too small", "album.jpg": "a folder named like a photo",
            "pipe.png": "not a regular file (a FIFO)", "loop.jpg": "broken symlink or symlink loop",
            "anim.gif": "not a photo type (.gif)", "README": "not a photo type (no suffix)",
            "upside_down.png": "", "gray.png": "", "cmyk.jpg": "", "alpha.png": "", "deep16.png": "",
            "exif_rotated.jpg": ""}


def test_bad_input_corpus(astronaut_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    expected = write_corpus(photos, astronaut_path)
    os.mkfifo(tmp_path / "named.jpg")  # a FIFO named on the command line is refused, not opened
    out = tmp_path / "out"
    proc = run_facetex("complete", str(photos), str(tmp_path / "missing.jpg"), str(tmp_path / "named.jpg"),
                       "-o", str(out), "--no-previews", "--no-glb")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    # The one-line messages (the summary table below them repeats the failures).
    lines = [line for line in text.splitlines() if line.startswith(("error ", "skipped "))]
    for name, fragment in expected.items():
        stem = Path(name).stem
        if fragment:
            matching = [line for line in lines if name in line]
            assert len(matching) == 1, (name, matching, text)
            assert fragment in matching[0], matching[0]
            assert not (out / stem).exists(), f"{name} failed but left {out / stem}"
        else:
            assert (out / stem / "complete.json").is_file(), (name, text)
    assert [line for line in lines if "missing.jpg" in line and "no such file" in line]
    assert [line for line in lines if "named.jpg" in line and "not a regular file (a FIFO)" in line]
    assert not [p for p in out.rglob("*") if ".part" in p.name or p.name.startswith(".")]
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(n).stem for n, f in expected.items() if not f)
    # The EXIF orientation was applied: the face is upright (small roll), as in the original.
    roll = json.loads((out / "exif_rotated" / "fit.json").read_text())["pose"]["yaw_pitch_roll_deg"][2]
    assert abs(roll) < 15
    roll = json.loads((out / "upside_down" / "fit.json").read_text())["pose"]["yaw_pitch_roll_deg"][2]
    assert abs(roll) > 165
    assert "complete: 6 ok, 0 skipped, 8 failed; 6 output folders written" in text  # 6 bad photos + 2 args

    # Resume: everything that succeeded is skipped, the failures are tried (and fail) again.
    again = invoke("complete", str(photos), "-o", str(out), "--skip-existing", "--no-previews", "--no-glb")
    assert again.returncode == 1
    assert f"{sum(1 for f in expected.values() if not f)} skipped" in again.stderr


@pytest.mark.parametrize("command", ["fit", "complete"])
def test_folder_of_subfolders_hints_recursive(command, astronaut_path, tmp_path):
    nested = tmp_path / "people" / "alice"
    nested.mkdir(parents=True)
    (nested / "astronaut.png").write_bytes(astronaut_path.read_bytes())
    proc = invoke(command, str(tmp_path / "people"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "no photos here, 1 in its subfolders (add --recursive)" in proc.stderr
    proc = invoke(command, str(tmp_path / "people"), "-o", str(tmp_path / "out"), "--recursive")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "astronaut" / "fit.json").is_file()


def test_bad_artifact_corpus(astronaut_path, tmp_path):
    """unwrap over broken fit.json files and complete over broken unwrap folders: one line each naming
    the file (and the field), no traceback, nothing written for them; the good ones still finish."""
    out = tmp_path / "out"
    assert invoke("fit", str(astronaut_path), "-o", str(out)).returncode == 0
    good = json.loads((out / "astronaut" / "fit.json").read_text())
    photos = tmp_path / "photos"
    photos.mkdir()
    fits = tmp_path / "fits"
    cases = {  # stem -> (fit.json change, expected fragment of the one line)
        "huge_scale": (lambda d: d["pose"].__setitem__("scale", 1e6), "pose.scale"),
        "nan_scale": (lambda d: d["pose"].__setitem__("scale", float("nan")), "pose.scale"),
        "far_away": (lambda d: d["pose"]["translation"].__setitem__(0, 1e7), "pose.translation"),
        "no_size": (lambda d: d.__setitem__("image_size", [0, 0]), "image_size"),
        "few_vertices": (lambda d: d.__setitem__("vertices", d["vertices"][:100]), "vertices"),
        "other_photo": (lambda d: d.__setitem__("source_sha256", "0" * 64), "another photo"),
        "good": (lambda d: None, ""),
    }
    for stem, (change, _) in cases.items():
        (photos / f"{stem}.png").write_bytes(astronaut_path.read_bytes())
        data = json.loads(json.dumps(good))
        data["stem"] = stem
        data["source"] = str(photos / f"{stem}.png")
        data["source_relative"] = None
        change(data)
        (fits / stem).mkdir(parents=True)
        (fits / stem / "fit.json").write_text(json.dumps(data))
    proc = run_facetex("unwrap", str(photos), str(fits), "-o", str(fits), "--uv-size", "256")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text and "internal error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error ")]
    for stem, (_, fragment) in cases.items():
        if fragment:
            matching = [line for line in errors if f"{stem}/fit.json" in line]
            assert len(matching) == 1 and fragment in matching[0], (stem, matching, text)
            assert not (fits / stem / "unwrap.json").exists()
    assert (fits / "good" / "unwrap.json").is_file()

    # complete over unwrap folders: an all-zero alpha and a missing position map are refused.
    import shutil

    for stem in ("zero_alpha", "no_position"):
        shutil.copytree(fits / "good", fits / stem)
    rgba = np.asarray(Image.open(fits / "zero_alpha" / "uv_texture.png")).copy()
    rgba[..., 3] = 0
    Image.fromarray(rgba).save(fits / "zero_alpha" / "uv_texture.png")
    (fits / "no_position" / "uv_position.npy").unlink()
    proc = run_facetex("complete", *(str(fits / s) for s in ("good", "zero_alpha", "no_position")),
                       "-o", str(fits), "--no-previews", "--no-glb")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text and "internal error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error ")]
    assert len([line for line in errors if "zero_alpha/uv_texture.png" in line and "visible" in line]) == 1, text
    assert len([line for line in errors if "no_position/uv_position.npy" in line]) == 1, text
    assert (fits / "good" / "complete.json").is_file()
    assert not any((fits / stem / "complete.json").exists() for stem in ("zero_alpha", "no_position"))
