"""The evaluate stage's HTML report: self-contained folder, thumbnails, escaping, best-value marks."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from stages.evaluate.report import (
    CONTACT_SHEET_TILES,
    ImageRow,
    format_value,
    lower_is_better,
    write_report,
)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.best_cells: list[str] = []
        self._in_best = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs["src"])
        if tag in ("link", "script", "a") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        if tag == "td" and "best" in (attrs.get("class") or "").split():
            self._in_best = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_best = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_best:
            self.best_cells.append(data)


def _png(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if mode == "RGBA":
        arr[: size[1] // 2, :, 3] = 0  # top half transparent
    Image.fromarray(arr, mode).save(path)
    return path


@pytest.fixture
def report(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photo = _png(src / "photo.png", (640, 480))
    unwrap = _png(src / "uv_texture.png", (300, 300), "RGBA", seed=1)
    complete = _png(src / "uv_complete.png", (512, 512), seed=2)
    small = _png(src / "small.png", (64, 100), seed=3)
    jpeg = src / "render.jpg"
    Image.fromarray(np.full((200, 400, 3), 90, np.uint8)).save(jpeg)
    rows = [
        ImageRow(
            stem="a<b&c",
            images={"photo": photo, "unwrap": unwrap, "completed_uv": complete,
                    "render_fitted": src / "does_not_exist.png"},
            metrics={"masked_l1": 0.0123456, "identity_cosine": None, "psnr": 31.25},
            notes=["face <small> & blurry"],
        ),
        ImageRow(
            stem="astronaut",
            images={name: small for name in CONTACT_SHEET_TILES} | {"render_frontal": jpeg},
            metrics={"masked_l1": 0.5, "identity_cosine": 0.812345, "psnr": math.inf},
        ),
    ]
    aggregate = {
        "masked_l1": {"mean": 0.25617, "median": 0.25617, "std": 0.2438, "count": 2},
        "psnr": {"mean": math.inf, "median": math.inf, "std": math.nan, "count": 2},
        "identity_cosine": {"mean": 0.812345, "median": 0.812345, "std": 0.0, "count": 1},
    }
    skipped = {"fid": "needs at least 50 images (got 2)", "lpips": "lpips not installed: pip install lpips"}
    methods = {
        "mirror": {"masked_l1": 0.031, "psnr": 28.5, "seam_energy": 0.2},
        "pca": {"masked_l1": 0.045, "psnr": 29.75, "seam_energy": 0.1},
        "<unet>": {"masked_l1": 0.052, "psnr": None, "seam_energy": 0.3},
    }
    settings = {"uv_size": 512, "method": "mirror", "metrics": {"identity": {"model": "arcface <r100>"}},
                "yaws": [-45, 0, 45], "path": Path("/data/x")}
    out = tmp_path / "out"
    path = write_report(out, rows, aggregate, settings, skipped, title="eval & <test>", method_table=methods)
    page = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    return out, path, page, parser


def test_report_written_with_existing_thumbnails(report):
    out, path, page, parser = report
    assert path == out / "report.html" and path.is_file()
    assert page.lstrip().startswith("<!DOCTYPE html>")
    n_tiles = len(CONTACT_SHEET_TILES)
    assert len(parser.imgs) == 2 * n_tiles
    for src in parser.imgs:
        assert not src.startswith(("/", "http:", "https:", "file:", "data:")), src
        assert src.startswith("report_files/")
        file = out / unquote(src)
        assert file.is_file(), src
        with Image.open(file) as img:
            assert max(img.size) <= 256
            assert img.format == "JPEG"
    # every thumbnail in report_files is referenced, and nothing is left half-written
    files = sorted(p.name for p in (out / "report_files").iterdir())
    assert len(files) == 2 * n_tiles
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or ".part" in p.name]
    assert leftovers == []


def test_report_no_external_urls(report):
    _, _, page, parser = report
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert all(link.startswith("#") for link in parser.links)


def test_report_text_and_escaping(report):
    _, _, page, parser = report
    text = "".join(parser.text)
    for needle in ("needs at least 50 images (got 2)", "lpips not installed: pip install lpips",
                   "masked_l1", "identity_cosine", "seam_energy", "2 images"):
        assert needle in text, needle
    # the stem, title, notes, method name and settings are escaped
    assert "a<b&c" not in page and "a&lt;b&amp;c" in page
    assert "a<b&c" in text
    assert "<test>" not in page and "eval &amp; &lt;test&gt;" in page
    assert "<unet>" not in page and "&lt;unet&gt;" in page
    assert "face &lt;small&gt; &amp; blurry" in page
    assert "arcface &lt;r100&gt;" in page
    # value formatting: 4 significant digits, infinity, not computed
    assert "0.01235" in text and "∞" in text and "—" in text and "0.8123" in text
    # the missing tile is a placeholder with a note
    assert "does_not_exist.png" in text
    assert "missing" in text


def test_missing_tile_placeholder_is_grey(report):
    out, _, _, parser = report
    missing = [s for s in parser.imgs if s.endswith("__render_fitted.jpg") and "astronaut" not in s]
    assert len(missing) == 1
    with Image.open(out / unquote(missing[0])) as img:
        arr = np.asarray(img.convert("RGB"), np.int16)
    corner = arr[:20, :20].reshape(-1, 3)
    assert np.all(np.abs(corner - corner.mean(0)) < 8) and np.ptp(corner.mean(0)) < 8  # flat grey
    assert arr.std() > 1  # but with some text


def test_rgba_thumbnail_shows_checkerboard(report):
    out, _, _, parser = report
    unwrap = [s for s in parser.imgs if s.endswith("__unwrap.jpg") and "astronaut" not in s][0]
    with Image.open(out / unquote(unwrap)) as img:
        arr = np.asarray(img.convert("L"), np.float64)
    top = arr[: arr.shape[0] // 2 - 4]  # fully transparent: only the checkerboard
    assert top.max() > 240 and top.min() < 230


def test_best_value_marked(report):
    _, _, _, parser = report
    # lower is better for masked_l1 and seam_energy, higher for psnr
    assert sorted(parser.best_cells) == sorted(["0.031", "29.75", "0.1"])


def test_rewrite_removes_stale_thumbnails(tmp_path, report):
    out, _, _, _ = report
    path = write_report(out, [ImageRow("only", {}, {})], {}, {}, {})
    files = list((out / "report_files").iterdir())
    assert len(files) == len(CONTACT_SHEET_TILES) and all(f.name.startswith("only__") for f in files)
    assert "No metrics" in path.read_text(encoding="utf-8")


def test_duplicate_and_unsafe_stems_get_distinct_files(tmp_path):
    img = _png(tmp_path / "p.png", (32, 32))
    rows = [ImageRow("x/y", {"photo": img}, {}), ImageRow("x_y", {"photo": img}, {}), ImageRow("x/y", {}, {})]
    path = write_report(tmp_path / "r", rows, {}, {}, {})
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    photos = [s for s in parser.imgs if s.endswith("__photo.jpg")]
    assert len(set(photos)) == 3
    assert all((tmp_path / "r" / unquote(s)).is_file() for s in parser.imgs)


def test_format_and_direction():
    assert format_value(None) == "—"
    assert format_value(math.inf) == "∞"
    assert format_value(-math.inf) == "−∞"
    assert format_value(0.000123456) == "0.0001235"
    assert format_value(123456.0) == "1.235e+05"
    assert format_value(3) == "3"
    assert lower_is_better("masked_L1") and lower_is_better("fid") and lower_is_better("fill_seconds")
    assert not lower_is_better("psnr") and not lower_is_better("identity_cosine")


def test_row_captions_and_details_are_shown_escaped(tmp_path):
    img = _png(tmp_path / "p.png", (32, 32))
    row = ImageRow("face", {"hidden_error": img}, {"hidden_l1": 0.1},
                   captions={"hidden_error": "yaw+50: error <0 to 0.25>"},
                   details={"hidden-texel method": "pca (complete.json); pca_path a&b.h5"})
    page = write_report(tmp_path / "r", [row], {}, {}, {}).read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    text = "".join(parser.text)
    assert "yaw+50: error <0 to 0.25>" in text and "&lt;0 to 0.25&gt;" in page
    assert "hidden-texel method" in text and "pca (complete.json); pca_path a&b.h5" in text
    assert "hidden-texel test: per-texel L1 error" not in text  # the row's caption replaces the generic one
    assert any(s.endswith("__hidden_error.jpg") for s in parser.imgs)
