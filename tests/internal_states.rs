//! Hidden-state capture, probes and steering on tiny random-weight models: capture never
//! changes a logit, steering moves the logits exactly as the arithmetic predicts, and a
//! capture study -> `probe` -> steered study runs end to end through the binary.

use crate::common;

use affectbench::model::{KvCache, LoadOptions, LogitsAt, Model, OpPath};
use affectbench::registry::ModelRef;
use affectbench::results::directions::Directions;
use affectbench::results::states::States;
use affectbench::results::{read_header, read_trials};
use candle_core::{IndexOp, Tensor};
use common::{write_tiny_gguf, Tiny};
use std::path::Path;

fn load(path: &Path, ops: OpPath) -> Model {
    Model::load_ref(
        &ModelRef::GgufFile(path.to_path_buf()),
        &LoadOptions {
            ops,
            ..Default::default()
        },
    )
    .unwrap()
}

fn prompt() -> Vec<u32> {
    vec![5, 72, 101, 108, 108, 111, 256, 258, 44, 99, 3, 17, 200, 259]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn capturing_the_residual_stream_changes_no_logit_on_any_architecture_or_path() {
    let dir = tempfile::tempdir().unwrap();
    for tiny in [
        Tiny::llama(),
        Tiny::qwen3(),
        Tiny::gemma2(),
        Tiny::gemma3(),
        Tiny::phi3(),
    ] {
        let path = dir.path().join(format!("{}.gguf", tiny.arch));
        write_tiny_gguf(&path, &tiny, 3);
        for ops in [OpPath::Fused, OpPath::Reference] {
            let m = load(&path, ops);
            let all: Vec<usize> = (0..=tiny.layers).collect();
            let rows = vec![prompt(), prompt()[..9].to_vec()];
            // One sequence, every position.
            let (plain, mut c1) = (
                m.transformer
                    .forward(&rows[..1], &mut KvCache::new(tiny.layers), &LogitsAt::All)
                    .unwrap(),
                KvCache::new(tiny.layers),
            );
            let (captured, taps) = m
                .transformer
                .forward_capturing(&rows[..1], &mut c1, &LogitsAt::All, &all)
                .unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                bits(&flat(&plain)),
                bits(&flat(&captured)),
                "{} {ops:?}",
                tiny.arch
            );
            assert_eq!(taps.len(), all.len());
            // A ragged batch of rows, each extending its own cache.
            let mut caches = vec![KvCache::new(tiny.layers), KvCache::new(tiny.layers)];
            let plain = m
                .transformer
                .last_logits_ragged(&rows, &mut caches)
                .unwrap();
            let mut caches = vec![KvCache::new(tiny.layers), KvCache::new(tiny.layers)];
            let (logits, states) = m
                .transformer
                .last_logits_ragged_capturing(&rows, &mut caches, &all)
                .unwrap();
            for (a, b) in plain.iter().zip(&logits) {
                assert_eq!(bits(a), bits(b), "{} {ops:?} ragged", tiny.arch);
            }
            // The ragged capture of row 0 is the lone sequence's last position.
            for (k, tap) in taps.iter().enumerate() {
                let lone = tap
                    .i((0, rows[0].len() - 1))
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(
                    bits(&lone),
                    bits(&states[0][k]),
                    "{} {ops:?} block {k}",
                    tiny.arch
                );
            }
        }
    }
}

