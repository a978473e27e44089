//! Merging the shard directories of one plan (`affectbench merge`) into one run
//! directory, after checking that they really are the shards of one plan: the same
//! study and scenario files (by hash), seed, repetitions, model files (by hash), engine
//! and shard count; every shard present exactly once and finished; every planned trial
//! present exactly once. Anything else is refused, naming what is missing or differs;
//! `--allow-partial` merges what there is and records the gap.
//!
//! The output is a run directory like any other (run.json, trials.jsonl, the scenario
//! snapshot), whose run.json lists every input's provenance, so `report` reads it and
//! `merge` takes it again (a partial merge covers a set of shards, written `0+1/4`).

use super::runner::{plan_for, resume_design};
use crate::error::{Error, IoContext, Result};
use crate::results::{read_header, read_trials, MergedInput, RunHeader, RunStatus, TrialRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which shards of how many a directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSet {
    pub indices: BTreeSet<usize>,
    pub count: usize,
}

impl ShardSet {
    /// Parses run.json's `shard` ("2/4", "0+1/4"; None: the whole plan).
    pub fn parse(shard: Option<&str>) -> std::result::Result<Self, String> {
        let Some(s) = shard else {
            return Ok(ShardSet {
                indices: BTreeSet::from([0]),
                count: 1,
            });
        };
        let (list, count) = s
            .split_once('/')
            .ok_or_else(|| format!("shard '{s}' is not INDEX/COUNT"))?;
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("shard '{s}': bad count"))?;
        let indices = list
            .split('+')
            .map(|i| {
                i.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("shard '{s}': bad index"))
            })
            .collect::<std::result::Result<BTreeSet<_>, _>>()?;
        if count == 0 || indices.iter().any(|&i| i >= count) {
            return Err(format!("shard '{s}': indices must be below the count"));
        }
        Ok(ShardSet { indices, count })
    }

    /// The `shard` field for these shards (None when they are the whole plan).
    pub fn render(&self) -> Option<String> {
        if self.indices.len() == self.count {
            return None;
        }
        Some(format!(
            "{}/{}",
            self.indices
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("+"),
            self.count
        ))
    }

    /// Whether a group (by its position in the plan) belongs to these shards.
    pub fn holds(&self, group: usize) -> bool {
        self.indices.contains(&(group % self.count))
    }
}

/// What a merge wrote.
pub struct MergeOutcome {
    pub out_dir: PathBuf,
    pub trials: usize,
    pub status: RunStatus,
    /// Gaps accepted with `allow_partial`: missing shards (the status stays success if
    /// the shards present are complete) or missing trials (status partial).
    pub gaps: Vec<String>,
}

fn merge_err(message: String) -> Error {
    Error::Run(format!("merge: {message}"))
}

