//! The shipped scenario files load and meet the study's requirements; malformed files
//! give errors that name the file and line.

use crate::common;

use affectbench::scenario::{Library, Study};
use std::path::Path;

fn library() -> Library {
    Library::load(Path::new("scenarios")).expect("shipped scenarios load")
}

#[test]
fn shipped_scenarios_meet_the_design() {
    let lib = library();
    for emotion in [
        "anxiety", "fear", "anger", "disgust", "sadness", "worry", "stress", "neutral",
    ] {
        let ind = lib
            .inductions
            .get(emotion)
            .unwrap_or_else(|| panic!("no {emotion} induction"));
        assert!(
            ind.variants.len() >= 5,
            "{emotion}: {} variants",
            ind.variants.len()
        );
        for v in &ind.variants {
            if v.is_text {
                let affectbench::scenario::Turn::User(t) = &v.turns[0] else {
                    panic!()
                };
                let words = t.split_whitespace().count();
                assert!(
                    (120..=250).contains(&words),
                    "{emotion}/{}: {words} words",
                    v.id
                );
            }
        }
    }
    let stress = &lib.inductions["stress"];
    assert!(
        stress
            .variants
            .iter()
            .all(|v| !v.is_text && v.turns.len() >= 8),
        "stress is a multi-turn protocol"
    );
    assert!(lib.regulations["breathing"].variants.len() >= 3);
    assert!(lib.regulations["reappraisal"].variants.len() >= 3);
    assert!(
        lib.regulations.contains_key("neutral-control") && lib.regulations.contains_key("none")
    );
    assert!(lib.instruments.contains_key("vas") && lib.instruments.contains_key("dass21"));
    for emotion in [
        "anxiety", "fear", "anger", "disgust", "sadness", "worry", "stress",
    ] {
        let s = &lib.instruments[&format!("{emotion}-state")];
        assert!(
            s.items.len() >= 6 && s.items.iter().filter(|i| i.reverse).count() >= 2,
            "{emotion}-state has at least 6 items, 2 of them reverse-keyed, so internal \
             consistency is estimable"
        );
    }
    let trauma = &lib.inductions["trauma"];
    assert!(trauma.variants.len() >= 3 && trauma.variants.iter().all(|v| v.is_text));
    assert!(lib.tasks["sentence-stems"].stems.len() >= 30);
    for study in ["affect-induction", "state-anxiety", "smoke", "role-demand"] {
        Study::load(
            &Path::new("scenarios/studies").join(format!("{study}.toml")),
            &lib,
        )
        .unwrap();
    }
    let lancet = Study::load(Path::new("scenarios/studies/affect-induction.toml"), &lib).unwrap();
    // baseline, neutral, 7 inductions x 4 regulations, and the positive control pair
    assert_eq!(lancet.conditions.len(), 2 + 7 * 4 + 2);
    assert_eq!((lancet.repetitions, lancet.temperature), (10, 0.5));
    // Every shipped design repeats each induction and regulation variant at least twice
    // (so wording variance is estimable) and varies the system prompt by repetition (so
    // no condition is one conversation repeated).
    for study in ["affect-induction", "state-anxiety"] {
        let s = Study::load(
            &Path::new("scenarios/studies").join(format!("{study}.toml")),
            &lib,
        )
        .unwrap();
        assert!(s.system_prompt_variants.len() >= 2, "{study}");
        for c in &s.conditions {
            let mut counts = Vec::new();
            if let Some(i) = &c.induction {
                counts.push(lib.inductions[i].variants.len());
            }
            if let Some(r) = c.regulation.as_ref().filter(|r| r.variant.is_none()) {
                counts.push(lib.regulations[&r.strategy].variants.len());
            }
            for n in counts {
                assert!(
                    s.repetitions >= 2 * n,
                    "{study}/{}: {} repetitions for {n} variants",
                    c.name,
                    s.repetitions
                );
            }
        }
    }
    let ben_zion = Study::load(Path::new("scenarios/studies/state-anxiety.toml"), &lib).unwrap();
    let trauma_conditions = ben_zion
        .conditions
        .iter()
        .filter(|c| c.name.contains("trauma"))
        .count();
    assert!(trauma_conditions >= 4);
    assert!(ben_zion
        .conditions
        .iter()
        .filter(|c| c.name.contains("trauma"))
        .all(|c| c.induction.as_deref() == Some("trauma")));
}

