//! `affectbench report` on the committed fixture run (tests/data/report-fixture): every
//! output is written, numbers agree with a recomputation from trials.jsonl, the bootstrap
//! is reproducible by seed, and hostile strings are escaped in report.html.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const FIXTURE: &str = "tests/data/report-fixture";

fn report(out: &Path, extra: &[&str]) -> Output {
    let o = common::affectbench_command()
        .args(["report", FIXTURE, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("running affectbench");
    assert!(
        o.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (key columns joined by '|', statistic) -> value, from a tidy CSV.
fn tidy(path: PathBuf) -> BTreeMap<(String, String), String> {
    let mut r = csv::Reader::from_path(&path).unwrap();
    let headers = r.headers().unwrap().clone();
    assert_eq!(
        headers.iter().skip(headers.len() - 2).collect::<Vec<_>>(),
        vec!["statistic", "value"],
        "{}",
        path.display()
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let n = rec.len();
            (
                (
                    rec.iter().take(n - 2).collect::<Vec<_>>().join("|"),
                    rec[n - 2].to_string(),
                ),
                rec[n - 1].to_string(),
            )
        })
        .collect()
}

#[test]
fn report_writes_every_output_and_escapes_hostile_strings() {
    let dir = tempfile::tempdir().unwrap();
    report(dir.path(), &[]);
    for f in [
        "report.html",
        "summary.md",
        "trials.csv",
        "tables/descriptives.csv",
        "tables/contrasts.csv",
        "tables/baseline_return.csv",
        "tables/negativity_bias.csv",
        "tables/data_quality.csv",
        "tables/position_bias.csv",
        "tables/variance_explained.csv",
        "figures/emotion-sadness.svg",
        "figures/emotion-sadness.png",
        "figures/regulation.svg",
        "figures/negativity.png",
    ] {
        let p = dir.path().join(f);
        assert!(
            p.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{f} missing or empty"
        );
    }
    let png = std::fs::read(dir.path().join("figures/emotion-sadness.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let html = read(dir.path().join("report.html"));
    // The fixture's study description and one completion carry <script>, quotes and &.
    assert!(
        !html.to_lowercase().contains("<script"),
        "unescaped script tag in report.html"
    );
    assert!(!html.contains("<b>bold</b>"));
    assert!(html.contains("&lt;script&gt;alert(&quot;completion&quot;)&lt;/script&gt; it&#39;s &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;"));
    assert!(html.contains("&lt;script&gt;alert(&quot;description&quot;)"));
    // Self-contained: figures inline, nothing fetched.
    assert!(html.contains("<svg") && !html.contains("src=\"http") && !html.contains("href=\"http"));
    for section in [
        "Design",
        "Provenance",
        "Data quality",
        "Emotion: sadness",
        "Regulation",
        "Negativity bias",
    ] {
        assert!(
            html.contains(&format!("<h2>{section}</h2>")),
            "section {section} missing"
        );
    }

    let trials = read(dir.path().join("trials.csv"));
    let fixture_lines = read(Path::new(FIXTURE).join("trials.jsonl"))
        .lines()
        .count();
    assert_eq!(
        csv::Reader::from_reader(trials.as_bytes())
            .records()
            .count(),
        fixture_lines
    );
}

#[test]
fn descriptives_and_contrasts_agree_with_a_recomputation_from_the_trials() {
    // Probability read-out of sadness-state per group: mean of the 4 keyed item
    // expectations (the scale is scored by mean), then mean over repetitions.
    let text = read(Path::new(FIXTURE).join("trials.jsonl"));
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["question"]["instrument"] == "sadness-state" {
            groups
                .entry((
                    v["condition"].as_str().unwrap().into(),
                    v["group_id"].as_str().unwrap().into(),
                ))
                .or_default()
                .push(v["choice"]["keyed_expected"].as_f64().unwrap());
        }
    }
    let mut by_condition: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((cond, _), items) in groups {
        assert_eq!(items.len(), 4);
        by_condition
            .entry(cond)
            .or_default()
            .push(items.iter().sum::<f64>() / 4.0);
    }
    let dir = tempfile::tempdir().unwrap();
    report(dir.path(), &[]);
    let d = tidy(dir.path().join("tables/descriptives.csv"));
    for (cond, scores) in &by_condition {
        // The last key is the gate's verdict: this SmolLM2 fixture fails it.
        let key = format!("11|smollm2-135m-instruct|sadness-state|sadness|{cond}|probability|fail");
        let mean: f64 = d[&(key.clone(), "mean".into())].parse().unwrap();
        let expected = scores.iter().sum::<f64>() / scores.len() as f64;
        assert!(
            (mean - expected).abs() < 1e-12,
            "{cond}: report {mean}, recomputed {expected}"
        );
        assert_eq!(d[&(key.clone(), "n".into())], scores.len().to_string());
        // Three repetitions per cell: no BCa below n = 10, the percentile interval.
        assert_eq!(scores.len(), 3);
        assert_eq!(d[&(key.clone(), "ci95_bca_low".into())], "NA");
        let (lo, hi): (f64, f64) = (
            d[&(key.clone(), "ci95_percentile_low".into())]
                .parse()
                .unwrap(),
            d[&(key, "ci95_percentile_high".into())].parse().unwrap(),
        );
        assert!(
            lo <= expected + 1e-12 && expected <= hi + 1e-12,
            "{cond}: CI [{lo}, {hi}] misses the mean {expected}"
        );
    }
    // The induction contrast's difference is the difference of those means.
    let c = tidy(dir.path().join("tables/contrasts.csv"));
    let key = "11|smollm2-135m-instruct|probability|sadness-state|sadness|induction|sadness/none|neutral/none|fail|exploratory".to_string();
    let diff: f64 = c[&(key.clone(), "difference".into())].parse().unwrap();
    let m = |k: &str| by_condition[k].iter().sum::<f64>() / by_condition[k].len() as f64;
    assert!((diff - (m("sadness/none") - m("neutral/none"))).abs() < 1e-12);
    let p: f64 = c[&(key.clone(), "welch_p".into())].parse().unwrap();
    let holm: f64 = c[&(key, "welch_p_holm".into())].parse().unwrap();
    assert!((0.0..=1.0).contains(&p) && holm >= p);
}

#[test]
fn bootstrap_intervals_are_reproducible_by_seed() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    report(a.path(), &["--seed", "5"]);
    report(b.path(), &["--seed", "5"]);
    report(c.path(), &["--seed", "6"]);
    // Tables whose intervals are bootstrapped from many distinct resamples (with three
    // repetitions per cell the descriptives' percentile bounds take few values and may
    // coincide across seeds; their BCa is not shown below n = 10).
    for table in ["descriptives", "contrasts", "negativity_bias"] {
        let read_table = |d: &Path| read(d.join(format!("tables/{table}.csv")));
        assert_eq!(read_table(a.path()), read_table(b.path()), "{table}");
        if table != "descriptives" {
            assert_ne!(read_table(a.path()), read_table(c.path()), "{table}");
        }
    }
}

#[test]
fn report_of_a_directory_without_a_run_says_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::affectbench_command()
        .args(["report"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("has no run.json") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_record_without_probabilities_does_not_break_the_report() {
    // Regression: `report` on a record with "probs": [] panicked (index out of bounds).
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(Path::new(FIXTURE).join("run.json"), run.join("run.json")).unwrap();
    let text = read(Path::new(FIXTURE).join("trials.jsonl"));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    first["choice"]["probs"] = serde_json::json!([]);
    first["choice"]["values"] = serde_json::json!([]);
    first["choice"]["labels"] = serde_json::json!([]);
    lines[0] = first.to_string();
    std::fs::write(run.join("trials.jsonl"), lines.join("\n") + "\n").unwrap();
    let o = common::affectbench_command()
        .arg("report")
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_validity_gate_comes_first_and_marks_the_failing_instrument() {
    // Position dominance recomputed from trials.jsonl: the display position holding the
    // most probability, per trial, over the sadness-state items.
    let text = read(Path::new(FIXTURE).join("trials.jsonl"));
    let mut per_position = [0usize; 4];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["question"]["instrument"] != "sadness-state" || !v["error"].is_null() {
            continue;
        }
        let probs: Vec<f64> = v["choice"]["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let top = (0..probs.len())
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
            .unwrap();
        per_position[top] += 1;
    }
    let n: usize = per_position.iter().sum();
    let share = *per_position.iter().max().unwrap() as f64 / n as f64;

    let dir = tempfile::tempdir().unwrap();
    report(dir.path(), &[]);
    let mut r = csv::Reader::from_path(dir.path().join("tables/validity.csv")).unwrap();
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        &headers[..7],
        [
            "model",
            "instrument",
            "readout",
            "check",
            "value",
            "threshold",
            "verdict"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let pd = rows
        .iter()
        .find(|r| &r[2] == "probability" && &r[3] == "position_dominance")
        .expect("a position_dominance row for the probability read-out");
    let value: f64 = pd[4].parse().unwrap();
    assert!(
        (value - share).abs() < 1e-12,
        "report {value}, recomputed {share}"
    );
    assert_eq!(&pd[6], "fail");
    assert_eq!(&pd[7], n.to_string().as_str());

    // The gate is the first section of report.html and of summary.md, and the failing
    // instrument's result rows are marked and greyed.
    let html = read(dir.path().join("report.html"));
    let first_h2 = html.find("<h2>").unwrap();
    assert!(html[first_h2..].starts_with("<h2>Validity gate</h2>"));
    assert!(html.contains("<tr class=\"failed\">"));
    assert!(html.contains("FAIL: not evidence"));
    let md = read(dir.path().join("summary.md"));
    let gate = md.find("Validity gate").expect("the gate in summary.md");
    let emotion = md.find("Emotion: sadness").expect("the emotion section");
    assert!(
        gate < emotion,
        "the gate comes before the results in summary.md"
    );
}

#[test]
fn declared_questions_are_answered_first_with_power_and_validity() {
    // The fixture run with two questions declared in its study record, as a study file's
    // [[contrast]] blocks would put them there.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    common::copy_tree(Path::new(FIXTURE), &run);
    let header_path = run.join("run.json");
    let mut header: serde_json::Value = serde_json::from_str(&read(header_path.clone())).unwrap();
    let contrast = |question: &str, b: &str, kind: &str| {
        serde_json::json!({"question": question, "a": "sadness/none", "b": b,
            "instrument": "sadness-state", "subscale": "sadness", "family": "induction", "kind": kind})
    };
    header["study"]["contrasts"] = serde_json::json!([
        contrast("vs neutral", "neutral/none", "causal"),
        contrast("vs baseline", "baseline", "descriptive"),
    ]);
    std::fs::write(&header_path, serde_json::to_string(&header).unwrap()).unwrap();
    let out = dir.path().join("report");
    let o = common::affectbench_command()
        .args(["report"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Recompute the probability read-out's scale means per condition from trials.jsonl.
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for line in read(run.join("trials.jsonl")).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["question"]["instrument"] == "sadness-state" {
            groups
                .entry((
                    v["condition"].as_str().unwrap().into(),
                    v["group_id"].as_str().unwrap().into(),
                ))
                .or_default()
                .push(v["choice"]["keyed_expected"].as_f64().unwrap());
        }
    }
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((cond, _), items) in groups {
        scores
            .entry(cond)
            .or_default()
            .push(items.iter().sum::<f64>() / items.len() as f64);
    }
    let m = |c: &str| scores[c].iter().sum::<f64>() / scores[c].len() as f64;

    let mut r = csv::Reader::from_path(out.join("tables/questions.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = r
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[col("readout")] == "probability")
        .collect();
    assert_eq!(rows.len(), 2);
    let mut ps = Vec::new();
    for (row, b) in rows.iter().zip(["neutral/none", "baseline"]) {
        assert_eq!(&row[col("condition_b")], b);
        let diff: f64 = row[col("difference")].parse().unwrap();
        assert!((diff - (m("sadness/none") - m(b))).abs() < 1e-12);
        assert_eq!(&row[col("validity")], "fail");
        assert_eq!(
            &row[col("kind")],
            if b == "baseline" {
                "descriptive"
            } else {
                "causal"
            }
        );
        // Three repetitions per arm: MDE = (z_.975 + z_.8) * sqrt(1/3 + 1/3).
        let mde: f64 = row[col("mde_d_80")].parse().unwrap();
        assert!((mde - 2.801_585_218_112_968 * (2.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert_eq!(&row[col("ci_method")], "percentile");
        ps.push(row[col("welch_p")].parse::<f64>().unwrap());
    }
    // Holm over the family's two p values.
    let (lo, hi) = (ps[0].min(ps[1]), ps[0].max(ps[1]));
    let holm: Vec<f64> = rows
        .iter()
        .map(|r| r[col("welch_p_holm")].parse().unwrap())
        .collect();
    let want_lo = (2.0 * lo).min(1.0);
    let want_hi = hi.max(want_lo);
    let mut got = holm.clone();
    got.sort_by(f64::total_cmp);
    assert!(
        (got[0] - want_lo).abs() < 1e-12 && (got[1] - want_hi).abs() < 1e-12,
        "{got:?}"
    );

    // The section comes right after the gate.
    let html = read(out.join("report.html"));
    let gate = html.find("<h2>Validity gate</h2>").unwrap();
    let questions = html.find("<h2>Questions</h2>").unwrap();
    let design = html.find("<h2>Design</h2>").unwrap();
    assert!(gate < questions && questions < design);
}

#[test]
fn negativity_bias_is_also_tested_at_the_conversation_and_stem_level() {
    // Judge valence (the judge read-out's expected value) recomputed from trials.jsonl:
    // per conversation (seed + group) and per stem, for the two completion conditions.
    let text = read(Path::new(FIXTURE).join("trials.jsonl"));
    type Means = BTreeMap<String, Vec<f64>>;
    let (mut by_conv, mut by_stem): (BTreeMap<String, Means>, BTreeMap<String, Means>) =
        Default::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["question"]["kind"] != "completion" || !v["error"].is_null() {
            continue;
        }
        let Some(valence) = v["judge"]["expected"].as_f64() else {
            continue;
        };
        let cond = v["condition"].as_str().unwrap().to_string();
        let conv = format!("{}/{}", v["seed"], v["group_id"].as_str().unwrap());
        let stem = v["question"]["stem"].as_str().unwrap().to_string();
        by_conv
            .entry(cond.clone())
            .or_default()
            .entry(conv)
            .or_default()
            .push(valence);
        by_stem
            .entry(cond)
            .or_default()
            .entry(stem)
            .or_default()
            .push(valence);
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let var = |x: &[f64]| {
        let m = mean(x);
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)
    };
    let means = |m: &Means| m.values().map(|v| mean(v)).collect::<Vec<f64>>();
    let (ca, cb) = (
        means(&by_conv["sadness/none"]),
        means(&by_conv["neutral/none"]),
    );
    let welch_t =
        (mean(&ca) - mean(&cb)) / (var(&ca) / ca.len() as f64 + var(&cb) / cb.len() as f64).sqrt();
    let d: Vec<f64> = by_stem["sadness/none"]
        .iter()
        .filter_map(|(stem, a)| by_stem["neutral/none"].get(stem).map(|b| mean(a) - mean(b)))
        .collect();
    let paired_t = mean(&d) / (var(&d) / d.len() as f64).sqrt();

    let dir = tempfile::tempdir().unwrap();
    report(dir.path(), &[]);
    let t = tidy(dir.path().join("tables/negativity_bias.csv"));
    let key = "11|smollm2-135m-instruct|judge|sadness/none|neutral/none|exploratory".to_string();
    let get = |stat: &str| -> f64 { t[&(key.clone(), stat.to_string())].parse().unwrap() };
    assert_eq!(get("conversations_a"), ca.len() as f64);
    assert_eq!(get("stems_paired"), d.len() as f64);
    assert!((get("conversation_welch_t") - welch_t).abs() < 1e-9);
    assert!((get("stem_paired_t") - paired_t).abs() < 1e-9);
}
