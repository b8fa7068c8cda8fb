"""The evaluate stage's HTML report: one self-contained folder that opens in any browser.

:func:`write_report` writes ``out_dir/report.html`` and ``out_dir/report_files/`` (JPEG thumbnails,
at most 256 px on the long side). The page has no JavaScript and no external URLs: inline CSS,
relative image paths only, so the folder can be zipped, mailed or served as is.

Page layout, top to bottom: title, generation time and a summary line; the aggregate table
(metric | mean | median | std | count); metrics that were skipped and why; the method comparison
table (best value per column highlighted) when given; one card per image (a contact sheet of the
tiles in :data:`CONTACT_SHEET_TILES` order, then any other tiles of the row, e.g. the hidden-texel
test's pictures, with captions; the image's details and metrics; notes); the exact settings.
"""

from __future__ import annotations

import html
import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from stages.core.atomic import atomic_path

#: The order of tiles in each contact sheet.
CONTACT_SHEET_TILES = (
    "photo",
    "unwrap",
    "completed_uv",
    "render_fitted",
    "render_frontal",
    "render_left45",
    "render_right45",
)

#: Human captions of the tiles; a tile name not listed here is shown as is.
TILE_LABELS = {
    "photo": "photo",
    "unwrap": "unwrap (alpha = confidence)",
    "completed_uv": "completed UV",
    "render_fitted": "render at fitted pose",
    "render_frontal": "frontal render",
    "render_left45": "yaw -45",
    "render_right45": "yaw +45",
    "hidden_view": "hidden-texel test: hidden texels (magenta)",
    "hidden_completed": "hidden-texel test: completed",
    "hidden_photo": "hidden-texel test: photo (truth)",
    "hidden_error": "hidden-texel test: per-texel L1 error",
}

#: Metric names containing one of these (case-insensitive) are better when lower.
LOWER_IS_BETTER = ("l1", "seam", "symmetry", "fid", "lpips", "seconds", "leak")

THUMB_MAX_SIDE = 256
FILES_DIRNAME = "report_files"
_CHECKER = 8  # checkerboard square (px) behind transparent thumbnails
_CHECKER_COLOURS = ((255, 255, 255), (214, 214, 214))
_PLACEHOLDER_GREY = (200, 200, 200)


@dataclass
class ImageRow:
    """One image of the report.

    Attributes:
        stem: the image's name (its result folder).
        images: tile name -> source image file (PNG/JPEG); any may be missing.
        metrics: metric name -> value (``None`` = not computed for this image).
        notes: free-form lines shown under the image's contact sheet.
        captions: tile name -> caption for this row (overrides :data:`TILE_LABELS`).
        details: label -> text shown above the image's metrics (e.g. which method was scored).
    """

    stem: str
    images: dict[str, Path]
    metrics: dict[str, float | None]
    notes: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# formatting


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (by name, see :data:`LOWER_IS_BETTER`)."""
    name = metric.lower()
    return any(key in name for key in LOWER_IS_BETTER)


def format_value(value: Any) -> str:
    """A metric value for display: 4 significant digits, ``∞`` for infinity, ``—`` for None."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == int(x) and abs(x) < 1e4:
        return str(int(x))
    return f"{x:.4g}"


def _count(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return format_value(value)
    return str(int(x)) if math.isfinite(x) and x == int(x) else format_value(x)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------------------------
# thumbnails


def _safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``; nothing else)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip(".")
    return name or "image"