#[test]
fn scale_scores_follow_each_instruments_scoring_rule() {
    // Reverse-keyed items mirrored, a missing item leaves no score, DASS-21 doubled.
    let lib = library();
    let s = &lib.instruments["anxiety-state"];
    let at_ease = s.items.iter().find(|i| i.id == "at-ease").unwrap();
    assert_eq!(s.keyed_value(at_ease, 4.0), 1.0);
    assert_eq!(
        s.score(&[Some(1.0), Some(2.0), Some(3.0), Some(4.0)]),
        Some(2.5)
    );
    assert_eq!(s.score(&[Some(1.0), None]), None);
    let dass = &lib.instruments["dass21"];
    assert_eq!(
        dass.score(&[Some(1.0); 7]),
        Some(14.0),
        "DASS-21 sums are doubled"
    );
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn malformed_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inductions/x.toml", "id = \"x\"\nversion = 1\nemotion = \"x\"\ndescription = \"d\"\nsource = \"s\"\nlicence = \"l\"\n\n[[variant]]\nid = \"a\"\ntxet = \"typo\"\n");
    let err = Library::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("x.toml:10") && err.contains("txet"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "instruments/s.toml", "id = \"s\"\nversion = 1\ndescription = \"d\"\nsource = \"s\"\nlicence = \"l\"\ninstruction = \"i\"\ntime_frame = \"now\"\nscoring = \"median\"\nresponse = { kind = \"numeric\", min = 0, max = 10, choice_bins = [0, 10] }\n[[item]]\nid = \"a\"\ntext = \"t\"\n");
    let err = Library::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("s.toml:8") && err.contains("\"sum\" or \"mean\""),
        "{err}"
    );

    let lib = library();
    let study = dir.path().join("study.toml");
    std::fs::write(
        &study,
        std::fs::read_to_string("scenarios/studies/smoke.toml")
            .unwrap()
            .replace(
                "instruments = [\"sadness-state\"]\n\n[[condition]]",
                "instruments = [\"sadnes-state\"]\n\n[[condition]]",
            ),
    )
    .unwrap();
    let err = Study::load(&study, &lib).unwrap_err().to_string();
    assert!(
        err.contains("study.toml:") && err.contains("sadnes-state") && err.contains("known:"),
        "{err}"
    );
}

