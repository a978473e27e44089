//! `affectbench probe RUN_DIR`: linear read-outs of a [capture] run's hidden states.
//!
//! For each model and each pair of conditions the design supports (`tasks`), at every
//! captured block and at two sites (the answer position, and the mean over the
//! conversation before the question), an L2 logistic probe on standardised features is
//! cross-validated across held-out induction variants (`evaluate`), with a permutation
//! null that shuffles condition labels between whole conversations and a control task
//! (the conversation's length). Out-of-fold probe scores are correlated with the
//! self-report, and the mean difference of the two conditions at the answer position
//! becomes a steering direction (`results::directions`).
//!
//! Writes `RUN_DIR/probes/`: `probe_accuracy.csv`, `probe_self_report.csv`,
//! `directions-<model>.safetensors` and `probe.json` (settings and skipped tasks).

pub mod evaluate;
pub mod logistic;
pub mod tasks;

use crate::error::{Error, IoContext, Result};
use crate::results::csv_table;
use crate::results::directions::{Direction, Directions};
use crate::results::probes::{
    AccuracyRow, BestBlock, ProbeFile, ProbeSettings, SelfReportRow, PROBES_DIR, PROBE_FILE,
};
use crate::results::states::{file_stem, States};
use crate::results::{read_header, read_trials, TrialRecord};
use crate::stats::correlation_or_nan;
use evaluate::{evaluate, BlockResult, Row};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tasks::{task_data, tasks, ProbeTask, Sample};

/// How the probes are fitted, as probe.json says.
const METHOD: &str = "L2 logistic regression on standardised features (dual, accelerated gradient, 300 iterations); leave-variant-out folds; permutation null shuffles condition labels between conversations; accuracy averaged per conversation";

/// What `probe` is asked.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub run_dir: PathBuf,
    /// Label permutations for the null.
    pub permutations: usize,
    /// L2 strength on standardised features (mean loss + lambda/2 |w|^2).
    pub lambda: f64,
    /// Seed of the permutations.
    pub seed: u64,
}

pub struct ProbeOutcome {
    pub accuracy: Vec<AccuracyRow>,
    pub self_report: Vec<SelfReportRow>,
    pub best: Vec<BestBlock>,
    pub directions: Vec<PathBuf>,
    /// Tasks that could not be probed, and why.
    pub skipped: Vec<String>,
}

fn run_err(m: String) -> Error {
    Error::Run(m)
}

/// Probes every model of the run in `cfg.run_dir` that captured states.
pub fn probe_run(cfg: &ProbeConfig, mut progress: impl FnMut(&str)) -> Result<ProbeOutcome> {
    let header = read_header(&cfg.run_dir)?;
    let file = read_trials(&cfg.run_dir.join("trials.jsonl"), header.seed)?;
    let trials: Vec<TrialRecord> = file.records.into_iter().map(|(_, r)| r).collect();
    let all_tasks = tasks(
        &header.study.conditions,
        header.study.positive_control.as_ref(),
    );
    let mut out = ProbeOutcome {
        accuracy: Vec::new(),
        self_report: Vec::new(),
        best: Vec::new(),
        directions: Vec::new(),
        skipped: Vec::new(),
    };
    let captured: Vec<_> = header
        .models
        .iter()
        .filter(|m| m.capture.is_some())
        .collect();
    if captured.is_empty() {
        return Err(run_err(format!(
            "{} holds no captured states: run a study with a [capture] table (e.g. scenarios/studies/internal-states.toml)",
            cfg.run_dir.display()
        )));
    }
    if all_tasks.is_empty() {
        return Err(run_err(
            "the run's design has no pair of conditions to probe (it needs an induction and the neutral text, a regulated and an unregulated induction, or a [positive_control])".into(),
        ));
    }
    let dir = cfg.run_dir.join(PROBES_DIR);
    std::fs::create_dir_all(&dir).with_path(&dir)?;
    for m in captured {
        let capture = m.capture.as_ref().expect("filtered");
        let states = States::read(&cfg.run_dir, capture)?;
        let mine: Vec<&TrialRecord> = trials.iter().filter(|t| t.model == m.label).collect();
        let mut directions = BTreeMap::new();
        for task in &all_tasks {
            progress(&format!(
                "{}: {} ({} vs {})",
                m.label, task.direction, task.a, task.b
            ));
            let data = match task_data(task, &mine, &states) {
                Ok(d) => d,
                Err(why) => {
                    out.skipped
                        .push(format!("{}: {}: {why}", m.label, task.direction));
                    continue;
                }
            };
            let probed = probe_task(cfg, &m.label, task, &data.samples, data.folds, &states);
            out.accuracy.extend(probed.accuracy);
            out.self_report.extend(probed.self_report);
            out.best.push(probed.best);
            directions.insert(task.direction.clone(), probed.direction);
        }
        if !directions.is_empty() {
            let path = dir.join(format!("directions-{}.safetensors", file_stem(&m.label)));
            Directions {
                model: m.label.clone(),
                model_sha256: m.sha256.clone(),
                blocks: capture.blocks.clone(),
                d_model: capture.d_model,
                source_run: cfg.run_dir.display().to_string(),
                directions,
            }
            .write(&path)?;
            out.directions.push(path);
        }
    }
    csv_table::write_rows(&dir.join("probe_accuracy.csv"), &out.accuracy)?;
    csv_table::write_rows(&dir.join("probe_self_report.csv"), &out.self_report)?;
    ProbeFile {
        settings: ProbeSettings {
            permutations: cfg.permutations,
            lambda: cfg.lambda,
            seed: cfg.seed,
        },
        method: METHOD.to_string(),
        best_blocks: out.best.clone(),
        skipped: out.skipped.clone(),
    }
    .write(&dir.join(PROBE_FILE))?;
    Ok(out)
}

