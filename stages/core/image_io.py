"""Robust photo loading and PNG writing.

Photos come from anywhere: phones (EXIF rotation), scanners (16-bit, grayscale, CMYK), editors
(alpha), cameras (40+ megapixels). :func:`load_photo` turns all of them into one thing, an
``(H, W, 3)`` uint8 RGB array, or raises :class:`~stages.core.errors.BadInputError` with a one-line
reason naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from stages.core.atomic import atomic_path
from stages.core.errors import BadInputError

#: Images above this many pixels are refused outright (decompression-bomb guard, ~ 24k x 24k).
MAX_PIXELS = 600_000_000
#: Photos whose long side exceeds this are downscaled on load; a face never needs more.
DEFAULT_MAX_SIDE = 4096
#: Smallest photo side that can hold a detectable face.
MIN_SIDE = 32

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Photo:
    """A loaded photo.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 RGB pixels, EXIF orientation applied.
        path: where it came from.
        scale: working size / original (EXIF-rotated) size; ``< 1`` when downscaled on load.
        original_size: ``(width, height)`` of the file after EXIF rotation.
        sha256: hex digest of the file's bytes ("" for photos not read from a file); ``fit.json``
            records it so a later stage can tell whether it is given the same photo.
    """

    rgb: np.ndarray
    path: Path
    scale: float
    original_size: tuple[int, int]
    sha256: str = ""

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to ``(H, W, 3)`` uint8 RGB."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale by the actual bit depth, not by the data maximum.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(arr * 255.0 + 0.5 if arr.max(initial=0) <= 1.0 else arr, 0, 255)
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on mid-gray: a transparent background should not look like skin or hair.
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return np.asarray(Image.alpha_composite(base, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))  # L, P, CMYK, YCbCr, RGB, 1


def require_regular_file(path: Path) -> None:
    """Refuse, before opening it, anything that is not a regular file (after following links).

    Opening a FIFO blocks until a writer appears (forever, in a batch); a device can stream
    endlessly; a folder or a symlink loop cannot be read. One-line :class:`BadInputError` each.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except OSError as exc:  # ELOOP (symlink loop), EACCES, ENAMETOOLONG, ...
        raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISREG(mode):
        return
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise BadInputError(path, f"is {kind}, not an image file")


#: libjpeg warnings that mean the entropy-coded data is damaged: libjpeg fills what it could not
#: decode with flat grey (or garbage) and still returns an image (Pillow reports nothing).
JPEG_CORRUPTION_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file")
_STDERR_LOCK = threading.Lock()


def jpeg_decoder_warnings(data: bytes) -> list[str]:
    """libjpeg's warning lines for a JPEG held in memory (``[]`` for a clean file).

    Pillow silences libjpeg's warnings; OpenCV's libjpeg prints them on stderr. So the file is
    decoded once more by OpenCV at 1/8 scale (the full entropy decoding runs, the IDCT is tiny:
    ~5 ms for a 2-megapixel photo) with file descriptor 2 redirected to a temporary file. Anything
    else written to stderr meanwhile (another thread) is passed on afterwards.
    """
    import cv2

    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode("utf-8", errors="replace").splitlines()
    found = [line.strip() for line in lines if line.strip().startswith(JPEG_CORRUPTION_WARNINGS)]
    others = [line for line in lines if line.strip() not in found]
    if others:
        sys.stderr.write("\n".join(others) + "\n")
    return found


def load_photo(path: str | Path, *, max_side: int = DEFAULT_MAX_SIDE) -> Photo:
    """Load a photo as RGB uint8, applying EXIF orientation and a size limit.

    Args:
        path: image file (JPEG, PNG, TIFF, BMP, WebP; any bit depth or colour mode Pillow reads).
        max_side: long-side limit in pixels; larger photos are downscaled (area filter).

    Returns:
        A :class:`Photo` with ``rgb`` of shape ``(H, W, 3)``.

    Raises:
        BadInputError: missing file, not a regular file (FIFO, device, folder, symlink loop), not an
            image, corrupt/truncated data (including JPEGs libjpeg decodes only with "corrupt data"
            warnings), too small, too large.
    """
    path = Path(path)
    require_regular_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(path, f"cannot be read ({exc.strerror or exc})") from None
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        # Another library may have switched this global on; a truncated photo is never accepted.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb8(img)
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image, or an image format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInputError(path, f"image too large (over {MAX_PIXELS // 1_000_000} megapixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(path, f"corrupt or truncated image ({exc})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    if data[:2] == b"\xff\xd8":
        damage = jpeg_decoder_warnings(data)
        if damage:
            raise BadInputError(path, f"corrupt JPEG data (the decoder reports: {damage[0]})")
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise BadInputError(path, f"image too small ({width}x{height}); need at least {MIN_SIDE} px a side")
    scale = 1.0
    if max(height, width) > max_side:
        scale = max_side / max(height, width)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(new_size, Image.Resampling.BOX))
    return Photo(rgb=np.ascontiguousarray(rgb), path=path, scale=scale, original_size=(width, height),
                 sha256=hashlib.sha256(data).hexdigest())


def load_texture(path: str | Path) -> np.ndarray:
    """Load a UV texture PNG as float32 ``(S, S, C)`` in ``[0, 1]`` (C = 3, or 4 with alpha).

    Raises:
        BadInputError: missing, unreadable or not square.
    """
    path = Path(path)
    require_regular_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") else "RGB"
            arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(path, f"corrupt or truncated image ({exc})") from None
    if arr.shape[0] != arr.shape[1]:
        raise BadInputError(path, f"UV texture must be square, got {arr.shape[1]}x{arr.shape[0]}")
    return arr


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float in ``[0, 1]`` (or uint8/bool) -> uint8, rounding and clipping."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    return np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` float [0, 1] / uint8 / bool as PNG, atomically.

    Encoded by OpenCV with the "up" filter and run-length zlib strategy: measured on a 1024^2
    photo overlay, twice as fast as the default adaptive filters and 5% smaller (PNG encoding
    dominates a batch's write time).
    """
    import cv2

    pixels = to_uint8(image)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 3, 4))):
        raise ValueError(f"{path}: cannot write an image of shape {pixels.shape} as PNG")
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels), [
        cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
        cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def save_jpeg(path: str | Path, image: np.ndarray, quality: int = 92) -> None:
    """Write an RGB image as JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="JPEG", quality=quality)