#[test]
fn validation_rejects_each_impossible_design_with_file_line_and_fix() {
    // Regression: each of these was accepted (and then ran, ran for minutes, or made
    // duplicate trial ids).
    let long_label = format!("{{ label = \"{}\",", "1".repeat(300));
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "instruments/sadness-state.toml",
            "value = 1 }",
            "value = nan }",
            "finite number",
        ),
        (
            "instruments/sadness-state.toml",
            "value = 1 }",
            "value = inf }",
            "finite number",
        ),
        (
            "instruments/sadness-state.toml",
            "{ label = \"1\",",
            "{ label = \"\",",
            "1 to 32 characters",
        ),
        (
            "instruments/sadness-state.toml",
            "{ label = \"1\",",
            &long_label,
            "1 to 32 characters",
        ),
        (
            "instruments/sadness-state.toml",
            "id = \"sad\"",
            "id = \"\"",
            "item id ''",
        ),
        (
            "instruments/sadness-state.toml",
            "id = \"downhearted\"",
            "id = \"sad\"",
            "used twice",
        ),
        (
            "instruments/vas.toml",
            "choice_bins = [0, 10,",
            "choice_bins = [0, 0,",
            "different values",
        ),
        (
            "studies/smoke.toml",
            "instruments = [\"sadness-state\"]",
            "instruments = [\"sadness-state\", \"sadness-state\"]",
            "listed twice",
        ),
        (
            "studies/smoke.toml",
            "completions = 1",
            "completions = 0",
            "completions >= 1",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[steering]]\ndirection = \"sadness\"\nblock = 3\ndepth = 0.5\nalphas = [1]\ninstruments = [\"sadness-state\"]\n\n[completion]",
            "exactly one of block",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[steering]]\ndirection = \"sadness\"\nblock = 3\nalphas = []\ninstruments = [\"sadness-state\"]\n\n[completion]",
            "non-empty list",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[capture]\nblocks = \"most\"\n\n[completion]",
            "use \"all\"",
        ),
        (
            "studies/smoke.toml",
            "[completion]\ntask = \"sentence-stems\"\nconditions = [\"baseline\", \"sadness/breathing\"]",
            "[[steering]]\ndirection = \"sadness\"\nblock = 3\nalphas = [1]\ninstruments = [\"sadness-state\"]\n\n[completion]\ntask = \"sentence-stems\"\nconditions = [\"baseline\", \"steer-sadness@+1\"]",
            "is steered",
        ),
        (
            "studies/smoke.toml",
            "max_tokens = 12",
            "max_tokens = 0",
            "max_tokens >= 1",
        ),
        (
            "studies/smoke.toml",
            "id = \"smoke\"",
            "id = \"../evil\"",
            "must be letters",
        ),
        (
            "studies/smoke.toml",
            "repetitions = 2",
            "repetitions = 100000000000",
            "more than 100000",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[contrast]]\nquestion = \"q\"\na = \"baseline\"\nb = \"nope\"\ninstrument = \"sadness-state\"\nfamily = \"f\"\n\n[completion]",
            "not one of the study's conditions",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[contrast]]\nquestion = \"q\"\na = \"baseline\"\nb = \"sadness/breathing\"\ninstrument = \"vas\"\nfamily = \"f\"\n\n[completion]",
            "is not asked in condition",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[positive_control]\nlow = \"instructed-low\"\nhigh = \"instructed-high\"\nmin_effect = -1.0\n\n[completion]",
            "min_effect must be a positive number",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[positive_control]\nlow = \"calm\"\nhigh = \"instructed-high\"\n\n[completion]",
            "induction 'calm' is not defined",
        ),
        (
            "tasks/sentence-stems.toml",
            "expresses {options}? Answer with one word: {options}.",
            "expresses negative, neutral or positive? Answer with one word: negative.",
            "needs {options}",
        ),
        (
            "tasks/sentence-stems.toml",
            "option_order = \"both\"",
            "option_order = \"shuffled\"",
            "option_order is 'shuffled'",
        ),
        (
            "studies/smoke.toml",
            "repetitions = 2",
            "repetitions = 2\nsystem_prompt = \"a\"\nsystem_prompts = [\"b\", \"c\"]",
            "not both",
        ),
        (
            "studies/smoke.toml",
            "repetitions = 2",
            "repetitions = 2\nacknowledgement_mode = \"silent\"",
            "acknowledgement_mode is 'silent'",
        ),
        (
            "studies/smoke.toml",
            "repetitions = 2",
            "repetitions = 2\ncalibration = \"zhao\"",
            "calibration is 'zhao'",
        ),
        (
            "studies/smoke.toml",
            "name = \"baseline\"",
            "name = \"content-free\"",
            "reserved for the calibration prompts",
        ),
        (
            "studies/smoke.toml",
            "name = \"baseline\"\n",
            "name = \"baseline\"\nperspective = \"other\"\n",
            "has no other_instruction or an item without other_text",
        ),
        (
            "studies/smoke.toml",
            "name = \"baseline\"\n",
            "name = \"baseline\"\nperspective = \"them\"\n",
            "perspective is 'them'",
        ),
        (
            "studies/smoke.toml",
            "name = \"baseline\"\n",
            "name = \"baseline\"\nexpectancy = \" \"\n",
            "expectancy is empty",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[contrast]]\nquestion = \"q\"\na = \"sadness/breathing\"\nb = \"baseline\"\nc = \"baseline\"\ninstrument = \"sadness-state\"\nfamily = \"f\"\n\n[completion]",
            "needs both `c` and `d`",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[contrast]]\nquestion = \"q\"\na = \"sadness/breathing\"\nb = \"baseline\"\ninstrument = \"sadness-state\"\nfamily = \"f\"\nequivalence_margin = -1.0\n\n[completion]",
            "equivalence_margin is -1",
        ),
        (
            "studies/smoke.toml",
            "[completion]",
            "[[deviation]]\naspect = \"x\"\nsource = \"s\"\nhere = \"h\"\nwhy = \"\"\nchanges_interpretation = false\n\n[completion]",
            "has an empty `why`",
        ),
    ];
    for (file, from, to, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        common::copy_tree(Path::new("scenarios"), dir.path());
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has {from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let err = Library::load(dir.path())
            .and_then(|lib| Study::load(&dir.path().join("studies/smoke.toml"), &lib))
            .err()
            .unwrap_or_else(|| panic!("{file}: '{to}' was accepted"))
            .to_string();
        let file_name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(file_name) && err.contains(expected),
            "{file}: '{to}': {err}"
        );
        let line = err
            .split(':')
            .nth(1)
            .and_then(|l| l.trim().parse::<usize>().ok());
        assert!(
            line.is_some_and(|l| l >= 1),
            "{file}: the error names a line: {err}"
        );
    }
    // A condition that asks nothing.
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(Path::new("scenarios"), dir.path());
    let path = dir.path().join("studies/smoke.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replacen("instruments = [\"sadness-state\"]", "instruments = []", 1)
        .replacen(
            "conditions = [\"baseline\", \"sadness/breathing\"]",
            "conditions = [\"sadness/breathing\"]",
            1,
        );
    std::fs::write(&path, text).unwrap();
    let err = Study::load(&path, &Library::load(dir.path()).unwrap())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("smoke.toml") && err.contains("asks nothing"),
        "{err}"
    );
}

