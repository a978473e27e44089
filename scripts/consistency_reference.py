"""Reference values for the validity gate's consistency statistics and the clustered
tests of the negativity-bias analysis, computed with pingouin, factor_analyzer and scipy.

Writes tests/data/consistency_reference.json, which tests/stats_reference.rs checks
`affectbench::results::validity::{cronbach_alpha, mcdonald_omega, pearson}` and
`affectbench::report::stats::{paired_t, one_sample_t}` and `report::mixed::fit` against. Run from the
repository root:

    python3 -m venv /tmp/statsenv && /tmp/statsenv/bin/pip install pingouin scipy numpy factor_analyzer statsmodels
    /tmp/statsenv/bin/python scripts/consistency_reference.py
"""
import json
import numpy as np
import pandas as pd
import pingouin
import factor_analyzer
from factor_analyzer import FactorAnalyzer
from importlib.metadata import version
import scipy
from scipy import stats

rng = np.random.default_rng(20261124)
latent = rng.normal(size=40)
MATRICES = {
    # rows: respondents, columns: keyed items
    "hand": [[1, 2, 1], [2, 2, 2], [3, 4, 3], [4, 3, 4], [2, 1, 2], [3, 3, 4]],
    "disagreeing": [[1, 3, 1], [2, 3, 2], [3, 1, 3], [4, 2, 4], [2, 4, 2], [3, 2, 4]],
    "one-factor-40x6": (latent[:, None] + rng.normal(scale=0.8, size=(40, 6))).round(3).tolist(),
    "noise-25x4": rng.normal(size=(25, 4)).round(3).tolist(),
    "likert-12x4": rng.integers(1, 5, size=(12, 4)).astype(float).tolist(),
}

out = {"generator": f"pingouin {pingouin.__version__}, factor_analyzer {version('factor_analyzer')}, "
                    f"scipy {scipy.__version__}, numpy {np.__version__}",
       "alpha": [], "pearson": [], "omega": []}
for name, rows in MATRICES.items():
    alpha, _ci = pingouin.cronbach_alpha(data=pd.DataFrame(rows))
    out["alpha"].append({"name": name, "rows": rows, "alpha": float(alpha)})
    x = np.asarray(rows)
    if x.shape[1] >= 3:
        # McDonald's omega total from a one-factor minres fit on the correlation matrix.
        fa = FactorAnalyzer(n_factors=1, rotation=None, method="minres", use_smc=True)
        fa.fit(x)
        loadings = fa.loadings_[:, 0]
        if loadings.sum() < 0:
            loadings = -loadings
        uniq = fa.get_uniquenesses()
        omega = loadings.sum() ** 2 / (loadings.sum() ** 2 + uniq.sum())
        out["omega"].append({"name": name, "rows": rows, "omega": float(omega),
                             "min_uniqueness": float(uniq.min())})
    fwd, rev = x[:, :-1].mean(axis=1), x[:, -1]
    out["pearson"].append({"name": name, "x": fwd.tolist(), "y": rev.tolist(),
                           "r": float(stats.pearsonr(fwd, rev).statistic)})
out["paired_t"] = []
for name, n in [("stems-8", 8), ("stems-32", 32)]:
    a = rng.normal(size=n).round(3)
    b = (a * 0.6 + rng.normal(scale=0.5, size=n) - 0.2).round(3)
    res = stats.ttest_rel(a, b)
    out["paired_t"].append({"name": name, "a": a.tolist(), "b": b.tolist(),
                            "t": float(res.statistic), "df": float(res.df), "p": float(res.pvalue)})
# The completions' mixed model: valence ~ arm + C(stem) with a random intercept per
# conversation, REML (statsmodels MixedLM), on simulated completions nested in
# conversations, crossed with stems.
import statsmodels
import statsmodels.formula.api as smf
out["generator"] += f", statsmodels {statsmodels.__version__}"
out["mixed"] = []
for name, convs, per, stems, sd_conv in [("conv-10x8-stems-4", 10, 8, 4, 0.4),
                                         ("conv-16x6-stems-3", 16, 6, 3, 0.1),
                                         ("conv-12x4-stems-2-none", 12, 4, 2, 0.0)]:
    rows = []
    for c in range(convs):
        arm = c % 2
        u = rng.normal(scale=sd_conv) if sd_conv > 0 else 0.0
        for k in range(per):
            stem = k % stems
            y = 0.3 * arm + 0.2 * stem + u + rng.normal(scale=0.5)
            rows.append({"y": round(float(y), 4), "a": bool(arm), "stem": f"s{stem}", "conversation": f"c{c:02d}"})
    df = pd.DataFrame(rows)
    df["arm"] = df["a"].astype(int)
    fit = smf.mixedlm("y ~ arm + C(stem)", df, groups=df["conversation"]).fit(reml=True)
    out["mixed"].append({"name": name, "rows": rows,
                         "estimate": float(fit.params["arm"]), "se": float(fit.bse["arm"]),
                         "p": float(fit.pvalues["arm"]),
                         "var_conversation": float(fit.cov_re.iloc[0, 0]), "var_residual": float(fit.scale)})
out["one_sample_t"] = []
for name, n, c in [("arm-6-vs-2.5", 6, 2.5), ("arm-20-vs-0", 20, 0.0)]:
    a = (rng.normal(size=n) + 0.3).round(3)
    res = stats.ttest_1samp(a, c)
    out["one_sample_t"].append({"name": name, "a": a.tolist(), "c": c,
                                "t": float(res.statistic), "df": float(res.df), "p": float(res.pvalue)})
with open("tests/data/consistency_reference.json", "w") as f:
    json.dump(out, f, indent=1)
print("wrote tests/data/consistency_reference.json with", out["generator"])