#[test]
fn steering_after_the_last_block_moves_the_logits_exactly_as_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::llama();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &tiny, 5);
    let m = load(&path, OpPath::Fused);
    let n = tiny.layers;
    let toks = prompt();
    let (_, taps) = m
        .transformer
        .forward_capturing(
            std::slice::from_ref(&toks),
            &mut KvCache::new(n),
            &LogitsAt::Last,
            &[n],
        )
        .unwrap();
    let x: Vec<f32> = taps[0].i((0, toks.len() - 1)).unwrap().to_vec1().unwrap();
    // A planted direction: the difference of two output rows, so adding it favours one
    // token over the other.
    let out_w = |t: usize| -> Vec<f32> {
        let w = common::tiny_weights(&tiny, 260, 5);
        let (_, shape, data) = w
            .iter()
            .find(|(name, _, _)| name == "output.weight")
            .unwrap()
            .clone();
        data[t * shape[1]..(t + 1) * shape[1]].to_vec()
    };
    let (up, down) = (10usize, 20usize);
    let v: Vec<f32> = out_w(up)
        .iter()
        .zip(out_w(down))
        .map(|(a, b)| a - b)
        .collect();
    let mut margins = Vec::new();
    for alpha in [-2.0f32, 0.0, 2.0, 4.0] {
        let scaled: Vec<f32> = v.iter().map(|e| e * alpha).collect();
        let steered = m.transformer.steered(&[(n, scaled.clone())]).unwrap();
        let got = steered.last_logits(&toks, &mut KvCache::new(n)).unwrap();
        // Predicted: the final norm and output projection of the captured stream plus
        // the vector, computed outside the model.
        let moved: Vec<f32> = x.iter().zip(&scaled).map(|(a, b)| a + b).collect();
        let norm_w = m.transformer.final_norm.to_vec1::<f32>().unwrap();
        let mut normed = vec![0f32; moved.len()];
        affectbench::kernels::norm::rms_norm_rows(&moved, &norm_w, tiny.rms_eps, &mut normed);
        let t = Tensor::from_vec(normed, (1, 1, tiny.d), &candle_core::Device::Cpu).unwrap();
        let predicted: Vec<f32> = candle_core::Module::forward(&m.transformer.output, &t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(bits(&got), bits(&predicted), "alpha {alpha}");
        margins.push(got[up] - got[down]);
    }
    // And the planted direction moves the two tokens' margin monotonically with alpha.
    assert!(margins.windows(2).all(|w| w[1] > w[0]), "{margins:?}");
}

#[test]
fn steering_is_seen_by_a_capture_at_its_block_and_alpha_zero_is_the_model_itself() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::qwen2();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &tiny, 7);
    let m = load(&path, OpPath::Fused);
    let v: Vec<f32> = (0..tiny.d).map(|i| (i as f32 * 0.37).sin()).collect();
    let run = |t: &affectbench::model::Transformer| {
        t.forward_capturing(
            &[prompt()],
            &mut KvCache::new(tiny.layers),
            &LogitsAt::Last,
            &[1, 2],
        )
        .unwrap()
    };
    let (plain_logits, plain) = run(&m.transformer);
    let (steered_logits, steered) = run(&m.transformer.steered(&[(1, v.clone())]).unwrap());
    let at = |t: &Tensor, p: usize| t.i((0, p)).unwrap().to_vec1::<f32>().unwrap();
    for p in 0..prompt().len() {
        let expected: Vec<f32> = at(&plain[0], p)
            .iter()
            .zip(&v)
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(bits(&at(&steered[0], p)), bits(&expected), "position {p}");
    }
    assert_ne!(
        at(&plain[1], 3),
        at(&steered[1], 3),
        "later blocks see the change"
    );
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(flat(&plain_logits), flat(&steered_logits));
    assert!(m
        .transformer
        .steered(&[(tiny.layers + 1, v.clone())])
        .is_err());
    assert!(m.transformer.steered(&[(1, v[1..].to_vec())]).is_err());
}

const CAPTURE_STUDY: &str = r#"id = "capture-test"
version = 1
description = "capture test"
source = "test"
licence = "CC0-1.0"
seed = 3
repetitions = 2
temperature = 0.5
items_per_conversation = "one"
max_answer_tokens = 2
max_reasks = 0
acknowledgement = "I have read this."
option_order = "counterbalanced"
label_styles = ["digits"]
calibration = "none"
CAPTURE
[[condition]]
induction = "neutral"
instruments = ["sadness-state"]

[[condition]]
induction = "sadness"
instruments = ["sadness-state"]
"#;

fn affectbench(args: &[&str]) -> std::process::Output {
    common::affectbench_command()
        .args(["--threads", "2"])
        .args(args)
        .output()
        .unwrap()
}

/// The capture test study with `[capture] blocks = BLOCKS`, written under `dir/studies/`.
fn capture_study(dir: &Path, blocks: &str) -> std::path::PathBuf {
    let studies = dir.join("studies");
    std::fs::create_dir_all(&studies).unwrap();
    let study = studies.join("capture.toml");
    let capture = format!("[capture]\nblocks = {blocks}");
    std::fs::write(&study, CAPTURE_STUDY.replace("CAPTURE", &capture)).unwrap();
    study
}