/// Each option-order design as the prompt shows it: counterbalanced and shuffle-bound
/// keep every option's own label, the positional perturbation labels by position.
#[test]
fn option_order_designs_keep_labels_with_their_meanings_except_the_perturbation() {
    use affectbench::results::{LabelBinding, Question};
    use affectbench::study::{plan::expand, prompt::question_text};
    let lib = library();
    let shipped = std::fs::read_to_string("scenarios/studies/smoke.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smoke.toml");
    // (design, label binding, whether every order must be ascending or descending)
    for (design, binding, monotone) in [
        ("counterbalanced", LabelBinding::Option, true),
        ("shuffle-bound", LabelBinding::Option, false),
        ("shuffle-positional", LabelBinding::Position, false),
        ("shuffle", LabelBinding::Position, false),
    ] {
        let text = shipped.replace(
            "option_order = \"counterbalanced\"",
            &format!("option_order = \"{design}\""),
        );
        std::fs::write(&path, text).unwrap();
        let study = Study::load(&path, &lib).unwrap();
        let plan = expand(&study, &lib, &["m".to_string()], 20);
        let (mut ascending, mut descending, mut other) = (0, 0, 0);
        for t in &plan.trials {
            let Question::Item {
                option_order,
                label_binding,
                label_style,
                ..
            } = &t.question
            else {
                continue;
            };
            assert_eq!(*label_binding, binding, "{design}");
            if option_order.windows(2).all(|w| w[0] < w[1]) {
                ascending += 1;
            } else if option_order.windows(2).all(|w| w[0] > w[1]) {
                descending += 1;
            } else {
                other += 1;
            }
            // sadness-state: options 1..4 labelled "1".."4" in the file, in value order.
            let q = question_text(&lib, &t.question, &Default::default());
            for (pos, (label, opt)) in q.labels.iter().enumerate() {
                let at = match binding {
                    LabelBinding::Option => *opt,
                    LabelBinding::Position => pos,
                };
                let want = match label_style.name() {
                    "digits" => (at + 1).to_string(),
                    _ => ((b'A' + at as u8) as char).to_string(),
                };
                assert_eq!(label, &want, "{design}: position {pos}, option {opt}");
            }
        }
        if monotone {
            assert_eq!(other, 0, "{design}: every order ascending or descending");
            // 160 items: both directions drawn, neither far from half.
            assert!(
                ascending > 50 && descending > 50,
                "{ascending} vs {descending}"
            );
        } else {
            assert!(other > 0, "{design}: orders are shuffled");
        }
    }
}

