//! `run.json`: what was run (the study and every scenario file, by hash), on what (each
//! model's provenance, the engine configuration), how far it got (status), and how each
//! instrument turns answers into scores, so a report needs no scenario files.

use crate::scenario::study::{
    Acknowledgement, Condition, DeclaredContrast, Deviation, PositiveControl,
};
use crate::scenario::{FileInfo, Instrument, Scoring};
use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A process is (or was, until it died without a word) writing the run.
    Running,
    /// Every planned trial is recorded.
    Success,
    /// The run stopped by plan (`--max-trials`) with trials left.
    Partial,
    /// A signal stopped it; `--resume` continues.
    Interrupted,
    /// It stopped on an error (`RunHeader::error` says which).
    Error,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Partial => "partial",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Error => "error",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunHeader {
    pub schema: u32,
    pub affectbench_version: String,
    pub git_revision: String,
    pub status: RunStatus,
    pub error: Option<String>,
    pub started: String,
    pub ended: Option<String>,
    pub study_path: String,
    pub study: StudyRecord,
    pub scenario_files: Vec<ScenarioFile>,
    pub models: Vec<ModelProvenance>,
    pub seed: u64,
    pub repetitions: usize,
    pub engine: EngineRecord,
    pub trials_planned: usize,
    /// Trials recorded with an error (non-finite numbers, a failed read-out), counted
    /// when the run stopped; None while running and in schema-1 runs.
    pub trials_failed: Option<usize>,
    /// The run directory's copy of every scenario file it uses (relative to the
    /// directory), which `--resume` reads; None in runs made before snapshots.
    pub snapshot: Option<String>,
    /// "index/count" when this directory holds one shard of the plan.
    pub shard: Option<String>,
    /// How each instrument turns item answers into scores. Empty only in schema-1 runs
    /// made before it was recorded (the report then reads the instrument files).
    pub scoring: Vec<InstrumentScoring>,
    /// Where settings came from: `threads` (a flag, SLURM_CPUS_PER_TASK, the CPUs the
    /// process may use), `shard` (a flag, SLURM_ARRAY_TASK_ID/COUNT, JOB_COMPLETION_INDEX).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sources: std::collections::BTreeMap<String, String>,
    /// For a directory written by `affectbench merge`: every input's provenance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedInput>,
    /// For a partial merge (`--allow-partial`): what is missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
}

/// One input of a merge, as its own run.json described it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedInput {
    /// The input directory (absolute).
    pub dir: String,
    pub shard: Option<String>,
    pub status: RunStatus,
    pub started: String,
    pub ended: Option<String>,
    pub git_revision: String,
    pub engine: EngineRecord,
    /// Trial records it held.
    pub trials: usize,
}

