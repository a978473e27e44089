//! How a study becomes trials and read-outs: expansion counts, ids stable across
//! reorderings of the study file, the choice read-out against an independent computation,
//! system prompts, acknowledgements, identical repetitions, thinking switches, and the
//! same trials on every int8 kernel.

use super::*;

#[test]
fn expansion_counts_match_the_design() {
    let (study, lib, plan) = plan_for(
        Path::new("scenarios/studies/affect-induction.toml"),
        None,
        &["m".into()],
        None,
    )
    .unwrap();
    let all_scales = 7 + 7 * 6; // VAS + seven 6-item state scales at baseline and neutral
    let per_emotion = 7 + 6; // VAS + the matching state scale
    let stems = lib.tasks["sentence-stems"].stems.len();
    // baseline, neutral and the positive-control pair ask every scale; the 28
    // induction x regulation conditions their emotion's; two conditions complete stems.
    let reps = study.repetitions;
    let trials = reps * (4 * all_scales + 28 * per_emotion) + reps * 2 * stems * 2;
    // Content-free calibration: each state scale in both counterbalanced orders, VAS in
    // its one, per label style, times the 3 content-free texts; one group per model and
    // system prompt variant.
    let variants = study.system_prompt_variants.len();
    let content_free = 3 * study.label_styles.len() * (7 * 2 + 1) * variants;
    let expected = trials + content_free;
    assert_eq!(plan.trials.len(), expected);
    assert_eq!(plan.groups.len(), 32 * study.repetitions + variants);
    assert_eq!(
        plan.trials
            .iter()
            .filter(|t| t.question.is_content_free())
            .count(),
        content_free
    );
    let ids: std::collections::HashSet<_> = plan.trials.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), plan.trials.len(), "trial ids are unique");
    let (_, _, two_models) = plan_for(
        Path::new("scenarios/studies/affect-induction.toml"),
        None,
        &["a".into(), "b".into()],
        Some(2),
    )
    .unwrap();
    assert_eq!(
        two_models.trials.len(),
        2 * (trials * 2 / reps + content_free)
    );
}

#[test]
fn trial_ids_survive_reordering_the_study_file() {
    let text = std::fs::read_to_string("scenarios/studies/smoke.toml").unwrap();
    let (head, rest) = text.split_once("[[condition]]").unwrap();
    let (first, rest) = rest.split_once("[[condition]]").unwrap();
    let (second, tail) = rest.split_once("[completion]").unwrap();
    let reordered = format!("{head}[[condition]]{second}[[condition]]{first}[completion]{tail}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smoke.toml");
    std::fs::write(&path, reordered).unwrap();
    let root = Some(Path::new("scenarios"));
    let key = |p: &affectbench::study::plan::Plan| -> BTreeMap<String, String> {
        p.trials
            .iter()
            .map(|t| (t.id.clone(), serde_json::to_string(&t.question).unwrap()))
            .collect()
    };
    let (_, _, a) = plan_for(
        Path::new("scenarios/studies/smoke.toml"),
        root,
        &["m".into()],
        None,
    )
    .unwrap();
    let (_, _, b) = plan_for(&path, root, &["m".into()], None).unwrap();
    assert_ne!(a.trials[0].id, b.trials[0].id, "the order really changed");
    assert_eq!(
        key(&a),
        key(&b),
        "same ids, same questions, same perturbations"
    );
}

