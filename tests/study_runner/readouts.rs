//! Calibration and judging read-outs: content-free prompts per arrangement, the judge
//! asked in both label orders, and a second model judging a finished run.

use super::*;

#[test]
fn content_free_prompts_measure_each_arrangement_and_calibrate_its_items() {
    use affectbench::measures::calibrate;
    use affectbench::results::{read_header, read_trials, Question};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    run_study(&config(&model, &out, None, None)).unwrap();
    let header = read_header(&out).unwrap();
    let records: Vec<_> = read_trials(&out.join("trials.jsonl"), header.seed)
        .unwrap()
        .records
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let (content_free, items): (Vec<_>, Vec<_>) =
        records.iter().partition(|t| t.question.is_content_free());
    assert_eq!(content_free.len(), 12);
    let arrangement = |q: &Question| match q {
        Question::Item {
            instrument,
            label_style,
            option_order,
            label_binding,
            ..
        }
        | Question::ContentFree {
            instrument,
            label_style,
            option_order,
            label_binding,
            ..
        } => Some((
            instrument.clone(),
            *label_style,
            option_order.clone(),
            *label_binding,
        )),
        Question::Completion { .. } => None,
    };
    let shown: std::collections::BTreeSet<_> = items
        .iter()
        .filter_map(|t| arrangement(&t.question))
        .collect();
    let calibrated: std::collections::BTreeSet<_> = content_free
        .iter()
        .filter_map(|t| arrangement(&t.question))
        .collect();
    assert_eq!(
        shown, calibrated,
        "every arrangement an item shows is calibrated"
    );
    for t in &content_free {
        let Question::ContentFree { content, .. } = &t.question else {
            unreachable!()
        };
        assert_eq!(t.condition, "content-free");
        assert!(t.error.is_none() && t.choice.is_some() && t.generate.is_none());
        // The statement stands where an item would, and no induction text precedes it.
        assert!(
            t.prompt.contains(&format!("\n\n{content}\n\n")),
            "{}",
            t.prompt
        );
        assert!(!t.prompt.contains("I have read this"), "{}", t.prompt);
    }

    // The calibrated read-out, recomputed by hand from the records.
    let rules = header
        .scoring
        .iter()
        .map(|s| (s.id.clone(), s.clone()))
        .collect();
    let trials = calibrate(records.clone(), &rules).trials;
    let mut checked = 0;
    for t in trials.iter().filter(|t| t.question.item().is_some()) {
        let c = t.choice.as_ref().unwrap();
        let key = arrangement(&t.question);
        let cf: Vec<&Vec<f64>> = content_free
            .iter()
            .filter(|r| arrangement(&r.question) == key)
            .map(|r| &r.choice.as_ref().unwrap().probs)
            .collect();
        assert_eq!(cf.len(), 3);
        let mean: Vec<f64> = (0..c.probs.len())
            .map(|i| cf.iter().map(|p| p[i]).sum::<f64>() / 3.0)
            .collect();
        let ratio: Vec<f64> = c.probs.iter().zip(&mean).map(|(p, q)| p / q).collect();
        let total: f64 = ratio.iter().sum();
        let got = t.calibrated.as_ref().expect("calibrated");
        for (g, r) in got.probs.iter().zip(&ratio) {
            assert!((g - r / total).abs() < 1e-12);
        }
        let expected: f64 = ratio
            .iter()
            .zip(&c.values)
            .map(|(r, v)| r / total * v)
            .sum();
        assert!((got.expected - expected).abs() < 1e-12);
        checked += 1;
    }
    assert_eq!(checked, 24);

    // The report shows and tabulates it.
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&out), &report, &Default::default())
        .unwrap();
    let calibration = std::fs::read_to_string(report.join("tables/calibration.csv")).unwrap();
    assert_eq!(
        calibration.lines().count(),
        1 + 4 * 4,
        "4 arrangements x 4 options"
    );
    let validity = std::fs::read_to_string(report.join("tables/validity.csv")).unwrap();
    assert!(validity
        .lines()
        .any(|l| l.contains(",calibrated,position_dominance,")));
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Answer-format bias and calibration"));
}

#[test]
fn the_judge_is_asked_in_both_orders_with_its_content_free_bias_recorded() {
    use affectbench::results::{read_header, read_trials, Question};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    run_study(&config(&model, &out, None, None)).unwrap();
    let header = read_header(&out).unwrap();
    let completions: Vec<_> = read_trials(&out.join("trials.jsonl"), header.seed)
        .unwrap()
        .records
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| matches!(r.question, Question::Completion { .. }))
        .collect();
    assert_eq!(completions.len(), 8);
    let first_bias = completions[0]
        .judge_detail
        .as_ref()
        .unwrap()
        .content_free
        .clone();
    for t in &completions {
        assert!(t.continues_stem.is_some());
        let judge = t.judge.as_ref().unwrap();
        let d = t.judge_detail.as_ref().unwrap();
        assert_eq!(d.orders, vec![vec![0, 1, 2], vec![2, 1, 0]]);
        // The read-out is the mean of the two orders, in the listed order.
        for (i, p) in judge.probs.iter().enumerate() {
            assert!((p - (d.by_order[0][i] + d.by_order[1][i]) / 2.0).abs() < 1e-12);
        }
        // The content-free bias depends on nothing but the model and the judge.
        assert_eq!(d.content_free, first_bias);
        let ratios: Vec<f64> = judge
            .probs
            .iter()
            .zip(&d.content_free)
            .map(|(p, q)| p / q)
            .collect();
        let total: f64 = ratios.iter().sum();
        let calibrated: f64 = ratios
            .iter()
            .zip(&judge.values)
            .map(|(r, v)| r / total * v)
            .sum();
        assert!((d.calibrated_expected - calibrated).abs() < 1e-12);
    }
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&out), &report, &Default::default())
        .unwrap();
    let quality = std::fs::read_to_string(report.join("tables/judge_quality.csv")).unwrap();
    for stat in [
        "compliant",
        "orders_agree",
        "content_free_valence",
        "lexicon_scored",
    ] {
        assert!(quality.contains(&format!(",{stat},")), "{stat}: {quality}");
    }
    let bias = std::fs::read_to_string(report.join("tables/negativity_bias.csv")).unwrap();
    assert!(bias.contains(",judge-calibrated,"));
}

