"""Tests for the CLI plumbing: input expansion, batch running, summaries, artifact lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facetex_cli.batch import Done, ItemResult, expand_inputs, output_names, print_summary, run_batch
from facetex_cli.common import find_artifacts, glob_escape, outputs_exist
from stages.core.errors import BadInputError, MissingArtifactError, NoFaceError


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ expand_inputs


def test_expand_folder_keeps_image_suffixes_sorted(tmp_path):
    folder = tmp_path / "photos"
    for name in ["b.jpg", "a.PNG", "c.jpeg", "notes.txt", "d.tiff", "e.webp", "f.bmp", "g.gif", "h"]:
        _touch(folder / name)
    (folder / "sub.jpg").mkdir()  # a folder with an image suffix is not a file
    _touch(folder / "nested" / "z.jpg")  # not recursive
    result = expand_inputs([str(folder)])
    assert [p.name for p in result.files] == ["a.PNG", "b.jpg", "c.jpeg", "d.tiff", "e.webp", "f.bmp"]
    assert all(p.parent == folder for p in result.files)
    assert result.missing == []
    # Nothing is left out without a word: every skipped entry comes with its reason.
    assert {p.name: r for p, r in result.skipped} == {
        "notes.txt": "not a photo type (.txt)", "g.gif": "not a photo type (.gif)",
        "h": "not a photo type (no suffix)", "sub.jpg": "a folder named like a photo, not a photo"}


def test_expand_special_entries_are_reported_not_opened(tmp_path):
    folder = tmp_path / "photos"
    _touch(folder / "a.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    result = expand_inputs([str(folder), str(folder / "pipe.jpg"), str(folder / "loop.png")])
    assert [p.name for p in result.files] == ["a.jpg"]
    assert {p.name: r for p, r in result.skipped} == {
        "pipe.jpg": "not a regular file (a FIFO)", "loop.png": "broken symlink or symlink loop",
        "dangling.png": "broken symlink or symlink loop"}
    # Named explicitly, they are failures (one line each), not silently dropped.
    assert result.rejected == [(str(folder / "pipe.jpg"), "not a regular file (a FIFO)"),
                               (str(folder / "loop.png"), "broken symlink or symlink loop")]


def test_expand_recursive_and_hints(tmp_path):
    _touch(tmp_path / "people" / "alice" / "a.jpg")
    _touch(tmp_path / "people" / "bob" / "deep" / "b.png")
    flat = expand_inputs([str(tmp_path / "people")])
    assert flat.files == []
    assert flat.rejected == [(str(tmp_path / "people"), "no photos here, 2 in its subfolders (add --recursive)")]
    deep = expand_inputs([str(tmp_path / "people")], recursive=True)
    assert [p.name for p in deep.files] == ["a.jpg", "b.png"] and deep.rejected == []
    _touch(tmp_path / "results" / "anna" / "unwrap.json")
    _touch(tmp_path / "results" / "anna" / "uv_texture.png")
    root = expand_inputs([str(tmp_path / "results")])
    assert root.files == [] and "holds 1 facetex output folder(s)" in root.rejected[0][1]


def test_expand_custom_suffixes(tmp_path):
    for name in ["t.png", "u.jpg"]:
        _touch(tmp_path / name)
    result = expand_inputs([str(tmp_path)], suffixes={".png"})
    assert [p.name for p in result.files] == ["t.png"]


def test_expand_glob(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["x1.jpg", "x3.jpg", "x2.jpg", "y.jpg", "x.txt"]:
        _touch(tmp_path / name)
    _touch(tmp_path / "deep" / "x9.jpg")
    result = expand_inputs(["x*.jpg"])
    assert result.files == [Path("x1.jpg"), Path("x2.jpg"), Path("x3.jpg")]
    assert result.missing == []
    recursive = expand_inputs(["**/x9.jpg"])
    assert recursive.files == [Path("deep/x9.jpg")]
    absolute = expand_inputs([str(tmp_path / "x?.jpg")])
    assert absolute.files == [tmp_path / "x1.jpg", tmp_path / "x2.jpg", tmp_path / "x3.jpg"]


def test_expand_glob_matching_only_folders_is_missing(tmp_path):
    (tmp_path / "dir_a").mkdir()
    pattern = str(tmp_path / "dir_*")
    result = expand_inputs([pattern])
    assert result.files == []
    assert result.missing == [pattern]


def test_expand_explicit_non_image_is_kept(tmp_path):
    notes = _touch(tmp_path / "notes.txt")
    result = expand_inputs([str(notes)])
    assert result.files == [notes]
    assert result.missing == []


def test_expand_literal_name_with_glob_characters(tmp_path):
    odd = _touch(tmp_path / "photo[1].jpg")
    _touch(tmp_path / "photo1.jpg")
    result = expand_inputs([str(odd)])
    assert result.files == [odd]


def test_expand_missing_paths_reported(tmp_path):
    good = _touch(tmp_path / "a.jpg")
    gone = str(tmp_path / "gone.jpg")
    no_match = str(tmp_path / "*.heic")
    result = expand_inputs([gone, str(good), no_match])
    assert result.files == [good]
    assert result.missing == [gone, no_match]


def test_expand_removes_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "in" / "a.jpg")
    _touch(tmp_path / "in" / "b.jpg")
    result = expand_inputs(["in", "in/*.jpg", "in/a.jpg", "./in/b.jpg", "in"])
    assert result.files == [Path("in/a.jpg"), Path("in/b.jpg")]
    assert result.missing == []


def test_expand_keeps_argument_order_across_patterns(tmp_path):
    b = _touch(tmp_path / "b.jpg")
    a = _touch(tmp_path / "a.jpg")
    assert expand_inputs([str(b), str(a)]).files == [b, a]


def test_output_names_disambiguate_shared_stems():
    files = [Path("a/face.webp"), Path("a/face.bmp"), Path("a/solo.jpg"), Path("b/face.webp"), Path("c/x.JPG"),
             Path("c/x.png")]
    names = output_names(files)
    assert names == {Path("a/face.webp"): "face_webp", Path("a/face.bmp"): "face_bmp", Path("a/solo.jpg"): "solo",
                     Path("b/face.webp"): "face_webp_2", Path("c/x.JPG"): "x_jpg", Path("c/x.png"): "x_png"}
    assert output_names(files) == names  # deterministic
    assert len(set(names.values())) == len(files)


# ----------------------------------------------------------------------------------------- run_batch


def _process(item):
    if item == "bad":
        raise BadInputError(Path("bad.jpg"), "corrupt or truncated image")
    if item == "noface":
        raise NoFaceError(Path("noface.jpg"), "no face found")
    if item == "crash":
        raise ValueError("boom")
    if item == "quiet":
        return None
    return f"done {item}"


def test_run_batch_continues_after_errors():
    items = ["one", "bad", "crash", "two", "noface", "quiet", "skipme"]
    seen = []

    def process(item):
        seen.append(item)
        return _process(item)

    results = run_batch(items, process, skip=lambda item: item == "skipme", quiet_native=False)
    assert seen == ["one", "bad", "crash", "two", "noface", "quiet"]
    assert [r.name for r in results] == items
    assert [r.status for r in results] == ["ok", "failed", "failed", "ok", "failed", "ok", "skipped"]
    by_name = {r.name: r for r in results}
    assert by_name["one"].detail == "done one"
    assert by_name["quiet"].detail == ""
    assert by_name["bad"].detail == "bad.jpg: corrupt or truncated image"
    assert by_name["noface"].detail == "noface.jpg: no face found"
    assert by_name["crash"].detail == "internal error: ValueError: boom"
    assert by_name["skipme"].detail == "outputs exist"
    assert all(r.seconds >= 0 for r in results)
    assert by_name["skipme"].seconds == 0.0


def test_run_batch_with_native_quieting_and_name_of(capfd):
    results = run_batch([Path("p/a.jpg"), Path("p/crash.jpg")],
                        lambda p: _process(p.stem), name_of=lambda p: p.name)
    assert [(r.name, r.status) for r in results] == [("a.jpg", "ok"), ("crash.jpg", "failed")]
    assert results[1].detail == "internal error: ValueError: boom"
    os.write(2, b"fd2 still works\n")  # file descriptor 2 was restored
    assert "fd2 still works" in capfd.readouterr().err


def test_run_batch_missing_patterns_are_failures():
    results = run_batch(["a"], _process, missing=["gone.jpg", "*.heic"], quiet_native=False)
    assert [(r.name, r.status) for r in results] == [
        ("gone.jpg", "failed"), ("*.heic", "failed"), ("a", "ok")]
    assert "no such file" in results[0].detail


def test_run_batch_keyboard_interrupt_propagates():
    def process(item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(["a", "b"], process, quiet_native=False)


@pytest.mark.parametrize("error", [NoFaceError, MissingArtifactError, BadInputError])
def test_run_batch_reports_stage_errors_as_their_one_line(error, capsys):
    """Every stage error a user can hit is expected: its one line, no "internal error", no traceback."""

    def process(item):
        raise error(Path(f"{item}.jpg"), "what is wrong")

    results = run_batch(["a", "b"], process, quiet_native=False)
    assert [(r.status, r.detail) for r in results] == [("failed", "a.jpg: what is wrong"),
                                                        ("failed", "b.jpg: what is wrong")]
    err = capsys.readouterr().err
    assert "a.jpg: what is wrong" in err and "internal error" not in err and "Traceback" not in err


# -------------------------------------------------------------------------------------- print_summary


def test_print_summary_exit_codes(capsys):
    ok = ItemResult("a", "ok", "", 1.0)
    skipped = ItemResult("b", "skipped", "outputs exist")
    failed = ItemResult("c", "failed", "c: broken", 0.5)
    assert print_summary([ok], "fit") == 0
    assert print_summary([ok, skipped], "fit") == 0
    assert print_summary([skipped], "fit") == 0
    capsys.readouterr()
    assert print_summary([ok, skipped, failed], "fit") == 1
    err = capsys.readouterr().err
    assert "fit: 1 ok, 1 skipped, 1 failed" in err
    assert "c: broken" in err
    assert print_summary([failed], "fit") == 1
    assert print_summary([], "fit") == 1  # nothing to do at all is an error too


def test_print_summary_names_output_folders(capsys, tmp_path):
    folders = [tmp_path / "group_face0", tmp_path / "group_face1"]
    results = run_batch(["group.jpg"], lambda item: Done("2 faces", folders),
                        quiet_native=False)
    assert print_summary(results, "complete") == 0
    err = capsys.readouterr().err
    assert f"wrote {tmp_path / 'group_face0'}" in err and f"wrote {tmp_path / 'group_face1'}" in err
    assert "complete: 1 ok, 0 skipped, 0 failed; 2 output folders written" in err


def test_print_summary_long_batch_lists_failures(capsys):
    results = [ItemResult(f"img{i:03d}", "ok", "", 0.1) for i in range(200)]
    results.append(ItemResult("broken.jpg", "failed", "broken.jpg: not an image"))
    assert print_summary(results, "unwrap") == 1
    err = capsys.readouterr().err
    assert "broken.jpg: not an image" in err
    assert "unwrap: 200 ok, 0 skipped, 1 failed" in err


# ------------------------------------------------------------------------------------- outputs_exist


def test_outputs_exist_single_and_multi_face(tmp_path):
    out = tmp_path / "out"
    assert not outputs_exist(out, "anna", "fit.json")
    _touch(out / "anna" / "fit.json")
    assert outputs_exist(out, "anna", "fit.json")
    assert not outputs_exist(out, "anna", "unwrap.json")
    assert not outputs_exist(out, "ann", "fit.json")  # no prefix match
    _touch(out / "group_face0" / "fit.json")
    _touch(out / "group_face1" / "fit.json")
    assert outputs_exist(out, "group", "fit.json")
    assert not outputs_exist(out, "group", "unwrap.json")
    (out / "bob").mkdir()  # folder without the marker
    assert not outputs_exist(out, "bob", "fit.json")


def test_outputs_exist_stem_with_glob_characters(tmp_path):
    out = tmp_path / "out"
    _touch(out / "x1_face0" / "fit.json")
    assert not outputs_exist(out, "x[12]", "fit.json")  # not a pattern
    _touch(out / "x[12]_face0" / "fit.json")
    assert outputs_exist(out, "x[12]", "fit.json")
    assert not outputs_exist(out, "x*", "fit.json")
    assert glob_escape("a*b?c[d]") == "a[*]b[?]c[[]d]"


# ------------------------------------------------------------------------------------ find_artifacts


def test_find_artifacts_file(tmp_path):
    fit = _touch(tmp_path / "somewhere" / "my_fit.json")
    assert find_artifacts(fit, "anything", "fit.json") == [fit]


def test_find_artifacts_root_with_stem_folder(tmp_path):
    direct = _touch(tmp_path / "anna" / "fit.json")
    _touch(tmp_path / "anna_face0" / "fit.json")  # the single-face folder wins
    assert find_artifacts(tmp_path, "anna", "fit.json") == [direct]


def test_find_artifacts_stem_folder_itself(tmp_path):
    art = _touch(tmp_path / "anna" / "fit.json")
    assert find_artifacts(tmp_path / "anna", "anna", "fit.json") == [art]


def test_find_artifacts_multi_face(tmp_path):
    faces = [_touch(tmp_path / f"group_face{i}" / "fit.json") for i in (1, 0, 2)]
    _touch(tmp_path / "groupie_face0" / "fit.json")  # another stem
    found = find_artifacts(tmp_path, "group", "fit.json")
    assert found == sorted(faces)
    assert [p.parent.name for p in found] == ["group_face0", "group_face1", "group_face2"]


def test_find_artifacts_missing(tmp_path):
    _touch(tmp_path / "other" / "fit.json")
    with pytest.raises(MissingArtifactError) as info:
        find_artifacts(tmp_path, "anna", "fit.json")
    expected = tmp_path / "anna" / "fit.json"
    assert info.value.path == expected
    assert str(expected) in str(info.value)
    assert "fit.json" in info.value.reason
    assert "\n" not in str(info.value)


def test_find_artifacts_missing_root(tmp_path):
    root = tmp_path / "no_such_dir"
    with pytest.raises(MissingArtifactError) as info:
        find_artifacts(root, "anna", "fit.json")
    assert info.value.path == root
    assert str(root) in str(info.value)


def test_find_artifacts_stem_folder_without_artifact(tmp_path):
    (tmp_path / "anna").mkdir()
    with pytest.raises(MissingArtifactError):
        find_artifacts(tmp_path / "anna", "anna", "fit.json")