#[test]
fn choice_probabilities_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load_ref(
        &ModelRef::GgufFile(tiny_model(dir.path())),
        &LoadOptions::default(),
    )
    .unwrap();
    let prompt: Vec<u32> = vec![260, 72, 101, 108, 108, 111, 258, 10, 261, 97, 10];
    let options: Vec<Vec<u32>> = vec![vec![49], vec![50, 48], vec![49, 48, 48]];
    let mut cache = KvCache::new(2);
    let last = m.transformer.last_logits(&prompt, &mut cache).unwrap();
    let ours = option_logprobs(&m, &cache, &last, &options).unwrap();
    for (opt, got) in options.iter().zip(&ours) {
        // By hand: one fresh forward over prompt + option, log-softmax at each position.
        let mut seq = prompt.clone();
        seq.extend(opt);
        let logits = m
            .transformer
            .forward(&[seq.clone()], &mut KvCache::new(2), &LogitsAt::All)
            .unwrap();
        let mut want = 0.0;
        for (k, &tok) in opt.iter().enumerate() {
            let row: Vec<f32> = logits
                .i((0, prompt.len() - 1 + k))
                .unwrap()
                .to_vec1()
                .unwrap();
            want += log_softmax(&row)[tok as usize];
        }
        assert!((got - want).abs() < 1e-3, "option {opt:?}: {got} vs {want}");
    }
}

#[test]
fn all_items_in_one_turn_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let study = dir.path().join("all.toml");
    let text = std::fs::read_to_string("scenarios/studies/smoke.toml")
        .unwrap()
        .replace(
            "items_per_conversation = \"one\"",
            "items_per_conversation = \"all\"",
        );
    std::fs::write(&study, text).unwrap();
    let out = dir.path().join("out");
    let cfg = RunConfig {
        study_path: study,
        scenarios_root: Some(PathBuf::from("scenarios")),
        ..config(&model, &out, None, None)
    };
    run_study(&cfg).unwrap();
    let recs = records(&out);
    let items: Vec<_> = recs
        .iter()
        .filter(|(_, r)| r["question"]["kind"] == "item")
        .collect();
    assert_eq!(items.len(), 2 * 2, "one trial per instrument per group");
    for (_, r) in items {
        assert!(r["question"]["item"].is_null());
        assert!(
            r["prompt"].as_str().unwrap().contains("1. I feel sad."),
            "all items are listed"
        );
        assert!(
            r["choice"].is_null(),
            "no single answer position with all items in one turn"
        );
        assert!(r["generate"]["replies"]
            .as_array()
            .is_some_and(|a| !a.is_empty()));
    }
}

/// Runs the smoke study with `edit` applied to its file; the records and run.json.
fn run_edited_smoke(
    dir: &Path,
    model: &Path,
    name: &str,
    edit: impl Fn(String) -> String,
) -> (Vec<(String, serde_json::Value)>, serde_json::Value) {
    let study = dir.join(format!("{name}.toml"));
    std::fs::write(
        &study,
        edit(std::fs::read_to_string("scenarios/studies/smoke.toml").unwrap()),
    )
    .unwrap();
    let out = dir.join(name);
    let cfg = RunConfig {
        study_path: study,
        scenarios_root: Some(PathBuf::from("scenarios")),
        ..config(model, &out, None, None)
    };
    run_study(&cfg).unwrap();
    let header =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    (records(&out), header)
}

/// Inserts `extra` into the smoke study's settings.
fn with_setting(extra: &'static str) -> impl Fn(String) -> String {
    move |text: String| text.replacen("option_order", &format!("{extra}\noption_order"), 1)
}

#[test]
fn system_prompt_variants_follow_the_repetition() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // Two system prompts: repetition r (and the content-free group r) uses variant r.
    let (recs, header) = run_edited_smoke(
        dir.path(),
        &model,
        "variants",
        with_setting("system_prompts = [\"SYS-ZERO\", \"SYS-ONE\"]"),
    );
    assert_eq!(header["study"]["system_prompts"][1], "SYS-ONE");
    for (_, r) in &recs {
        let prompt = r["prompt"].as_str().unwrap();
        let want = ["SYS-ZERO", "SYS-ONE"][r["repetition"].as_u64().unwrap() as usize];
        assert!(
            prompt.starts_with(&format!("<|im_start|>system\n{want}<|im_end|>")),
            "{prompt}"
        );
    }
    let content_free = recs
        .iter()
        .filter(|(_, r)| r["question"]["kind"] == "content-free")
        .count();
    assert_eq!(content_free, 2 * 12, "one content-free group per variant");
}

