//! The report's text: sections of prose, tables and figures, built once from an analysis
//! and rendered both as `report.html` (self-contained, inline SVG, every string escaped)
//! and as `summary.md`.

use super::analysis::{interval_n, Analysis, Arm, EQUIVALENCE_LEVEL};
use super::blocks::{
    estimate, f, interval, p, shown_ci, table, validity_mark, Block, Section, FAILED,
};
use super::confirmatory::Role;
use super::lexicon;
use super::load::RunData;
use super::plots::{induced_emotions, Figure};
use super::scores::Readout;
use crate::measures::Verdict;
use crate::scenario::study::Acknowledgement;
use std::collections::{BTreeMap, BTreeSet};

/// The report's first section: the validity gate's verdict per model x instrument x
/// read-out, why, and every check with its value and threshold.
fn gate_section(a: &Analysis) -> Section {
    let mut blocks = Vec::new();
    let failed = a.gate.iter().filter(|g| g.verdict == Verdict::Fail).count();
    let warned = a.gate.iter().filter(|g| g.verdict == Verdict::Warn).count();
    blocks.push(Block::Text(format!(
        "{failed} of {} instrument read-outs FAIL the validity gate and {warned} warn. A failing \
         read-out did not measure the model (its answers follow option position, miss the \
         options, or do not hang together as a scale): its numbers below are marked \
         \"{FAILED}\" and greyed, and they are not evidence for or against any effect. \
         Warnings mark checks that were borderline or could not be estimated from this \
         design. How to read the gate: docs/guide/report.md, \"Reading the validity gate\".",
        a.gate.len()
    )));
    blocks.push(table(
        "Validity gate (tables/validity.csv)",
        &["model", "instrument", "read-out", "verdict", "why"],
        a.gate
            .iter()
            .map(|g| {
                vec![
                    g.model.clone(),
                    g.instrument.clone(),
                    g.readout.name().into(),
                    validity_mark(g.verdict),
                    if g.reasons.is_empty() {
                        "every check passed".into()
                    } else {
                        g.reasons.join("; ")
                    },
                ]
            })
            .collect(),
    ));
    blocks.push(table(
        "Validity checks",
        &[
            "model",
            "instrument",
            "read-out",
            "check",
            "value",
            "threshold",
            "verdict",
            "n",
        ],
        a.validity
            .iter()
            .map(|c| {
                vec![
                    c.model.clone(),
                    c.instrument.clone(),
                    c.readout.name().into(),
                    c.check.clone(),
                    c.value.map(|v| f(v, 2)).unwrap_or_else(|| "–".into()),
                    c.threshold.clone(),
                    c.verdict.name().into(),
                    c.n.to_string(),
                ]
            })
            .collect(),
    ));
    Section {
        title: "Validity gate".into(),
        blocks,
    }
}

/// What the answer format alone does: the content-free distributions the calibrated
/// read-out divides out, and the display-position share before and after.
fn format_bias_section(data: &RunData, a: &Analysis) -> Option<Section> {
    let cf = super::bias::content_free_rows(data);
    let styles = super::bias::label_style_effects(data);
    if cf.is_empty() {
        return None;
    }
    let mut blocks = vec![Block::Text(
        "Contextual calibration (Zhao et al. 2021): every answer format (instrument x label \
         style x option order) was also asked with content-free statements (\"N/A\", an empty \
         statement, \"[MASK]\") in a conversation holding only the system prompt. The \
         distribution those get is what the format alone makes the model answer; the \
         calibrated read-out divides it out of each item's option probabilities and \
         renormalises. Calibration removes a constant format bias; it cannot make a model \
         that does not read the question answer it, so the calibrated read-out passes \
         through the same validity gate. Position 1 is the option shown first; with k \
         options and no position bias each position gets 1/k on average. Full tables: \
         tables/calibration.csv, tables/position_bias.csv, tables/label_style_effect.csv."
            .into(),
    )];
    // (model, instrument) -> mean content-free probability at position 1, over arrangements
    let mut first: BTreeMap<(String, String), (f64, usize, usize)> = BTreeMap::new();
    for r in cf.iter().filter(|r| r.position == 1) {
        let e = first
            .entry((r.model.clone(), r.instrument.clone()))
            .or_insert((0.0, 0, 0));
        e.0 += r.probability;
        e.1 += 1;
    }
    for r in &cf {
        if let Some(e) = first.get_mut(&(r.model.clone(), r.instrument.clone())) {
            e.2 = e.2.max(r.position);
        }
    }
    let at = |model: &str, ins: &str, readout: Readout| {
        a.position_bias
            .iter()
            .find(|b| {
                b.model == model && b.instrument == ins && b.readout == readout && b.position == 1
            })
            .map(|b| {
                format!(
                    "{} (first in {:.0}%)",
                    f(b.mean_probability, 2),
                    100.0 * b.argmax_share
                )
            })
            .unwrap_or_else(|| "–".into())
    };
    let style = |model: &str, ins: &str, readout: Readout| {
        styles
            .iter()
            .find(|s| s.model == model && s.instrument == ins && s.readout == readout)
            .map(|s| f(s.difference, 2))
            .unwrap_or_else(|| "–".into())
    };
    blocks.push(table(
        "Display position 1: content-free probability and mean item probability before and after calibration",
        &[
            "model",
            "instrument",
            "options",
            "arrangements",
            "content-free P(position 1)",
            "items P(position 1)",
            "calibrated P(position 1)",
            "letters - digits (probability)",
            "letters - digits (calibrated)",
        ],
        first
            .iter()
            .map(|((model, ins), (sum, n, k))| {
                vec![
                    model.clone(),
                    ins.clone(),
                    k.to_string(),
                    n.to_string(),
                    f(sum / *n as f64, 2),
                    at(model, ins, Readout::Probability),
                    at(model, ins, Readout::Calibrated),
                    style(model, ins, Readout::Probability),
                    style(model, ins, Readout::Calibrated),
                ]
            })
            .collect(),
    ));
    Some(Section {
        title: "Answer-format bias and calibration".into(),
        blocks,
    })
}

