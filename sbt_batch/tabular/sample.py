"""A VHbb-like (0-lepton, 2-jet) data set: ZH(bb) signal and ttbar, W+jets, Z+jets, diboson backgrounds.

Shapes (GeV): mBB peaks near 125 for the signal and near 91 for diboson (Z->bb) and falls or is
broad for the others; pTV = MET > 150 falls exponentially, harder for the signal; dRBB ~ 2 mBB / pTV
(collimated b-jets of a boosted resonance); Mtop peaks near 172 only for ttbar. EventWeight
normalises each process to its expected yield; ttbar, W+jets and Z+jets contain a share of negative
weights (as from NLO generators); post_fit_weight is a per-process normalisation factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbt_batch.common.errors import UserError


@dataclass(frozen=True)
class Process:
    """One process: share of generated events, expected weighted yield, negative-weight share, post-fit factor."""

    name: str
    signal: bool
    share: float
    expected: float
    negative: float
    post_fit: float


PROCESSES = (
    Process("ZvvH125", True, 0.30, 120.0, 0.0, 1.00),
    Process("ttbar", False, 0.25, 5000.0, 0.08, 0.98),
    Process("Wjets", False, 0.15, 3000.0, 0.05, 1.15),
    Process("Zjets", False, 0.20, 6000.0, 0.05, 1.10),
    Process("diboson", False, 0.10, 400.0, 0.0, 1.00),
)


def _kinematics(proc: Process, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw dRBB, mBB, MET, Mtop, pTV for ``n`` events of one process."""
    def mix(frac: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(rng.random(n) < frac, a, b)

    if proc.name == "ZvvH125":
        mbb = mix(0.85, rng.normal(123.0, 13.0, n), rng.normal(105.0, 30.0, n))
        ptv = 150.0 + rng.exponential(80.0, n)
        mtop = rng.normal(240.0, 60.0, n)
    elif proc.name == "diboson":
        mbb = mix(0.8, rng.normal(90.0, 11.0, n), rng.normal(100.0, 35.0, n))
        ptv = 150.0 + rng.exponential(70.0, n)
        mtop = rng.normal(230.0, 60.0, n)
    elif proc.name == "ttbar":
        mbb = 40.0 + rng.gamma(3.0, 40.0, n)
        ptv = 150.0 + rng.exponential(45.0, n)
        mtop = mix(0.6, rng.normal(172.0, 25.0, n), rng.normal(240.0, 70.0, n))
    else:  # W+jets, Z+jets
        mbb = 20.0 + rng.exponential(70.0 if proc.name == "Wjets" else 60.0, n)
        ptv = 150.0 + rng.exponential(55.0 if proc.name == "Wjets" else 60.0, n)
        mtop = rng.normal(220.0, 70.0, n)
    mbb = np.clip(mbb, 20.0, None)
    drbb = np.clip(2.0 * mbb / ptv * rng.lognormal(0.0, 0.25, n), 0.4, 5.0)
    met = np.clip(ptv * rng.normal(1.0, 0.12 if proc.name == "ttbar" else 0.05, n) + rng.normal(0.0, 8.0, n), 150.0, None)
    mtop = np.clip(mtop, 50.0, None)
    return {"dRBB": drbb, "mBB": mbb, "MET": met, "Mtop": mtop, "pTV": ptv}


def generate(n_events: int = 20000, seed: int = 0) -> dict[str, np.ndarray]:
    """Generate ``n_events`` VHbb-like events as columns (variables, Class, weights, sample), shuffled."""
    if n_events < 10 * len(PROCESSES):
        raise UserError(f"--events: need at least {10 * len(PROCESSES)} events, got {n_events}")
    rng = np.random.default_rng(seed)
    counts = [int(round(p.share * n_events)) for p in PROCESSES]
    counts[-1] = n_events - sum(counts[:-1])
    parts: list[dict[str, np.ndarray]] = []
    for proc, n in zip(PROCESSES, counts):
        cols = _kinematics(proc, n, rng)
        sign = np.where(rng.random(n) < proc.negative, -1.0, 1.0)
        raw = sign * rng.lognormal(0.0, 0.2, n)
        cols["EventWeight"] = raw * (proc.expected / raw.sum())  # signed sum = expected yield
        cols["post_fit_weight"] = np.full(n, proc.post_fit)
        cols["Class"] = np.full(n, 1 if proc.signal else 0, dtype=np.int64)
        cols["sample"] = np.full(n, proc.name, dtype=object)
        parts.append(cols)
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # Training weight: the signed event weight, scaled so both classes sum to half the events.
    tw = data["EventWeight"].copy()
    for value in (0, 1):
        mask = data["Class"] == value
        tw[mask] *= (n_events / 2) / tw[mask].sum()
    data["training_weight"] = tw
    order = rng.permutation(n_events)
    names = ["dRBB", "mBB", "MET", "Mtop", "pTV", "Class", "training_weight", "EventWeight", "post_fit_weight", "sample"]
    return {k: data[k][order] for k in names}
