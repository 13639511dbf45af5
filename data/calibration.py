"""
Calibration metrics, one implementation for every script that scores probabilities:
train_pm.py (the PM's P(A preferred)), critique_revise.py (AI-feedback labels) and the
calibration experiment (Kadavath et al. 2022: multiple choice, P(True), P(IK)).

  reliability(p, y)  expected calibration error (ECE), RMS calibration error, Brier score
                     and the reliability table, with bins of equal width or equal count
  auroc(s, y)        area under the ROC curve: P(score of a positive > score of a negative)
  cluster_se(x, c)   the standard error of a mean clustered by object, for every evaluation
                     whose replies share held-out objects (ppo.py, critique_revise.py, ...)
"""

import math

import numpy as np


def reliability(p, y, n_bins=10, equal_count=False):
    """Calibration of probabilities p against outcomes y (0/1, or soft labels in [0, 1]).
    Bins of equal width ([0, 0.1), ..., [0.9, 1]) or, with equal_count, of equal count
    (sorted by p, split into n_bins groups whose sizes differ by at most one: Kadavath et
    al. 2022's definition). ECE = sum_b n_b/N |mean p_b - mean y_b|; RMS calibration error
    = sqrt(sum_b n_b/N (mean p_b - mean y_b)^2); Brier = mean (p - y)^2.
    -> {"ece", "rms_ce", "brier", "n",
        "table": [{"bin": [lo, hi], "n", "predicted", "observed"}]}."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    if equal_count:
        groups = np.array_split(np.argsort(p, kind="stable"), n_bins)
        edges = [[float(p[g].min()), float(p[g].max())] if len(g) else None for g in groups]
    else:
        b = np.minimum((p * n_bins).astype(int), n_bins - 1)
        groups = [np.flatnonzero(b == k) for k in range(n_bins)]
        edges = [[k / n_bins, (k + 1) / n_bins] for k in range(n_bins)]
    table = [
        {"bin": e, "n": len(g), "predicted": float(p[g].mean()), "observed": float(y[g].mean())}
        for g, e in zip(groups, edges, strict=True)
        if len(g)
    ]
    gaps = np.array([t["predicted"] - t["observed"] for t in table])
    w = np.array([t["n"] for t in table]) / max(len(p), 1)
    return {
        "ece": float((w * np.abs(gaps)).sum()),
        "rms_ce": float(np.sqrt((w * gaps**2).sum())),
        "brier": float(np.mean((p - y) ** 2)) if len(p) else None,
        "n": int(len(p)),
        "table": table,
    }


def auroc(scores, labels):
    """Area under the ROC curve from ranks (the Mann-Whitney statistic): the probability
    that a random positive scores above a random negative, ties counting one half. None
    when either class is empty."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = np.empty(len(s))
    ranks[np.argsort(s, kind="stable")] = np.arange(1, len(s) + 1)
    _, tie = np.unique(s, return_inverse=True)
    # ties share their average rank
    ranks = (np.bincount(tie, weights=ranks) / np.bincount(tie))[tie]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cluster_se(x, clusters):
    """Standard error of the mean of x, robust to correlation within clusters (the sandwich
    estimator, G/(G-1) small-sample factor): replies about the same held-out object are not
    independent samples. With one item per cluster it is the usual std/sqrt(n)."""
    x = [float(v) for v in x]
    mean = sum(x) / max(len(x), 1)
    groups = {}  # each cluster's summed deviation from the mean
    for v, c in zip(x, clusters, strict=True):
        groups[c] = groups.get(c, 0.0) + v - mean
    g = len(groups)
    if g <= 1:
        return 0.0
    return math.sqrt(g / (g - 1) * sum(v * v for v in groups.values())) / len(x)
