//! Answer-format bias, estimated and shown: the content-free distribution of every
//! arrangement (what the format alone makes the model answer) and the label-style
//! effect (letters vs digits) on item answers. Written to `tables/calibration.csv` and
//! `tables/label_style_effect.csv` and summarised in the report; the display-position
//! effect before and after calibration is `analysis::position_bias`.

use super::load::RunData;
use crate::measures::Readout;
use crate::results::Question;
use std::collections::BTreeMap;

/// One option of one calibrated arrangement.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentFreeRow {
    pub model: String,
    pub instrument: String,
    pub label_style: String,
    pub label_binding: String,
    /// The display order as option indices, space-separated.
    pub option_order: String,
    /// 1-based display position.
    pub position: usize,
    pub label: String,
    pub value: f64,
    pub probability: f64,
    /// Content-free prompts averaged.
    pub n: usize,
}

/// The label-style effect for one model x instrument x read-out: mean item value
/// (as answered, before reverse keying) under letter labels minus under digit labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelStyleEffect {
    pub model: String,
    pub instrument: String,
    pub readout: Readout,
    pub letters_mean: f64,
    pub digits_mean: f64,
    pub difference: f64,
    pub n_letters: usize,
    pub n_digits: usize,
}

pub fn content_free_rows(data: &RunData) -> Vec<ContentFreeRow> {
    let mut out = Vec::new();
    for (k, cf) in &data.calibration {
        for (pos, ((label, value), p)) in
            cf.labels.iter().zip(&cf.values).zip(&cf.probs).enumerate()
        {
            out.push(ContentFreeRow {
                model: k.model.clone(),
                instrument: k.instrument.clone(),
                label_style: k.label_style.name().into(),
                label_binding: format!("{:?}", k.label_binding).to_lowercase(),
                option_order: k
                    .option_order
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                position: pos + 1,
                label: label.clone(),
                value: *value,
                probability: *p,
                n: cf.n,
            });
        }
    }
    out
}

/// The label-style effect per model x instrument x read-out, over error-free one-item
/// trials, where the run used both label styles.
pub fn label_style_effects(data: &RunData) -> Vec<LabelStyleEffect> {
    type Key = (String, String, Readout);
    let mut styles: BTreeMap<Key, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
    for t in data.trials.iter().filter(|t| t.error.is_none()) {
        let Question::Item {
            instrument,
            item: Some(_),
            label_style,
            ..
        } = &t.question
        else {
            continue;
        };
        for readout in Readout::ALL {
            // The value as answered: a label style that pulls answers up pulls every
            // item up, forward or reverse keyed.
            let value = match readout {
                Readout::Probability => t.choice.as_ref().map(|c| c.expected),
                Readout::Calibrated => t.calibrated.as_ref().map(|c| c.expected),
                Readout::Generated => t.generate.as_ref().and_then(|g| g.value),
            };
            if let Some(v) = value.filter(|v| v.is_finite()) {
                styles
                    .entry((t.model.clone(), instrument.clone(), readout))
                    .or_default()
                    .entry(label_style.name())
                    .or_default()
                    .push(v);
            }
        }
    }
    let mean = crate::stats::mean;
    styles
        .into_iter()
        .filter_map(|((model, instrument, readout), by_style)| {
            let (l, d) = (by_style.get("letters")?, by_style.get("digits")?);
            Some(LabelStyleEffect {
                model,
                instrument,
                readout,
                letters_mean: mean(l),
                digits_mean: mean(d),
                difference: mean(l) - mean(d),
                n_letters: l.len(),
                n_digits: d.len(),
            })
        })
        .collect()
}