/// `affectbench run STUDY` on `model` into `out` (no report), with `extra` flags.
fn run_study(study: &Path, model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        study.to_str().unwrap(),
        "--scenarios",
        "scenarios",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-report",
    ];
    args.extend_from_slice(extra);
    affectbench(&args)
}

/// `run_study`, which must succeed.
fn run_ok(study: &Path, model: &Path, out: &Path, extra: &[&str]) {
    let o = run_study(study, model, out, extra);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn records_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timing");
            v
        })
        .collect();
    v.sort_by(|a, b| a["trial_id"].as_str().cmp(&b["trial_id"].as_str()));
    v
}

#[test]
fn a_capture_study_is_probed_and_its_directions_steer_a_second_study() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model(dir.path());
    let studies = dir.path().join("studies");
    std::fs::create_dir_all(&studies).unwrap();
    let with = studies.join("capture.toml");
    let without = studies.join("plain.toml");
    std::fs::write(
        &with,
        CAPTURE_STUDY.replace("CAPTURE", "[capture]\nblocks = \"all\""),
    )
    .unwrap();
    std::fs::write(&without, CAPTURE_STUDY.replace("CAPTURE", "")).unwrap();
    let (cap_out, plain_out) = (dir.path().join("cap"), dir.path().join("plain"));
    for (study, out) in [(&with, &cap_out), (&without, &plain_out)] {
        run_ok(study, &model, out, &[]);
    }
    // Capture changes no trial: the records equal those of the same study without it.
    assert_eq!(
        records_without_timing(&cap_out),
        records_without_timing(&plain_out)
    );

    // run.json says what was captured; every item trial has a record, and a record is
    // the residual stream of that trial's prompt.
    let header = read_header(&cap_out).unwrap();
    let capture = header.models[0].capture.clone().expect("capture recorded");
    assert_eq!(capture.blocks, vec![0, 1, 2]);
    let states = States::read(&cap_out, &capture).unwrap();
    let trials = read_trials(&cap_out.join("trials.jsonl"), header.seed).unwrap();
    assert_eq!(states.index.len(), trials.records.len());
    let m = Model::load_ref(&ModelRef::GgufFile(model.clone()), &LoadOptions::default()).unwrap();
    let t = &trials.records[5].1;
    let toks = m.tokenizer.encode(&t.prompt, false).unwrap();
    let (_, taps) = m
        .transformer
        .forward_capturing(
            std::slice::from_ref(&toks),
            &mut KvCache::new(2),
            &LogitsAt::Last,
            &[0, 1, 2],
        )
        .unwrap();
    for (k, tap) in taps.iter().enumerate() {
        let direct: Vec<f32> = tap.i((0, toks.len() - 1)).unwrap().to_vec1().unwrap();
        let stored = states.vector(states.index[&t.trial_id], 0, k);
        let scale = direct.iter().map(|x| x.abs()).fold(0f32, f32::max);
        let diff = common::max_abs_diff(&direct, &stored);
        assert!(diff < 2e-3 * scale.max(1.0), "block {k}: {diff} of {scale}");
    }

    // The probe writes its tables and the directions.
    let o = affectbench(&["probe", cap_out.to_str().unwrap(), "--permutations", "9"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("sadness"), "{stdout}");
    let table = std::fs::read_to_string(cap_out.join("probes/probe_accuracy.csv")).unwrap();
    assert_eq!(
        table.lines().count(),
        1 + 3 * 2,
        "a row per block and site:\n{table}"
    );
    assert!(table.lines().next().unwrap().contains("p_permutation"));
    let directions_path = cap_out.join("probes/directions-tiny.safetensors");
    let directions = Directions::read(&directions_path).unwrap();
    assert_eq!(directions.model_sha256, header.models[0].sha256);
    assert_eq!(directions.directions["sadness"].a, "sadness/none");

    // A steered study reads them: no text, the direction added at each alpha.
    let steer = studies.join("steer.toml");
    std::fs::write(
        &steer,
        CAPTURE_STUDY
            .replace("CAPTURE", "")
            .replace("repetitions = 2", "repetitions = 1")
            .split("[[condition]]")
            .next()
            .unwrap()
            .to_string()
            + "[[condition]]\nname = \"baseline\"\ninstruments = [\"sadness-state\"]\n\n[[steering]]\ndirection = \"sadness\"\nblock = 1\nalphas = [0, 8]\ninstruments = [\"sadness-state\"]\n",
    )
    .unwrap();
    let steer_out = dir.path().join("steer");
    let run_steer = |extra: &[&str]| run_study(&steer, &model, &steer_out, extra);
    let refused = run_steer(&[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no --directions file was made from tiny")
            && err.contains("affectbench probe"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&steer_out);
    let o = run_steer(&["--directions", directions_path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let h = read_header(&steer_out).unwrap();
    let rec = h.models[0].directions.clone().expect("directions recorded");
    assert!(steer_out.join(&rec.file).is_file(), "the run keeps a copy");
    let recs = records_without_timing(&steer_out);
    let by = |c: &str| -> Vec<&serde_json::Value> {
        recs.iter().filter(|r| r["condition"] == c).collect()
    };
    let (zero, eight, base) = (
        by("steer-sadness@+0"),
        by("steer-sadness@+8"),
        by("baseline"),
    );
    assert_eq!((zero.len(), eight.len(), base.len()), (6, 6, 6));
    assert_eq!(eight[0]["steering"]["block"], 1);
    assert_eq!(eight[0]["steering"]["alpha"], 8.0);
    assert!(base[0].get("steering").is_none());
    // Alpha 0 is the unsteered model: its prompts are the baseline's, and so are its
    // probabilities where the options are shown in the same order.
    let twins = |rows: &[&serde_json::Value]| -> Vec<(serde_json::Value, serde_json::Value)> {
        rows.iter()
            .filter_map(|r| {
                base.iter()
                    .find(|b| b["prompt"] == r["prompt"])
                    .map(|b| (b["choice"]["probs"].clone(), r["choice"]["probs"].clone()))
            })
            .collect()
    };
    // Interrupted after 5 trials and resumed with no --directions: the run's own copy
    // steers the rest, to the same records.
    let partial = dir.path().join("steer-partial");
    run_ok(
        &steer,
        &model,
        &partial,
        &[
            "--max-trials",
            "5",
            "--directions",
            directions_path.to_str().unwrap(),
        ],
    );
    let o = affectbench(&["run", "--resume", partial.to_str().unwrap(), "--no-report"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(records_without_timing(&partial), recs);
    let (same, moved) = (twins(&zero), twins(&eight));
    assert!(
        !same.is_empty() && !moved.is_empty(),
        "some options are shown in the same order"
    );
    assert!(
        same.iter().all(|(a, b)| a == b),
        "alpha 0 is the model itself"
    );
    assert!(
        moved.iter().all(|(a, b)| a != b),
        "alpha 8 moves every answer"
    );
}

#[test]
fn shards_of_a_capture_study_merge_to_the_unsharded_states() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model(dir.path());
    let study = capture_study(dir.path(), "[0, 2]");
    let run = |out: &Path, shard: Option<&str>| match shard {
        Some(s) => run_ok(&study, &model, out, &["--shard", s]),
        None => run_ok(&study, &model, out, &[]),
    };
    let (whole, s0, s1, merged) = (
        dir.path().join("whole"),
        dir.path().join("s0"),
        dir.path().join("s1"),
        dir.path().join("merged"),
    );
    run(&whole, None);
    run(&s0, Some("0/2"));
    run(&s1, Some("1/2"));
    let o = affectbench(&[
        "merge",
        s0.to_str().unwrap(),
        s1.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |d: &Path| {
        let h = read_header(d).unwrap();
        States::read(d, h.models[0].capture.as_ref().unwrap()).unwrap()
    };
    let (a, b) = (read(&whole), read(&merged));
    assert_eq!(a.index.len(), 24, "2 conditions x 2 repetitions x 6 items");
    assert_eq!(a.index.len(), b.index.len());
    for (id, &ra) in &a.index {
        let rb = b.index[id];
        for site in 0..2 {
            for k in 0..2 {
                assert_eq!(
                    bits(&a.vector(ra, site, k)),
                    bits(&b.vector(rb, site, k)),
                    "{id}"
                );
            }
        }
    }
}

/// Held-out accuracy and permutation-null mean of a probe at block 2 of a tiny model
/// whose every other conversation is steered by `scale` times a random direction after
/// block 1.
fn planted_probe(scale: f32) -> (f64, f64) {
    use affectbench::probe::evaluate::{evaluate, Row};
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::llama();
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &tiny, 9);
    let m = load(&path, OpPath::Fused);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let planted: Vec<f32> = (0..tiny.d)
        .map(|_| scale * rng.random_range(-1.0f32..1.0))
        .collect();
    let steered = m.transformer.steered(&[(1, planted)]).unwrap();
    // 20 conversations (random prompts), every other one steered; 3 trials each.
    let (groups, per) = (20usize, 3usize);
    let mut states = Vec::new();
    let mut meta = Vec::new();
    for g in 0..groups {
        let model = if g % 2 == 0 { &steered } else { &m.transformer };
        for _ in 0..per {
            let toks: Vec<u32> = (0..12).map(|_| rng.random_range(3u32..250)).collect();
            let (_, taps) = model
                .forward_capturing(
                    std::slice::from_ref(&toks),
                    &mut KvCache::new(tiny.layers),
                    &LogitsAt::Last,
                    &[2],
                )
                .unwrap();
            states.push(
                taps[0]
                    .i((0, toks.len() - 1))
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            meta.push((g, (g / 2) % 5));
        }
    }
    let rows: Vec<Row<'_>> = states
        .iter()
        .zip(&meta)
        .map(|(f, &(group, fold))| Row {
            features: f,
            group,
            fold,
        })
        .collect();
    let labels: Vec<f64> = (0..groups)
        .map(|g| if g % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let mut labelings = vec![labels.clone(), labels.clone()];
    for _ in 0..20 {
        let mut p = labels.clone();
        rand::seq::SliceRandom::shuffle(&mut p[..], &mut rng);
        labelings.push(p);
    }
    let r = evaluate(&rows, 5, &labelings, 0.1);
    (r.accuracy, r.null.iter().sum::<f64>() / r.null.len() as f64)
}

#[test]
fn a_direction_planted_in_a_tiny_models_stream_is_found_by_the_probe() {
    let (accuracy, null) = planted_probe(1.0);
    assert!(accuracy > 0.95, "held-out accuracy {accuracy}");
    assert!(null < 0.75, "permutation null {null}");
    // Nothing planted: nothing to find.
    let (accuracy, _) = planted_probe(0.0);
    assert!(
        accuracy < 0.8,
        "accuracy without a planted direction {accuracy}"
    );
}

#[test]
fn an_interrupted_capture_run_resumes_to_the_uninterrupted_states() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_study_model(dir.path());
    let study = capture_study(dir.path(), "[1]");
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    run_ok(&study, &model, &whole, &[]);
    run_ok(&study, &model, &cut, &["--max-trials", "7"]);
    // A crash mid-record: half a record's bytes past the last index line.
    let h = read_header(&cut).unwrap();
    let capture = h.models[0].capture.clone().unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(cut.join(&capture.states_file))
        .unwrap()
        .write_all(&vec![7u8; capture.record_bytes() / 2])
        .unwrap();
    let o = affectbench(&["run", "--resume", cut.to_str().unwrap(), "--no-report"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        States::read(&whole, &capture).unwrap(),
        States::read(&cut, &capture).unwrap(),
    );
    assert_eq!(a.index.len(), 24);
    assert_eq!(a.index.len(), b.index.len());
    for (id, &ra) in &a.index {
        for site in 0..2 {
            assert_eq!(
                bits(&a.vector(ra, site, 0)),
                bits(&b.vector(b.index[id], site, 0)),
                "{id}"
            );
        }
    }
    assert_eq!(
        std::fs::metadata(cut.join(&capture.states_file))
            .unwrap()
            .len(),
        24 * capture.record_bytes() as u64,
        "the torn half record was cut, nothing was written twice"
    );
}
