"""Tests for stages.core.image_io (robust photo loading, texture loading, atomic PNG writing)."""

from __future__ import annotations

import os
from pathlib import Path
import stat

import numpy as np
import pytest
from PIL import Image

from stages.core.errors import BadInputError, FacetexError
from stages.core.image_io import MIN_SIDE, load_photo, load_texture, save_png, to_uint8


def _rgb_pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    """A smooth image that survives JPEG compression with small errors."""
    yy, xx = np.mgrid[:h, :w]
    r = 40 + 160 * xx / max(w - 1, 1)
    g = 40 + 160 * yy / max(h - 1, 1)
    b = np.full_like(r, 120.0)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def _bad_input(path, **kwargs) -> BadInputError:
    with pytest.raises(BadInputError) as info:
        load_photo(path, **kwargs)
    return info.value


def _assert_one_line_naming(err: FacetexError, path) -> None:
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg
    assert str(path) in msg
    assert err.path == path


# --------------------------------------------------------------------------------------- loading


def test_png_rgb_loads_exactly(tmp_path):
    rgb = _rgb_pattern(48, 64)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    photo = load_photo(path)
    assert photo.rgb.dtype == np.uint8
    assert photo.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(photo.rgb, rgb)
    assert photo.scale == 1.0
    assert photo.original_size == (64, 48)
    assert (photo.width, photo.height) == (64, 48)
    assert photo.path == path
    assert photo.rgb.flags.c_contiguous


def test_jpeg_rgb_loads_close(tmp_path):
    rgb = _smooth_rgb(50, 70)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    photo = load_photo(str(path))  # str paths work too
    assert photo.rgb.shape == (50, 70, 3)
    assert photo.rgb.dtype == np.uint8
    assert np.abs(photo.rgb.astype(int) - rgb.astype(int)).mean() < 3.0
    assert photo.path == path


