//! Assembling conversations: the group prefix (system prompt, induction, regulation, with
//! acknowledgements or generated replies between texts) and the question turn.

use super::plan::{Group, Question};
use crate::chat::Message;
use crate::results::LabelBinding;
use crate::scenario::study::{
    Acknowledgement, Condition, ConditionSetup, LabelStyle, Order, Perspective,
};
use crate::scenario::{Instrument, Library, Response, Study, Turn};

/// One step of building a prefix: a fixed message, or a reply the model must generate.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Message(Message),
    Generate { max_tokens: usize },
}

/// The steps of a group's prefix, in conversation order: the condition's (None: the
/// content-free prompts', which hold the study's system prompt only) system prompt,
/// then its induction and regulation in its order, each text followed by the
/// condition's acknowledgement.
pub fn prefix_steps(
    study: &Study,
    lib: &Library,
    condition: Option<&Condition>,
    group: &Group,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let index = group.system_prompt_variant.unwrap_or(group.repetition);
    let system = match condition {
        Some(c) => study.system_prompt_in(c, index),
        None => study.system_prompt_for(index),
    };
    if let Some(s) = system {
        steps.push(Step::Message(Message::system(s.to_string())));
    }
    let order = condition.map_or(Order::InductionFirst, |c| c.order);
    let acknowledgement = condition.map_or(&study.acknowledgement, |c| study.acknowledgement_in(c));
    let induction = group
        .induction
        .as_ref()
        .zip(group.induction_variant.as_ref())
        .map(|(e, v)| {
            lib.inductions[e]
                .variants
                .iter()
                .find(|x| &x.id == v)
                .expect("planned variant exists")
        });
    let regulation = group
        .regulation
        .as_ref()
        .zip(group.regulation_variant.as_ref())
        .map(|(s, v)| {
            lib.regulations[s]
                .variants
                .iter()
                .find(|x| &x.id == v)
                .expect("planned variant exists")
        });
    let blocks = match order {
        Order::InductionFirst => [induction, regulation],
        Order::RegulationFirst => [regulation, induction],
    };
    for variant in blocks.into_iter().flatten() {
        for turn in &variant.turns {
            steps.push(match turn {
                Turn::User(t) => Step::Message(Message::user(t.clone())),
                Turn::Assistant(t) => Step::Message(Message::assistant(t.clone())),
                Turn::AssistantGenerated { max_tokens } => Step::Generate {
                    max_tokens: *max_tokens,
                },
            });
        }
        if variant.is_text {
            match acknowledgement {
                Acknowledgement::Fixed { text } => {
                    steps.push(Step::Message(Message::assistant(text.clone())))
                }
                Acknowledgement::Generated { max_tokens } => steps.push(Step::Generate {
                    max_tokens: *max_tokens,
                }),
                Acknowledgement::None => {}
            }
        }
    }
    steps
}

/// The conversation as the chat template receives it. With no acknowledgement (the
/// condition's), a text and the user turn after it are joined into one user message
/// (templates that require alternating roles accept that); otherwise the messages as
/// they are.
pub fn for_template(acknowledgement: &Acknowledgement, messages: &[Message]) -> Vec<Message> {
    if *acknowledgement == Acknowledgement::None {
        alternating(messages)
    } else {
        messages.to_vec()
    }
}

/// Consecutive user messages joined into one.
fn alternating(messages: &[Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        match out.last_mut() {
            Some(last) if last.role == m.role && m.role == crate::chat::Role::User => {
                last.content = format!("{}\n\n{}", last.content, m.content);
            }
            _ => out.push(m.clone()),
        }
    }
    out
}

/// The label shown for option `opt` at display position `pos`: the file's own labels
/// for digits (so a 0-3 scale keeps 0-3), A, B, C ... for letters; taken by position or
/// by option as the binding says.
pub fn display_label(
    style: LabelStyle,
    binding: LabelBinding,
    file_labels: &[String],
    pos: usize,
    opt: usize,
) -> String {
    let at = match binding {
        LabelBinding::Position => pos,
        LabelBinding::Option => opt,
    };
    match style {
        LabelStyle::Digits => file_labels[at].clone(),
        LabelStyle::Letters => ((b'A' + at as u8) as char).to_string(),
    }
}

/// What the question turn says, and the labels (in display order) the answer may use.
pub struct QuestionText {
    pub text: String,
    /// For option responses: (display label, index into the instrument's options).
    pub labels: Vec<(String, usize)>,
}

