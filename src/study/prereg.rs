//! A preregistration: the study's plan frozen before it runs (questions with their
//! directions and SESOIs, the primary read-out, the exclusion rule, the stopping rule,
//! seed, repetitions and every scenario file by hash), hashed so that a later edit
//! shows. `affectbench prereg` writes it; `run --prereg` keeps a copy in the run
//! directory; the report compares the run with it and lists every deviation.

use crate::chat::sha256_hex;
use crate::error::{Error, IoContext, Result};
use crate::results::{RunHeader, ScenarioFile};
use crate::scenario::study::{Assignment, DeclaredContrast};
use crate::scenario::{Library, Study};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file name of the copy a run keeps.
pub const FILE_NAME: &str = "preregistration.json";

/// The rule that excludes results from every conclusion, as the gate applies it.
pub const EXCLUSION_RULE: &str = "A question answered on an instrument x read-out whose \
     validity gate verdict is fail (docs/guide/report.md, \"Reading the validity gate\") is \
     not evidence and is excluded from every conclusion; warn verdicts are reported with \
     the check that warned.";

/// When data collection stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Stopping {
    /// Every condition at the planned repetitions.
    Fixed { repetitions: usize },
    /// Blocks of `step` repetitions until every confirmatory question's 95% CI
    /// half-width is below its SESOI, at most `repetitions`.
    UntilPrecision { repetitions: usize, step: usize },
}

impl Stopping {
    pub fn describe(&self) -> String {
        match self {
            Stopping::Fixed { repetitions } => {
                format!("fixed: {repetitions} repetitions per condition")
            }
            Stopping::UntilPrecision { repetitions, step } => format!(
                "until precision: blocks of {step} repetitions, stop when every confirmatory \
                 95% CI half-width is below its SESOI, at most {repetitions}"
            ),
        }
    }

    pub fn most(&self) -> usize {
        match self {
            Stopping::Fixed { repetitions } | Stopping::UntilPrecision { repetitions, .. } => {
                *repetitions
            }
        }
    }
}

/// The frozen plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preregistration {
    /// The format of this file.
    pub format: u32,
    pub created: String,
    pub affectbench_version: String,
    pub study_id: String,
    pub study_version: u32,
    pub study_sha256: String,
    pub seed: u64,
    pub assignment: Assignment,
    pub primary_readout: Option<String>,
    pub questions: Vec<DeclaredContrast>,
    pub exclusion: String,
    pub stopping: Stopping,
    /// The models to be run (registry names or files as given; empty: not fixed).
    pub models: Vec<String>,
    pub scenario_files: Vec<ScenarioFile>,
    /// sha256 of this file's JSON with this field empty: any edit after writing shows.
    pub sha256: String,
}

impl Preregistration {
    pub fn new(study: &Study, lib: &Library, stopping: Stopping, models: Vec<String>) -> Self {
        let mut p = Preregistration {
            format: 1,
            created: crate::results::now_rfc3339(),
            affectbench_version: env!("CARGO_PKG_VERSION").to_string(),
            study_id: study.info.id.clone(),
            study_version: study.info.version,
            study_sha256: study.info.sha256.clone(),
            seed: study.seed,
            assignment: study.assignment,
            primary_readout: study.primary_readout.clone(),
            questions: study.contrasts.clone(),
            exclusion: EXCLUSION_RULE.to_string(),
            stopping,
            models,
            scenario_files: super::provenance::scenario_files(study, lib),
            sha256: String::new(),
        };
        p.sha256 = p.content_hash();
        p
    }

    /// The hash of everything but the hash itself.
    pub fn content_hash(&self) -> String {
        let unsealed = Preregistration {
            sha256: String::new(),
            ..self.clone()
        };
        sha256_hex(
            serde_json::to_string(&unsealed)
                .expect("a preregistration serialises")
                .as_bytes(),
        )
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a preregistration serialises");
        std::fs::write(path, text + "\n").with_path(path)
    }

