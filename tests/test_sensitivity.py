"""Binned Asimov sensitivity with transformation D binning: hand-computed cases, reference, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbt_batch.common.errors import UserError
from sbt_batch.tabular.sensitivity import binned_sensitivity, binned_sensitivity_reference

IMPLEMENTATIONS = [binned_sensitivity, binned_sensitivity_reference]


def z2(s: float, b: float) -> float:
    return 2 * ((s + b) * math.log(1 + s / b) - s)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_single_bin_by_hand(impl):
    # z_s = z_b = 0.5: 0.5 s/S + 0.5 b/B reaches 1 only at the end and is never > 1 -> one bin
    scores = [0.9, 0.7, 0.3, 0.2]
    labels = [1, 1, 0, 0]
    weights = [2.0, 1.0, 0.5, 0.5]
    res = impl(scores, labels, weights, z_s=0.5, z_b=0.5)
    assert res.n_bins == 1
    assert res.s == [3.0] and res.b == [1.0]
    assert res.sensitivity == pytest.approx(math.sqrt(2 * (4 * math.log(4) - 3)))  # 2.25618...
    assert res.sensitivity == pytest.approx(2.256181, abs=1e-6)
    assert res.low == [0.2] and res.high == [0.9]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_three_bins_by_hand(impl):
    # n_fine = 10 over [0, 1], z_s = z_b = 2, S = 3, B = 4. From the top:
    #   step 9 (0.9, s=2): 2*2/3 = 1.33 > 1 -> bin 1 = [0.9, 1.0]: s=2, b=0 (b <= 0: skipped)
    #   steps 8..2 (s=1 at 0.8, b=1 at 0.2): 2/3 + 2/4 = 1.17 > 1 at step 2 -> bin 2 = [0.2, 0.9]: s=1, b=1
    #   step 1 (b=3 at 0.1): 2*3/4 = 1.5 > 1 -> bin 3 = [0.0, 0.2] (empty step 0 merged in): s=0 (skipped)
    scores = [0.9, 0.8, 0.2, 0.1]
    labels = [1, 1, 0, 0]
    weights = [2.0, 1.0, 1.0, 3.0]
    res = impl(scores, labels, weights, z_s=2, z_b=2, n_fine=10, score_range=(0.0, 1.0))
    assert res.n_bins == 3
    assert res.s == [2.0, 1.0, 0.0] and res.b == [0.0, 1.0, 3.0]
    assert np.allclose(res.high, [1.0, 0.9, 0.2]) and np.allclose(res.low, [0.9, 0.2, 0.0])
    assert res.skipped_bins == 2
    expected = math.sqrt(2 * (2 * math.log(2) - 1))  # 0.878970
    assert res.sensitivity == pytest.approx(expected)
    # error: dZ2/ds = 2 ln 2, dZ2/db = 2 (ln 2 - 1), sum w^2 = 1 for s and b in bin 2
    var = (2 * math.log(2)) ** 2 + (2 * (math.log(2) - 1)) ** 2
    assert res.error == pytest.approx(math.sqrt(var) / (2 * expected))
    assert res.error == pytest.approx(0.862409, abs=1e-6)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_small_signal_limit_is_s_over_sqrt_b(impl):
    scores = np.r_[np.full(10, 0.8), np.full(10, 0.2)]
    labels = np.r_[np.ones(10), np.zeros(10)]
    weights = np.r_[np.full(10, 0.1), np.full(10, 1000.0)]  # S = 1, B = 10000
    res = impl(scores, labels, weights, z_s=0.1, z_b=0.1)  # one bin
    assert res.n_bins == 1
    assert res.sensitivity == pytest.approx(1 / math.sqrt(10000), rel=1e-3)
    assert res.sensitivity == pytest.approx(math.sqrt(z2(1, 10000)))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_negative_background_bin_is_skipped(impl):
    # the top bin holds signal and a negative-weight background event: b < 0 -> contributes 0
    # S = 2, B = 10.5, z_s = 3, z_b = 1.5: bins [s=1, b=-0.5], [s=1, b=1], [s=0, b=10]
    scores = [0.95, 0.95, 0.5, 0.5, 0.1]
    labels = [1, 0, 1, 0, 0]
    weights = [1.0, -0.5, 1.0, 1.0, 10.0]
    res = impl(scores, labels, weights, z_s=3, z_b=1.5, n_fine=10, score_range=(0, 1))
    assert res.s == [1.0, 1.0, 0.0] and res.b == [-0.5, 1.0, 10.0]
    assert res.z2[0] == 0.0 and res.z2[2] == 0.0
    assert res.skipped_bins == 2
    assert res.b_sumw2 == [0.25, 1.0, 100.0]
    assert res.sensitivity == pytest.approx(math.sqrt(z2(1, 1)))


@pytest.mark.parametrize("n_fine,z,rng_range", [(1000, 10, None), (37, 3, None), (200, 10, (0.0, 1.0)), (1000, 25, (0.2, 0.8))])
def test_vectorized_matches_per_event_reference(n_fine, z, rng_range):
    rng = np.random.default_rng(n_fine)
    n = 20000
    sig = rng.random(n) < 0.2
    scores = np.where(sig, rng.beta(4, 2, n), rng.beta(2, 4, n))
    weights = np.where(sig, 0.01, 1.0) * rng.lognormal(0, 0.3, n) * np.where(rng.random(n) < 0.05, -1, 1)
    a = binned_sensitivity(scores, sig, weights, z_s=z, z_b=z, n_fine=n_fine, score_range=rng_range)
    b = binned_sensitivity_reference(scores, sig, weights, z_s=z, z_b=z, n_fine=n_fine, score_range=rng_range)
    assert a.n_bins == b.n_bins > 1
    for key in ("low", "high", "s", "b", "s_sumw2", "b_sumw2", "z2"):
        assert np.allclose(getattr(a, key), getattr(b, key), rtol=1e-9, atol=1e-12), key
    assert a.sensitivity == pytest.approx(b.sensitivity, rel=1e-9)
    assert a.error == pytest.approx(b.error, rel=1e-9)
    assert a.skipped_bins == b.skipped_bins


def test_error_matches_bootstrap_spread_with_fixed_bins():
    """The propagated error equals the spread of Z over Poisson(1) bootstrap replicas (same bin edges)."""
    rng = np.random.default_rng(7)
    n = 4000
    sig = rng.random(n) < 0.3
    scores = np.where(sig, rng.beta(5, 2, n), rng.beta(2, 5, n))
    weights = np.where(sig, 0.05, 1.0) * rng.lognormal(0, 0.3, n)
    # z_b = 10 with a small z_s: every bin holds >= 10% of the background, where linear propagation holds
    res = binned_sensitivity(scores, sig, weights, z_s=2, z_b=10)
    assert res.n_bins > 5
    edges = np.array(sorted(set(res.low) | set(res.high)))
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    toys = rng.poisson(1.0, size=(400, n)) * weights
    values = []
    for toy in toys:
        s = np.bincount(which[sig], weights=toy[sig], minlength=len(edges) - 1)
        b = np.bincount(which[~sig], weights=toy[~sig], minlength=len(edges) - 1)
        ok = (s > 0) & (b > 0)
        values.append(math.sqrt(np.sum(2 * ((s[ok] + b[ok]) * np.log1p(s[ok] / b[ok]) - s[ok]))))
    assert np.mean(values) == pytest.approx(res.sensitivity, rel=0.05)
    assert np.std(values) == pytest.approx(res.error, rel=0.15)


def test_scaling_weights_scales_z_by_sqrt():
    rng = np.random.default_rng(3)
    sig = rng.random(5000) < 0.3
    scores = rng.random(5000) + sig * 0.3
    w = np.where(sig, 0.1, 1.0)
    a = binned_sensitivity(scores, sig, w)
    b = binned_sensitivity(scores, sig, 4 * w)
    assert b.sensitivity == pytest.approx(2 * a.sensitivity)
    assert b.error == pytest.approx(2 * a.error)


def test_equal_scores_and_default_weights():
    res = binned_sensitivity([0.5, 0.5, 0.5], [1, 0, 0])
    assert res.n_bins == 1 and res.s == [1.0] and res.b == [2.0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (([0.1, 0.2], [1], None), "differ in length"),
        (([0.1, float("nan")], [1, 0], None), "NaN"),
        (([0.1, 0.2], [1, 0], [1.0, float("inf")]), "weights contain NaN"),
        (([0.1, 0.2], [0, 0], None), "S=0"),
        (([], [], None), "no events"),
    ],
)
def test_bad_inputs(args, needle):
    for impl in IMPLEMENTATIONS:
        with pytest.raises(UserError, match=needle):
            impl(*args)
