"""Output folders: unique per input, consistent (written aside and swapped in whole), checked up front,
IO errors naming the file, temporaries of killed runs cleaned on the next run."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.core.atomic import atomic_path, clean_stale_temporaries, write_json
from stages.core.errors import OutputError
from tests.test_cli import invoke

FAST = ("--no-previews", "--no-glb")


@pytest.fixture
def dead_pid() -> int:
    """A process id that is not running (a killed run's)."""
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1


def test_same_stem_inputs_get_their_own_folders(astronaut_path, tmp_path):
    image = Image.open(astronaut_path)
    image.save(tmp_path / "face.webp")
    image.save(tmp_path / "face.bmp")
    out = tmp_path / "out"
    proc = invoke("complete", str(tmp_path / "face.webp"), str(tmp_path / "face.bmp"), "-o", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["face_bmp", "face_webp"]
    for name, suffix in (("face_webp", ".webp"), ("face_bmp", ".bmp")):
        info = json.loads((out / name / "complete.json").read_text())
        assert info["stem"] == name and info["source"].endswith(suffix)
        assert json.loads((out / name / "fit.json").read_text())["stem"] == name
    assert "writing face_webp/" in proc.stderr and "writing face_bmp/" in proc.stderr
    again = invoke("complete", str(tmp_path / "face.webp"), str(tmp_path / "face.bmp"), "-o", str(out), *FAST,
                   "--skip-existing")
    assert again.returncode == 0 and "0 ok, 2 skipped" in again.stderr


def test_rerun_replaces_the_folder_whole_and_a_failed_run_keeps_it(astronaut_path, tmp_path, monkeypatch):
    out = tmp_path / "out"
    folder = out / "astronaut"
    assert invoke("complete", str(astronaut_path), "-o", str(out), *FAST).returncode == 0
    (folder / "stale.txt").write_text("from an older run")
    proc = invoke("complete", str(astronaut_path), "-o", str(out), *FAST, "--method", "telea")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / "complete.json").read_text())["method"] == "telea"
    assert not (folder / "stale.txt").exists(), "the folder is replaced as a whole, not mixed"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    # A run that dies half-way (after writing uv_complete.png) leaves the previous folder as it was.
    from stages import complete as complete_stage

    def dies(self, rgb, fit, unwrap, out_dir, timings):
        (Path(out_dir) / "uv_complete.png").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(complete_stage.Completer, "_complete_face", dies)
    assert invoke("complete", str(astronaut_path), "-o", str(out), *FAST).returncode == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["astronaut"], "no temporary folder left"


def test_output_root_that_is_a_file_fails_before_any_work(astronaut_path, tmp_path, monkeypatch):
    from stages import complete as complete_stage

    def no_models(*args, **kwargs):
        raise AssertionError("models were loaded before the output root was checked")

    monkeypatch.setattr(complete_stage.Completer, "__init__", no_models)
    target = tmp_path / "afile"
    target.write_text("x")
    proc = invoke("complete", str(astronaut_path), "-o", str(target))
    assert proc.returncode == 2
    assert f"error {target}: the output folder (-o) exists and is not a folder" in proc.stderr
    proc = invoke("fit", str(astronaut_path), "-o", str(target / "below"))
    assert proc.returncode == 2
    assert f"{target / 'below'}: the output folder (-o) is not writable" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_disk_full_names_the_file(astronaut_path, tmp_path, monkeypatch):
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if Path(dst).name == "uv_complete.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "out"
    proc = invoke("complete", str(astronaut_path), "-o", str(out), *FAST)
    assert proc.returncode == 1
    assert "internal error" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error ")]
    assert len(errors) == 1 and "uv_complete.png: cannot write (No space left on device)" in errors[0], errors
    assert list(out.iterdir()) == [], "nothing is left of the failed item"


def test_atomic_write_errors_name_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=f"^{blocker / 'sub' / 'a.json'}: cannot write"):
        write_json(blocker / "sub" / "a.json", {})
    with pytest.raises(OutputError), atomic_path(tmp_path / "b.png") as _tmp:
        raise OSError(errno.EROFS, "Read-only file system")
    assert list(tmp_path.iterdir()) == [blocker]


def test_stale_temporaries_of_killed_runs_are_cleaned(astronaut_path, tmp_path, dead_pid):
    out = tmp_path / "out"
    (out / "astronaut").mkdir(parents=True)
    stale = [out / "astronaut" / f".uv_complete.p{dead_pid}.abcd1234.part.png",
             out / f".astronaut.p{dead_pid}.abcd1234.part", out / f".astronaut.p{dead_pid}.abcd1234.old",
             out / "astronaut" / ".fit.k2j3h4l5.part.json"]   # an older version's name, without a process id
    live = out / "astronaut" / f".views.p{os.getpid()}.abcd1234.part.png"  # a running process's
    for path in stale + [live]:
        if path.suffix in (".part", ".old"):
            path.mkdir()
            (path / "uv_complete.png").write_text("x")
        else:
            path.write_text("x")
    assert sorted(clean_stale_temporaries(out)) == sorted(stale)
    assert live.exists()
    live.unlink()
    for path in stale[:1]:
        path.write_text("x")
    proc = invoke("fit", str(astronaut_path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 temporary file(s)/folder(s)" in proc.stderr
    assert not [p for p in out.rglob(".*")]


def test_face_all_counts_faces_and_names_folders(astronaut_path, tmp_path):
    face = np.asarray(Image.open(astronaut_path).convert("RGB"))[0:300, 100:350]  # the head, then its mirror image
    Image.fromarray(np.concatenate([face, face[:, ::-1]], axis=1)).save(tmp_path / "pair.png")
    out = tmp_path / "out"
    proc = invoke("complete", str(tmp_path / "pair.png"), "-o", str(out), "--face", "all", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out / 'pair_face0'}" in proc.stderr and f"wrote {out / 'pair_face1'}" in proc.stderr
    assert "complete: 1 ok, 0 skipped, 0 failed; 2 output folders written" in proc.stderr


def test_no_previews_writes_every_artifact_a_later_stage_reads_and_no_picture(astronaut_path, tmp_path):
    """``--no-previews`` leaves out exactly the pictures no stage reads; the rest of the pipeline still runs."""
    from facetex_cli.main import app
    from typer.testing import CliRunner

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["complete", str(astronaut_path), "-o", str(out), "--uv-size", "256",
                                      "--workers", "1", *FAST])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (out / "astronaut").iterdir()}
    previews = {"fit_overlay.png", "skin_overlay.png", "uv_position.png", "render_fitted.png", "views.png"}
    assert not names & previews, names & previews
    assert {"fit.json", "skin_mask.png", "uv_texture.png", "uv_position.npy", "uv_complete.png",
            "textured.obj", "complete.json"} <= names
    rendered = CliRunner().invoke(app, ["render", str(out / "astronaut" / "uv_complete.png"),
                                        str(out / "astronaut" / "fit.json"), "-o", str(tmp_path / "r"),
                                        "--size", "64", "--yaws", "0", "--no-glb"])
    assert rendered.exit_code == 0, rendered.output
