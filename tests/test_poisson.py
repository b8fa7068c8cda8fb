"""Tests for stages.core.poisson (gradient-domain fill, its coarse-grid variant, pull-push padding)."""

from __future__ import annotations

import numpy as np

from stages.core.poisson import poisson_fill, poisson_fill_fast, pull_push_fill


def _border(h: int, w: int, width: int = 1) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[:width] = m[-width:] = True
    m[:, :width] = m[:, -width:] = True
    return m


def _smooth_image(h: int, w: int, channels: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    u, v = xx / (w - 1), yy / (h - 1)
    chans = [
        0.5 + 0.3 * np.sin(2.0 * np.pi * u) * np.cos(1.5 * np.pi * v),
        0.2 + 0.6 * u * v,
        0.4 + 0.2 * np.cos(3.0 * u + 2.0 * v),
    ]
    return np.stack(chans[:channels], axis=-1)


def _laplacian(a: np.ndarray, i: int, j: int) -> np.ndarray:
    return 4 * a[i, j] - a[i - 1, j] - a[i + 1, j] - a[i, j - 1] - a[i, j + 1]


def test_membrane_fill_reproduces_linear_ramp():
    h, w = 40, 50
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    ramp = np.stack([0.01 * xx + 0.02 * yy + 0.1, 0.9 - 0.015 * xx], axis=-1)
    fixed = _border(h, w)
    image = np.where(fixed[..., None], ramp, 0.0)  # unknowns start at 0: only fixed pixels are read
    out = poisson_fill(image, fixed, np.ones((h, w), dtype=bool))
    assert out.dtype == np.float64 and out.shape == (h, w, 2)
    np.testing.assert_array_equal(out[fixed], ramp[fixed])
    np.testing.assert_allclose(out, ramp, atol=1e-4)
    assert np.abs(out[~fixed]).min() > 0.05  # really filled


def test_membrane_fill_ramp_with_neumann_sides():
    # Fixed only on the left and right columns; top/bottom have no flux: the x-ramp is still exact.
    h, w = 12, 60
    ramp = np.tile(np.linspace(0.2, 0.8, w), (h, 1))
    fixed = np.zeros((h, w), dtype=bool)
    fixed[:, 0] = fixed[:, -1] = True
    out = poisson_fill(np.where(fixed, ramp, 0.0), fixed, np.ones((h, w), dtype=bool))
    assert out.shape == (h, w)  # 2-D in, 2-D out
    np.testing.assert_allclose(out, ramp, atol=1e-4)


def test_membrane_fill_ramp_exact_on_long_domain():
    w = 2048
    ramp = np.tile(np.linspace(0.0, 1.0, w), (2, 1))
    fixed = np.zeros((2, w), dtype=bool)
    fixed[:, 0] = fixed[:, -1] = True
    out = poisson_fill(np.where(fixed, ramp, 0.0), fixed, np.ones((2, w), dtype=bool))
    np.testing.assert_allclose(out, ramp, atol=1e-3)


def test_guided_fill_reproduces_guidance_exactly():
    h, w = 36, 44
    img = _smooth_image(h, w)
    rng = np.random.default_rng(0)
    img = img + 0.05 * rng.normal(size=img.shape)  # detail, not just smooth
    fixed = _border(h, w, 2)
    fixed[10:14, 20:24] = True  # an interior fixed island too
    domain = np.ones((h, w), dtype=bool)
    image = np.where(fixed[..., None], img, 0.0)
    out = poisson_fill(image, fixed, domain, guidance=img, guided=np.ones((h, w), dtype=bool))
    np.testing.assert_allclose(out, img, atol=1e-5)


def test_guided_fill_removes_constant_offset():
    h, w = 30, 30
    img = _smooth_image(h, w)
    fixed = _border(h, w)
    domain = np.ones((h, w), dtype=bool)
    offset = np.array([0.3, -0.2, 0.5])
    out = poisson_fill(np.where(fixed[..., None], img, 0.0), fixed, domain,
                       guidance=img + offset, guided=np.ones((h, w), dtype=bool))
    np.testing.assert_allclose(out, img, atol=1e-5)


def test_discrete_equation_holds_at_unknown_pixels():
    h, w = 32, 32
    rng = np.random.default_rng(1)
    base = rng.uniform(size=(h, w, 1))
    guidance = rng.uniform(size=(h, w, 1))
    fixed = _border(h, w)
    fixed[rng.uniform(size=(h, w)) < 0.05] = True
    guided = np.ones((h, w), dtype=bool)
    guided[:, :5] = False  # part of the domain unguided (membrane there)
    domain = np.ones((h, w), dtype=bool)
    out = poisson_fill(base, fixed, domain, guidance=guidance, guided=guided)
    np.testing.assert_array_equal(out[fixed], base[fixed])
    checked = 0
    for i in range(1, h - 1):
        for j in range(6, w - 1):  # all four neighbours guided and in the domain
            if fixed[i, j]:
                continue
            np.testing.assert_allclose(_laplacian(out, i, j), _laplacian(guidance, i, j), atol=1e-5)
            checked += 1
    assert checked > 500
    # In the unguided part the fill is harmonic.
    for i, j in [(5, 2), (17, 3), (25, 1)]:
        if not fixed[i, j]:
            np.testing.assert_allclose(_laplacian(out, i, j), 0.0, atol=1e-5)


def test_pixels_outside_domain_untouched_and_neumann_border():
    h, w = 20, 20
    image = np.full((h, w, 1), 7.0)
    domain = np.zeros((h, w), dtype=bool)
    domain[5:15, 5:15] = True
    fixed = np.zeros((h, w), dtype=bool)
    fixed[5:15, 5] = True
    image[5:15, 5, 0] = 0.25
    out = poisson_fill(image, fixed, domain)
    np.testing.assert_array_equal(out[~domain], image[~domain])  # the 7s outside are not read
    np.testing.assert_allclose(out[domain], 0.25, atol=1e-9)


def test_isolated_island_is_finite():
    h, w = 24, 24
    img = _smooth_image(h, w, 2)
    domain = np.zeros((h, w), dtype=bool)
    domain[2:10, 2:10] = True  # part with fixed pixels
    domain[15:20, 15:20] = True  # island touching no fixed pixel
    fixed = np.zeros((h, w), dtype=bool)
    fixed[2:10, 2] = True
    image = np.where(fixed[..., None], img, 0.0)
    out = poisson_fill(image, fixed, domain)
    assert np.isfinite(out).all()
    # The island sits at the mean of the fixed pixels (the only thing pulling it).
    np.testing.assert_allclose(out[15:20, 15:20], np.broadcast_to(img[fixed].mean(0), (5, 5, 2)),
                               atol=1e-6)
    # With guidance it keeps the guidance's shape up to a constant.
    guided = np.ones((h, w), dtype=bool)
    out_g = poisson_fill(image, fixed, domain, guidance=img, guided=guided)
    assert np.isfinite(out_g).all()
    diff = out_g[15:20, 15:20] - img[15:20, 15:20]
    np.testing.assert_allclose(diff, np.broadcast_to(diff.mean((0, 1)), diff.shape), atol=1e-6)


def test_domain_without_fixed_pixels_is_finite():
    out = poisson_fill(np.zeros((8, 8, 3)), np.zeros((8, 8), bool), np.ones((8, 8), bool))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.0, atol=1e-9)