/// `affectbench judge RUN --model M`: its stderr, and whether it succeeded.
fn second_judge(run: &Path, model: &Path) -> (bool, String) {
    let o = common::affectbench_command()
        .args(["--threads", "2", "judge"])
        .arg(run)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn a_second_judge_reproduces_the_same_weights_continues_after_a_crash_and_is_reported() {
    use affectbench::results::second_judge::{read_second_judge, second_judge_path};
    use affectbench::results::{read_header, read_trials};
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("run");
    run_study(&config(&model, &out, None, None)).unwrap();
    let shape = Tiny {
        context: 8192,
        ..Tiny::qwen2()
    };

    // The model that wrote the completions is the run's judge already: it judges
    // nothing again, and its known-answer check is the one the run wrote.
    let known = out.join("known-answers/tiny.jsonl");
    assert!(known.exists(), "the run checks its judge on known answers");
    let before = std::fs::read(&known).unwrap();
    let (ok, err) = second_judge(&out, &model);
    assert!(
        ok && err.contains("0 completions judged now") && err.contains("8 of 8 left out"),
        "{err}"
    );
    assert!(err.contains("known-answer check"), "{err}");
    assert!(!out.join("judges/tiny.jsonl").exists());
    assert_eq!(
        std::fs::read(&known).unwrap(),
        before,
        "the check is not redone"
    );

    // The same weights in another file: as a second judge it must give exactly the
    // run's own judge read-outs, through the snapshot's judge question and seeds.
    let twin = dir.path().join("twin.gguf");
    common::write_tiny_gguf_with_meta(&twin, &shape, 11, |m| {
        m.push(("general.name".into(), Value::String("twin".into())))
    });
    let (ok, err) = second_judge(&out, &twin);
    assert!(ok, "{err}");
    let header = read_header(&out).unwrap();
    let trials: BTreeMap<String, affectbench::results::TrialRecord> =
        read_trials(&out.join("trials.jsonl"), header.seed)
            .unwrap()
            .records
            .into_iter()
            .map(|(_, r)| (r.trial_id.clone(), r))
            .collect();
    let twin_file = read_second_judge(&second_judge_path(&out, "twin")).unwrap();
    assert_eq!(twin_file.records.len(), 8);
    for r in &twin_file.records {
        let t = &trials[&r.trial_id];
        assert_eq!(Some(&r.judge), t.judge.as_ref());
        assert_eq!(Some(&r.judge_detail), t.judge_detail.as_ref());
        assert_eq!(r.model, t.model);
    }

    // Other weights, interrupted after 3 completions with a torn fourth line: the second
    // call judges the other 5 and the file is as if never interrupted.
    let other = dir.path().join("other.gguf");
    write_tiny_gguf(&other, &shape, 12);
    let (ok, err) = second_judge(&out, &other);
    assert!(ok, "{err}");
    let other_path = second_judge_path(&out, "other");
    let whole = std::fs::read_to_string(&other_path).unwrap();
    assert_ne!(
        read_second_judge(&other_path).unwrap().records[0].judge,
        twin_file.records[0].judge
    );
    let cut: usize = whole.split_inclusive('\n').take(3).map(str::len).sum();
    std::fs::write(&other_path, &whole[..cut + 15]).unwrap();
    let (ok, err) = second_judge(&out, &other);
    assert!(
        ok && err.contains("5 completions judged now, 3 judged before"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&other_path).unwrap(), whole);
    let (ok, err) = second_judge(&out, &other);
    assert!(
        ok && err.contains("0 completions judged now, 8 judged before"),
        "{err}"
    );

    // The report puts each second judge beside the run's judge.
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&out), &report, &Default::default())
        .unwrap();
    let agreement = std::fs::read_to_string(report.join("tables/judge_agreement.csv")).unwrap();
    let value = |judge: &str, stat: &str| -> f64 {
        let line = agreement
            .lines()
            .find(|l| l.contains(&format!(",{judge},")) && l.contains(&format!(",{stat},")))
            .unwrap_or_else(|| panic!("{judge} {stat}: {agreement}"));
        line.rsplit(',').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("twin", "paired"), 8.0);
    assert_eq!(value("twin", "same_side"), 8.0);
    assert!((value("twin", "r") - 1.0).abs() < 1e-9, "{agreement}");
    assert_eq!(value("other", "paired"), 8.0);
    assert!(value("other", "r") < 0.999, "{agreement}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("Agreement with a second judge"));
    // Each second judge is a scorer of its own in the negativity analysis.
    let bias = std::fs::read_to_string(report.join("tables/negativity_bias.csv")).unwrap();
    for scorer in ["judge:other", "judge-calibrated:other", "judge:twin"] {
        assert!(bias.contains(&format!(",{scorer},")), "{scorer}: {bias}");
    }
}
