"""Calibration metrics (data/calibration.py) against hand computations: the exercises for
ECE, RMS calibration error, Brier score (equal-width and equal-count bins) and AUROC."""

import itertools

import numpy as np
import pytest

from data.calibration import auroc, reliability


def test_equal_width_bins_by_hand():
    p = [0.05, 0.15, 0.12, 0.95]
    y = [0, 1, 0, 1]
    m = reliability(p, y, n_bins=10)
    # bins: [0, .1): {0.05 -> 0}; [.1, .2): {0.15 -> 1, 0.12 -> 0}; [.9, 1]: {0.95 -> 1}
    assert [t["n"] for t in m["table"]] == [1, 2, 1]
    gaps = [0.05 - 0, 0.135 - 0.5, 0.95 - 1]
    w = [1 / 4, 2 / 4, 1 / 4]
    assert m["ece"] == pytest.approx(sum(wi * abs(g) for wi, g in zip(w, gaps, strict=True)))
    assert m["rms_ce"] == pytest.approx(
        np.sqrt(sum(wi * g * g for wi, g in zip(w, gaps, strict=True)))
    )
    assert m["brier"] == pytest.approx(
        np.mean([(0.05 - 0) ** 2, (0.15 - 1) ** 2, (0.12 - 0) ** 2, (0.95 - 1) ** 2])
    )
    assert reliability([1.0], [1])["table"][0]["bin"] == [0.9, 1.0]  # p = 1 lands in the last bin


def test_equal_count_bins_by_hand():
    p = [0.9, 0.1, 0.3, 0.2, 0.8, 0.7]
    y = [1, 0, 1, 0, 0, 1]
    m = reliability(p, y, n_bins=3, equal_count=True)
    # sorted: (0.1,0) (0.2,0) | (0.3,1) (0.7,1) | (0.8,0) (0.9,1)
    assert [t["n"] for t in m["table"]] == [2, 2, 2]
    assert [t["bin"] for t in m["table"]] == [[0.1, 0.2], [0.3, 0.7], [0.8, 0.9]]
    gaps = [0.15 - 0, 0.5 - 1, 0.85 - 0.5]
    assert m["ece"] == pytest.approx(sum(abs(g) for g in gaps) / 3)
    assert m["rms_ce"] == pytest.approx(np.sqrt(sum(g * g for g in gaps) / 3))
    assert [
        t["n"]
        for t in reliability(np.arange(7) / 7, np.ones(7), n_bins=3, equal_count=True)["table"]
    ] == [3, 2, 2]


def test_a_calibrated_forecaster_has_small_ece_and_an_overconfident_one_large():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = rng.random(20000) < p
    for equal_count in (False, True):
        assert reliability(p, y, equal_count=equal_count)["ece"] < 0.02
        assert reliability(np.where(p > 0.5, 1.0, 0.0), y, equal_count=equal_count)["ece"] > 0.2


def brute_force_auroc(s, y):
    pos = [a for a, label in zip(s, y, strict=True) if label]
    neg = [a for a, label in zip(s, y, strict=True) if not label]
    return sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)) / (
        len(pos) * len(neg)
    )


def test_auroc_against_a_brute_force_pair_count():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        s = rng.integers(0, 5, n).astype(float)  # many ties
        y = rng.random(n) < 0.5
        if y.all() or not y.any():
            assert auroc(s, y) is None
            continue
        assert auroc(s, y) == pytest.approx(brute_force_auroc(s.tolist(), y.tolist()))
    assert auroc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0 and auroc([0.9, 0.2, 0.1], [0, 0, 1]) == 0.0