def test_grayscale_l_is_replicated_to_rgb(tmp_path):
    gray = np.arange(40 * 50, dtype=np.int64).reshape(40, 50) % 256
    gray = gray.astype(np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    photo = load_photo(path)
    assert photo.rgb.shape == (40, 50, 3)
    for c in range(3):
        np.testing.assert_array_equal(photo.rgb[..., c], gray)


def test_16bit_grayscale_scaled_by_bit_depth(tmp_path):
    arr = np.full((40, 40), 32768, dtype=np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 0
    arr[0, 2] = 257  # 257 / 65535 * 255 = 1.0
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # really a 16-bit file
    photo = load_photo(path)
    assert photo.rgb.shape == (40, 40, 3)
    np.testing.assert_array_equal(photo.rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(photo.rgb[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(photo.rgb[0, 2], [1, 1, 1])
    np.testing.assert_array_equal(photo.rgb[5, 5], [128, 128, 128])


def test_16bit_dark_image_is_not_stretched(tmp_path):
    # All values <= 255 in a 16-bit file are nearly black, not full range.
    arr = np.full((40, 40), 200, dtype=np.uint16)
    path = tmp_path / "dark16.png"
    Image.fromarray(arr).save(path)
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.rgb[3, 3], [1, 1, 1])


def test_16bit_tiff_and_float_tiff(tmp_path):
    g16 = np.full((40, 40), 32768, dtype=np.uint16)
    g16[0, 0] = 65535
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    photo = load_photo(tmp_path / "g16.tif")
    np.testing.assert_array_equal(photo.rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(photo.rgb[5, 5], [128, 128, 128])
    f = np.full((40, 40), 0.5, dtype=np.float32)
    f[0, 0], f[0, 1] = 1.0, 0.0
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    photo = load_photo(tmp_path / "f.tif")
    np.testing.assert_array_equal(photo.rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(photo.rgb[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(photo.rgb[5, 5], [128, 128, 128])


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "TIFF"])
def test_lossless_formats_exact(tmp_path, fmt):
    rgb = _rgb_pattern(40, 44, seed=9)
    path = tmp_path / f"img.{fmt.lower()}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(rgb).save(path, format=fmt, **kwargs)
    np.testing.assert_array_equal(load_photo(path).rgb, rgb)


def test_rgba_composited_over_mid_gray(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., :3] = (255, 0, 0)
    rgba[:20, :, 3] = 255  # opaque red top half
    rgba[20:, :, 3] = 0  # transparent bottom half
    rgba[20:, :20, :] = (0, 0, 255, 128)  # half-transparent blue patch
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    photo = load_photo(path)
    assert photo.rgb.shape == (40, 40, 3)
    np.testing.assert_array_equal(photo.rgb[5, 5], [255, 0, 0])
    np.testing.assert_array_equal(photo.rgb[30, 30], [128, 128, 128])
    blend = photo.rgb[30, 5].astype(int)
    # 128 * (1 - a) + 255 * a with a = 128/255 on blue; 128 * (1 - a) on red/green.
    assert abs(blend[0] - 64) <= 1 and abs(blend[1] - 64) <= 1 and abs(blend[2] - 192) <= 1


def test_la_composited_over_mid_gray(tmp_path):
    la = np.zeros((40, 40, 2), dtype=np.uint8)
    la[..., 0] = 255
    la[:20, :, 1] = 255
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.rgb[5, 5], [255, 255, 255])
    np.testing.assert_array_equal(photo.rgb[30, 5], [128, 128, 128])


def test_palette_image(tmp_path):
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    for x in range(20):
        for y in range(40):
            pal.putpixel((x, y), 1)
    path = tmp_path / "pal.png"
    pal.save(path)
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.rgb[5, 5], [200, 100, 50])
    np.testing.assert_array_equal(photo.rgb[5, 30], [10, 20, 30])


def test_palette_with_transparency_composited(tmp_path):
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((3, 3), 1)
    path = tmp_path / "pal_t.png"
    pal.save(path, transparency=0)
    photo = load_photo(path)
    np.testing.assert_array_equal(photo.rgb[3, 3], [0, 255, 0])
    np.testing.assert_array_equal(photo.rgb[20, 20], [128, 128, 128])  # transparent index


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (48, 40), (0, 0, 0, 0))  # white
    cmyk.paste((0, 255, 255, 0), (0, 0, 24, 40))  # red left half
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    photo = load_photo(path)
    assert photo.rgb.shape == (40, 48, 3)
    red = photo.rgb[20, 5].astype(int)
    white = photo.rgb[20, 40].astype(int)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert (white > 240).all()


@pytest.mark.parametrize(("orientation", "corner"), [(6, "top_right"), (8, "bottom_left")])
def test_exif_orientation_applied(tmp_path, orientation, corner):
    # Stored 60 wide x 40 high, red block in the stored top-left corner.
    stored = np.zeros((40, 60, 3), dtype=np.uint8)
    stored[:6, :6] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rot{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    photo = load_photo(path)
    # 6 = rotate 90 deg clockwise for display, 8 = 90 deg counter-clockwise: both swap W and H.
    assert photo.rgb.shape == (60, 40, 3)
    assert photo.original_size == (40, 60)
    corners = {
        "top_left": photo.rgb[2, 2], "top_right": photo.rgb[2, -3],
        "bottom_left": photo.rgb[-3, 2], "bottom_right": photo.rgb[-3, -3],
    }
    for name, px in corners.items():
        if name == corner:
            assert px[0] > 200 and px[1] < 50 and px[2] < 50, (name, px)
        else:
            assert px.max() < 50, (name, px)


def test_large_image_downscaled_to_max_side(tmp_path):
    rgb = _smooth_rgb(500, 1000)
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path, compress_level=1)
    photo = load_photo(path, max_side=250)
    assert photo.rgb.shape == (125, 250, 3)
    assert photo.scale == pytest.approx(0.25)
    assert photo.original_size == (1000, 500)
    # Area filter: the downscaled pixel is the mean of its 4x4 block.
    block = rgb[:4, :4].reshape(-1, 3).mean(axis=0)
    assert np.abs(photo.rgb[0, 0].astype(float) - block).max() <= 1.0


def test_default_max_side_limits_huge_photo(tmp_path):
    rgb = np.zeros((40, 5000, 3), dtype=np.uint8)
    rgb[:, 2500:] = 200
    path = tmp_path / "wide.png"
    Image.fromarray(rgb).save(path, compress_level=1)
    # 40 * 4096 / 5000 = 32.768 -> 33 rows
    photo = load_photo(path)
    assert photo.width == 4096
    assert photo.height == 33
    assert photo.scale == pytest.approx(4096 / 5000)
    assert photo.original_size == (5000, 40)


def test_small_enough_image_not_rescaled(tmp_path):
    rgb = _rgb_pattern(40, 100, seed=3)
    path = tmp_path / "ok.png"
    Image.fromarray(rgb).save(path)
    photo = load_photo(path, max_side=100)
    assert photo.scale == 1.0
    np.testing.assert_array_equal(photo.rgb, rgb)


# ------------------------------------------------------------------------------------------ errors


def test_truncated_jpeg_raises_bad_input(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_rgb_pattern(200, 300)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _bad_input(path)
    _assert_one_line_naming(err, path)
    assert "truncated" in str(err) or "corrupt" in str(err)


def test_truncated_png_raises_bad_input(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_rgb_pattern(100, 100)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_one_line_naming(_bad_input(path), path)
    header_only = tmp_path / "header.png"
    header_only.write_bytes(data[:40])
    _assert_one_line_naming(_bad_input(header_only), header_only)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\nsecond line\n")
    err = _bad_input(path)
    _assert_one_line_naming(err, path)
    assert "not an image" in str(err)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    err = _bad_input(path)
    _assert_one_line_naming(err, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    err = _bad_input(path)
    _assert_one_line_naming(err, path)
    assert "not found" in str(err)


def test_directory(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()
    err = _bad_input(path)
    _assert_one_line_naming(err, path)
    assert "folder" in str(err)


def _astronaut_jpeg_bytes() -> bytes:
    import io

    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _damaged(raw: bytes, how: str) -> bytes:
    """A JPEG damaged in its middle: libjpeg still returns a full image (grey or garbage below the
    damage) and Pillow reports nothing."""
    n = len(raw)
    if how == "cut_to_eoi":        # first half, then an end marker: the lower half decodes flat grey
        return raw[: n // 2] + b"\xff\xd9"
    if how == "middle_removed":    # 5 kB cut out of the scan
        return raw[: n // 2] + raw[n // 2 + 5000:]
    if how == "middle_overwritten":  # random bytes written over the scan
        noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
        return raw[: n // 2] + noise + raw[n // 2 + 200:]
    raise ValueError(how)


@pytest.mark.parametrize("how", ["cut_to_eoi", "middle_removed", "middle_overwritten"])
def test_jpeg_with_corrupt_middle_is_refused(tmp_path, how):
    raw = _astronaut_jpeg_bytes()
    good = tmp_path / "good.jpg"
    good.write_bytes(raw)
    assert load_photo(good).rgb.shape == (512, 512, 3)  # the undamaged file loads
    path = tmp_path / f"{how}.jpg"
    path.write_bytes(_damaged(raw, how))
    Image.open(path).load()  # Pillow alone decodes it without complaint
    err = _bad_input(path)
    _assert_one_line_naming(err, path)
    assert "corrupt JPEG data" in str(err)


def test_truncated_jpeg_refused_even_if_pillow_is_told_to_load_truncated_images(tmp_path):
    from PIL import ImageFile

    path = tmp_path / "cut.jpg"
    raw = _astronaut_jpeg_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as some other library might set it
    try:
        err = _bad_input(path)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    _assert_one_line_naming(err, path)
    assert "truncated" in str(err) or "corrupt" in str(err)


def test_photo_records_the_file_checksum(tmp_path):
    import hashlib

    path = tmp_path / "good.jpg"
    path.write_bytes(_astronaut_jpeg_bytes())
    assert load_photo(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _error_line_in_subprocess(path: Path) -> str:
    """``load_photo(path)``'s error line, run in a child process under a timeout and a 2 GB memory
    limit: opening a FIFO without a writer blocks forever and reading /dev/zero never ends, so a
    regression fails this test instead of hanging it or exhausting the machine's memory."""
    import resource
    import subprocess
    import sys

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    code = ("import sys; from stages.core.image_io import load_photo\n"
            "from stages.core.errors import BadInputError\n"
            "try:\n    load_photo(sys.argv[1])\nexcept BadInputError as e:\n    print(e)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[1], preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        return "timed out"
    return done.stdout.strip() or f"exit {done.returncode}: {done.stderr.strip()[-200:]}"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "fifo.jpg"
    os.mkfifo(path)
    assert _error_line_in_subprocess(path) == f"{path}: is a FIFO (named pipe), not an image file"


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this platform")
def test_device_is_refused_without_reading_it(tmp_path):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    assert _error_line_in_subprocess(link) == f"{link}: is a device, not an image file"


def test_symlink_loop_is_refused(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    err = _bad_input(loop)
    _assert_one_line_naming(err, loop)
    assert "cannot be read" in str(err)


def test_too_small_image(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(_rgb_pattern(10, 10)).save(path)
    err = _bad_input(path)
    _assert_one_line_naming(err, path)
    assert "too small" in str(err)
    assert "10x10" in str(err)


def test_min_side_boundary(tmp_path):
    ok = tmp_path / "ok.png"
    Image.fromarray(_rgb_pattern(MIN_SIDE, 200)).save(ok)
    assert load_photo(ok).rgb.shape == (MIN_SIDE, 200, 3)
    bad = tmp_path / "thin.png"
    Image.fromarray(_rgb_pattern(MIN_SIDE - 1, 200)).save(bad)
    assert "too small" in str(_bad_input(bad))


def test_bad_photo_fails_only_its_batch_item_in_one_line(tmp_path):
    """A photo load_photo refuses is an expected error: the batch names the file, no "internal
    error", and the next photo is still loaded."""
    from facetex_cli.batch import run_batch

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = tmp_path / "good.png"
    Image.fromarray(_rgb_pattern(48, 64)).save(good)
    results = run_batch([bad, good], lambda p: f"{load_photo(p).width}px", quiet_native=False)
    assert [r.status for r in results] == ["failed", "ok"]
    assert results[0].detail.startswith(f"{bad}: ") and "internal error" not in results[0].detail
    assert "\n" not in results[0].detail and results[1].detail == "64px"


# ----------------------------------------------------------------------------------------- texture


def test_load_texture_rgb_and_rgba(tmp_path):
    rgb = _rgb_pattern(32, 32, seed=5)
    p_rgb = tmp_path / "tex.png"
    Image.fromarray(rgb).save(p_rgb)
    tex = load_texture(p_rgb)
    assert tex.dtype == np.float32 and tex.shape == (32, 32, 3)
    np.testing.assert_allclose(tex, rgb.astype(np.float32) / 255.0, atol=1e-7)

    rgba = np.concatenate([rgb, np.full((32, 32, 1), 77, np.uint8)], axis=-1)
    p_rgba = tmp_path / "tex_a.png"
    Image.fromarray(rgba, mode="RGBA").save(p_rgba)
    tex_a = load_texture(p_rgba)
    assert tex_a.shape == (32, 32, 4)
    np.testing.assert_allclose(tex_a[..., 3], 77 / 255.0, atol=1e-7)

    gray = tmp_path / "tex_l.png"
    Image.fromarray(rgb[..., 0], mode="L").save(gray)
    tex_l = load_texture(gray)
    assert tex_l.shape == (32, 32, 3)
    np.testing.assert_allclose(tex_l[..., 2], rgb[..., 0] / 255.0, atol=1e-7)


def test_load_texture_errors(tmp_path):
    rect = tmp_path / "rect.png"
    Image.fromarray(_rgb_pattern(32, 48)).save(rect)
    with pytest.raises(BadInputError, match="square"):
        load_texture(rect)
    missing = tmp_path / "missing.png"
    with pytest.raises(BadInputError) as info:
        load_texture(missing)
    _assert_one_line_naming(info.value, missing)
    text = tmp_path / "text.png"
    text.write_text("hello")
    with pytest.raises(BadInputError) as info:
        load_texture(text)
    _assert_one_line_naming(info.value, text)


# ---------------------------------------------------------------------------------- to_uint8/save


def test_to_uint8_conversions():
    u8 = np.array([[0, 7, 255]], dtype=np.uint8)
    assert to_uint8(u8) is u8
    f = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, 1 / 255, 0.499 / 255], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(f), [0, 0, 128, 255, 255, 1, 0])
    f64 = np.array([0.25, 0.75])
    out = to_uint8(f64)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [64, 191])
    b = np.array([True, False])
    np.testing.assert_array_equal(to_uint8(b), [255, 0])


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_save_png_round_trip_uint8(tmp_path, channels):
    rng = np.random.default_rng(11)
    shape = (21, 34) if channels is None else (21, 34, channels)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "out.png"
    save_png(path, image)
    with Image.open(path) as img:
        back = np.asarray(img)
    np.testing.assert_array_equal(back, image)


def test_save_png_float_and_bool(tmp_path):
    f = np.array([[0.0, 0.5, 1.0, 1.5]], dtype=np.float32).repeat(3, axis=0)
    save_png(tmp_path / "f.png", f)
    with Image.open(tmp_path / "f.png") as img:
        np.testing.assert_array_equal(np.asarray(img)[0], [0, 128, 255, 255])
    m = np.array([[True, False]])
    save_png(tmp_path / "m.png", m)
    with Image.open(tmp_path / "m.png") as img:
        np.testing.assert_array_equal(np.asarray(img), [[255, 0]])


def test_save_png_atomic_no_leftovers_and_permissions(tmp_path):
    folder = tmp_path / "deep" / "er"  # parents are created
    path = folder / "tex.png"
    image = _rgb_pattern(16, 16)
    save_png(path, image)
    save_png(path, image[::-1].copy())  # overwrite in place
    assert sorted(p.name for p in folder.iterdir()) == ["tex.png"]
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), image[::-1])
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    if umask & 0o044 == 0:
        assert mode & 0o044 != 0  # not the 0600 of mkstemp


def test_save_png_failure_leaves_no_temp_and_keeps_old_file(tmp_path):
    path = tmp_path / "keep.png"
    good = _rgb_pattern(8, 8)
    save_png(path, good)
    with pytest.raises((TypeError, ValueError, KeyError)):
        save_png(path, np.zeros((4, 4, 7), dtype=np.uint8))  # 7 channels: Pillow refuses
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
    with Image.open(path) as img:
        np.testing.assert_array_equal(np.asarray(img), good)
