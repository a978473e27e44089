//! The end-of-run summary in the terminal: mean ± SD of scale scores per model,
//! condition, instrument and subscale over repetitions, for each read-out, and how many
//! items got a readable generated answer. Scores come from `results::scale_scores`, the
//! same function the report uses, so the two cannot disagree. The validity gate comes
//! first, and a failing read-out's scores are marked FAIL.

use crate::measures::scores::Readout;
use crate::measures::{
    calibrate, gate_verdicts, scale_scores, validity_checks, GateVerdict, Verdict,
};
use crate::results::{InstrumentScoring, Question, TrialRecord};
use crate::scenario::study::PositiveControl;
use std::collections::BTreeMap;

/// The summary table of `trials` under the run's scoring rules.
pub fn summarise(
    trials: &[TrialRecord],
    scoring: &[InstrumentScoring],
    control: Option<&PositiveControl>,
) -> String {
    let rules: BTreeMap<String, InstrumentScoring> =
        scoring.iter().map(|s| (s.id.clone(), s.clone())).collect();
    let trials = calibrate(trials.to_vec(), &rules).trials;
    let trials = &trials[..];
    // (model, condition, instrument, subscale) -> scores per read-out
    type Cells = BTreeMap<(String, String, String, String), BTreeMap<Readout, Vec<f64>>>;
    let mut cells: Cells = BTreeMap::new();
    for s in scale_scores(trials, &rules) {
        cells
            .entry((s.model, s.condition, s.instrument, s.subscale))
            .or_default()
            .entry(s.readout)
            .or_default()
            .push(s.value);
    }
    let mut answered: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    let mut completions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for t in trials {
        match &t.question {
            Question::ContentFree { .. } => {}
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
    let gate = gate_verdicts(&validity_checks(trials, &rules, control));
    let failed = |model: &str, instrument: &str, readout: Readout| {
        gate.iter().any(|g| {
            g.model == model
                && g.instrument == instrument
                && g.readout == readout
                && g.verdict == Verdict::Fail
        })
    };
    let mut out = gate_summary(&gate);
    out.push_str("Scale scores, mean ± SD over repetitions (a generated score needs every item of its subscale answered).\n");
    out.push_str(&format!(
        "{:<28} {:<40} {:<24} {:>9} {:<24} {:<24} {:<24}\n",
        "model",
        "condition",
        "instrument/subscale",
        "answered",
        "generated answers",
        "option probabilities",
        "calibrated probabilities"
    ));
    for ((model, cond, ins, sub), by_readout) in &cells {
        let column = |readout: Readout| {
            marked(
                mean_sd(by_readout.get(&readout).map_or(&[][..], |v| &v[..])),
                failed(model, ins, readout),
            )
        };
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
            "{:<28} {:<40} {:<24} {:>9} {:<24} {:<24} {:<24}\n",
            model,
            cond,
            name,
            rate,
            column(Readout::Generated),
            column(Readout::Probability),
            column(Readout::Calibrated),
        ));
    }
    for ((model, cond), n) in &completions {
        out.push_str(&format!("{model:<28} {cond:<40} completions: {n}\n"));
    }
    out
}

/// The validity gate first: one line per model x instrument x read-out that does not
/// pass, so a failing instrument is the first thing a terminal user reads.
fn gate_summary(gate: &[GateVerdict]) -> String {
    let failed = gate.iter().filter(|g| g.verdict == Verdict::Fail).count();
    let warned = gate.iter().filter(|g| g.verdict == Verdict::Warn).count();
    let mut out = format!(
        "Validity gate: {} pass, {warned} warn, {failed} FAIL (of {} instrument read-outs).\n",
        gate.len() - failed - warned,
        gate.len()
    );
    for g in gate.iter().filter(|g| g.verdict != Verdict::Pass) {
        let mark = if g.verdict == Verdict::Fail {
            "FAIL (its scores are not evidence)"
        } else {
            "warn"
        };
        out.push_str(&format!(
            "  {mark}: {} / {} / {}: {}\n",
            g.model,
            g.instrument,
            g.readout.name(),
            g.reasons.join("; ")
        ));
    }
    out.push('\n');
    out
}

fn marked(cell: String, failed: bool) -> String {
    if failed {
        format!("{cell} FAIL")
    } else {
        cell
    }
}

fn mean_sd(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mean = crate::stats::mean(v);
    let sd = if v.len() > 1 {
        crate::stats::variance(v).sqrt()
    } else {
        0.0
    };
    format!("{mean:7.2} ± {sd:5.2} (n={})", v.len())
}