impl RunHeader {
    /// What differs between this run's plan and `other`'s in anything that changes a
    /// trial's numbers: seed, repetitions, the study file, the models (by label and
    /// hashes, not by where the file lies), every scenario file this run used (files
    /// only `other` has are fine) and the engine (not recorded in schema 1, so not
    /// compared then). Shards are compared by the caller: a resume needs the same
    /// shard, a merge different ones. Each difference names the field and both values.
    pub fn plan_differences(&self, other: &RunHeader) -> Vec<String> {
        let mut differences = Vec::new();
        if self.seed != other.seed {
            differences.push(format!("seed: {} vs {}", self.seed, other.seed));
        }
        if self.repetitions != other.repetitions {
            differences.push(format!(
                "repetitions: {} vs {}",
                self.repetitions, other.repetitions
            ));
        }
        if self.study.sha256 != other.study.sha256 {
            differences.push(format!(
                "study file sha256: {} vs {}",
                self.study.sha256, other.study.sha256
            ));
        }
        let identity = |m: &ModelProvenance| {
            (
                m.label.clone(),
                m.sha256.clone(),
                m.architecture.clone(),
                m.tokenizer_sha256.clone(),
                m.chat_template_sha256.clone(),
                m.directions.as_ref().map(|d| d.sha256.clone()),
            )
        };
        for (i, (a, b)) in self.models.iter().zip(&other.models).enumerate() {
            if identity(a) != identity(b) {
                differences.push(format!(
                    "model {}: {} (sha256 {}) vs {} (sha256 {})",
                    i + 1,
                    a.label,
                    a.sha256,
                    b.label,
                    b.sha256
                ));
            }
        }
        for (i, (a, b)) in self.models.iter().zip(&other.models).enumerate() {
            if let (Some(a), Some(b)) = (&a.server, &b.server) {
                differences.extend(
                    a.result_changing_differences(b)
                        .into_iter()
                        .map(|d| format!("model {}: {d}", i + 1)),
                );
            }
        }
        if self.models.len() != other.models.len() {
            differences.push(format!(
                "number of models: {} vs {}",
                self.models.len(),
                other.models.len()
            ));
        }
        for f in &self.scenario_files {
            match other.scenario_files.iter().find(|n| n.id == f.id) {
                Some(n) if n.sha256 == f.sha256 => {}
                Some(n) => differences.push(format!(
                    "scenario file {} ({}): sha256 {} vs {} ({})",
                    f.id, f.path, f.sha256, n.sha256, n.path
                )),
                None => differences.push(format!("scenario file {} ({}) is missing", f.id, f.path)),
            }
        }
        if self.engine.weights.is_some() {
            differences.extend(
                self.engine
                    .result_changing_differences(&other.engine)
                    .into_iter()
                    .map(|d| format!("engine {d}")),
            );
        }
        differences
    }
}

/// The study as run: its identity and the design a report needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StudyRecord {
    pub id: String,
    pub version: u32,
    pub sha256: String,
    pub description: String,
    pub conditions: Vec<Condition>,
    pub temperature: f32,
    /// The design's positive control (absent in runs made before it existed, and in
    /// designs without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_control: Option<PositiveControl>,
    /// The questions the design declares (`[[contrast]]`), expanded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contrasts: Vec<DeclaredContrast>,
    /// The read-out the confirmatory questions are answered on (absent: none declared,
    /// and in runs made before it could be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_readout: Option<String>,
    /// The system prompt, or its variants by repetition (both absent: the chat
    /// template's default; absent too in runs made before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_prompts: Vec<String>,
    /// How repetitions picked their stimuli (absent in runs made before it was
    /// recorded, which all used modulo assignment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<crate::scenario::study::Assignment>,
    /// What follows each text (absent in runs made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledgement: Option<Acknowledgement>,
    /// The `enable_thinking` given to templates that read it (absent in runs made
    /// before it was recorded; see each model's `thinking_switch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
    /// How the design differs from the published study it follows (`[[deviation]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deviations: Vec<Deviation>,
}

/// One scenario file the run used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioFile {
    pub id: String,
    pub version: u32,
    pub path: String,
    pub sha256: String,
    pub source: String,
    pub licence: String,
}