def test_nothing_unknown_returns_copy():
    img = np.random.default_rng(2).uniform(size=(6, 6, 3))
    fixed = np.ones((6, 6), dtype=bool)
    out = poisson_fill(img, fixed, fixed)
    np.testing.assert_array_equal(out, img)
    assert out is not img


def test_fast_without_solve_size_equals_exact():
    h, w = 40, 40
    img = _smooth_image(h, w)
    fixed = _border(h, w, 3)
    domain = np.ones((h, w), dtype=bool)
    guided = np.zeros((h, w), dtype=bool)
    guided[10:30, 10:30] = True
    guidance = img[::-1].copy()
    exact = poisson_fill(img, fixed, domain, guidance, guided)
    fast = poisson_fill_fast(img, fixed, domain, guidance, guided, solve_size=None)
    np.testing.assert_array_equal(fast, exact)
    # A grid already at most solve_size is solved exactly too.
    small = poisson_fill_fast(img, fixed, domain, guidance, guided, solve_size=64)
    np.testing.assert_array_equal(small, exact)
    # 2-D input.
    fast2 = poisson_fill_fast(img[..., 0], fixed, domain, guidance[..., 0], guided, solve_size=None)
    np.testing.assert_allclose(fast2, exact[..., 0], atol=1e-12)


def _coarse_case():
    h = w = 192
    img = _smooth_image(h, w)
    yy, xx = np.mgrid[:h, :w]
    fixed = ((xx - 96) ** 2 + (yy - 96) ** 2) > 60 ** 2  # fixed ring, round hole in the middle
    domain = np.ones((h, w), dtype=bool)
    return img, fixed, domain


