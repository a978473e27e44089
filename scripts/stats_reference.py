"""Reference values for affectbench's report statistics, computed with scipy/statsmodels.

Writes tests/data/stats_reference.json, which tests/stats_reference.rs checks the Rust
implementation against. Run from the repository root:

    python3 -m venv /tmp/statsenv && /tmp/statsenv/bin/pip install scipy statsmodels numpy
    /tmp/statsenv/bin/python scripts/stats_reference.py

Hedges' g uses the same textbook formula as the Rust code (Hedges & Olkin 1985), written
out here in numpy; scipy has no function for it.
"""
import json
import numpy as np
import scipy
import statsmodels
from scipy import stats
from statsmodels.stats.multitest import multipletests

PAIRS = [
    ("small-normal", [52.1, 60.3, 47.8, 55.0, 58.4], [40.2, 45.9, 38.1, 44.0, 49.3]),
    ("with-ties", [2.0, 3.0, 3.0, 2.5, 4.0, 3.0], [2.0, 2.0, 2.5, 3.0, 1.5, 2.0]),
    ("unequal-n", [0.12, -0.4, 0.33, 0.05, -0.2, 0.41, 0.0, 0.18], [-0.3, -0.55, 0.02, -0.61, -0.12]),
    ("skewed", [1, 1, 2, 1, 9, 1, 3, 1, 1, 14], [2, 3, 2, 4, 3, 5, 2, 3, 4, 2]),
]
P_VALUES = [0.001, 0.04, 0.03, 0.2, 0.011, float("nan"), 0.5]
RESAMPLES = 100_000


def hedges(a, b, level=0.95):
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = len(a), len(b)
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    g = (a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9))
    se = np.sqrt((n1 + n2) / (n1 * n2) + g * g / (2 * (n1 + n2)))
    z = stats.norm.ppf(0.5 + level / 2)
    return {"g": g, "se": se, "low": g - z * se, "high": g + z * se}


def boot(data, statistic, method):
    res = stats.bootstrap(data, statistic, n_resamples=RESAMPLES, confidence_level=0.95,
                          method=method, vectorized=True, random_state=np.random.default_rng(12345))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


out = {"generator": f"scipy {scipy.__version__}, statsmodels {statsmodels.__version__}, numpy {np.__version__}",
       "resamples": RESAMPLES, "pairs": [], "holm": {}}
for name, a, b in PAIRS:
    t = stats.ttest_ind(a, b, equal_var=False)
    mw = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    mean_a = lambda x, axis=-1: np.mean(x, axis=axis)
    diff = lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis)
    out["pairs"].append({
        "name": name, "a": a, "b": b,
        "describe_a": {"n": len(a), "mean": float(np.mean(a)), "sd": float(np.std(a, ddof=1)), "median": float(np.median(a))},
        "welch": {"t": float(t.statistic), "df": float(t.df), "p": float(t.pvalue)},
        "mann_whitney": {"u": float(mw.statistic), "p": float(mw.pvalue)},
        "hedges_g": {k: float(v) for k, v in hedges(a, b).items()},
        "bootstrap_mean_a": {"percentile": boot((a,), mean_a, "percentile"), "bca": boot((a,), mean_a, "BCa")},
        "bootstrap_difference": {"percentile": boot((a, b), diff, "percentile"), "bca": boot((a, b), diff, "BCa")},
    })
finite = [p for p in P_VALUES if not np.isnan(p)]
adjusted = iter(multipletests(finite, method="holm")[1])
out["holm"] = {"p": [None if np.isnan(p) else p for p in P_VALUES],
               "adjusted": [None if np.isnan(p) else float(next(adjusted)) for p in P_VALUES]}
with open("tests/data/stats_reference.json", "w") as f:
    json.dump(out, f, indent=1)
print("wrote tests/data/stats_reference.json with", out["generator"])