    /// Reads a preregistration; an unreadable or malformed file is an error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path(path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Report(format!(
                "{} is not a preregistration affectbench wrote (line {}, column {}: {e})",
                path.display(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// One aspect of a run compared with its preregistration.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub aspect: String,
    pub preregistered: String,
    pub run: String,
    pub deviation: bool,
}

/// Every aspect of `header` (and the repetitions its trials reached) compared with the
/// frozen plan.
pub fn compare(p: &Preregistration, header: &RunHeader, repetitions_run: usize) -> Vec<Comparison> {
    let mut out = Vec::new();
    let mut add = |aspect: &str, pre: String, run: String| {
        out.push(Comparison {
            aspect: aspect.to_string(),
            deviation: pre != run,
            preregistered: pre,
            run,
        });
    };
    add("preregistration file", p.sha256.clone(), p.content_hash());
    add("study", p.study_id.clone(), header.study.id.clone());
    add(
        "study file (sha256)",
        p.study_sha256.clone(),
        header.study.sha256.clone(),
    );
    add("seed", p.seed.to_string(), header.seed.to_string());
    // As the study file spells it ("crossed", "modulo").
    let spelled = |a: Assignment| {
        serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    add(
        "assignment",
        spelled(p.assignment),
        spelled(header.study.assignment.unwrap_or(Assignment::Modulo)),
    );
    add(
        "primary read-out",
        p.primary_readout.clone().unwrap_or_else(|| "none".into()),
        header
            .study
            .primary_readout
            .clone()
            .unwrap_or_else(|| "none".into()),
    );
    let describe = |c: &DeclaredContrast| {
        format!(
            "{} - {}{} on {}/{}; direction {}; sesoi {}; equivalence margin {}; {}",
            c.a,
            c.b,
            c.second_pair()
                .map(|(x, y)| format!(" - ({x} - {y})"))
                .unwrap_or_default(),
            c.instrument,
            c.subscale,
            c.direction.name(),
            c.sesoi.map_or("none".into(), |x| x.to_string()),
            c.equivalence_margin
                .map_or("none".into(), |x| x.to_string()),
            if c.exploratory {
                "exploratory"
            } else {
                "confirmatory"
            }
        )
    };
    for q in &p.questions {
        let run = header
            .study
            .contrasts
            .iter()
            .find(|c| c.question == q.question && c.subscale == q.subscale)
            .map_or_else(|| "missing".to_string(), describe);
        add(&format!("question: {}", q.question), describe(q), run);
    }
    for c in &header.study.contrasts {
        if !p
            .questions
            .iter()
            .any(|q| q.question == c.question && q.subscale == c.subscale)
        {
            add(
                &format!("question: {}", c.question),
                "not preregistered".into(),
                describe(c),
            );
        }
    }
    add(
        "repetitions planned",
        p.stopping.most().to_string(),
        header.repetitions.to_string(),
    );
    let stopped = match &p.stopping {
        Stopping::Fixed { repetitions } => {
            if repetitions_run == *repetitions {
                format!("{repetitions} repetitions per condition")
            } else {
                format!("{repetitions_run} repetitions per condition run")
            }
        }
        Stopping::UntilPrecision { repetitions, step } => {
            if repetitions_run.is_multiple_of(*step) || repetitions_run == *repetitions {
                p.stopping.describe()
            } else {
                format!("{repetitions_run} repetitions run: not a whole block of {step}")
            }
        }
    };
    let stopped_as_planned = match &p.stopping {
        Stopping::Fixed { .. } => format!("{} repetitions per condition", p.stopping.most()),
        Stopping::UntilPrecision { .. } => p.stopping.describe(),
    };
    add("stopping rule", stopped_as_planned, stopped);
    if !p.models.is_empty() {
        let run: Vec<String> = header.models.iter().map(|m| m.label.clone()).collect();
        add("models", p.models.join(", "), run.join(", "));
    }
    let mut changed = 0;
    for f in &p.scenario_files {
        let run = header
            .scenario_files
            .iter()
            .find(|g| g.id == f.id && g.path == f.path)
            .map_or_else(|| "not used".to_string(), |g| g.sha256.clone());
        if run != f.sha256 {
            changed += 1;
            add(&format!("scenario file {}", f.path), f.sha256.clone(), run);
        }
    }
    if changed == 0 {
        let n = p.scenario_files.len();
        add(
            "scenario files",
            format!("{n} files by sha256"),
            format!("{n} files by sha256"),
        );
    }
    out
}