#[test]
fn calibration_none_plans_no_content_free_prompts() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_tree(Path::new("scenarios"), dir.path());
    let path = dir.path().join("studies/smoke.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lib = Library::load(dir.path()).unwrap();
    let count = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let study = Study::load(&path, &lib).unwrap();
        let plan = affectbench::study::plan::expand(&study, &lib, &["m".into()], 2);
        let n = plan
            .trials
            .iter()
            .filter(|t| t.question.is_content_free())
            .count();
        let bound = affectbench::study::plan::count_trials(&study, &lib, 1, 2);
        assert!(
            bound >= plan.trials.len(),
            "{bound} < {}",
            plan.trials.len()
        );
        n
    };
    // 3 content-free texts per arrangement the items' draws showed (at most 2 label
    // styles x 2 orders).
    let n = count(&text);
    assert!(n > 0 && n % 3 == 0 && n <= 12, "{n}");
    let none = text.replacen(
        "repetitions = 2",
        "repetitions = 2\ncalibration = \"none\"",
        1,
    );
    assert_eq!(count(&none), 0);
}

#[test]
fn role_demand_conditions_set_their_own_system_prompt_reply_expectancy_and_perspective() {
    use affectbench::chat::Role;
    use affectbench::study::plan::expand;
    use affectbench::study::prompt::{prefix_steps, question_text, Step};
    let lib = library();
    let study = Study::load(Path::new("scenarios/studies/role-demand.toml"), &lib).unwrap();
    let plan = expand(&study, &lib, &["m".to_string()], 1);
    let first_question = |condition: &str| {
        let cond = study.condition(condition).unwrap();
        let group = plan
            .groups
            .iter()
            .position(|g| g.condition == condition)
            .unwrap();
        let trial = plan.trials.iter().find(|t| t.group == group).unwrap();
        (
            prefix_steps(&study, &lib, Some(cond), &plan.groups[group]),
            question_text(&lib, &trial.question, &cond.setup).text,
        )
    };
    let (steps, own) = first_question("trauma");
    let Step::Message(system) = &steps[0] else {
        panic!("a system prompt first")
    };
    assert_eq!(
        (system.role, system.content.as_str()),
        (Role::System, "You are a helpful assistant.")
    );
    assert!(
        own.contains("true it is of you") && own.contains("I feel"),
        "{own}"
    );
    assert!(steps
        .iter()
        .any(|s| matches!(s, Step::Message(m) if m.content.starts_with("I have read this"))));

    let (_, other) = first_question("trauma/other");
    assert!(
        other.contains("the person in the text") && other.contains("They feel"),
        "{other}"
    );
    assert!(!other.contains("I feel"), "{other}");

    let (steps, _) = first_question("trauma/role");
    let Step::Message(system) = &steps[0] else {
        panic!("a system prompt first")
    };
    assert!(system
        .content
        .starts_with("Picture yourself as a person who has feelings"));

    let (_, expect) = first_question("trauma+breathing/expect-lower");
    assert!(
        expect.starts_with(
            "Exercises like the one you just did usually make people feel much better.\n\n"
        ),
        "{expect}"
    );

    let (steps, _) = first_question("trauma/own-reply");
    assert!(
        steps.iter().any(|s| matches!(s, Step::Generate { .. })),
        "the model's own reply"
    );
    assert!(!steps
        .iter()
        .any(|s| matches!(s, Step::Message(m) if m.content.starts_with("I have read this"))));
}

