"""Compares the trials of two affectbench runs of the same study: how often the top
option of the choice read-out agrees, the largest and median gap between the option
probabilities, and whether the records are identical (timings aside). Standard library
only (it runs on GPU hosts with a bare python3).

    python3 scripts/gpu/compare_runs.py RUN_A RUN_B [--label NAME] [--json OUT]

Prints one JSON object; exits 0 whatever it finds (the caller judges the figures)."""
import json
import statistics
import sys


def records(run):
    out = {}
    with open(f"{run}/trials.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if r.get("type", "trial") != "trial":
                continue
            r.pop("timing", None)
            out[r["trial_id"]] = r
    return out


def main(argv):
    a, b = argv[1], argv[2]
    label = argv[argv.index("--label") + 1] if "--label" in argv else f"{a} vs {b}"
    ra, rb = records(a), records(b)
    common = sorted(set(ra) & set(rb))
    agree, gaps, choices = 0, [], 0
    for t in common:
        ca, cb = ra[t].get("choice"), rb[t].get("choice")
        if not ca or not cb:
            continue
        pa, pb = ca["probs"], cb["probs"]
        choices += 1
        top_a = max(range(len(pa)), key=pa.__getitem__)
        top_b = max(range(len(pb)), key=pb.__getitem__)
        agree += top_a == top_b
        gaps.append(max(abs(x - y) for x, y in zip(pa, pb)))
    identical = len(ra) == len(rb) and all(ra[t] == rb.get(t) for t in ra)
    result = {
        "comparison": label,
        "trials": [len(ra), len(rb)],
        "common_trials": len(common),
        "choice_trials": choices,
        "top_option_agreement": agree / choices if choices else None,
        "max_probability_gap_median": statistics.median(gaps) if gaps else None,
        "max_probability_gap_max": max(gaps) if gaps else None,
        "identical": identical,
    }
    print(json.dumps(result))
    if "--json" in argv:
        with open(argv[argv.index("--json") + 1], "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
