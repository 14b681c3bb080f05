"""Binned Asimov significance with "transformation D" binning, vectorized, plus a per-event reference.

Algorithm (both implementations):

1. The score range ``[lo, hi]`` (default: the data's min and max) is cut into ``n_fine`` equal fine
   steps; an event belongs to step ``k = int((score - lo) * n_fine / (hi - lo))``, clipped to
   ``[0, n_fine - 1]`` (so the top step also holds ``score == hi``, and scores outside an explicit
   range go to the first or last step). Histogramming into fine steps replaces the full sort.
2. Scanning from the highest score down, the weighted signal ``s`` and background ``b`` of whole fine
   steps are accumulated. A bin is closed at the end of the first step where
   ``z_s * s / S + z_b * b / B > 1`` (``S``, ``B``: weighted totals), then ``s`` and ``b`` restart at 0.
3. What is left below the last closed bin (it failed the condition) is merged into that bin; when no
   bin closed, everything is one bin.
4. Each bin contributes ``Z_i^2 = 2 ((s + b) ln(1 + s/b) - s)``; ``Z = sqrt(sum Z_i^2)``.

Empty and negative bins: a bin with ``s <= 0`` or ``b <= 0`` (possible with negative event weights, or
an empty bin) contributes 0 and is counted in ``skipped_bins`` -- conservative: such a bin cannot add
significance. The error treats the bin edges as fixed and propagates the sums of squared weights
per bin: ``var(Z^2) = sum (dZ_i^2/ds)^2 sum w_s^2 + (dZ_i^2/db)^2 sum w_b^2`` with
``dZ_i^2/ds = 2 ln(1 + s/b)``, ``dZ_i^2/db = 2 (ln(1 + s/b) - s/b)``, and ``err(Z) = sqrt(var) / (2 Z)``.
Negative weights enter the sums with their sign (and the squared-weight sums positively).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sbt_batch.common.errors import UserError

DEFAULT_Z_S = 10.0
DEFAULT_Z_B = 10.0
DEFAULT_N_FINE = 1000


@dataclass
class SensitivityResult:
    """The binned significance, its error, and the bins (ordered from the highest score down)."""

    sensitivity: float
    error: float
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    s: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    s_sumw2: list[float] = field(default_factory=list)
    b_sumw2: list[float] = field(default_factory=list)
    z2: list[float] = field(default_factory=list)
    skipped_bins: int = 0
    total_s: float = 0.0
    total_b: float = 0.0
    z_s: float = DEFAULT_Z_S
    z_b: float = DEFAULT_Z_B
    n_fine: int = DEFAULT_N_FINE

    @property
    def n_bins(self) -> int:
        """Number of bins that transformation D produced."""
        return len(self.s)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (includes ``n_bins``)."""
        return {**asdict(self), "n_bins": self.n_bins}


