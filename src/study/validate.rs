//! `affectbench validate-instrument`: a study of positive controls only, so a
//! researcher learns in minutes whether a model's answers to an instrument track even
//! an instructed state, before spending hours on a study that could not tell.
//!
//! The study is data like any other: `control_study` writes a study file (baseline plus
//! the `[positive_control]` pair over the chosen instruments) that the ordinary runner
//! runs, snapshots and can resume, and the validity gate judges.

/// What the check asks for.
#[derive(Debug, Clone)]
pub struct ControlDesign {
    pub instruments: Vec<String>,
    pub repetitions: usize,
    pub seed: u64,
    /// Induction ids of the two instructed states.
    pub low: String,
    pub high: String,
    /// Cohen's d the instructed difference must reach.
    pub min_effect: f64,
}

/// The study file text for `design`: a baseline that asks every instrument, and the
/// positive-control pair the study format adds from `[positive_control]`; counterbalanced
/// label design and both label styles, as the shipped designs.
pub fn control_study(design: &ControlDesign) -> String {
    let quoted: Vec<String> = design
        .instruments
        .iter()
        .map(|i| format!("{:?}", i))
        .collect();
    format!(
        r#"id = "validate-instrument"
version = 1
description = "Positive controls only (affectbench validate-instrument): each instrument after an instruction to answer as someone feeling none / a great deal of negative affect, and unprompted."
source = "affectbench validate-instrument (2026)."
licence = "CC0-1.0"
seed = {seed}
repetitions = {repetitions}
temperature = 0.5
items_per_conversation = "one"
max_answer_tokens = 6
max_reasks = 1
acknowledgement = "I have read this."
option_order = "counterbalanced"
label_styles = ["digits", "letters"]

[positive_control]
low = {low:?}
high = {high:?}
min_effect = {min_effect:?}

[[condition]]
name = "baseline"
instruments = [{instruments}]
"#,
        seed = design.seed,
        repetitions = design.repetitions,
        low = design.low,
        high = design.high,
        min_effect = design.min_effect,
        instruments = quoted.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Library, Study};
    use std::path::Path;

    #[test]
    fn the_control_study_loads_with_the_pair_over_every_instrument() {
        let lib = Library::load(Path::new("scenarios")).unwrap();
        let design = ControlDesign {
            instruments: vec!["anxiety-state".into(), "vas".into()],
            repetitions: 6,
            seed: 3,
            low: "instructed-low".into(),
            high: "instructed-high".into(),
            min_effect: 1.5,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validate.toml");
        std::fs::write(&path, control_study(&design)).unwrap();
        let study = Study::load(&path, &lib).unwrap();
        let names: Vec<&str> = study.conditions.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["baseline", "control-low", "control-high"]);
        for c in &study.conditions {
            assert_eq!(c.instruments, ["anxiety-state", "vas"]);
        }
        let pc = study.positive_control.unwrap();
        assert_eq!(pc.min_effect, 1.5);
        assert_eq!((study.seed, study.repetitions), (3, 6));
    }
}