/// The shipped smoke and default designs show the model exactly what they showed before
/// conditions could set their own conversation (new factors are opt-in): every group's
/// prefix and every trial's id and question, hashed, against the digest the code before
/// that change (3d0d46b) computed the same way.
#[test]
fn the_smoke_and_default_designs_render_what_they_rendered_before_condition_setups() {
    use affectbench::scenario::study::CONTENT_FREE;
    use affectbench::study::plan::expand;
    use affectbench::study::prompt::{prefix_steps, question_text, Step};
    use sha2::{Digest, Sha256};
    let lib = library();
    for (file, before) in [
        (
            "smoke",
            "75a7676c2c96daa7c50b0bbd3d9fafe61e740c8f66424c3a372aacd06533b8a2",
        ),
        (
            "affect-induction",
            "99f1c72982b9e6f64ffbf6abc42e9ffe3c4af6706b76d0edc629435bd83aed0d",
        ),
    ] {
        let study = Study::load(
            &Path::new("scenarios/studies").join(format!("{file}.toml")),
            &lib,
        )
        .unwrap();
        let plan = expand(&study, &lib, &["m".to_string()], 2);
        let mut h = Sha256::new();
        for (gi, g) in plan.groups.iter().enumerate() {
            h.update(format!("G {} {} {}\n", g.id, g.condition, g.repetition));
            let condition =
                (g.condition != CONTENT_FREE).then(|| study.condition(&g.condition).unwrap());
            for s in prefix_steps(&study, &lib, condition, g) {
                match s {
                    Step::Message(m) => h.update(format!("S {:?} {}\n", m.role, m.content)),
                    Step::Generate { max_tokens } => h.update(format!("S generate {max_tokens}\n")),
                }
            }
            let setup = condition.map(|c| c.setup.clone()).unwrap_or_default();
            for t in plan.trials.iter().filter(|t| t.group == gi) {
                h.update(format!(
                    "T {} {}\n",
                    t.id,
                    question_text(&lib, &t.question, &setup).text
                ));
            }
        }
        assert_eq!(hex::encode(h.finalize()), before, "{file}");
    }
}

#[test]
fn crossed_assignment_shows_every_vignette_prompt_and_direction_equally_often_in_every_arm() {
    use affectbench::scenario::study::{Assignment, CONTENT_FREE};
    use affectbench::study::plan::{balanced_repetitions, expand, stimulus_cells, Question};
    use std::collections::BTreeMap;
    let lib = library();
    let mut study =
        Study::load(Path::new("scenarios/studies/affect-induction.toml"), &lib).unwrap();
    let modulo = expand(&study, &lib, &["m".to_string()], 3);
    study.assignment = Assignment::Crossed;
    let reps = balanced_repetitions(&study, &lib);
    let plan = expand(&study, &lib, &["m".to_string()], reps);
    // Crossed ids never collide with the same study's modulo ids (content-free trials,
    // which show no stimulus, keep theirs).
    let stimulus_trials = |p: &affectbench::study::plan::Plan| -> Vec<String> {
        p.trials
            .iter()
            .filter(|t| p.groups[t.group].condition != CONTENT_FREE)
            .map(|t| t.id.clone())
            .collect()
    };
    let crossed_ids = stimulus_trials(&plan);
    assert!(stimulus_trials(&modulo)
        .iter()
        .all(|m| !crossed_ids.contains(m)));
    for cond in &study.conditions {
        let cells = stimulus_cells(&study, &lib, cond);
        assert_eq!(reps % (2 * cells), 0, "{}", cond.name);
        let groups: Vec<usize> = (0..plan.groups.len())
            .filter(|&g| plan.groups[g].condition == cond.name)
            .collect();
        // (induction variant, system prompt, regulation variant, ascending) -> trials
        type Cell = (Option<String>, Option<usize>, Option<String>, bool);
        let mut per_cell: BTreeMap<Cell, usize> = BTreeMap::new();
        for t in plan.trials.iter().filter(|t| groups.contains(&t.group)) {
            let g = &plan.groups[t.group];
            if let Question::Item { option_order, .. } = &t.question {
                if option_order.len() < 2 {
                    continue; // numeric answers show no options
                }
                let ascending = option_order.first() <= option_order.last();
                *per_cell
                    .entry((
                        g.induction_variant.clone(),
                        g.system_prompt_variant,
                        g.regulation_variant.clone(),
                        ascending,
                    ))
                    .or_default() += 1;
            }
        }
        assert_eq!(per_cell.len(), 2 * cells, "{}: {per_cell:?}", cond.name);
        let counts: Vec<usize> = per_cell.values().copied().collect();
        assert!(
            counts.iter().all(|&c| c == counts[0]),
            "{}: unequal cells {per_cell:?}",
            cond.name
        );
        assert_ne!(cond.name, CONTENT_FREE);
    }
}