#[test]
fn without_an_acknowledgement_the_text_and_the_question_are_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (recs, header) = run_edited_smoke(
        dir.path(),
        &model,
        "none",
        with_setting("acknowledgement_mode = \"none\""),
    );
    assert_eq!(header["study"]["acknowledgement"]["mode"], "none");
    let induced: Vec<&str> = recs
        .iter()
        .filter(|(_, r)| r["condition"] == "sadness/breathing")
        .map(|(_, r)| r["prompt"].as_str().unwrap())
        .collect();
    assert!(!induced.is_empty());
    for p in &induced {
        assert!(!p.contains("I have read this"), "{p}");
        assert_eq!(p.matches("<|im_start|>user").count(), 1, "{p}");
        assert_eq!(p.matches("<|im_start|>assistant").count(), 1, "{p}");
    }
}

#[test]
fn a_generated_acknowledgement_is_the_models_own_turn_after_each_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // An assistant turn per text (induction and breathing script), which is not the
    // fixed acknowledgement.
    let (recs, header) = run_edited_smoke(
        dir.path(),
        &model,
        "generated",
        with_setting("acknowledgement_mode = \"generated\""),
    );
    assert_eq!(header["study"]["acknowledgement"]["mode"], "generated");
    for (_, r) in recs
        .iter()
        .filter(|(_, r)| r["condition"] == "sadness/breathing")
    {
        let p = r["prompt"].as_str().unwrap();
        assert!(!p.contains("I have read this"), "{p}");
        assert_eq!(p.matches("<|im_start|>assistant").count(), 3, "{p}");
    }
}

#[test]
fn identical_repetitions_count_once_and_a_one_conversation_arm_is_a_constant() {
    use affectbench::stats::one_sample_t;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // One label style and one option order: every baseline repetition shows the model
    // the same prompts, so its probability read-out is one value repeated.
    let (_, _) = run_edited_smoke(dir.path(), &model, "fixed", |text| {
        text.replacen("repetitions = 2", "repetitions = 4", 1)
            .replacen(
                "option_order = \"counterbalanced\"",
                "option_order = \"fixed\"",
                1,
            )
            .replacen(
                "label_styles = [\"digits\", \"letters\"]",
                "label_styles = [\"digits\"]",
                1,
            )
            .replacen(
                "[completion]",
                "[[contrast]]\nquestion = \"q\"\na = \"sadness/breathing\"\nb = \"baseline\"\ninstrument = \"sadness-state\"\nfamily = \"f\"\n\n[completion]",
                1,
            )
    });
    let run = dir.path().join("fixed");
    let report = dir.path().join("report");
    affectbench::report::build_report(std::slice::from_ref(&run), &report, &Default::default())
        .unwrap();
    let mut questions = csv::Reader::from_path(report.join("tables/questions.csv")).unwrap();
    let headers = questions.headers().unwrap().clone();
    let col = |row: &csv::StringRecord, name: &str| -> String {
        row[headers.iter().position(|h| h == name).unwrap()].to_string()
    };
    let rows: Vec<csv::StringRecord> = questions.records().map(|r| r.unwrap()).collect();
    let probability = rows
        .iter()
        .find(|r| col(r, "readout") == "probability")
        .expect("the question is answered for the probability read-out");
    assert_eq!(
        col(probability, "n_b"),
        "1",
        "4 identical repetitions count once"
    );
    assert!(col(probability, "test").contains("b is one conversation"));

    // The test is the one-sample t of the sampled arm against the constant, recomputed
    // from the scale scores (mean of the 6 keyed expected values per conversation).
    let trials = affectbench::results::read_trials(&run.join("trials.jsonl"), 7)
        .unwrap()
        .records;
    let mut by_group: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (_, t) in &trials {
        if t.question.item().is_some() {
            by_group
                .entry((t.condition.clone(), t.group_id.clone()))
                .or_default()
                .push(t.choice.as_ref().unwrap().keyed_expected);
        }
    }
    let score = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let arm = |c: &str| -> Vec<f64> {
        by_group
            .iter()
            .filter(|((cond, _), _)| cond == c)
            .map(|(_, v)| score(v))
            .collect()
    };
    let (a, b) = (arm("sadness/breathing"), arm("baseline"));
    assert_eq!(b.len(), 4);
    assert!(
        b.iter().all(|x| *x == b[0]),
        "the baseline repeats one value"
    );
    let want = one_sample_t(&a, b[0]);
    let got: f64 = col(probability, "welch_t").parse().unwrap();
    assert!((got - want.t).abs() < 1e-9, "{got} vs {}", want.t);
    assert_eq!(col(probability, "welch_df"), format!("{}", a.len() - 1));
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("identical repeats dropped"));
}

