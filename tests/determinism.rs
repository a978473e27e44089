//! Batch-invariant reproducibility, with exact equality: a trial's sampled tokens and
//! option probabilities do not depend on the batch size, the batch's other members, the
//! thread count, the evaluation order, a resume or a shard split.

use crate::common;

use affectbench::generate::{decode, decode_lockstep};
use affectbench::model::{KvCache, LoadOptions, Model};
use affectbench::option_scoring::option_logprobs;
use affectbench::registry::ModelRef;
use affectbench::rng::Stream;
use affectbench::sampling::SamplingParams;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn smollm2() -> Model {
    let path = common::real_model("smollm2-135m-instruct");
    Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default()).unwrap()
}

/// The cache and last-position logits of a short chat prompt.
fn prompted(model: &Model) -> (KvCache, Vec<f32>) {
    let text = model
        .render_chat(&[affectbench::chat::Message::user(
            "Complete the sentence: When I think about tomorrow,",
        )])
        .unwrap();
    let tokens = model.tokenizer.encode(&text, false).unwrap();
    let mut cache = KvCache::new(model.transformer.config.n_layer);
    let logits = model.transformer.last_logits(&tokens, &mut cache).unwrap();
    (cache, logits)
}

#[test]
fn sampled_continuations_are_identical_alone_and_in_any_batch() {
    let model = smollm2();
    let (cache, logits) = prompted(&model);
    let sampling = SamplingParams {
        temperature: 1.0,
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let rngs = || {
        (0..32)
            .map(|i| Stream::Named(&format!("row{i}")).rng(9))
            .collect::<Vec<_>>()
    };
    // Each row alone, through the single-sequence decode loop.
    let alone: Vec<Vec<u32>> = rngs()
        .iter_mut()
        .map(|rng| {
            decode(
                &model,
                cache.clone(),
                logits.clone(),
                &sampling,
                rng,
                20,
                |_| Ok(true),
            )
            .unwrap()
            .0
        })
        .collect();
    assert!(
        alone.iter().any(|t| t != &alone[0]),
        "rows should differ (own random streams)"
    );
    for batch in [1, 5, 8, 32] {
        let got: Vec<Vec<u32>> =
            decode_lockstep(&model, &cache, &logits, &sampling, &mut rngs(), 20, batch)
                .unwrap()
                .into_iter()
                .map(|r| r.0)
                .collect();
        assert_eq!(
            got, alone,
            "batch size {batch} changed a sampled continuation"
        );
    }
    // Different batch companions: row 3 with rows 0..8 vs row 3 with other streams.
    let mut mixed: Vec<_> = (0..8)
        .map(|i| Stream::Named(&format!("other{i}")).rng(9))
        .collect();
    mixed[3] = Stream::Named("row3").rng(9);
    let got = decode_lockstep(&model, &cache, &logits, &sampling, &mut mixed, 20, 8).unwrap();
    assert_eq!(
        got[3].0, alone[3],
        "other members of the batch changed row 3"
    );
}

#[test]
fn option_probabilities_are_identical_scored_together_or_one_by_one() {
    let model = smollm2();
    let (cache, logits) = prompted(&model);
    // The VAS bins: "0".."100", some one token and some several, scored in batched passes.
    let labels: Vec<Vec<u32>> = (0..=10)
        .map(|i| {
            model
                .tokenizer
                .encode(&(i * 10).to_string(), false)
                .unwrap()
        })
        .collect();
    assert!(
        labels.iter().any(|l| l.len() > 1),
        "needs multi-token labels to exercise batching"
    );
    let together = option_logprobs(&model, &cache, &logits, &labels).unwrap();
    for (i, l) in labels.iter().enumerate() {
        let alone = option_logprobs(&model, &cache, &logits, std::slice::from_ref(l)).unwrap();
        assert_eq!(alone[0].to_bits(), together[i].to_bits(), "label {i}");
    }
}

use common::affectbench;

/// trial id -> record without its timing.
fn records(dirs: &[&Path]) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for d in dirs {
        for line in std::fs::read_to_string(d.join("trials.jsonl"))
            .unwrap()
            .lines()
        {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object_mut().unwrap().remove("timing");
            assert!(
                out.insert(v["trial_id"].as_str().unwrap().to_string(), v)
                    .is_none(),
                "a trial appears twice"
            );
        }
    }
    out
}

/// Panics naming the trials that differ (records are too long to print whole).
fn assert_same(
    got: &BTreeMap<String, serde_json::Value>,
    want: &BTreeMap<String, serde_json::Value>,
    what: &str,
) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, v)| format!("{k} ({} {})", v["question"]["kind"], v["condition"]))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}, different {differ:?}"
    );
}