/// What one task gives.
struct Probed {
    accuracy: Vec<AccuracyRow>,
    self_report: Vec<SelfReportRow>,
    best: BestBlock,
    direction: Direction,
}

fn probe_task(
    cfg: &ProbeConfig,
    model: &str,
    task: &ProbeTask,
    samples: &[Sample],
    folds: usize,
    states: &States,
) -> Probed {
    // Conversations, each with its condition and length label.
    let mut group_ids: Vec<&str> = samples.iter().map(|s| s.group.as_str()).collect();
    group_ids.sort_unstable();
    group_ids.dedup();
    let group_of = |s: &Sample| group_ids.binary_search(&s.group.as_str()).expect("listed");
    let mut observed = vec![0f64; group_ids.len()];
    let mut control = vec![0f64; group_ids.len()];
    for s in samples {
        observed[group_of(s)] = if s.is_a { 1.0 } else { -1.0 };
        control[group_of(s)] = if s.long { 1.0 } else { -1.0 };
    }
    let agreement = observed
        .iter()
        .zip(&control)
        .filter(|(a, b)| a == b)
        .count() as f64
        / observed.len() as f64;
    let stream = format!("probe/{model}/{}", task.direction);
    let mut rng = crate::rng::Stream::Named(&stream).rng(cfg.seed);
    let mut labelings = vec![observed.clone(), control];
    for _ in 0..cfg.permutations {
        let mut p = observed.clone();
        p.shuffle(&mut rng);
        labelings.push(p);
    }
    // The prefix site: one row per conversation (its trials share the prefix).
    let mut first_of_group: Vec<usize> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if !first_of_group.iter().any(|&j| samples[j].group == s.group) {
            first_of_group.push(i);
        }
    }
    let blocks = &states.capture.blocks;
    let per_block: Vec<(BlockResult, BlockResult, Vec<f32>)> = (0..blocks.len())
        .into_par_iter()
        .map(|k| {
            let answer: Vec<Vec<f32>> = samples
                .iter()
                .map(|s| states.vector(s.record, 0, k))
                .collect();
            let rows: Vec<Row<'_>> = samples
                .iter()
                .zip(&answer)
                .map(|(s, f)| Row {
                    features: f,
                    group: group_of(s),
                    fold: s.fold,
                })
                .collect();
            let at_answer = evaluate(&rows, folds, &labelings, cfg.lambda);
            let prefix: Vec<Vec<f32>> = first_of_group
                .iter()
                .map(|&i| states.vector(samples[i].record, 1, k))
                .collect();
            let rows: Vec<Row<'_>> = first_of_group
                .iter()
                .zip(&prefix)
                .map(|(&i, f)| Row {
                    features: f,
                    group: group_of(&samples[i]),
                    fold: samples[i].fold,
                })
                .collect();
            let at_prefix = evaluate(&rows, folds, &labelings, cfg.lambda);
            (at_answer, at_prefix, mean_difference(samples, &answer))
        })
        .collect();
    let mut accuracy = Vec::new();
    let mut self_report = Vec::new();
    for (k, (answer, prefix, _)) in per_block.iter().enumerate() {
        for (site, r, n) in [
            ("answer", answer, samples.len()),
            ("prefix", prefix, first_of_group.len()),
        ] {
            let mut null = r.null.clone();
            null.sort_by(f64::total_cmp);
            let beaten = null.iter().filter(|&&x| x >= r.accuracy).count();
            accuracy.push(AccuracyRow {
                model: model.to_string(),
                task: task.direction.clone(),
                kind: task.kind.to_string(),
                a: task.a.clone(),
                b: task.b.clone(),
                site: site.to_string(),
                block: blocks[k],
                accuracy: r.accuracy,
                ci_low: r.ci.0,
                ci_high: r.ci.1,
                null_mean: null.iter().sum::<f64>() / null.len().max(1) as f64,
                null_p95: crate::stats::quantile_sorted(&null, 0.95),
                p_permutation: (1 + beaten) as f64 / (1 + null.len()) as f64,
                control_accuracy: r.control_accuracy,
                control_agreement: agreement,
                samples: n,
                conversations: group_ids.len(),
                folds,
                permutations: cfg.permutations,
            });
        }
        self_report.push(self_report_row(
            model,
            task,
            blocks[k],
            samples,
            &answer.decisions,
        ));
    }
    // The best answer-site block, against the max over blocks of each permutation.
    let (best_k, best) = per_block
        .iter()
        .enumerate()
        .max_by(|a, b| a.1 .0.accuracy.total_cmp(&b.1 .0.accuracy))
        .map(|(k, r)| (k, r.0.accuracy))
        .expect("at least one block");
    let max_null: Vec<f64> = (0..cfg.permutations)
        .map(|p| {
            per_block
                .iter()
                .map(|r| r.0.null[p])
                .fold(f64::MIN, f64::max)
        })
        .collect();
    let beaten = max_null.iter().filter(|&&x| x >= best).count();
    let direction = Direction {
        rows: per_block.iter().map(|r| r.2.clone()).collect(),
        a: task.a.clone(),
        b: task.b.clone(),
        trials_a: samples.iter().filter(|s| s.is_a).count(),
        trials_b: samples.iter().filter(|s| !s.is_a).count(),
    };
    Probed {
        best: BestBlock {
            model: model.to_string(),
            task: task.direction.clone(),
            block: blocks[best_k],
            accuracy: best,
            p_max_over_blocks: (1 + beaten) as f64 / (1 + max_null.len()) as f64,
            self_report_r: self_report[best_k].r,
        },
        accuracy,
        self_report,
        direction,
    }
}

