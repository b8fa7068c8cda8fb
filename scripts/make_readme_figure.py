"""Rebuild docs/example.png, the README figure, from `facetex complete` on skimage's astronaut.

Usage: python scripts/make_readme_figure.py   (needs scikit-image, from the dev extra)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
TILE = 256


def tile(img: Image.Image) -> Image.Image:
    img = img.convert("RGB")
    img.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE), (40, 40, 40))
    canvas.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    return canvas


def alpha_over_checker(path: Path) -> Image.Image:
    rgba = np.asarray(Image.open(path).convert("RGBA")).astype(np.float32)
    checker = ((np.indices(rgba.shape[:2]).sum(0) // 16) % 2) * 40.0 + 60.0
    alpha = rgba[..., 3:] / 255.0
    return Image.fromarray((rgba[..., :3] * alpha + checker[..., None] * (1 - alpha)).astype(np.uint8))


def main() -> None:
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        photo_path = Path(tmp) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(photo_path)
        subprocess.run([sys.executable, "-m", "facetex_cli.main", "complete", str(photo_path), "-o", tmp], check=True)
        out = Path(tmp) / "astronaut"
        crop = (120, 0, 376, 256)
        tiles = [tile(Image.open(photo_path).crop(crop)),
                 tile(Image.open(out / "fit_overlay.png").crop(crop)),
                 tile(alpha_over_checker(out / "uv_texture.png")),
                 tile(Image.open(out / "uv_complete.png")),
                 tile(Image.open(out / "uv_provenance.png"))]
        labels = ["photo", "fit (landmarks, mesh, pose)", "unwrap (alpha = confidence)", "completed UV (mirror)",
                  "provenance: visible / mirrored / filled"]
        views = Image.open(out / "views.png")
        width = TILE * len(tiles)
        views = views.resize((width, round(views.height * width / views.width)))
        sheet = Image.new("RGB", (width, TILE + 60 + views.height), (24, 24, 24))
        draw = ImageDraw.Draw(sheet)
        for i, (image, label) in enumerate(zip(tiles, labels, strict=True)):
            sheet.paste(image, (i * TILE, 30))
            draw.text((i * TILE + 6, 8), label, fill=(230, 230, 230))
        draw.text((6, TILE + 38), "novel views of the textured mesh: yaw -60, -30, 0, +30, +60", fill=(230, 230, 230))
        sheet.paste(views, (0, TILE + 60))
        sheet.save(REPO / "docs" / "example.png", optimize=True)
    print(f"wrote {REPO / 'docs' / 'example.png'}")


if __name__ == "__main__":
    main()