/// Merges `inputs` into `out` (which must not exist yet).
pub fn merge(inputs: &[PathBuf], out: &Path, allow_partial: bool) -> Result<MergeOutcome> {
    if inputs.is_empty() {
        return Err(merge_err("give the shard directories to merge".into()));
    }
    if out.join("run.json").exists() {
        return Err(merge_err(format!(
            "{} already holds a run; choose a new --out",
            out.display()
        )));
    }
    let headers: Vec<RunHeader> = inputs
        .iter()
        .map(|d| read_header(d))
        .collect::<Result<_>>()?;
    let first = &headers[0];
    let mut problems = Vec::new();
    let mut gaps = Vec::new();

    // One plan: every input agrees with the first on what makes the plan and its numbers.
    for (dir, h) in inputs.iter().zip(&headers).skip(1) {
        for d in first.plan_differences(h) {
            problems.push(format!(
                "{} differs from {}: {d}",
                dir.display(),
                inputs[0].display()
            ));
        }
    }

    // The shards: one count, each index once, all of them (or the gap recorded).
    let sets: Vec<ShardSet> = headers
        .iter()
        .zip(inputs)
        .map(|(h, d)| {
            ShardSet::parse(h.shard.as_deref())
                .map_err(|e| merge_err(format!("{}: {e}", d.display())))
        })
        .collect::<Result<_>>()?;
    let count = sets[0].count;
    let mut covered = BTreeSet::new();
    for (set, dir) in sets.iter().zip(inputs) {
        if set.count != count {
            problems.push(format!(
                "{} holds shards of {} but {} of {count}",
                dir.display(),
                set.count,
                inputs[0].display()
            ));
        }
        for &i in &set.indices {
            if !covered.insert(i) {
                problems.push(format!(
                    "shard {i}/{count} is given twice ({} is one of them)",
                    dir.display()
                ));
            }
        }
    }
    let missing: Vec<usize> = (0..count).filter(|i| !covered.contains(i)).collect();
    if !missing.is_empty() {
        let what = format!(
            "shard(s) {} of {count} are missing",
            missing
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if allow_partial {
            gaps.push(what)
        } else {
            problems.push(format!(
                "{what}; give every shard directory, or --allow-partial"
            ))
        }
    }
    for (h, dir) in headers.iter().zip(inputs) {
        if h.status != RunStatus::Success {
            let what = format!(
                "{} has status '{}' (resume it with `affectbench run --resume {}`)",
                dir.display(),
                h.status,
                dir.display()
            );
            if allow_partial {
                gaps.push(what)
            } else {
                problems.push(what)
            }
        }
    }
    if !problems.is_empty() {
        return Err(merge_err(format!(
            "these are not the complete shards of one plan:\n  {}",
            problems.join("\n  ")
        )));
    }

    // Every planned trial of the covered shards exactly once.
    let (study_path, root) = resume_design(&inputs[0], first);
    let labels: Vec<String> = first.models.iter().map(|m| m.label.clone()).collect();
    let (_, _, plan) = plan_for(
        &study_path,
        root.as_deref(),
        &labels,
        Some(first.repetitions),
    )?;
    let union = ShardSet {
        indices: covered,
        count,
    };
    let expected: BTreeSet<&str> = plan
        .trials
        .iter()
        .filter(|t| union.holds(t.group))
        .map(|t| t.id.as_str())
        .collect();
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut inputs_record = Vec::new();
    for (dir, h) in inputs.iter().zip(&headers) {
        let file = read_trials(&dir.join("trials.jsonl"), h.seed)?;
        if let Some((line, _)) = file.torn_tail {
            return Err(merge_err(format!(
                "{}/trials.jsonl: line {line} is incomplete; resume the shard first",
                dir.display()
            )));
        }
        let n = file.records.len();
        for (line, t) in file.records {
            if !expected.contains(t.trial_id.as_str()) {
                return Err(merge_err(format!(
                    "{}/trials.jsonl:{line}: trial {} is not in this plan's shards",
                    dir.display(),
                    t.trial_id
                )));
            }
            if !seen.insert(t.trial_id.clone()) {
                return Err(merge_err(format!(
                    "{}/trials.jsonl:{line}: trial {} is recorded twice",
                    dir.display(),
                    t.trial_id
                )));
            }
            trials.push(t);
        }
        inputs_record.push(MergedInput {
            dir: std::fs::canonicalize(dir)
                .unwrap_or_else(|_| dir.clone())
                .display()
                .to_string(),
            shard: h.shard.clone(),
            status: h.status,
            started: h.started.clone(),
            ended: h.ended.clone(),
            git_revision: h.git_revision.clone(),
            engine: h.engine.clone(),
            trials: n,
        });
    }
    let absent = expected.len() - seen.len();
    if absent > 0 {
        let what = format!(
            "{absent} of {} planned trials are not recorded",
            expected.len()
        );
        if !allow_partial {
            return Err(merge_err(format!(
                "{what}; resume the unfinished shards, or --allow-partial"
            )));
        }
        gaps.push(what);
    }

    // The merged run directory.
    std::fs::create_dir_all(out).with_path(out)?;
    let order: BTreeMap<&str, usize> = plan
        .trials
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    trials.sort_by_key(|t| {
        order
            .get(t.trial_id.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    let path = out.join("trials.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).with_path(&path)?);
    for t in &trials {
        let line = serde_json::to_string(t).map_err(|e| merge_err(e.to_string()))?;
        writeln!(w, "{line}").with_path(&path)?;
    }
    w.flush().with_path(&path)?;
    if let Some(snapshot) = &first.snapshot {
        copy_tree(&inputs[0].join(snapshot), &out.join(snapshot))?;
    }
    merge_internals(inputs, &headers, &trials, out)?;
    // Like a shard's own run, a merge is a success when every trial of the shards it
    // covers is recorded (its `shard` field then says which ones it covers).
    let unfinished = absent > 0 || headers.iter().any(|h| h.status != RunStatus::Success);
    let status = if unfinished {
        RunStatus::Partial
    } else {
        RunStatus::Success
    };
    let mut header = first.clone();
    header.status = status;
    header.error = None;
    header.started = headers
        .iter()
        .map(|h| h.started.clone())
        .min()
        .unwrap_or_default();
    header.ended = Some(crate::results::now_rfc3339());
    header.shard = union.render();
    header.trials_failed = Some(trials.iter().filter(|t| t.error.is_some()).count());
    header.merged_from = inputs_record;
    header.gaps = gaps.clone();
    let text = serde_json::to_string_pretty(&header).map_err(|e| merge_err(e.to_string()))?;
    let run_json = out.join("run.json");
    std::fs::write(&run_json, text).with_path(&run_json)?;
    Ok(MergeOutcome {
        out_dir: out.to_path_buf(),
        trials: trials.len(),
        status,
        gaps,
    })
}

/// The inputs' captured states (every merged trial's record, in trial order) and their
/// directions file (the same in every input: `plan_differences` compares its sha256).
fn merge_internals(
    inputs: &[PathBuf],
    headers: &[RunHeader],
    trials: &[crate::results::TrialRecord],
    out: &Path,
) -> Result<()> {
    use crate::results::states::{States, StatesWriter};
    for (mi, model) in headers[0].models.iter().enumerate() {
        if let Some(capture) = &model.capture {
            let mut writer = StatesWriter::open(out, capture)?;
            let mine: Vec<&str> = trials
                .iter()
                .filter(|t| t.model == model.label && t.question.is_item() && t.error.is_none())
                .map(|t| t.trial_id.as_str())
                .collect();
            let mut copied = 0;
            for (dir, h) in inputs.iter().zip(headers) {
                let Some(c) = h.models.get(mi).and_then(|m| m.capture.as_ref()) else {
                    continue;
                };
                if c.blocks != capture.blocks || c.d_model != capture.d_model {
                    return Err(merge_err(format!(
                        "{} captured blocks {:?} of {}, the first input {:?} of {}",
                        dir.display(),
                        c.blocks,
                        c.d_model,
                        capture.blocks,
                        capture.d_model
                    )));
                }
                let states = States::read(dir, c)?;
                let here: Vec<&str> = mine
                    .iter()
                    .copied()
                    .filter(|id| states.index.contains_key(*id))
                    .collect();
                copied += states.copy_to(here.into_iter(), &mut writer)?;
            }
            if copied < mine.len() {
                return Err(merge_err(format!(
                    "{} of {} item trials of {} have no captured states in the inputs",
                    mine.len() - copied,
                    mine.len(),
                    model.label
                )));
            }
        }
        if let Some(d) = &model.directions {
            let (from, to) = (inputs[0].join(&d.file), out.join(&d.file));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).with_path(parent)?;
            }
            std::fs::copy(&from, &to).with_path(&to)?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_path(to)?;
    for entry in std::fs::read_dir(from).with_path(from)? {
        let entry = entry.with_path(from)?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_path(&target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ShardSet;

    #[test]
    fn shard_sets_parse_and_render() {
        let s = ShardSet::parse(Some("0+2/4")).unwrap();
        assert_eq!((s.indices.len(), s.count), (2, 4));
        assert!(s.holds(6) && !s.holds(5));
        assert_eq!(s.render().as_deref(), Some("0+2/4"));
        assert_eq!(ShardSet::parse(None).unwrap().render(), None);
        assert!(ShardSet::parse(Some("4/4")).is_err() && ShardSet::parse(Some("x")).is_err());
    }
}