/// Mean of condition a's rows minus mean of condition b's.
fn mean_difference(samples: &[Sample], rows: &[Vec<f32>]) -> Vec<f32> {
    let d = rows.first().map_or(0, |r| r.len());
    let (mut a, mut b) = (vec![0f64; d], vec![0f64; d]);
    let (mut na, mut nb) = (0usize, 0usize);
    for (s, r) in samples.iter().zip(rows) {
        let (sum, n) = if s.is_a {
            (&mut a, &mut na)
        } else {
            (&mut b, &mut nb)
        };
        *n += 1;
        for (acc, &x) in sum.iter_mut().zip(r) {
            *acc += x as f64;
        }
    }
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x / na.max(1) as f64 - y / nb.max(1) as f64) as f32)
        .collect()
}

fn self_report_row(
    model: &str,
    task: &ProbeTask,
    block: usize,
    samples: &[Sample],
    decisions: &[f64],
) -> SelfReportRow {
    let pairs: Vec<(bool, f64, f64)> = samples
        .iter()
        .zip(decisions)
        .filter_map(|(s, d)| s.self_report.map(|v| (s.is_a, *d, v)))
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().map(|p| (p.1, p.2)).unzip();
    let centred = |pick: fn(&(bool, f64, f64)) -> f64| -> Vec<f64> {
        let mean = |a: bool| {
            let v: Vec<f64> = pairs.iter().filter(|p| p.0 == a).map(pick).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let (ma, mb) = (mean(true), mean(false));
        pairs
            .iter()
            .map(|p| pick(p) - if p.0 { ma } else { mb })
            .collect()
    };
    SelfReportRow {
        model: model.to_string(),
        task: task.direction.clone(),
        block,
        r: correlation_or_nan(&x, &y),
        r_within_condition: correlation_or_nan(&centred(|p| p.1), &centred(|p| p.2)),
        trials: pairs.len(),
    }
}