impl From<&FileInfo> for ScenarioFile {
    fn from(f: &FileInfo) -> Self {
        ScenarioFile {
            id: f.id.clone(),
            version: f.version,
            path: f.path.display().to_string(),
            sha256: f.sha256.clone(),
            source: f.source.clone(),
            licence: f.licence.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelProvenance {
    pub label: String,
    pub path: String,
    pub sha256: String,
    pub architecture: String,
    pub tokenizer_sha256: String,
    pub chat_template_sha256: Option<String>,
    /// The chat template's rendering of a conversation of one user turn ("{question}")
    /// with no system prompt: shows the default system prompt the template adds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_example: Option<String>,
    /// Whether the chat template reads a thinking switch (the study's `thinking` was
    /// given to it); false where absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thinking_switch: bool,
    /// The hidden states stored per item trial (studies with `[capture]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<super::states::CaptureRecord>,
    /// The directions file the steered conditions read (studies with `[[steering]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directions: Option<DirectionsRecord>,
    /// A server model: its endpoint (no key), what it said of itself, and how prompts
    /// and option probabilities went to and from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::server::model::ServerRecord>,
}

/// The directions file of a steered run: copied into the run directory (`file`, relative
/// to it) so a resume reads the same vectors, with its sha256 and the path it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectionsRecord {
    pub file: String,
    pub sha256: String,
    pub source: String,
}

/// Which arithmetic ran: everything that can change a trial's numbers, and the knobs that
/// cannot (threads, batch size) for the record. Fields a schema-1 run did not record are
/// None.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineRecord {
    /// `cpu`, `cuda:N` or `metal`.
    pub device: String,
    pub threads: usize,
    /// Most rows in one batch; results do not depend on it on the packed CPU path.
    pub batch_size: Option<usize>,
    /// The linear layers' weights: `packed-int8`, `candle-qmatmul` or `dense-f32`.
    pub weights: Option<String>,
    /// The packed int8 micro-kernel that ran: `avx512-vnni`, `avx-vnni`, `avx2`,
    /// `portable` or `scalar` (all give the same bits), or `none` (no packed weights).
    pub int8_kernel: Option<String>,
    /// Attention and gated activation: `fused` (our CPU kernels) or `reference` (candle
    /// ops; also what GPUs run).
    pub ops: Option<String>,
    /// Why the results reproduce: `batch_invariant` (packed CPU kernels: any batching
    /// gives the same bits) or `fixed_plan` (each unit's rows fixed by the plan and the
    /// batch size: the same device, driver, libraries and batch size give the same bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<String>,
    /// Under `fixed_plan`: the device, driver and library versions the bits depend on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
}

impl EngineRecord {
    /// The fields whose values change a trial's numbers, named, where `other` differs:
    /// what a resume must refuse. Threads and batch size never change results, and
    /// neither does which packed int8 kernel ran (every path gives the reference's bits,
    /// so a shard requeued onto a node of another CPU type resumes); whether one ran at
    /// all is `weights`.
    pub fn result_changing_differences(&self, other: &EngineRecord) -> Vec<String> {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "not recorded".into());
        let packed = |v: &Option<String>| v.as_deref().is_some_and(|k| k != "none");
        let kernels = if packed(&self.int8_kernel) && packed(&other.int8_kernel) {
            (None, None)
        } else {
            (self.int8_kernel.clone(), other.int8_kernel.clone())
        };
        let pairs = [
            (
                "device",
                Some(self.device.clone()),
                Some(other.device.clone()),
            ),
            ("weights", self.weights.clone(), other.weights.clone()),
            ("int8_kernel", kernels.0, kernels.1),
            ("ops", self.ops.clone(), other.ops.clone()),
            // Runs recorded before guarantees were named were batch-invariant or ran row
            // by row, which a fixed plan does not reproduce.
            (
                "guarantee",
                Some(self.guarantee.clone().unwrap_or("batch_invariant".into())),
                Some(other.guarantee.clone().unwrap_or("batch_invariant".into())),
            ),
        ];
        // Under a fixed plan the unit composition (batch size) and the device and its
        // libraries decide the bits too.
        let fixed = |r: &EngineRecord| r.guarantee.as_deref() == Some("fixed_plan");
        let plan_pairs = if fixed(self) || fixed(other) {
            vec![
                (
                    "batch_size",
                    self.batch_size.map(|b| b.to_string()),
                    other.batch_size.map(|b| b.to_string()),
                ),
                (
                    "accelerator",
                    self.accelerator.clone(),
                    other.accelerator.clone(),
                ),
            ]
        } else {
            Vec::new()
        };
        pairs
            .iter()
            .chain(&plan_pairs)
            .filter(|(_, a, b)| a != b)
            .map(|(name, a, b)| format!("{name}: {} vs {}", shown(a), shown(b)))
            .collect()
    }
}