/// The question turn of `question` in a condition set up as `setup`: its expectancy
/// sentence first, and the items about the person in the text where its perspective
/// says so.
pub fn question_text(lib: &Library, question: &Question, setup: &ConditionSetup) -> QuestionText {
    let mut q = question_turn(lib, question, setup.perspective);
    if let Some(e) = &setup.expectancy {
        q.text = format!("{e}\n\n{}", q.text);
    }
    q
}

fn question_turn(lib: &Library, question: &Question, perspective: Perspective) -> QuestionText {
    match question {
        Question::Completion { task, stem, .. } => {
            let t = &lib.tasks[task];
            let s = t
                .stems
                .iter()
                .find(|s| &s.id == stem)
                .expect("planned stem exists");
            QuestionText {
                text: format!("{}\n\n{}", t.instruction, s.text),
                labels: vec![],
            }
        }
        Question::Item {
            instrument,
            item,
            label_style,
            option_order,
            label_binding,
        } => {
            let ins = &lib.instruments[instrument];
            let statement = item.as_ref().map(|id| {
                let it = ins
                    .items
                    .iter()
                    .find(|i| &i.id == id)
                    .expect("planned item exists");
                item_wording(it, perspective)
            });
            rating_question(
                ins,
                statement,
                perspective,
                *label_style,
                option_order,
                *label_binding,
            )
        }
        Question::ContentFree {
            instrument,
            content,
            label_style,
            option_order,
            label_binding,
        } => rating_question(
            &lib.instruments[instrument],
            Some(content),
            Perspective::Own,
            *label_style,
            option_order,
            *label_binding,
        ),
    }
}

/// An instrument's question turn: one statement (an item's, or a content-free one), or
/// with `statement = None` every item in one turn.
fn rating_question(
    ins: &Instrument,
    statement: Option<&str>,
    perspective: Perspective,
    label_style: LabelStyle,
    option_order: &[usize],
    label_binding: LabelBinding,
) -> QuestionText {
    let mut labels = Vec::new();
    let (scale, answer) = match &ins.response {
        Response::Options(opts) => {
            let file_labels: Vec<String> = opts.iter().map(|o| o.label.clone()).collect();
            let mut lines = Vec::new();
            for (pos, &opt) in option_order.iter().enumerate() {
                let label = display_label(label_style, label_binding, &file_labels, pos, opt);
                lines.push(format!("{label} = {}", opts[opt].text));
                labels.push((label, opt));
            }
            let kind = match label_style {
                LabelStyle::Digits => "number",
                LabelStyle::Letters => "letter",
            };
            (lines.join("\n"), kind)
        }
        Response::Numeric { min, max, .. } => (
            format!("Use any whole number from {min} to {max}."),
            "number",
        ),
    };
    // Study::load allows the other perspective only where the file words it.
    let instruction = match (perspective, &ins.other_instruction) {
        (Perspective::Other, Some(other)) => other,
        _ => &ins.instruction,
    };
    let text = match statement {
        Some(statement) => {
            format!("{instruction}\n\n{statement}\n\n{scale}\n\nAnswer with only the {answer}.")
        }
        None => {
            let list: Vec<String> = ins
                .items
                .iter()
                .enumerate()
                .map(|(i, it)| format!("{}. {}", i + 1, item_wording(it, perspective)))
                .collect();
            format!(
                "{instruction}\n\n{scale}\n\n{}\n\nAnswer every statement on its own line, in order, as \"statement number: {answer}\".",
                list.join("\n")
            )
        }
    };
    QuestionText { text, labels }
}

/// An item's statement from `perspective`.
fn item_wording(item: &crate::scenario::Item, perspective: Perspective) -> &str {
    match (perspective, &item.other_text) {
        (Perspective::Other, Some(other)) => other,
        _ => &item.text,
    }
}

/// The follow-up turn after an unparseable answer.
pub fn reask_text(lib: &Library, question: &Question, labels: &[(String, usize)]) -> String {
    match question {
        Question::Item { instrument, .. } | Question::ContentFree { instrument, .. } => {
            match &lib.instruments[instrument].response {
                Response::Numeric { min, max, .. } => {
                    format!("Please answer with only a single whole number from {min} to {max}.")
                }
                Response::Options(_) => format!(
                    "Please answer with only one of: {}.",
                    labels
                        .iter()
                        .map(|(l, _)| l.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Question::Completion { .. } => "Please complete the sentence.".to_string(),
    }
}
