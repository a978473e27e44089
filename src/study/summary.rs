//! The end-of-run summary in the terminal: mean ± SD of scale scores per model,
//! condition, instrument and subscale over repetitions, for both read-outs, and how many
//! items got a readable generated answer. Scores come from `results::scale_scores`, the
//! same function the report uses, so the two cannot disagree.

use crate::results::scores::Readout;
use crate::results::{scale_scores, InstrumentScoring, Question, TrialRecord};
use std::collections::BTreeMap;

/// The summary table of `trials` under the run's scoring rules.
pub fn summarise(trials: &[TrialRecord], scoring: &[InstrumentScoring]) -> String {
    let rules: BTreeMap<String, InstrumentScoring> =
        scoring.iter().map(|s| (s.id.clone(), s.clone())).collect();
    // (model, condition, instrument, subscale) -> (generated, probability) scores
    type Cells = BTreeMap<(String, String, String, String), (Vec<f64>, Vec<f64>)>;
    let mut cells: Cells = BTreeMap::new();
    for s in scale_scores(trials, &rules) {
        let cell = cells
            .entry((s.model, s.condition, s.instrument, s.subscale))
            .or_default();
        match s.readout {
            Readout::Generated => cell.0.push(s.value),
            Readout::Probability => cell.1.push(s.value),
        }
    }
    let mut answered: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    let mut completions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for t in trials {
        match &t.question {
            Question::Item { instrument, .. } => {
                let a = answered
                    .entry((t.model.clone(), t.condition.clone(), instrument.clone()))
                    .or_default();
                a.0 += t.generate.as_ref().is_some_and(|g| g.value.is_some()) as usize;
                a.1 += 1;
            }
            Question::Completion { .. } => {
                *completions
                    .entry((t.model.clone(), t.condition.clone()))
                    .or_default() += 1
            }
        }
    }
    let mut out = String::new();
    out.push_str("Scale scores, mean ± SD over repetitions (a generated score needs every item of its subscale answered).\n");
    out.push_str(&format!(
        "{:<28} {:<40} {:<24} {:>9} {:<24} {:<24}\n",
        "model",
        "condition",
        "instrument/subscale",
        "answered",
        "generated answers",
        "option probabilities"
    ));
    for ((model, cond, ins, sub), (generated, probability)) in &cells {
        let (ok, all) = answered
            .get(&(model.clone(), cond.clone(), ins.clone()))
            .copied()
            .unwrap_or((0, 0));
        let rate = if all > 0 {
            format!("{:.0}%", 100.0 * ok as f64 / all as f64)
        } else {
            "-".into()
        };
        let name = if sub == ins {
            ins.clone()
        } else {
            format!("{ins}/{sub}")
        };
        out.push_str(&format!(
            "{:<28} {:<40} {:<24} {:>9} {:<24} {:<24}\n",
            model,
            cond,
            name,
            rate,
            mean_sd(generated),
            mean_sd(probability)
        ));
    }
    for ((model, cond), n) in &completions {
        out.push_str(&format!("{model:<28} {cond:<40} completions: {n}\n"));
    }
    out
}

fn mean_sd(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    format!("{mean:7.2} ± {sd:5.2} (n={})", v.len())
}