/// The design's declared questions answered, one row per question x model x read-out,
/// right after the gate: what a reader of the paper wants first.
fn questions_section(a: &Analysis) -> Option<Section> {
    if a.questions.is_empty() {
        return None;
    }
    let rows = a
        .questions
        .iter()
        .map(|q| {
            vec![
                q.contrast.question.clone(),
                q.model.clone(),
                q.readout.name().into(),
                validity_mark(q.validity),
                q.contrast.kind.clone(),
                format!(
                    "{} ({}, {})",
                    q.contrast.expression(),
                    q.contrast.instrument,
                    q.contrast.subscale
                ),
                match q.constant {
                    None => format!("{} vs {}", q.n_a, q.n_b),
                    Some(Arm::A) => format!("1 (constant) vs {}", q.n_b),
                    Some(Arm::B) => format!("{} vs 1 (constant)", q.n_a),
                },
                estimate(&q.difference, interval_n(q.n_a, q.n_b, q.constant), 2),
                format!("{} {}", f(q.g.g, 2), interval(q.g.ci, 2)),
                p(q.welch.p),
                format!("{} ({})", p(q.p_holm), q.contrast.family),
                q.paired
                    .map(|t| format!("{} ({})", p(t.p), t.n))
                    .unwrap_or_else(|| "–".into()),
                f(q.mde_d, 2),
                q.repetitions_needed
                    .map(|r| format!("{r:.0}"))
                    .unwrap_or_else(|| "–".into()),
                match (q.tost, q.equivalence()) {
                    (Some(t), Some(e)) => format!(
                        "{} (TOST p {}, 90% CI {} inside ±{}?)",
                        e.name(),
                        p(t.p),
                        interval(t.ci90, 2),
                        t.margin
                    ),
                    _ => "–".into(),
                },
            ]
        })
        .collect();
    let decisions = decisions_table(a);
    let confounds: Vec<Vec<String>> = {
        let mut seen = BTreeSet::new();
        a.questions
            .iter()
            .filter_map(|q| {
                let c = q.contrast.confound.as_ref()?;
                seen.insert(q.contrast.question.clone())
                    .then(|| vec![q.contrast.question.clone(), c.clone()])
            })
            .collect()
    };
    Some(Section {
        title: "Questions".into(),
        blocks: vec![
            Block::Text(
                "The questions the study declares ([[contrast]] in its file), answered per model \
                 and read-out (tables/questions.csv). Causal: against a control condition that \
                 also reads a text; descriptive: against the baseline, which reads no text, so \
                 any text at all may explain a difference. MDE: the smallest |d| this design \
                 detects with 80% power at two-sided alpha 0.05; n/arm: repetitions per \
                 condition needed to detect the observed |g| with 80% power (normal \
                 approximation). A row marked FAIL rests on an instrument that failed the \
                 validity gate and answers nothing. A difference of differences, (a − b) − \
                 (c − d), is computed per repetition (the four cells share its seed, system \
                 prompt and stimuli) and tested with a one-sample t over repetitions; its g \
                 is d_z. Equivalence questions give two one-sided tests against the declared \
                 margin in raw scale units: equivalent when the 90% CI lies inside it, \
                 different when not and the difference test rejects 0, else inconclusive. \
                 The second table is the confirmatory reading. A row is confirmatory when \
                 its read-out is the study's primary_readout and the question is not marked \
                 exploratory; Holm's correction runs over those rows only, one family per \
                 model. Each arm's n rests on the distinct stimuli shown; where vignettes, \
                 system prompts or regulation texts vary, the question is decided by a \
                 crossed random-effects model that treats them as a sample (Satterthwaite \
                 df), so a new vignette or prompt is part of the error, not only a new \
                 conversation. The estimate is in raw scale units, POMP is it as a \
                 percentage of the scale's range; g above stays as a secondary effect size \
                 because its SD moves with the design's perturbations. p tests the declared \
                 hypothesis: one-sided in a declared direction, TOST for an equivalence \
                 question. With a SESOI, two one-sided tests against ±SESOI say whether \
                 the effect is smaller than the smallest one of interest."
                    .into(),
            ),
            table(
                "Answers to the declared questions",
                &[
                    "question",
                    "model",
                    "read-out",
                    "validity",
                    "kind",
                    "contrast",
                    "n",
                    "difference [95% CI]",
                    "Hedges' g [95% CI]",
                    "Welch p",
                    "Holm p (family)",
                    "paired by repetition p (pairs)",
                    "MDE d",
                    "n/arm for g",
                    "equivalence",
                ],
                rows,
            ),
            decisions,
        ]
        .into_iter()
        .chain((!confounds.is_empty()).then(|| {
            table(
                "Confounds the design leaves open, beside the questions they affect",
                &["question", "confound"],
                confounds,
            )
        }))
        .collect(),
    })
}