def _check_inputs(
    scores: Any, is_signal: Any, weights: Any, n_fine: int, z_s: float, z_b: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert the inputs shared by both implementations."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    sig = np.asarray(is_signal).ravel().astype(bool)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (len(x) == len(sig) == len(w)):
        raise UserError(f"sensitivity: scores, labels and weights differ in length ({len(x)}, {len(sig)}, {len(w)})")
    if len(x) == 0:
        raise UserError("sensitivity: no events")
    if not np.all(np.isfinite(x)):
        raise UserError("sensitivity: decision values contain NaN or inf")
    if not np.all(np.isfinite(w)):
        raise UserError("sensitivity: weights contain NaN or inf")
    if n_fine < 1:
        raise UserError(f"sensitivity: n_fine must be >= 1, got {n_fine}")
    if z_s < 0 or z_b < 0 or z_s + z_b <= 0:
        raise UserError(f"sensitivity: z_s and z_b must be >= 0 and not both 0 (got {z_s}, {z_b})")
    return x, sig, w


def _check_totals(total_s: float, total_b: float) -> None:
    """Both implementations need positive weighted signal and background totals."""
    if total_s <= 0 or total_b <= 0:
        raise UserError(f"sensitivity: weighted signal and background totals must be > 0 (S={total_s:g}, B={total_b:g})")


def _fine_steps(x: np.ndarray, n_fine: int, score_range: tuple[float, float] | None) -> tuple[float, float, float]:
    """The lower edge, upper edge and steps-per-unit-score of the fine scan."""
    lo, hi = (float(x.min()), float(x.max())) if score_range is None else map(float, score_range)
    if not hi > lo:
        hi = lo + 1.0  # all scores equal: a single populated step
    return lo, hi, n_fine / (hi - lo)


def _bin_z2(s: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin Z^2, its derivatives in s and b, and a mask of the bins that count (s > 0 and b > 0)."""
    used = (s > 0) & (b > 0)
    ratio = np.where(used, s / np.where(used, b, 1.0), 0.0)
    log_term = np.log1p(ratio)
    z2 = np.where(used, 2.0 * ((s + b) * log_term - s), 0.0)
    d_s = np.where(used, 2.0 * log_term, 0.0)
    d_b = np.where(used, 2.0 * (log_term - ratio), 0.0)
    return z2, d_s, d_b, used


Sums = Sequence[float] | np.ndarray  # per-bin sums, one value per bin


def _finish(
    low: list[float], high: list[float], s: Sums, b: Sums, s2: Sums, b2: Sums,
    total_s: float, total_b: float, z_s: float, z_b: float, n_fine: int,
) -> SensitivityResult:
    """Combine per-bin sums into the significance and its propagated error."""
    s_a, b_a, s2_a, b2_a = (np.asarray(v, dtype=np.float64) for v in (s, b, s2, b2))
    z2, d_s, d_b, used = _bin_z2(s_a, b_a)
    total = float(z2.sum())
    z = math.sqrt(max(total, 0.0))
    var = float(np.sum(d_s**2 * s2_a + d_b**2 * b2_a))
    err = math.sqrt(var) / (2.0 * z) if z > 0 else 0.0
    return SensitivityResult(
        sensitivity=z, error=err, low=[float(v) for v in low], high=[float(v) for v in high],
        s=s_a.tolist(), b=b_a.tolist(), s_sumw2=s2_a.tolist(), b_sumw2=b2_a.tolist(), z2=z2.tolist(),
        skipped_bins=int((~used).sum()), total_s=total_s, total_b=total_b, z_s=z_s, z_b=z_b, n_fine=n_fine,
    )


def binned_sensitivity(
    scores: Any,
    is_signal: Any,
    weights: Any = None,
    *,
    z_s: float = DEFAULT_Z_S,
    z_b: float = DEFAULT_Z_B,
    n_fine: int = DEFAULT_N_FINE,
    score_range: tuple[float, float] | None = None,
) -> SensitivityResult:
    """Binned Asimov significance with transformation D binning (vectorized numpy)."""
    x, sig, w = _check_inputs(scores, is_signal, weights, n_fine, z_s, z_b)
    lo, hi, scale = _fine_steps(x, n_fine, score_range)
    edges = np.linspace(lo, hi, n_fine + 1)
    t = x - lo
    t *= scale
    key = t.astype(np.intp)
    np.clip(key, 0, n_fine - 1, out=key)
    np.add(key, n_fine, out=key, where=sig)  # background steps 0..n-1, signal steps n..2n-1
    sums = np.bincount(key, weights=w, minlength=2 * n_fine)
    sums2 = np.bincount(key, weights=w * w, minlength=2 * n_fine)
    # Per fine step, reversed so that index 0 is the highest-score step.
    b_f, s_f = sums[n_fine - 1 :: -1], sums[: n_fine - 1 : -1]
    b2_f, s2_f = sums2[n_fine - 1 :: -1], sums2[: n_fine - 1 : -1]
    total_s, total_b = float(s_f.sum()), float(b_f.sum())
    _check_totals(total_s, total_b)

    # Greedy closing: each closed bin needs one vectorized search over the remaining fine steps.
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < n_fine:
        metric = z_s * np.cumsum(s_f[start:]) / total_s + z_b * np.cumsum(b_f[start:]) / total_b
        hits = np.flatnonzero(metric > 1.0)
        if hits.size == 0:
            break
        end = start + int(hits[0]) + 1
        bounds.append((start, end))
        start = end
    if start < n_fine:  # the remainder failed the condition: merge it into the last bin
        bounds[-1:] = [(bounds[-1][0] if bounds else 0, n_fine)]

    starts = np.array([a for a, _ in bounds])
    s_bin, b_bin, s2_bin, b2_bin = (np.add.reduceat(arr, starts) for arr in (s_f, b_f, s2_f, b2_f))
    high = [edges[n_fine - a] for a, _ in bounds]
    low = [edges[n_fine - e] for _, e in bounds]
    return _finish(low, high, s_bin, b_bin, s2_bin, b2_bin, total_s, total_b, z_s, z_b, n_fine)


def binned_sensitivity_reference(
    scores: Any,
    is_signal: Any,
    weights: Any = None,
    *,
    z_s: float = DEFAULT_Z_S,
    z_b: float = DEFAULT_Z_B,
    n_fine: int = DEFAULT_N_FINE,
    score_range: tuple[float, float] | None = None,
) -> SensitivityResult:
    """The same quantity as :func:`binned_sensitivity`, as a straightforward per-event Python loop."""
    x, sig, w = _check_inputs(scores, is_signal, weights, n_fine, z_s, z_b)
    lo, hi, scale = _fine_steps(x, n_fine, score_range)
    edges = np.linspace(lo, hi, n_fine + 1).tolist()
    values, labels, wts = x.tolist(), sig.tolist(), w.tolist()
    total_s = total_b = 0.0
    for label, weight in zip(labels, wts):
        if label:
            total_s += weight
        else:
            total_b += weight
    _check_totals(total_s, total_b)

    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    low: list[float] = []
    high: list[float] = []
    bins: list[list[float]] = []
    step = n_fine - 1  # current fine step, starting at the top
    top = edges[n_fine]
    s = b = s2 = b2 = 0.0
    for i in order:
        fine = min(max(int((values[i] - lo) * scale), 0), n_fine - 1)
        while step > fine:  # leaving fine step `step`
            if z_s * s / total_s + z_b * b / total_b > 1.0:
                bins.append([s, b, s2, b2])
                high.append(top)
                low.append(edges[step])
                top = edges[step]
                s = b = s2 = b2 = 0.0
            step -= 1
        weight = wts[i]
        if labels[i]:
            s += weight
            s2 += weight * weight
        else:
            b += weight
            b2 += weight * weight
    if z_s * s / total_s + z_b * b / total_b > 1.0 or not bins:
        bins.append([s, b, s2, b2])
        high.append(top)
        low.append(edges[0])
    else:  # merge the remainder into the last closed bin
        for j, value in enumerate((s, b, s2, b2)):
            bins[-1][j] += value
        low[-1] = edges[0]
    s_bin, b_bin, s2_bin, b2_bin = ([row[j] for row in bins] for j in range(4))
    return _finish(low, high, s_bin, b_bin, s2_bin, b2_bin, total_s, total_b, z_s, z_b, n_fine)
