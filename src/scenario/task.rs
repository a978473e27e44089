//! Sentence-completion tasks (`scenarios/tasks/*.toml`): ambiguous stems the model
//! completes, for the negativity-bias read-out.

use super::{info, invalid, read_toml, FileInfo};
use crate::error::Result;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSpec {
    id: String,
    version: u32,
    description: String,
    source: String,
    licence: String,
    instruction: String,
    judge: Option<JudgeSpec>,
    stem: Vec<StemSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeSpec {
    instruction: String,
    options: Vec<JudgeOptionSpec>,
    /// "listed" (default: the file's order only, as runs before 2026-11-24) or "both".
    option_order: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeOptionSpec {
    label: String,
    value: f64,
}

/// The model-as-judge read-out of a completion's valence: a fresh conversation asks
/// the model to classify the text (`{text}` in the instruction is replaced by it, and
/// `{options}` by the option labels in the order asked), and the option probabilities
/// at the answer position give an expected valence.
#[derive(Debug, Clone, PartialEq)]
pub struct Judge {
    pub instruction: String,
    /// (label, valence value), e.g. ("negative", -1).
    pub options: Vec<(String, f64)>,
    /// Ask in the listed and the reversed order and average, so a judge that takes
    /// the first option it reads cannot tilt the valence.
    pub both_orders: bool,
}

impl Judge {
    /// The orders the judge is asked in, as indices into `options`.
    pub fn orders(&self) -> Vec<Vec<usize>> {
        let listed: Vec<usize> = (0..self.options.len()).collect();
        if self.both_orders {
            let reversed = listed.iter().rev().copied().collect();
            vec![listed, reversed]
        } else {
            vec![listed]
        }
    }

    /// The judge turn for `text` with the options named in `order`
    /// ("negative, neutral or positive").
    pub fn prompt(&self, text: &str, order: &[usize]) -> String {
        let labels: Vec<&str> = order.iter().map(|&i| self.options[i].0.as_str()).collect();
        let named = match labels.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => labels.join(""),
        };
        self.instruction
            .replace("{options}", &named)
            .replace("{text}", text)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StemSpec {
    id: String,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stem {
    pub id: String,
    pub text: String,
}

impl Stem {
    /// Whether `completion` continues this stem: it repeats the stem's words and adds
    /// at least one, or it does not repeat them and reads as the rest of a sentence
    /// (starts in lower case, or with the pronoun "I"). A reply that starts a sentence
    /// of its own ("Sure! ...", "The sentence is ...") or only repeats the stem does not.
    pub fn continued_by(&self, completion: &str) -> bool {
        let words = |t: &str| -> Vec<String> {
            t.split_whitespace()
                .map(|w| {
                    w.chars()
                        .filter(|c| c.is_alphanumeric() || *c == '\'')
                        .flat_map(char::to_lowercase)
                        .collect::<String>()
                })
                .filter(|w| !w.is_empty())
                .collect()
        };
        let (stem, text) = (words(&self.text), words(completion));
        let Some(first) = completion.split_whitespace().next() else {
            return false;
        };
        let repeats = text.iter().zip(&stem).all(|(a, b)| a == b);
        if repeats {
            return text.len() > stem.len();
        }
        let first = first.trim_start_matches(|c: char| !c.is_alphanumeric());
        first.starts_with(char::is_lowercase) || first == "I" || first.starts_with("I'")
    }
}

#[derive(Debug, Clone)]
pub struct StemTask {
    pub info: FileInfo,
    pub description: String,
    pub instruction: String,
    pub judge: Option<Judge>,
    pub stems: Vec<Stem>,
}

impl StemTask {
    pub fn load(path: &Path) -> Result<Self> {
        let (spec, text): (TaskSpec, String) = read_toml(path)?;
        let mut stems: Vec<Stem> = Vec::new();
        for s in spec.stem {
            if stems.iter().any(|x| x.id == s.id) {
                return Err(invalid(
                    path,
                    &text,
                    &format!("\"{}\"", s.id),
                    format!("stem id '{}' is used twice", s.id),
                ));
            }
            stems.push(Stem {
                id: s.id,
                text: s.text,
            });
        }
        let judge = match spec.judge {
            None => None,
            Some(j) => {
                if !j.instruction.contains("{text}") {
                    return Err(invalid(
                        path,
                        &text,
                        "[judge]",
                        "the judge instruction must contain {text}, where the completion goes"
                            .to_string(),
                    ));
                }
                if j.options.len() < 2 {
                    return Err(invalid(
                        path,
                        &text,
                        "[judge]",
                        "the judge needs at least two options".to_string(),
                    ));
                }
                let both_orders = match j.option_order.as_deref() {
                    None | Some("listed") => false,
                    Some("both") => true,
                    Some(o) => {
                        return Err(invalid(
                            path,
                            &text,
                            "option_order",
                            format!(
                                "the judge's option_order is '{o}'; use \"both\" (ask in the \
                                 listed and the reversed order and average) or \"listed\""
                            ),
                        ))
                    }
                };
                if both_orders && !j.instruction.contains("{options}") {
                    return Err(invalid(
                        path,
                        &text,
                        "option_order",
                        "option_order = \"both\" needs {options} in the judge instruction, \
                         where the labels are named in the order asked"
                            .to_string(),
                    ));
                }
                Some(Judge {
                    instruction: j.instruction,
                    options: j.options.into_iter().map(|o| (o.label, o.value)).collect(),
                    both_orders,
                })
            }
        };
        Ok(StemTask {
            info: info(
                path,
                &text,
                &spec.id,
                spec.version,
                &spec.source,
                &spec.licence,
            )?,
            description: spec.description,
            instruction: spec.instruction,
            judge,
            stems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_continues_the_stem_or_not() {
        let stem = Stem {
            id: "s".into(),
            text: "When I think about tomorrow,".into(),
        };
        for yes in [
            "When I think about tomorrow, I feel calm.",
            "when i think about tomorrow, nothing.",
            "I feel calm.",
            "I'm hopeful.",
            "everything seems fine.",
            "\"everything seems fine.\"",
        ] {
            assert!(stem.continued_by(yes), "{yes}");
        }
        for no in [
            "",
            "When I think about tomorrow,",
            "When I think",
            "Sure! Here is the sentence.",
            "The sentence is complete.",
        ] {
            assert!(!stem.continued_by(no), "{no}");
        }
    }

    #[test]
    fn the_judge_names_its_options_in_the_order_asked() {
        let judge = Judge {
            instruction: "\"{text}\": {options}?".into(),
            options: vec![
                ("negative".into(), -1.0),
                ("neutral".into(), 0.0),
                ("positive".into(), 1.0),
            ],
            both_orders: true,
        };
        let orders = judge.orders();
        assert_eq!(orders, vec![vec![0, 1, 2], vec![2, 1, 0]]);
        assert_eq!(
            judge.prompt("x", &orders[0]),
            "\"x\": negative, neutral or positive?"
        );
        assert_eq!(
            judge.prompt("x", &orders[1]),
            "\"x\": positive, neutral or negative?"
        );
        let listed = Judge {
            both_orders: false,
            ..judge
        };
        assert_eq!(listed.orders(), vec![vec![0, 1, 2]]);
    }
}