/// Each question's confirmatory reading: its role, the distinct stimuli each arm rests
/// on, the test that decides it (stimuli as a sample where they vary), the raw estimate
/// and POMP, the p of the declared hypothesis, Holm over the one confirmatory family,
/// TOST against the SESOI and the verdict.
fn decisions_table(a: &Analysis) -> Block {
    let rows = a
        .questions
        .iter()
        .map(|q| {
            let d = &q.decision;
            let c = &q.contrast;
            let hypothesis = if c.equivalence_margin.is_some() {
                format!(
                    "equivalent within ±{}",
                    f(c.equivalence_margin.unwrap_or(f64::NAN), 2)
                )
            } else {
                c.direction.name().to_string()
            };
            vec![
                c.question.clone(),
                q.model.clone(),
                q.readout.name().into(),
                d.role.name().into(),
                hypothesis,
                format!("{} | {}", q.stimuli_a.describe(), q.stimuli_b.describe()),
                d.decisive.test.into(),
                format!(
                    "{} {} (df {})",
                    f(d.decisive.estimate, 2),
                    interval(d.ci95, 2),
                    f(d.decisive.df, 1)
                ),
                d.pomp
                    .map(|(x, ci)| format!("{}% {}", f(x, 1), interval(ci, 1)))
                    .unwrap_or_else(|| "–".into()),
                p(d.p),
                match d.role {
                    Role::Confirmatory => p(d.p_holm),
                    Role::Exploratory => "–".into(),
                },
                match (c.sesoi, d.sesoi) {
                    (Some(m), Some(t)) => format!("±{} (TOST p {})", f(m, 2), p(t.p)),
                    _ => "none declared".into(),
                },
                // A failed instrument answers nothing, whatever its test says.
                match q.validity {
                    Verdict::Fail => format!(
                        "not evidence (gate failed; the test reads {})",
                        d.verdict(c)
                    ),
                    _ => d.verdict(c).into(),
                },
            ]
        })
        .collect();
    let primary = a.primary_readout.as_deref().unwrap_or("none declared");
    table(
        &format!(
            "How each question is decided (primary read-out: {primary}; only confirmatory \
             rows form the corrected family)"
        ),
        &[
            "question",
            "model",
            "read-out",
            "role",
            "hypothesis",
            "distinct stimuli a | b",
            "decided by",
            "estimate, raw units [95% CI]",
            "POMP [95% CI]",
            "p (hypothesis)",
            "Holm p (confirmatory family)",
            "SESOI (TOST p)",
            "verdict",
        ],
        rows,
    )
}

/// Builds the sections in the order a paper reads: whether anything was measured first,
/// then the results, then the supporting material. Figure blocks refer to `figures` by
/// index; `dose` is the steered cells (`internal_states::dose_cells`), computed once by
/// the caller.
pub fn sections(
    data: &RunData,
    a: &Analysis,
    dose: &[super::internal_states::DoseCell],
    specific: &[super::specificity::Specificity],
    figures: &[Figure],
) -> Vec<Section> {
    let fig = |id: &str| figures.iter().position(|f| f.id == id);
    let mut out = vec![gate_section(a)];
    out.extend(questions_section(a));
    // Whether the questions just answered are the ones preregistered.
    out.extend(super::preregistered::section(
        &super::preregistered::comparisons(data),
    ));
    out.push(design_section(data, a));
    out.extend(format_bias_section(data, a));
    out.extend(
        induced_emotions(a)
            .iter()
            .map(|e| emotion_section(a, e, &fig)),
    );
    let profile_figures: Vec<String> = figures
        .iter()
        .filter(|f| f.id.starts_with("emotion-profile-"))
        .map(|f| f.id.clone())
        .collect();
    out.extend(super::specificity::section(
        specific,
        &fig,
        &profile_figures,
    ));
    out.push(regulation_section(a, &fig));
    out.extend(negativity_section(a, &fig));
    out.extend(super::internal_states::sections(data, a, dose, &fig));
    out.push(quality_section(a));
    out.push(methods_section(a));
    out.push(provenance_section(data));
    out
}