def test_fast_membrane_close_to_exact_and_fixed_bit_exact():
    img, fixed, domain = _coarse_case()
    image = np.where(fixed[..., None], img, 0.0)
    exact = poisson_fill(image, fixed, domain)
    fast = poisson_fill_fast(image, fixed, domain, solve_size=48)  # factor 4
    assert fast.shape == exact.shape
    np.testing.assert_array_equal(fast[fixed], image[fixed])
    assert np.abs(fast - exact).mean() < 0.01
    assert np.abs(fast - exact)[~fixed].max() < 0.05


def test_fast_guided_close_to_exact():
    img, fixed, domain = _coarse_case()
    rng = np.random.default_rng(3)
    detail = 0.03 * rng.normal(size=img.shape)
    guidance = img + detail + 0.2  # right detail, wrong level
    guided = np.ones(fixed.shape, dtype=bool)
    image = np.where(fixed[..., None], img + detail, 0.0)
    exact = poisson_fill(image, fixed, domain, guidance, guided)
    fast = poisson_fill_fast(image, fixed, domain, guidance, guided, solve_size=48)
    np.testing.assert_array_equal(fast[fixed], image[fixed])
    assert np.abs(fast - exact).mean() < 0.01
    # The fine detail of the guidance survives the coarse solve.
    hole = ~fixed
    corr = np.corrcoef((fast - guidance)[hole].ravel(), detail[hole].ravel())[0, 1]
    assert abs(corr) < 0.2  # fast - guidance is smooth: no detail left in the difference
    assert np.isfinite(fast).all()


def test_fast_leaves_outside_domain_untouched():
    img, fixed, _ = _coarse_case()
    domain = np.zeros(fixed.shape, dtype=bool)
    domain[16:176, 16:176] = True
    image = np.where(fixed[..., None], img, -1.0)
    fast = poisson_fill_fast(image, fixed, domain, solve_size=48)
    np.testing.assert_array_equal(fast[~domain], image[~domain])
    np.testing.assert_array_equal(fast[fixed & domain], image[fixed & domain])
    assert np.isfinite(fast).all()


def test_pull_push_keeps_known_and_stays_in_range():
    h, w = 64, 80
    rng = np.random.default_rng(4)
    img = rng.uniform(0.2, 0.7, size=(h, w, 3)).astype(np.float32)
    known = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    known[((xx - 40) ** 2 + (yy - 32) ** 2) < 20 ** 2] = True
    image = np.where(known[..., None], img, 99.0).astype(np.float32)  # garbage in the unknowns
    out = pull_push_fill(image, known)
    assert out.dtype == np.float32 and out.shape == (h, w, 3)
    np.testing.assert_array_equal(out[known], image[known])
    lo = img[known].min(axis=0)
    hi = img[known].max(axis=0)
    assert (out[~known] >= lo - 1e-5).all()
    assert (out[~known] <= hi + 1e-5).all()


def test_pull_push_constant_fill():
    known = np.zeros((33, 47), dtype=bool)
    known[12:22, 18:30] = True  # straddles the centre (see the corner case below)
    image = np.where(known[..., None], np.float32(0.42), np.float32(0.0))
    out = pull_push_fill(image, known)
    np.testing.assert_allclose(out, 0.42, atol=1e-5)


def test_pull_push_known_only_in_one_corner():
    h = w = 64
    known = np.zeros((h, w), dtype=bool)
    known[:8, :8] = True
    image = np.where(known[..., None], np.float32(0.55), np.float32(0.0)).astype(np.float32)
    out = pull_push_fill(image, known)
    np.testing.assert_allclose(out, 0.55, atol=1e-4)


def test_guidance_regions_do_not_bake_in_their_seam():
    """Two guidance sources with different levels: with one label each the border step is not
    reproduced (each side is flat, so the fill is flat); with a single label it would be."""
    h, w = 24, 32
    domain = np.ones((h, w), bool)
    fixed = np.zeros((h, w), bool)
    fixed[0, :] = fixed[-1, :] = fixed[:, 0] = fixed[:, -1] = True
    image = np.zeros((h, w, 1))
    guidance = np.zeros((h, w, 1))
    guidance[:, w // 2:] = 1.0
    labels = np.where(np.arange(w)[None, :] < w // 2, 1, 2).repeat(h, 0)
    labels[fixed] = 0
    separate = poisson_fill(image, fixed, domain, guidance, labels)
    assert np.abs(separate).max() < 1e-9
    single = poisson_fill(image, fixed, domain, guidance, labels > 0)
    assert np.abs(single).max() > 0.2
    fast = poisson_fill_fast(image, fixed, domain, guidance, labels, solve_size=8)
    assert np.abs(fast).max() < 1e-6