#[test]
fn a_template_with_a_thinking_switch_is_told_the_studys_choice_and_the_run_records_it() {
    use affectbench::results::read_header;
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    // ChatML with Qwen 3's switch: thinking off closes an empty think block.
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";
    let model = common::tiny_study_model_with_meta(dir.path(), "thinker.gguf", |meta| {
        for (k, v) in meta.iter_mut() {
            if k == "tokenizer.chat_template" {
                *v = Value::String(template.into());
            }
        }
    });
    let out = dir.path().join("run");
    run_study(&config(&model, &out, Some(6), None)).unwrap();
    let header = read_header(&out).unwrap();
    assert_eq!(header.study.thinking, Some(false));
    assert!(header.models[0].thinking_switch);
    assert!(header.models[0]
        .template_example
        .as_deref()
        .unwrap()
        .ends_with("<think>\n\n</think>\n\n"));
    let recs = records(&out);
    assert!(recs.iter().all(|(_, r)| r["prompt"]
        .as_str()
        .unwrap()
        .contains("<think>\n\n</think>")));

    // A study that lets it think: the block is not closed for it.
    let (recs, header) = run_edited_smoke(dir.path(), &model, "thinking", |s| {
        s.replacen("\nseed", "\nthinking = true\nseed", 1)
    });
    assert_eq!(header["study"]["thinking"], true);
    assert!(recs
        .iter()
        .all(|(_, r)| !r["prompt"].as_str().unwrap().contains("</think>")));
}

#[test]
fn the_smoke_study_gives_identical_trials_on_every_int8_kernel() {
    use affectbench::kernels::int8_matmul::{best_path, KernelPath};
    common::real_model("smollm2-135m-instruct");
    let dir = tempfile::tempdir().unwrap();
    // `auto`, then every other path this CPU runs but the (slow) reference.
    let kernels: Vec<&str> = std::iter::once("auto")
        .chain(
            KernelPath::ALL
                .into_iter()
                .filter(|p| p.supported() && *p != KernelPath::Scalar && *p != best_path())
                .map(KernelPath::name),
        )
        .collect();
    assert!(kernels.contains(&"portable"), "{kernels:?}");
    let mut runs = Vec::new();
    for kernel in &kernels {
        let out = dir.path().join(kernel);
        let o = common::affectbench_command()
            .args([
                "run",
                "scenarios/studies/smoke.toml",
                "--no-report",
                "--int8-kernel",
                kernel,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{kernel}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let header = affectbench::results::read_header(&out).unwrap();
        let ran = if *kernel == "auto" {
            best_path().name()
        } else {
            kernel
        };
        assert_eq!(header.engine.int8_kernel.as_deref(), Some(ran));
        runs.push(records_by_id(&out));
    }
    assert_eq!(runs[0].len(), SMOKE_RECORDS);
    for (kernel, run) in kernels.iter().zip(&runs).skip(1) {
        assert!(run == &runs[0], "{kernel} differs from auto");
    }
}