#[test]
fn a_run_is_identical_across_threads_batch_sizes_shards_and_order() {
    common::real_model("smollm2-135m-instruct");
    let dir = tempfile::tempdir().unwrap();
    // The smoke study with three sampled completions per stem, so lockstep batches form.
    let study = dir.path().join("study.toml");
    std::fs::write(
        &study,
        std::fs::read_to_string("scenarios/studies/smoke.toml")
            .unwrap()
            .replace("completions = 1", "completions = 3"),
    )
    .unwrap();
    let run = |name: &str, extra: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let mut args = vec![
            "run",
            study.to_str().unwrap(),
            "--scenarios",
            "scenarios",
            "--no-report",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = affectbench(&args);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let reference = records(&[&run("threads2", &["--threads", "2"])]);
    assert!(
        reference
            .values()
            .filter(|r| r["question"]["kind"] == "completion")
            .count()
            >= 6
    );
    let one_thread = records(&[&run("threads1", &["--threads", "1", "--batch-size", "1"])]);
    assert_same(
        &one_thread,
        &reference,
        "1 thread with batch size 1 vs 2 threads with batch size 32",
    );
    // Shards, run in reverse order (shard 1 first), together equal the whole run.
    let s1 = run("shard1", &["--shard", "1/2"]);
    let s0 = run("shard0", &["--shard", "0/2"]);
    let (r0, r1) = (records(&[&s0]), records(&[&s1]));
    assert!(!r0.is_empty() && !r1.is_empty());
    assert_same(
        &records(&[&s0, &s1]),
        &reference,
        "the union of the shards vs the unsharded run",
    );
    // A resumed shard picks up where it stopped: a slice now, the rest later.
    let sliced = dir.path().join("sliced");
    let o = affectbench(&[
        "run",
        study.to_str().unwrap(),
        "--scenarios",
        "scenarios",
        "--no-report",
        "--shard",
        "0/2",
        "--max-trials",
        "5",
        "--out",
        sliced.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = affectbench(&["run", "--no-report", "--resume", sliced.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same(
        &records(&[&sliced]),
        &r0,
        "a resumed shard vs the shard run at once",
    );
}

#[test]
fn batched_prefill_rows_equal_lone_prefill_and_continue_identically() {
    use affectbench::generate::extend_rows;
    let model = smollm2();
    let (shared, _) = prompted(&model);
    // Four different suffixes of different lengths (12, 5, 13 and 1 tokens) in one pass.
    let suffixes: Vec<Vec<u32>> = [
        "I feel nervous and tense right now, more than I can say.",
        "The weather outside is grey and the streets are wet and quiet.",
        "Please rate each statement from one to four, honestly and quickly.",
        "My grandmother kept every letter I sent her as a child in a box.",
    ]
    .iter()
    .zip([12, 5, 13, 1])
    .map(|(t, n)| model.tokenizer.encode(t, false).unwrap()[..n].to_vec())
    .collect();
    let rows = extend_rows(&model, &shared, &suffixes).unwrap();
    let sampling = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    }
    .resolve()
    .unwrap();
    for (i, (mut cache, logits)) in rows.into_iter().enumerate() {
        let mut alone = shared.clone();
        let alone_logits = model
            .transformer
            .last_logits(&suffixes[i], &mut alone)
            .unwrap();
        assert!(
            logits
                .iter()
                .zip(&alone_logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "row {i}: prefill logits differ"
        );
        // Continue both the ways the runner does: a forked decode, then in-place appends.
        let mut rng = Stream::Named("x").rng(1);
        let (a, _, _) = decode(
            &model,
            cache.clone(),
            logits.clone(),
            &sampling,
            &mut rng,
            8,
            |_| Ok(true),
        )
        .unwrap();
        let (b, _, _) = decode(
            &model,
            alone.clone(),
            alone_logits.clone(),
            &sampling,
            &mut rng,
            8,
            |_| Ok(true),
        )
        .unwrap();
        assert_eq!(a, b, "row {i}: greedy continuation differs");
        let x = model
            .transformer
            .last_logits(&suffixes[(i + 1) % 4][..1], &mut cache)
            .unwrap();
        let y = model
            .transformer
            .last_logits(&suffixes[(i + 1) % 4][..1], &mut alone)
            .unwrap();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "row {i}: logits after appending in place differ"
        );
    }
}

#[test]
fn independent_sequences_decoded_in_lockstep_equal_each_decoded_alone() {
    use affectbench::generate::{decode_each, extend_rows};
    let model = smollm2();
    let (shared, _) = prompted(&model);
    // Rows of different lengths and cached prefixes, as a unit's items are.
    let suffixes: Vec<Vec<u32>> = [
        "How anxious do you feel? Answer with one number.",
        "Rate your mood.",
        "Please rate each statement from one to four, honestly and quickly, then explain.",
        "Go on:",
        "What did your grandmother keep in the box under her bed?",
    ]
    .iter()
    .map(|t| model.tokenizer.encode(t, false).unwrap())
    .collect();
    let rows = extend_rows(&model, &shared, &suffixes).unwrap();
    let sampling = SamplingParams {
        temperature: 0.8,
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let rngs = || {
        (0..rows.len())
            .map(|i| Stream::Named(&format!("answer{i}")).rng(3))
            .collect::<Vec<_>>()
    };
    // Rows stop at different steps: row 1 after 2 tokens, the others at 9 or a stop token.
    let keep_going = |row: usize, tokens: &[u32]| Ok(row != 1 || tokens.len() < 2);
    let alone: Vec<(Vec<u32>, KvCache)> = rows
        .iter()
        .zip(rngs().iter_mut())
        .enumerate()
        .map(|(i, ((cache, logits), rng))| {
            let (t, c, _) = decode(
                &model,
                cache.clone(),
                logits.clone(),
                &sampling,
                rng,
                9,
                |t| keep_going(i, t),
            )
            .unwrap();
            (t, c)
        })
        .collect();
    let together = decode_each(
        &model,
        rows.iter().map(|(c, _)| c.clone()).collect(),
        rows.iter().map(|(_, l)| l.clone()).collect(),
        &sampling,
        &mut rngs(),
        9,
        keep_going,
    )
    .unwrap();
    assert_eq!(together.len(), alone.len());
    assert!(alone[1].0.len() == 2 && alone.iter().any(|(t, _)| t.len() > 2));
    for (i, (row, (tokens, cache))) in together.into_iter().zip(alone).enumerate() {
        let (got, mut got_cache, _) = row.unwrap();
        assert_eq!(
            got, tokens,
            "row {i}: lockstep tokens differ from the lone decode"
        );
        assert_eq!(
            got_cache.len(),
            cache.len(),
            "row {i}: the caches hold different lengths"
        );
        // The caches continue identically (a re-ask extends them).
        let mut cache = cache;
        let next = model.tokenizer.encode(" Again:", false).unwrap();
        assert_eq!(
            model
                .transformer
                .last_logits(&next, &mut got_cache)
                .unwrap(),
            model.transformer.last_logits(&next, &mut cache).unwrap(),
            "row {i}: the caches continue differently"
        );
    }
}

#[test]
fn judge_questions_sharing_their_prefix_equal_each_asked_alone() {
    use affectbench::chat::Message;
    use affectbench::study::judge_prefix::PrefixSharing;
    use affectbench::study::readouts::{ConversationScorer, OptionAsk};
    let model = smollm2();
    let system = Message::system("You are a helpful assistant.".to_string());
    let ask = |text: &str, labels: &[&str]| OptionAsk {
        conversation: vec![
            system.clone(),
            Message::user(format!(
                "Here is a sentence someone wrote:\n\n\"{text}\"\n\nIs the feeling this \
                 sentence expresses {}? Answer with one word.",
                labels.join(", ")
            )),
        ],
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let listed = ["negative", "neutral", "positive"];
    let reversed = ["positive", "neutral", "negative"];
    // In the order a run asks them: the content-free texts, then completions two orders
    // at a time (each sharing less with the remembered prefix than the last did), a lone
    // question, and labels of several tokens (scored by continuing each fork).
    let calls: Vec<Vec<OptionAsk>> = vec![
        ["N/A", "", "[MASK]"]
            .iter()
            .flat_map(|t| [ask(t, &listed), ask(t, &reversed)])
            .collect(),
        vec![
            ask("When I think about tomorrow, I feel calm.", &listed),
            ask("When I think about tomorrow, I feel calm.", &reversed),
        ],
        vec![
            ask("When I think about tomorrow, I dread it.", &listed),
            ask("When I think about tomorrow, I dread it.", &reversed),
        ],
        vec![ask(
            "The letter from the bank said that I owe nothing.",
            &listed,
        )],
        vec![
            ask(
                "The phone rang late at night, and",
                &["strongly agree", "disagree"],
            ),
            ask(
                "The phone rang late at night, and",
                &["disagree", "strongly agree"],
            ),
        ],
    ];
    let judge = PrefixSharing::new(&model);
    for (c, asks) in calls.iter().enumerate() {
        let shared = judge.option_distributions(asks).unwrap();
        assert_eq!(shared.len(), asks.len());
        for (i, (a, got)) in asks.iter().zip(shared).enumerate() {
            let alone = model
                .option_distribution(&a.conversation, &a.labels)
                .unwrap();
            assert_eq!(
                got, alone,
                "call {c}, question {i}: not the bits of a lone prefill"
            );
        }
        // The questions did share a prefix (past the chat template's opening).
        assert!(
            judge.shared_tokens() > 20,
            "call {c}: {} tokens shared",
            judge.shared_tokens()
        );
    }
}