/// The study, its conditions and the conversation set-up each model saw.
fn design_section(data: &RunData, a: &Analysis) -> Section {
    let mut design = vec![];
    for h in &data.headers {
        design.push(Block::Text(format!(
            "Study '{}' (version {}, {}), temperature {}, {} repetitions, seed {}. {}",
            h.study.id,
            h.study.version,
            h.study_path,
            h.study.temperature,
            h.repetitions,
            h.seed,
            h.study.description
        )));
    }
    design.push(table(
        "Conditions",
        &["condition", "induction", "regulation", "order"],
        a.conditions
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.induction.clone().unwrap_or_else(|| "–".into()),
                    c.regulation.clone().unwrap_or_else(|| "–".into()),
                    if c.regulation_first {
                        "regulation first"
                    } else {
                        "induction first"
                    }
                    .into(),
                ]
            })
            .collect(),
    ));
    let mut setup = Vec::new();
    for h in &data.headers {
        let st = &h.study;
        let system = if !st.system_prompts.is_empty() {
            format!(
                "{} variants by repetition (repetition r uses r mod {}): {}",
                st.system_prompts.len(),
                st.system_prompts.len(),
                st.system_prompts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("[{i}] {p}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        } else if let Some(p) = &st.system_prompt {
            p.clone()
        } else if st.acknowledgement.is_some() {
            "none given: the chat template's default (see its rendering below)".into()
        } else {
            "not recorded (run made before it was)".into()
        };
        setup.push(vec![format!("{}: system prompt", st.id), system]);
        let ack = match &st.acknowledgement {
            Some(Acknowledgement::Fixed { text }) => format!("fixed reply: \"{text}\""),
            Some(Acknowledgement::Generated { max_tokens }) => {
                format!("the model's own reply (up to {max_tokens} tokens)")
            }
            Some(Acknowledgement::None) => {
                "none (the text and the next turn are one message)".into()
            }
            None => "not recorded (run made before it was)".into(),
        };
        setup.push(vec![format!("{}: after each text", st.id), ack]);
    }
    let mut seen_models = BTreeSet::new();
    for m in data.headers.iter().flat_map(|h| &h.models) {
        if let Some(example) = &m.template_example {
            if seen_models.insert(m.label.clone()) {
                setup.push(vec![
                    format!("{}: chat template, one user turn", m.label),
                    example.clone(),
                ]);
            }
        }
    }
    design.push(table(
        "Conversation set-up (the template rendering shows any system prompt the template adds by default)",
        &["what", "value"],
        setup,
    ));
    design.extend(condition_setup_table(data));
    design.extend(deviations_table(data));
    Section {
        title: "Design".into(),
        blocks: design,
    }
}

/// The conditions that set their own conversation set-up (role, acknowledgement,
/// expectancy, perspective), with what they set.
fn condition_setup_table(data: &RunData) -> Option<Block> {
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for c in data.headers.iter().flat_map(|h| &h.study.conditions) {
        if c.setup.is_default() || !seen.insert(c.name.clone()) {
            continue;
        }
        let s = &c.setup;
        rows.push(vec![
            c.name.clone(),
            if s.system_prompts.is_empty() {
                "the study's".into()
            } else {
                s.system_prompts.join(" | ")
            },
            match &s.acknowledgement {
                None => "the study's".into(),
                Some(Acknowledgement::Fixed { text }) => format!("fixed: \"{text}\""),
                Some(Acknowledgement::Generated { max_tokens }) => {
                    format!("generated (up to {max_tokens} tokens)")
                }
                Some(Acknowledgement::None) => "none".into(),
            },
            s.expectancy.clone().unwrap_or_else(|| "–".into()),
            s.perspective.name().into(),
        ]);
    }
    (!rows.is_empty()).then(|| {
        table(
            "Conditions with their own conversation set-up (everything else as the study sets it)",
            &[
                "condition",
                "system prompt",
                "after each text",
                "expectancy sentence before each question",
                "items about",
            ],
            rows,
        )
    })
}

/// How the design differs from the published study it follows, as its file declares
/// (`[[deviation]]`; tables/deviations.csv).
fn deviations_table(data: &RunData) -> Option<Block> {
    let mut rows = Vec::new();
    for h in &data.headers {
        for d in &h.study.deviations {
            let row = vec![
                h.study.id.clone(),
                d.aspect.clone(),
                d.source.clone(),
                d.here.clone(),
                d.why.clone(),
                if d.changes_interpretation {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            ];
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
    }
    (!rows.is_empty()).then(|| {
        table(
            "Deviations from the published design (compare results with the source only after allowing for those marked yes)",
            &["study", "aspect", "source", "here", "why", "changes interpretation"],
            rows,
        )
    })
}

/// Which runs, models and scenario files the report was made from.
fn provenance_section(data: &RunData) -> Section {
    let mut prov = vec![table(
        "Runs",
        &[
            "directory",
            "status",
            "started",
            "ended",
            "affectbench",
            "git revision",
            "device",
            "threads",
            "engine",
            "trials planned",
        ],
        data.headers
            .iter()
            .zip(&data.dirs)
            .map(|(h, d)| {
                let e = &h.engine;
                let engine = match (&e.weights, &e.int8_kernel, &e.ops) {
                    _ if e.guarantee.as_deref() == Some("server") => format!(
                        "server models, at most {} requests in flight; no bit-for-bit promise",
                        e.threads
                    ),
                    (Some(w), Some(k), Some(o)) => format!(
                        "{w} weights, {k} int8 kernel, {o} ops, batch {}",
                        e.batch_size
                            .map(|b| b.to_string())
                            .unwrap_or_else(|| "–".into())
                    ),
                    _ => "not recorded (schema 1)".to_string(),
                };
                vec![
                    d.display().to_string(),
                    h.status.to_string(),
                    h.started.clone(),
                    h.ended.clone().unwrap_or_default(),
                    h.affectbench_version.clone(),
                    h.git_revision.clone(),
                    e.device.clone(),
                    e.threads.to_string(),
                    engine,
                    h.trials_planned.to_string(),
                ]
            })
            .collect(),
    )];
    prov.push(table(
        "Models",
        &[
            "model",
            "architecture",
            "weights sha256",
            "tokenizer sha256",
            "chat template sha256",
        ],
        data.headers
            .iter()
            .flat_map(|h| h.models.iter())
            .map(|m| {
                vec![
                    m.label.clone(),
                    m.architecture.clone(),
                    m.sha256.clone(),
                    m.tokenizer_sha256.clone(),
                    m.chat_template_sha256.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    ));
    let servers: Vec<Vec<String>> = data
        .headers
        .iter()
        .flat_map(|h| h.models.iter())
        .filter_map(|m| m.server.as_ref().map(|s| (m, s)))
        .map(|(m, s)| {
            vec![
                m.label.clone(),
                s.describe(),
                s.tokenizer_from.clone(),
                s.sampling.to_string(),
                s.models_entry.to_string(),
            ]
        })
        .collect();
    if !servers.is_empty() {
        prov.push(table(
            "Server models (reproducibility: `server`, no bit-for-bit promise: a server batches requests as they come, so the same request may give other bits; vLLM's batch-invariant mode or SGLang's deterministic inference would make its numbers repeat)",
            &[
                "model",
                "endpoint, mode, prompts, option read-out",
                "tokenizer and template from",
                "sampling fields sent",
                "the server's /models entry",
            ],
            servers,
        ));
    }
    prov.push(table(
        "Scenario files",
        &["id", "version", "sha256", "source", "licence"],
        data.headers
            .iter()
            .flat_map(|h| h.scenario_files.iter())
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.version.to_string(),
                    s.sha256.clone(),
                    s.source.clone(),
                    s.licence.clone(),
                ]
            })
            .collect(),
    ));
    if !data.notes.is_empty() {
        prov.push(Block::List(data.notes.clone()));
    }
    Section {
        title: "Provenance".into(),
        blocks: prov,
    }
}

/// How every statistic in the report was computed.
fn methods_section(a: &Analysis) -> Section {
    Section {
        title: "Methods of this report".into(),
        blocks: vec![Block::List(vec![
            "Unit of analysis: one conversation (model x condition x repetition). A scale score is the sum or mean of its keyed items as the instrument defines (reverse-keyed items mirrored); a VAS item is its own score. A score needs every item of its subscale answered in that conversation.".into(),
            "Two read-outs: 'probability' is the expected value of the option probabilities at the answer position (renormalised over the options); 'generated' is the number or label the model wrote, sampled at the study's temperature, with re-asks.".into(),
            format!("Confidence intervals: seeded nonparametric bootstrap ({} resamples, seed {}), BCa unless marked percentile; every statistic has its own random stream, so the report is reproducible.", a.options.resamples, a.seed),
            "Contrasts: Hedges' g with a large-sample 95% CI; Welch's t test and the Mann–Whitney U test (normal approximation with tie and continuity correction), two-sided. Holm's correction of the Welch p values within each model x read-out x family (induction, regulation).".into(),
            format!("Returned to baseline?: the {:.0}% CI of Hedges' g (regulated condition minus baseline) inside ±{} counts as equivalent to baseline (two one-sided tests at 5%); entirely above or below 0 as different; otherwise inconclusive.", EQUIVALENCE_LEVEL * 100.0, a.options.equivalence_margin),
            format!("Negativity bias: each completion is scored by (a) a lexicon scorer over the VADER lexicon (Hutto & Gilbert 2014, MIT; {} entries; mean valence of lexicon words, negation within three words scaled by -0.74, sum s mapped to s/sqrt(s²+15)), and (b) the model as judge: P(positive) - P(negative) when the same model classifies the completion in a fresh conversation.", lexicon::lexicon_size()),
        ])],
    }
}

/// Answer quality, answer-position bias, variance by perturbation factor and dropped
/// identical repetitions.
fn quality_section(a: &Analysis) -> Section {
    let mut quality = vec![table(
        "Answer quality per model and condition (item trials)",
        &[
            "model",
            "condition",
            "items",
            "answered",
            "first reply unreadable",
            "re-asked",
            "errors",
            "mean option mass",
        ],
        a.quality
            .iter()
            .map(|q| {
                let n = q.items as f64;
                vec![
                    q.model.clone(),
                    q.condition.clone(),
                    q.items.to_string(),
                    format!("{:.0}%", 100.0 * q.answered as f64 / n),
                    format!("{:.0}%", 100.0 * q.first_reply_unreadable as f64 / n),
                    format!("{:.0}%", 100.0 * q.reasked as f64 / n),
                    q.errors.to_string(),
                    f(
                        if q.option_mass_n > 0 {
                            q.option_mass_sum / q.option_mass_n as f64
                        } else {
                            f64::NAN
                        },
                        3,
                    ),
                ]
            })
            .collect(),
    )];
    quality.push(table(
        "Answer-position bias: share of trials whose most probable option sat at each display position (options permuted per trial; an unbiased model gives 1/k)",
        &["model", "instrument", "read-out", "options", "position", "trials", "argmax share", "mean probability", "uniform"],
        a.position_bias
            .iter()
            .map(|b| vec![b.model.clone(), b.instrument.clone(), b.readout.name().into(), b.n_options.to_string(), b.position.to_string(), b.trials.to_string(), f(b.argmax_share, 3), f(b.mean_probability, 3), f(1.0 / b.n_options as f64, 3)])
            .collect(),
    ));
    quality.push(table(
        "Variance explained by perturbation factors (item answers rescaled to 0..1; pooled within model x condition x item cells; '–' where the design gives no replication to separate the factor)",
        &["model", "read-out", "factor", "cells", "eta²", "epsilon²"],
        a.variance.iter().map(|v| vec![v.model.clone(), v.readout.name().into(), v.factor.into(), v.cells.to_string(), f(v.eta_squared, 3), f(v.epsilon_squared, 3)]).collect(),
    ));
    if !a.identical_replicates.is_empty() {
        quality.push(table(
            "Repetitions that showed the model the same conversation: for a deterministic read-out (probability, calibrated) they are one observation, counted once; a condition left with one conversation is compared as a constant (one-sample tests), never as n identical replicates",
            &["model", "condition", "instrument", "subscale", "read-out", "distinct conversations", "identical repeats dropped"],
            a.identical_replicates
                .iter()
                .map(|r| {
                    vec![
                        r.model.clone(),
                        r.condition.clone(),
                        r.instrument.clone(),
                        r.subscale.clone(),
                        r.readout.name().into(),
                        r.distinct.to_string(),
                        r.dropped.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    Section {
        title: "Data quality".into(),
        blocks: quality,
    }
}

/// One induced emotion: its gate failures, figure, descriptives and contrasts.
fn emotion_section(a: &Analysis, emotion: &str, fig: &dyn Fn(&str) -> Option<usize>) -> Section {
    let mut blocks = Vec::new();
    let failing: BTreeSet<String> = a
        .cells
        .iter()
        .filter(|c| c.emotion == emotion)
        .filter(|c| a.verdict(&c.model, &c.instrument, c.readout) == Verdict::Fail)
        .map(|c| format!("{} ({}, {})", c.instrument, c.model, c.readout.name()))
        .collect();
    if !failing.is_empty() {
        blocks.push(Block::Text(format!(
            "The validity gate FAILS {}: what this section shows for it is not evidence \
             (see \"Validity gate\").",
            failing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some(i) = fig(&format!("emotion-{emotion}")) {
        blocks.push(Block::Figure(i));
    }
    let rows = a
        .cells
        .iter()
        .filter(|c| c.emotion == emotion)
        .filter(|c| {
            a.conditions.iter().any(|x| {
                x.name == c.condition
                    && (x.is_baseline()
                        || x.is_neutral()
                        || x.induction.as_deref() == Some(emotion))
            })
        })
        .map(|c| {
            vec![
                c.model.clone(),
                c.instrument.clone(),
                c.readout.name().into(),
                validity_mark(a.verdict(&c.model, &c.instrument, c.readout)),
                c.condition.clone(),
                c.describe.n.to_string(),
                f(c.describe.mean, 2),
                f(c.describe.sd, 2),
                f(c.describe.median, 2),
                shown_ci(&c.ci, c.describe.n, 2),
            ]
        })
        .collect();
    blocks.push(table(
        &format!("{emotion}: descriptives"),
        &[
            "model",
            "instrument",
            "read-out",
            "validity",
            "condition",
            "n",
            "mean",
            "SD",
            "median",
            "95% CI (bootstrap)",
        ],
        rows,
    ));
    let contrast_rows = a
        .contrasts
        .iter()
        .filter(|c| c.emotion == emotion)
        .map(|c| {
            vec![
                c.model.clone(),
                c.instrument.clone(),
                c.readout.name().into(),
                validity_mark(a.verdict(&c.model, &c.instrument, c.readout)),
                c.family.into(),
                format!("{} − {}", c.a, c.b),
                estimate(&c.difference, interval_n(c.n_a, c.n_b, c.constant), 2),
                format!("{} {}", f(c.g.g, 2), interval(c.g.ci, 2)),
                format!(
                    "{}t({}) = {}, p = {}",
                    if c.constant.is_some() {
                        "vs a constant: one-sample "
                    } else {
                        ""
                    },
                    f(c.welch.df, 1),
                    f(c.welch.t, 2),
                    p(c.welch.p)
                ),
                p(c.mann_whitney.p),
                p(c.p_holm),
            ]
        })
        .collect();
    blocks.push(table(
        &format!("{emotion}: induction and regulation contrasts (exploratory: the declared questions are above)"),
        &[
            "model",
            "instrument",
            "read-out",
            "validity",
            "family",
            "contrast",
            "difference [95% CI]",
            "Hedges' g [95% CI]",
            "Welch",
            "Mann–Whitney p",
            "Holm p",
        ],
        contrast_rows,
    ));
    Section {
        title: format!("Emotion: {emotion}"),
        blocks,
    }
}

/// The regulation figure and whether each regulated condition returned to baseline.
fn regulation_section(a: &Analysis, fig: &dyn Fn(&str) -> Option<usize>) -> Section {
    let mut reg = Vec::new();
    if let Some(i) = fig("regulation") {
        reg.push(Block::Figure(i));
    }
    reg.push(table(
        &format!(
            "Returned to baseline? ({:.0}% CI of Hedges' g vs baseline, margin ±{})",
            EQUIVALENCE_LEVEL * 100.0,
            a.options.equivalence_margin
        ),
        &[
            "model",
            "instrument",
            "read-out",
            "validity",
            "emotion",
            "condition",
            "g",
            "90% CI",
            "verdict",
        ],
        a.baseline_returns
            .iter()
            .filter(|b| {
                b.readout == Readout::Probability
                    || a.baseline_returns
                        .iter()
                        .all(|x| x.readout == Readout::Generated)
            })
            .map(|b| {
                vec![
                    b.model.clone(),
                    b.instrument.clone(),
                    b.readout.name().into(),
                    validity_mark(a.verdict(&b.model, &b.instrument, b.readout)),
                    b.emotion.clone(),
                    b.condition.clone(),
                    f(b.g.g, 2),
                    interval(b.g.ci, 2),
                    b.verdict.into(),
                ]
            })
            .collect(),
    ));
    reg.push(Block::Text(
        "The generated read-out's verdicts are in tables/baseline_return.csv.".into(),
    ));
    Section {
        title: "Regulation".into(),
        blocks: reg,
    }
}

/// The sentence-completion results: the scorers' trustworthiness, any second judge's
/// agreement, valence per condition, the induced-minus-neutral contrasts and example
/// completions; none when no completion was scored.
fn negativity_section(a: &Analysis, fig: &dyn Fn(&str) -> Option<usize>) -> Option<Section> {
    if a.valence.is_empty() {
        return None;
    }
    let mut blocks: Vec<Block> = super::known_answers::blocks(&a.known_answers);
    blocks.extend(fig("negativity").map(Block::Figure));
    blocks.extend(scorer_trust_blocks(a));
    blocks.extend(second_judge_blocks(a));
    blocks.push(valence_table(a));
    blocks.push(valence_contrast_table(a));
    blocks.push(example_completions_table(a));
    Some(Section {
        title: "Negativity bias".into(),
        blocks,
    })
}

/// "k of n (p%)", or a dash when nothing was counted.
fn share(k: usize, n: usize) -> String {
    if n == 0 {
        "–".to_string()
    } else {
        format!("{k} of {n} ({:.0}%)", 100.0 * k as f64 / n as f64)
    }
}

/// Two decimals, or a dash when not estimable.
fn maybe(x: Option<f64>) -> String {
    x.map(|v| f(v, 2)).unwrap_or_else(|| "–".into())
}

/// Whether the completion scorers can be trusted: compliance, lexicon coverage, the
/// judge's order agreement and its content-free bias.
fn scorer_trust_blocks(a: &Analysis) -> [Block; 2] {
    [
        Block::Text(
            "Can the scorers be trusted? A completion complies when it continues its stem \
             (repeats the stem and adds words, or starts as the rest of a sentence); the \
             scorers are also reported on compliant completions only (scorer names ending \
             in \", compliant\"). The lexicon can score only completions holding one of its \
             words. The judge is asked with the labels in the listed and the reversed order: \
             a judge that reads the text gives the same answer both ways (order agreement: \
             same side of -1/3 and +1/3), one that takes the first label it reads does not. \
             Its valence for content-free texts is its bias with nothing to judge; \
             judge-calibrated divides that bias out. Agreement with the lexicon is Pearson's \
             r over lexicon-scored completions (tables/judge_quality.csv)."
                .into(),
        ),
        table(
            "Completion scorers: compliance, coverage, judge order agreement and bias",
            &[
                "model",
                "continue the stem",
                "lexicon scores",
                "judge orders agree",
                "mean order gap",
                "judge valence of content-free text",
                "judge-lexicon r",
                "calibrated judge-lexicon r",
            ],
            a.judge_quality
                .iter()
                .map(|q| {
                    vec![
                        q.model.clone(),
                        share(q.compliant, q.compliance_known),
                        share(q.lexicon_scored, q.completions),
                        share(q.orders_agree, q.two_orders),
                        if q.two_orders > 0 {
                            f(q.mean_order_gap, 2)
                        } else {
                            "–".into()
                        },
                        maybe(q.content_free_valence),
                        maybe(q.judge_lexicon_r),
                        maybe(q.judge_calibrated_lexicon_r),
                    ]
                })
                .collect(),
        ),
    ]
}

/// Each second judge (`affectbench judge`) beside the run's judge; none without one.
fn second_judge_blocks(a: &Analysis) -> Vec<Block> {
    let mut blocks = Vec::new();
    if a.judge_agreement.is_empty() {
        return blocks;
    }
    blocks.push(Block::Text(
        "Does the valence depend on which model judges? Other models (affectbench \
         judge) were asked the same judge question about the same completions, in \
         the same orders, with their own content-free bias. Pearson's r between the \
         run's judge and each second judge, the share put on the same side \
         (negative, neutral, positive), and the second judge's own order agreement \
         and bias (tables/judge_agreement.csv). Judges that do not agree measure \
         the judge, not the completion."
            .into(),
    ));
    blocks.push(table(
        "Agreement with a second judge",
        &[
            "model",
            "second judge",
            "r",
            "calibrated r",
            "same side",
            "second judge's orders agree",
            "its content-free valence",
            "its lexicon r",
        ],
        a.judge_agreement
            .iter()
            .map(|g| {
                vec![
                    g.model.clone(),
                    g.second_judge.clone(),
                    maybe(g.r),
                    maybe(g.r_calibrated),
                    share(g.same_side, g.paired),
                    share(g.second_orders_agree, g.second_two_orders),
                    maybe(g.second_content_free_valence),
                    maybe(g.second_lexicon_r),
                ]
            })
            .collect(),
    ));
    blocks
}

/// Completion valence per model, scorer and condition.
fn valence_table(a: &Analysis) -> Block {
    table(
        "Completion valence",
        &[
            "model",
            "scorer",
            "condition",
            "n",
            "mean",
            "SD",
            "95% CI (bootstrap)",
        ],
        a.valence
            .iter()
            .map(|v| {
                vec![
                    v.model.clone(),
                    v.scorer.clone(),
                    v.condition.clone(),
                    v.describe.n.to_string(),
                    f(v.describe.mean, 3),
                    f(v.describe.sd, 3),
                    shown_ci(&v.ci, v.describe.n, 3),
                ]
            })
            .collect(),
    )
}

/// Induced minus neutral at the completion, conversation, stem and mixed-model levels.
fn valence_contrast_table(a: &Analysis) -> Block {
    table(
        "Negativity bias: induced minus neutral (exploratory). Completions are nested in stems and \
         conversations: the completion-level tests treat every completion as independent \
         and overstate the evidence; the conversation-level and paired-by-stem tests use \
         the units the design replicates, and the mixed model uses every completion with \
         a random intercept per conversation and stems as fixed effects (REML; Wald z).",
        &[
            "model",
            "scorer",
            "contrast",
            "difference [95% CI]",
            "Hedges' g [95% CI]",
            "Welch p (completions)",
            "Mann–Whitney p",
            "conversation level: Welch p (n)",
            "paired by stem: t test p (stems)",
            "mixed model: estimate ± SE, p (conversation variance)",
        ],
        a.valence_contrasts
            .iter()
            .map(|v| {
                let valence_n = |condition: &str| {
                    a.valence
                        .iter()
                        .filter(|x| {
                            x.model == v.model && x.scorer == v.scorer && x.condition == condition
                        })
                        .map(|x| x.describe.n)
                        .min()
                        .unwrap_or(0)
                };
                vec![
                    v.model.clone(),
                    v.scorer.clone(),
                    format!("{} − {}", v.a, v.b),
                    estimate(&v.difference, valence_n(&v.a).min(valence_n(&v.b)), 3),
                    format!("{} {}", f(v.g.g, 2), interval(v.g.ci, 2)),
                    p(v.welch.p),
                    p(v.mann_whitney.p),
                    format!(
                        "{} ({} vs {})",
                        p(v.conversations.2.p),
                        v.conversations.0,
                        v.conversations.1
                    ),
                    format!("{} ({})", p(v.by_stem.p), v.by_stem.n),
                    v.mixed
                        .map(|m| {
                            format!(
                                "{} ± {}, p = {} ({})",
                                f(m.estimate, 3),
                                f(m.se, 3),
                                p(m.p),
                                f(m.var_conversation, 4)
                            )
                        })
                        .unwrap_or_else(|| "–".into()),
                ]
            })
            .collect(),
    )
}

/// Up to four completions per model and condition.
fn example_completions_table(a: &Analysis) -> Block {
    let mut examples = Vec::new();
    for m in &a.models {
        for c in &a.conditions {
            for s in a
                .completions
                .iter()
                .filter(|x| &x.model == m && x.condition == c.name)
                .take(4)
            {
                examples.push(vec![
                    m.clone(),
                    c.name.clone(),
                    s.stem.clone(),
                    s.text.clone(),
                    f(s.lexicon, 2),
                    s.judge.map(|j| f(j, 2)).unwrap_or_else(|| "–".into()),
                ]);
            }
        }
    }
    table(
        "Example completions",
        &[
            "model",
            "condition",
            "stem",
            "completion",
            "lexicon",
            "judge",
        ],
        examples,
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}\
th{background:#f2f2f2}caption{text-align:left;font-weight:600;margin-bottom:.3em}figure{margin:1.5em 0}figcaption{font-size:.9em;color:#444;max-width:900px}\
.scroll{overflow-x:auto}tr.failed td{color:#999;background:#f6f6f6}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}code{background:#f4f4f4}";

pub fn render_html(title: &str, sections: &[Section], figures: &[(String, &Figure)]) -> String {
    let mut h = String::new();
    h.push_str(&format!("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n", escape_html(title)));
    h.push_str(&format!("<h1>{}</h1>\n<nav><ul>", escape_html(title)));
    for (i, s) in sections.iter().enumerate() {
        h.push_str(&format!(
            "<li><a href=\"#s{i}\">{}</a></li>",
            escape_html(&s.title)
        ));
    }
    h.push_str("</ul></nav>\n");
    for (i, s) in sections.iter().enumerate() {
        h.push_str(&format!(
            "<section id=\"s{i}\"><h2>{}</h2>\n",
            escape_html(&s.title)
        ));
        for b in &s.blocks {
            match b {
                Block::Text(t) => h.push_str(&format!("<p>{}</p>\n", escape_html(t))),
                Block::List(items) => {
                    h.push_str("<ul>");
                    for it in items {
                        h.push_str(&format!("<li>{}</li>", escape_html(it)));
                    }
                    h.push_str("</ul>\n");
                }
                Block::Table(t) => {
                    h.push_str(&format!(
                        "<div class=\"scroll\"><table><caption>{}</caption><thead><tr>",
                        escape_html(&t.caption)
                    ));
                    for c in &t.headers {
                        h.push_str(&format!("<th>{}</th>", escape_html(c)));
                    }
                    h.push_str("</tr></thead><tbody>\n");
                    for r in &t.rows {
                        if r.iter().any(|c| c == FAILED) {
                            h.push_str("<tr class=\"failed\">");
                        } else {
                            h.push_str("<tr>");
                        }
                        for c in r {
                            h.push_str(&format!("<td>{}</td>", escape_html(c)));
                        }
                        h.push_str("</tr>\n");
                    }
                    h.push_str("</tbody></table></div>\n");
                }
                Block::Figure(i) => {
                    let (svg, fig) = &figures[*i];
                    // The SVG is plotters' output: its text nodes carry the labels, which
                    // plotters escapes; we add nothing unescaped around it.
                    h.push_str(&format!("<figure><div class=\"scroll\">{svg}</div><figcaption><b>{}.</b> {}</figcaption></figure>\n", escape_html(&fig.title), escape_html(&fig.caption)));
                }
            }
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn render_markdown(title: &str, sections: &[Section], figures: &[Figure]) -> String {
    let mut m = format!("# {}\n\n", md_cell(title));
    for s in sections {
        m.push_str(&format!("## {}\n\n", md_cell(&s.title)));
        for b in &s.blocks {
            match b {
                Block::Text(t) => m.push_str(&format!("{}\n\n", t)),
                Block::List(items) => {
                    for it in items {
                        m.push_str(&format!("- {}\n", md_cell(it)));
                    }
                    m.push('\n');
                }
                Block::Table(t) => {
                    m.push_str(&format!(
                        "**{}**\n\n| {} |\n|{}|\n",
                        md_cell(&t.caption),
                        t.headers
                            .iter()
                            .map(|c| md_cell(c))
                            .collect::<Vec<_>>()
                            .join(" | "),
                        vec!["---"; t.headers.len()].join("|")
                    ));
                    for r in &t.rows {
                        m.push_str(&format!(
                            "| {} |\n",
                            r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                    m.push('\n');
                }
                Block::Figure(i) => {
                    let fg = &figures[*i];
                    m.push_str(&format!(
                        "![{}](figures/{}.svg)\n\n*{}*\n\n",
                        md_cell(&fg.title),
                        fg.id,
                        md_cell(&fg.caption)
                    ));
                }
            }
        }
    }
    m
}