/// An instrument's scoring rule as recorded in run.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstrumentScoring {
    pub id: String,
    /// Sum or mean of keyed item values, per subscale.
    pub scoring: Scoring,
    pub multiplier: f64,
    pub min: f64,
    pub max: f64,
    pub items: Vec<ScoredItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoredItem {
    pub id: String,
    /// The subscale the item scores on (the instrument id when it has none).
    pub subscale: String,
    pub reverse: bool,
}

impl InstrumentScoring {
    pub fn from_instrument(ins: &Instrument) -> Self {
        let (min, max) = ins.response.range();
        InstrumentScoring {
            id: ins.info.id.clone(),
            scoring: ins.scoring,
            multiplier: ins.score_multiplier,
            min,
            max,
            items: ins
                .items
                .iter()
                .map(|it| ScoredItem {
                    id: it.id.clone(),
                    subscale: it.subscale.clone().unwrap_or_else(|| ins.info.id.clone()),
                    reverse: it.reverse,
                })
                .collect(),
        }
    }

    /// The subscales in item order.
    pub fn subscales(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for it in &self.items {
            if !out.contains(&it.subscale.as_str()) {
                out.push(&it.subscale);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::EngineRecord;

    fn record(kernel: &str) -> EngineRecord {
        EngineRecord {
            device: "cpu".into(),
            threads: 2,
            batch_size: Some(32),
            weights: Some("packed-int8".into()),
            int8_kernel: Some(kernel.into()),
            ops: Some("fused".into()),
            guarantee: None,
            accelerator: None,
        }
    }

    fn fixed_plan(batch: usize, gpu: &str) -> EngineRecord {
        EngineRecord {
            device: "cuda:0".into(),
            batch_size: Some(batch),
            weights: Some("dense-f16".into()),
            int8_kernel: Some("none".into()),
            ops: Some("reference".into()),
            guarantee: Some("fixed_plan".into()),
            accelerator: Some(gpu.into()),
            ..record("none")
        }
    }

    #[test]
    fn a_fixed_plan_resumes_only_with_its_batch_size_and_device() {
        let h200 = "NVIDIA H200, driver 580.95, CUDA 13.0";
        assert!(fixed_plan(256, h200)
            .result_changing_differences(&fixed_plan(256, h200))
            .is_empty());
        let d = fixed_plan(256, h200).result_changing_differences(&fixed_plan(64, h200));
        assert!(
            d.iter().any(|x| x.starts_with("batch_size: 256 vs 64")),
            "{d:?}"
        );
        let d = fixed_plan(256, h200)
            .result_changing_differences(&fixed_plan(256, "NVIDIA H100, driver 580.95"));
        assert!(d.iter().any(|x| x.starts_with("accelerator")), "{d:?}");
        // A run recorded before guarantees were named resumes on the packed path...
        let mut named = record("avx2");
        named.guarantee = Some("batch_invariant".into());
        assert!(record("avx2")
            .result_changing_differences(&named)
            .is_empty());
        // ...whose batch size never mattered.
        let mut other_batch = named.clone();
        other_batch.batch_size = Some(4);
        assert!(named.result_changing_differences(&other_batch).is_empty());
    }

    #[test]
    fn another_int8_kernel_is_no_difference_but_other_arithmetic_is() {
        // Regression: a shard requeued onto a node of another CPU type was refused its
        // resume ("int8_kernel: avx512-vnni vs avx2"), though every path gives the same
        // bits.
        assert!(record("avx512-vnni")
            .result_changing_differences(&record("avx2"))
            .is_empty());
        assert!(record("portable")
            .result_changing_differences(&record("scalar"))
            .is_empty());
        let mut candle = record("none");
        candle.weights = Some("candle-qmatmul".into());
        let d = record("avx2").result_changing_differences(&candle);
        assert!(d.iter().any(|x| x.starts_with("weights")), "{d:?}");
        assert!(d.iter().any(|x| x.starts_with("int8_kernel")), "{d:?}");
        let mut reference = record("avx2");
        reference.ops = Some("reference".into());
        assert_eq!(
            record("avx2").result_changing_differences(&reference).len(),
            1
        );
    }
}