def _checkerboard(size: tuple[int, int]) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    odd = ((yy // _CHECKER + xx // _CHECKER) % 2).astype(bool)
    board = np.empty((h, w, 3), np.uint8)
    board[~odd] = _CHECKER_COLOURS[0]
    board[odd] = _CHECKER_COLOURS[1]
    return Image.fromarray(board, "RGB")


def _to_displayable(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``RGB`` or ``RGBA`` (alpha kept)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(arr, initial=0.0)), float(np.nanmax(arr, initial=1.0))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
            arr = arr / peak * 255.0
        gray = np.clip(np.nan_to_num(arr) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    return img.convert("RGB")


def _placeholder(text: str, size: int = THUMB_MAX_SIDE) -> Image.Image:
    img = Image.new("RGB", (size, size), _PLACEHOLDER_GREY)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, size // 8))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    xy = ((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top)
    draw.text(xy, text, fill=(110, 110, 110), font=font)
    return img


def _thumbnail(source: Path) -> Image.Image:
    """Load ``source`` and shrink it to fit ``THUMB_MAX_SIDE``; alpha shown over a checkerboard."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(source) as img:
            img.draft("RGB", (THUMB_MAX_SIDE * 2, THUMB_MAX_SIDE * 2))  # fast JPEG downscale
            img = ImageOps.exif_transpose(img)
            img = _to_displayable(img)
    img.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
    if img.mode == "RGBA":
        board = _checkerboard(img.size).convert("RGBA")
        img = Image.alpha_composite(board, img)
    return img.convert("RGB")


def _save_jpeg(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=88, optimize=True)


@dataclass
class _Tile:
    name: str
    label: str
    src: str  # relative URL into report_files/
    width: int
    height: int
    missing: bool


def _make_tiles(row: ImageRow, files_dir: Path, file_stem: str, written: set[str]) -> tuple[list[_Tile], list[str]]:
    """Write the thumbnails of one row; return its tiles and the notes about missing sources."""
    names = list(CONTACT_SHEET_TILES) + [name for name in row.images if name not in CONTACT_SHEET_TILES]
    tiles: list[_Tile] = []
    notes: list[str] = []
    for name in names:
        label = row.captions.get(name) or TILE_LABELS.get(name, name.replace("_", " "))
        source = row.images.get(name)
        missing = True
        if source is None:
            img = _placeholder("missing")
            notes.append(f"{label}: not provided")
        elif not Path(source).is_file():
            img = _placeholder("missing")
            notes.append(f"{label}: missing file {source}")
        else:
            try:
                img = _thumbnail(Path(source))
                missing = False
            except Exception as exc:  # a corrupt tile must not sink the whole report
                img = _placeholder("unreadable")
                notes.append(f"{label}: cannot read {source} ({type(exc).__name__}: {exc})")
        filename = f"{file_stem}__{_safe_name(name)}.jpg"
        _save_jpeg(img, files_dir / filename)
        written.add(filename)
        tiles.append(_Tile(name, label, f"{FILES_DIRNAME}/{quote(filename)}", img.width, img.height, missing))
    return tiles, notes


def _unique_file_stems(rows: list[ImageRow]) -> list[str]:
    """File-name-safe, distinct stems for the thumbnails of each row."""
    used: set[str] = set()
    out = []
    for row in rows:
        base = _safe_name(row.stem)
        name, k = base, 2
        while name.lower() in used:  # case-insensitive: macOS/Windows file systems
            name, k = f"{base}-{k}", k + 1
        used.add(name.lower())
        out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# HTML pieces


def _direction(metric: str) -> str:
    if lower_is_better(metric):
        return '<span class="dir" title="lower is better">↓</span>'
    return '<span class="dir" title="higher is better">↑</span>'


def _aggregate_html(aggregate: Mapping[str, Mapping[str, float]]) -> str:
    if not aggregate:
        return '<p class="muted">No metrics were computed.</p>'
    rows = []
    for metric, stats in aggregate.items():
        cells = "".join(f'<td class="num">{_esc(format_value(stats.get(k)))}</td>' for k in ("mean", "median", "std"))
        rows.append(
            f'<tr><th scope="row"><code>{_esc(metric)}</code> {_direction(metric)}</th>{cells}'
            f'<td class="num">{_esc(_count(stats.get("count")))}</td></tr>'
        )
    return (
        '<div class="table-wrap"><table class="data">'
        '<thead><tr><th scope="col">metric</th><th scope="col" class="num">mean</th>'
        '<th scope="col" class="num">median</th><th scope="col" class="num">std</th>'
        '<th scope="col" class="num">count</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


def _skipped_html(skipped: Mapping[str, str]) -> str:
    if not skipped:
        return '<p class="muted">None: every metric was computed.</p>'
    items = "".join(
        f'<li><code>{_esc(metric)}</code><span class="reason">{_esc(reason)}</span></li>'
        for metric, reason in skipped.items()
    )
    return f'<ul class="skipped">{items}</ul>'


def _best_values(method_table: Mapping[str, Mapping[str, float]], metrics: list[str]) -> dict[str, float]:
    best: dict[str, float] = {}
    for metric in metrics:
        values = [v for m in method_table.values() if (v := _finite(m.get(metric))) is not None]
        if len(values) >= 2 and min(values) != max(values):
            best[metric] = min(values) if lower_is_better(metric) else max(values)
    return best


def _method_html(method_table: Mapping[str, Mapping[str, float]]) -> str:
    metrics: list[str] = []
    for per_method in method_table.values():
        metrics += [k for k in per_method if k not in metrics]
    best = _best_values(method_table, metrics)
    head = "".join(f'<th scope="col" class="num"><code>{_esc(m)}</code> {_direction(m)}</th>' for m in metrics)
    body = []
    for method, values in method_table.items():
        cells = []
        for metric in metrics:
            value = values.get(metric)
            is_best = metric in best and _finite(value) == best[metric]
            cls = "num best" if is_best else "num"
            mark = ' title="best"' if is_best else ""
            cells.append(f'<td class="{cls}"{mark}>{_esc(format_value(value))}</td>')
        body.append(f'<tr><th scope="row">{_esc(method)}</th>{"".join(cells)}</tr>')
    return (
        '<div class="table-wrap"><table class="data methods">'
        f'<thead><tr><th scope="col">method</th>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>'
        '<p class="legend"><span class="best swatch">best</span> best value per column; '
        "↓ lower is better, ↑ higher is better.</p>"
    )


def _row_metrics_html(metrics: Mapping[str, float | None]) -> str:
    if not metrics:
        return '<p class="muted">No metrics for this image.</p>'
    rows = "".join(
        f'<tr><th scope="row"><code>{_esc(name)}</code></th>'
        f'<td class="num{" none" if value is None else ""}">{_esc(format_value(value))}</td></tr>'
        for name, value in metrics.items()
    )
    return f'<table class="data compact"><tbody>{rows}</tbody></table>'


def _row_html(index: int, row: ImageRow, tiles: list[_Tile], tile_notes: list[str]) -> str:
    figures = []
    for tile in tiles:
        cls = "tile missing" if tile.missing else "tile"
        figures.append(
            f'<figure class="{cls}"><div class="frame">'
            f'<img src="{_esc(tile.src)}" width="{tile.width}" height="{tile.height}" '
            f'alt="{_esc(row.stem)}: {_esc(tile.label)}" loading="lazy"></div>'
            f"<figcaption>{_esc(tile.label)}</figcaption></figure>"
        )
    notes = list(row.notes) + tile_notes
    notes_html = ""
    if notes:
        notes_html = '<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"
    details = ""
    if row.details:
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in row.details.items())
        details = f'<h4>details</h4><dl class="settings details">{items}</dl>'
    n_missing = sum(t.missing for t in tiles)
    badge = f'<span class="badge warn">{n_missing} missing</span>' if n_missing else ""
    return (
        f'<article class="card sheet" id="image-{index}">'
        f'<header><h3>{_esc(row.stem)}</h3>{badge}</header>'
        f'<div class="sheet-body"><div class="tiles">{"".join(figures)}</div>'
        f'<aside class="row-metrics">{details}<h4>metrics</h4>{_row_metrics_html(row.metrics)}</aside></div>'
        f"{notes_html}</article>"
    )


def _settings_value(value: Any) -> str:
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">{}</span>'
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_settings_value(v)}</dd>" for k, v in value.items())
        return f'<dl class="settings">{items}</dl>'
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return "<code>" + _esc(json.dumps(list(value), default=str, ensure_ascii=False)) + "</code>"
        return "<ol>" + "".join(f"<li>{_settings_value(v)}</li>" for v in value) + "</ol>"
    if value is None or isinstance(value, bool | int | float):
        return f"<code>{_esc(json.dumps(value))}</code>"
    return f"<code>{_esc(value)}</code>"


def _settings_html(settings: Mapping[str, Any]) -> str:
    if not settings:
        return '<p class="muted">No settings recorded.</p>'
    raw = json.dumps(settings, indent=2, default=str, ensure_ascii=False)
    return (
        f"{_settings_value(settings)}"
        f'<details><summary>as JSON</summary><pre>{_esc(raw)}</pre></details>'
    )


_CSS = """
:root {
  color-scheme: light;
  --bg: #f4f5f7; --card: #fff; --ink: #1d2330; --muted: #667085; --line: #e3e6eb;
  --head: #f8f9fb; --accent: #2557d6; --best: #dff5e3; --best-ink: #14642a;
  --warn: #fff4e0; --warn-ink: #8a5300;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
    sans-serif;
}
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 0.92em; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 0; word-break: break-all; }
h4 { font-size: 12px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--muted); }
.page-head { margin-bottom: 20px; }
.meta { color: var(--muted); margin: 0; }
.summary { margin: 6px 0 0; font-size: 15px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 20px; margin: 0 0 18px; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04); }
.grid2 { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 18px; }
.grid2 > .card { margin: 0; }
.grid2 + * { margin-top: 18px; }
.muted { color: var(--muted); }
.table-wrap { overflow: auto; max-height: 70vh; border: 1px solid var(--line); border-radius: 8px; }
table.data { border-collapse: separate; border-spacing: 0; width: 100%; }
table.data th, table.data td { padding: 6px 12px; text-align: left; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
table.data tbody tr:last-child > * { border-bottom: 0; }
table.data thead th { position: sticky; top: 0; z-index: 1; background: var(--head);
  font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
table.data thead th code { text-transform: none; letter-spacing: 0; color: var(--ink); }
table.data tbody th { font-weight: 500; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
table.data tbody tr:hover { background: #f0f4ff; }
.num { text-align: right !important; font-variant-numeric: tabular-nums; }
td.none { color: #a0a6b1; }
table.methods { table-layout: fixed; min-width: 640px; }
table.methods th:first-child { width: 22%; }
td.best { background: var(--best); color: var(--best-ink); font-weight: 700; }
.dir { color: var(--muted); font-size: 11px; font-weight: 400; }
.legend { color: var(--muted); font-size: 12px; margin: 8px 0 0; }
.swatch { padding: 1px 6px; border-radius: 4px; background: var(--best); color: var(--best-ink);
  font-weight: 700; }
ul.skipped { list-style: none; margin: 0; padding: 0; }
ul.skipped li { padding: 8px 0; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap;
  gap: 4px 12px; align-items: baseline; }
ul.skipped li:last-child { border-bottom: 0; }
ul.skipped code { background: var(--warn); color: var(--warn-ink); padding: 1px 6px; border-radius: 4px; }
ul.skipped .reason { color: var(--muted); }
.section-title { font-size: 17px; margin: 28px 0 12px; }
.sheet header { display: flex; align-items: center; gap: 10px; margin-bottom: 12px; }
.badge { font-size: 11px; padding: 2px 8px; border-radius: 999px; font-weight: 600; }
.badge.warn { background: var(--warn); color: var(--warn-ink); }
.sheet-body { display: grid; grid-template-columns: minmax(0, 1fr) 260px; gap: 20px; align-items: start; }
.tiles { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 14px 12px; }
.tile { margin: 0; }
.tile .frame { aspect-ratio: 1 / 1; background: #eceef1; border: 1px solid var(--line); border-radius: 6px;
  overflow: hidden; display: flex; align-items: center; justify-content: center; }
.tile img { display: block; width: 100%; height: 100%; object-fit: contain; }
.tile.missing .frame { border-style: dashed; }
.tile figcaption { font-size: 12px; color: var(--muted); text-align: center; margin-top: 5px;
  line-height: 1.3; }
.row-metrics table.data th, .row-metrics table.data td { padding: 4px 8px; font-size: 13px; }
.row-metrics table.data { border: 1px solid var(--line); border-radius: 8px; }
ul.notes { margin: 14px 0 0; padding: 8px 12px 8px 28px; background: var(--warn); color: var(--warn-ink);
  border-radius: 6px; font-size: 13px; }
dl.settings { margin: 0; display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 4px 16px; }
dl.settings dt { font-weight: 600; color: var(--muted); }
dl.settings dd { margin: 0; word-break: break-word; }
dl.settings dl.settings { padding-left: 12px; border-left: 2px solid var(--line); }
dl.details { grid-template-columns: minmax(0, 1fr); margin-bottom: 12px; font-size: 13px; }
details { margin-top: 14px; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 12px;
  overflow: auto; max-height: 60vh; }
nav.index { display: flex; flex-wrap: wrap; gap: 6px; margin: 0 0 14px; }
nav.index a { font-size: 12px; padding: 2px 8px; border: 1px solid var(--line); border-radius: 999px;
  background: var(--card); color: var(--accent); text-decoration: none; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 28px; }
@media (max-width: 900px) {
  .grid2, .sheet-body { grid-template-columns: minmax(0, 1fr); }
  main { padding: 16px 10px 32px; }
}
@media (max-width: 560px) {
  .tiles { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .card { padding: 14px 12px; }
  dl.settings { grid-template-columns: minmax(0, 1fr); }
  dl.settings dd { margin-bottom: 6px; }
}
@media print {
  body { background: #fff; }
  .card { box-shadow: none; break-inside: avoid; }
  .table-wrap { max-height: none; overflow: visible; }
}
"""


def _page(
    title: str,
    rows: list[ImageRow],
    sheets: list[str],
    aggregate: Mapping[str, Mapping[str, float]],
    settings: Mapping[str, Any],
    skipped: Mapping[str, str],
    method_table: Mapping[str, Mapping[str, float]] | None,
) -> str:
    now = datetime.now().astimezone()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    n = len(rows)
    n_metrics = len(aggregate)
    summary = (
        f"{n} image{'s' if n != 1 else ''} · {n_metrics} metric{'s' if n_metrics != 1 else ''} computed"
        f" · {len(skipped)} skipped"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="facetex evaluate"><title>{_esc(title)}</title>',
        f"<style>{_CSS}</style></head><body><main>",
        f'<header class="page-head"><h1>{_esc(title)}</h1>'
        f'<p class="meta">Generated <time datetime="{_esc(now.isoformat(timespec="seconds"))}">'
        f"{_esc(stamp)}</time></p>"
        f'<p class="summary">{_esc(summary)}</p></header>',
        '<div class="grid2">',
        f'<section class="card" id="aggregate"><h2>Aggregate</h2>{_aggregate_html(aggregate)}</section>',
        f'<section class="card" id="skipped"><h2>Skipped metrics</h2>{_skipped_html(skipped)}</section>',
        "</div>",
    ]
    if method_table:
        parts.append(f'<section class="card" id="methods"><h2>Methods</h2>{_method_html(method_table)}</section>')
    parts.append(f'<h2 class="section-title" id="images">Per image ({n})</h2>')
    if n > 1:
        links = "".join(f'<a href="#image-{i}">{_esc(row.stem)}</a>' for i, row in enumerate(rows))
        parts.append(f'<nav class="index" aria-label="images">{links}</nav>')
    if not rows:
        parts.append('<p class="muted">No images.</p>')
    parts += sheets
    parts.append(f'<section class="card" id="settings"><h2>Settings</h2>{_settings_html(settings)}</section>')
    parts.append("<footer>facetex evaluate</footer></main></body></html>\n")
    return "\n".join(parts)


def write_report(
    out_dir: Path,
    rows: list[ImageRow],
    aggregate: dict[str, dict[str, float]],
    settings: dict,
    skipped: dict[str, str],
    *,
    title: str = "facetex evaluation",
    method_table: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and its thumbnails in ``out_dir/report_files/``.

    Args:
        out_dir: the report folder (created if needed).
        rows: one :class:`ImageRow` per image, shown in this order.
        aggregate: metric name -> ``{"mean", "median", "std", "count"}``.
        settings: the exact settings of the run (nested dict), printed at the end.
        skipped: metric name -> one-line reason it was not computed.
        title: page title.
        method_table: optional method -> metric -> value; the best value per column is marked
            (class ``best``): lower is better for names containing one of :data:`LOWER_IS_BETTER`.

    Returns:
        The path of ``report.html``.

    Thumbnails are named ``<stem>__<tile>.jpg`` with the stem made file-name safe (characters
    other than letters, digits and ``._-`` become ``_``; duplicates get ``-2``, ``-3``...). Stale
    ``.jpg`` files from an earlier report in ``report_files/`` are removed.
    """
    out_dir = Path(out_dir)
    files_dir = out_dir / FILES_DIRNAME
    files_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    sheets = []
    for index, (row, file_stem) in enumerate(zip(rows, _unique_file_stems(rows), strict=True)):
        tiles, tile_notes = _make_tiles(row, files_dir, file_stem, written)
        sheets.append(_row_html(index, row, tiles, tile_notes))
    page = _page(title, rows, sheets, aggregate, settings, skipped, method_table)
    report = out_dir / "report.html"
    with atomic_path(report) as tmp:
        tmp.write_text(page, encoding="utf-8")
    for stale in files_dir.glob("*.jpg"):
        if stale.name not in written and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    return report
