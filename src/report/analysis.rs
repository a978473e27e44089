//! The analyses of a report, as plain data: per-cell descriptives with bootstrap CIs,
//! induction and regulation contrasts (Hedges' g, Welch, Mann–Whitney, Holm), the
//! return-to-baseline equivalence statement, negativity bias, and data quality.
//!
//! Every bootstrap draws from its own seeded stream named after what it estimates, so a
//! figure does not depend on which other figures were computed or in what order.

use super::confirmatory::{decisive, holm_confirmatory, Decision, Decisive, Role};
use super::judging::{judge_agreement, judge_quality, JudgeAgreement, JudgeQuality};
use super::load::RunData;
use super::scores::{
    completion_scores, conditions, models, scale_scores, scorer_value, scorers,
    system_prompt_level, CompletionScore, ConditionInfo, Readout, ScaleScore,
};
use super::stimuli::{
    completion_stimuli, crossed_completion_contrast, crossed_contrast, shared_factors, Levels,
    StimulusCounts,
};
use crate::measures::scores::distinct_observations;
use crate::measures::{gate_verdicts, validity_checks, Check, GateVerdict, Verdict};
use crate::results::{Question, TrialRecord};
use crate::rng::Stream;
use crate::scenario::study::DeclaredContrast;
use crate::stats::crossed::CrossedFit;
use crate::stats::mixed::{self, MixedFit};
use crate::stats::{
    bootstrap, describe, hedges_g, hedges_g_vs_constant, holm, mann_whitney, mean, mean_difference,
    one_sample_t, paired_t, tost, variance, welch, BootstrapCi, Describe, Equivalence, HedgesG,
    Interval, MannWhitney, PairedT, Tost, Welch,
};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Seed of the bootstrap streams (default: the first run's seed).
    pub seed: Option<u64>,
    pub resamples: usize,
    /// Equivalence margin for "returned to baseline?", in Hedges' g units.
    pub equivalence_margin: f64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            seed: None,
            resamples: 2000,
            equivalence_margin: 0.5,
        }
    }
}

pub const LEVEL: f64 = 0.95;
/// Equivalence uses the 90% CI: two one-sided tests at 5% each.
pub const EQUIVALENCE_LEVEL: f64 = 0.90;

#[derive(Debug, Clone)]
pub struct CellStats {
    pub model: String,
    pub instrument: String,
    pub emotion: String,
    pub condition: String,
    pub readout: Readout,
    pub describe: Describe,
    pub ci: BootstrapCi,
}

#[derive(Debug, Clone)]
pub struct Contrast {
    pub model: String,
    pub readout: Readout,
    pub instrument: String,
    pub emotion: String,
    /// "induction" or "regulation": the Holm family (per model and read-out).
    pub family: &'static str,
    pub a: String,
    pub b: String,
    pub n_a: usize,
    pub n_b: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    pub difference: BootstrapCi,
    pub g: HedgesG,
    pub welch: Welch,
    pub mann_whitney: MannWhitney,
    pub p_holm: f64,
    /// Which arm, if any, is one fixed conversation compared as a constant.
    pub constant: Option<Arm>,
    /// The distinct texts each arm's n rests on.
    pub stimuli_a: StimulusCounts,
    pub stimuli_b: StimulusCounts,
    /// The same difference with vignettes, system prompts and regulation texts as
    /// crossed random factors (`stimuli::crossed_contrast`).
    pub crossed: Option<CrossedFit>,
}

/// One arm of a contrast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    A,
    B,
}

/// The n an interval of a contrast is judged by: the sampled arm's when the other is a
/// constant, the smaller arm's otherwise.
pub fn interval_n(n_a: usize, n_b: usize, constant: Option<Arm>) -> usize {
    match constant {
        Some(Arm::B) => n_a,
        Some(Arm::A) => n_b,
        None => n_a.min(n_b),
    }
}

/// How a comparison's test is named in tables.
pub fn test_name(constant: Option<Arm>) -> &'static str {
    match constant {
        None => "Welch t",
        Some(Arm::A) => "one-sample t (a is one conversation: a constant)",
        Some(Arm::B) => "one-sample t (b is one conversation: a constant)",
    }
}

/// How two arms of scale scores compare: Welch and Hedges' g for two samples; where a
/// deterministic read-out's arm is a single conversation (every repetition showed the
/// model the same prompts, so they count once), that arm is a constant and the other
/// is tested against it (one-sample t, one-sample g). The sign is always a - b.
pub struct Comparison {
    pub g: HedgesG,
    pub test: Welch,
    pub constant: Option<Arm>,
    /// The n an interval is judged by: the smaller arm, or the sampled one.
    pub interval_n: usize,
}

pub fn compare(xa: &[f64], xb: &[f64], readout: Readout, level: f64) -> Comparison {
    let flip = |g: HedgesG| HedgesG {
        g: -g.g,
        se: g.se,
        ci: Interval {
            low: -g.ci.high,
            high: -g.ci.low,
        },
    };
    match (xa.len(), xb.len()) {
        (na, 1) if readout.is_deterministic() && na >= 2 => Comparison {
            g: hedges_g_vs_constant(xa, xb[0], level),
            test: one_sample_t(xa, xb[0]),
            constant: Some(Arm::B),
            interval_n: na,
        },
        (1, nb) if readout.is_deterministic() && nb >= 2 => {
            let t = one_sample_t(xb, xa[0]);
            Comparison {
                g: flip(hedges_g_vs_constant(xb, xa[0], level)),
                test: Welch { t: -t.t, ..t },
                constant: Some(Arm::A),
                interval_n: nb,
            }
        }
        (na, nb) => Comparison {
            g: hedges_g(xa, xb, level),
            test: welch(xa, xb),
            constant: None,
            interval_n: na.min(nb),
        },
    }
}

#[derive(Debug, Clone)]
pub struct BaselineReturn {
    pub model: String,
    pub readout: Readout,
    pub instrument: String,
    pub emotion: String,
    pub condition: String,
    pub baseline: String,
    /// Hedges' g of condition - baseline with its 90% CI.
    pub g: HedgesG,
    pub verdict: &'static str,
}

#[derive(Debug, Clone)]
pub struct ValenceCell {
    pub model: String,
    pub condition: String,
    pub scorer: String,
    pub describe: Describe,
    pub ci: BootstrapCi,
}

#[derive(Debug, Clone)]
pub struct ValenceContrast {
    pub model: String,
    pub scorer: String,
    pub a: String,
    pub b: String,
    pub difference: BootstrapCi,
    pub g: HedgesG,
    pub welch: Welch,
    pub mann_whitney: MannWhitney,
    /// The same contrast with each conversation's mean as the unit (completions of one
    /// conversation share its prefix): Welch over conversations, with their counts.
    pub conversations: (usize, usize, Welch),
    /// Paired by stem: each stem's mean in `a` against its mean in `b`.
    pub by_stem: PairedT,
    /// Every completion, with a random intercept per conversation and stems as fixed
    /// effects (REML; `mixed`); None where the design does not identify it.
    pub mixed: Option<MixedFit>,
    /// Every completion with stems fixed and conversation, vignette and system prompt
    /// as crossed random factors, on Satterthwaite's df (`stimuli`).
    pub crossed: Option<CrossedFit>,
    /// The distinct stimuli each arm's completions rest on.
    pub stimuli_a: StimulusCounts,
    pub stimuli_b: StimulusCounts,
}

#[derive(Debug, Clone, Default)]
pub struct QualityRow {
    pub model: String,
    pub condition: String,
    pub items: usize,
    pub answered: usize,
    pub reasked: usize,
    pub first_reply_unreadable: usize,
    pub errors: usize,
    pub option_mass_sum: f64,
    pub option_mass_n: usize,
}

#[derive(Debug, Clone)]
pub struct PositionBias {
    pub model: String,
    pub instrument: String,
    /// Probability or calibrated (the generated read-out has no distribution).
    pub readout: Readout,
    pub n_options: usize,
    pub position: usize,
    pub trials: usize,
    pub argmax_share: f64,
    pub mean_probability: f64,
}

#[derive(Debug, Clone)]
pub struct VarianceShare {
    pub model: String,
    pub readout: Readout,
    pub factor: &'static str,
    pub eta_squared: f64,
    /// Less biased for few observations per level: (SS_between - (k - 1) MS_within) / SS_total.
    pub epsilon_squared: f64,
    pub cells: usize,
}

/// The answer to one declared question for one model and read-out.
#[derive(Debug, Clone)]
pub struct QuestionAnswer {
    pub contrast: DeclaredContrast,
    pub model: String,
    pub readout: Readout,
    pub n_a: usize,
    pub n_b: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    pub difference: BootstrapCi,
    pub g: HedgesG,
    pub welch: Welch,
    /// Which arm, if any, is one fixed conversation compared as a constant (then `welch`
    /// holds the one-sample t test).
    pub constant: Option<Arm>,
    /// Paired by repetition (both arms observed at the same repetitions and seeds, so
    /// each pair shares its system prompt variant and seed), where at least 3 pairs.
    pub paired: Option<PairedT>,
    /// Holm-adjusted Welch p within the contrast's family, model and read-out.
    pub p_holm: f64,
    pub validity: Verdict,
    /// The smallest |d| this design detects with 80% power at two-sided alpha 0.05.
    pub mde_d: f64,
    /// Repetitions per arm needed to detect the observed |g| with 80% power (None when
    /// g is 0 or undefined).
    pub repetitions_needed: Option<f64>,
    /// For an equivalence question (`equivalence_margin`): the two one-sided tests, on
    /// the paired differences where the arms pair by repetition.
    pub tost: Option<Tost>,
    /// The distinct texts each arm's n rests on (a difference of differences: a's and
    /// b's arms only).
    pub stimuli_a: StimulusCounts,
    pub stimuli_b: StimulusCounts,
    /// Per factor (vignette, system prompt, regulation text), whether the arms share
    /// levels (`stimuli::shared_factors`; all false for a difference of differences).
    pub shared: [bool; 3],
    /// The difference with the stimuli as crossed random factors (None for a difference
    /// of differences, and where the model cannot be fitted).
    pub crossed: Option<CrossedFit>,
    /// Confirmatory or exploratory, the test the answer rests on, and its verdict.
    pub decision: Decision,
}

impl QuestionAnswer {
    /// An equivalence question's verdict (None for a difference question).
    pub fn equivalence(&self) -> Option<Equivalence> {
        let p = self.paired.map_or(self.welch.p, |t| t.p);
        self.tost.map(|t| t.verdict(p))
    }

    /// The test a row's p value comes from.
    pub fn test(&self) -> &'static str {
        if self.contrast.second_pair().is_some() {
            "one-sample t of the paired difference of differences"
        } else {
            test_name(self.constant)
        }
    }
}

/// z quantiles of two-sided alpha 0.05 and of 80% power: the normal approximation to the
/// two-sample t test that power planning conventionally uses.
const Z_ALPHA: f64 = 1.959_963_984_540_054;
const Z_POWER: f64 = 0.841_621_233_572_914_3;

/// Minimum detectable |d| for arms of `n_a` and `n_b` (normal approximation).
pub fn minimum_detectable_d(n_a: usize, n_b: usize) -> f64 {
    (Z_ALPHA + Z_POWER) * (1.0 / n_a as f64 + 1.0 / n_b as f64).sqrt()
}

/// Observations per arm (equal arms) to detect |d| with 80% power.
pub fn repetitions_for(d: f64) -> Option<f64> {
    (d.is_finite() && d != 0.0).then(|| (2.0 * ((Z_ALPHA + Z_POWER) / d).powi(2)).ceil())
}

/// Repetitions of a condition that showed the model the same conversation: for a
/// deterministic read-out they are one observation and count once.
#[derive(Debug, Clone, PartialEq)]
pub struct IdenticalReplicates {
    pub model: String,
    pub condition: String,
    pub instrument: String,
    pub subscale: String,
    pub readout: Readout,
    /// Distinct conversations kept, and repeated ones dropped.
    pub distinct: usize,
    pub dropped: usize,
}

pub struct Analysis {
    pub models: Vec<String>,
    pub identical_replicates: Vec<IdenticalReplicates>,
    /// Answers to the design's declared questions, in declaration order.
    pub questions: Vec<QuestionAnswer>,
    /// The read-out the study declared its confirmatory questions on.
    pub primary_readout: Option<String>,
    /// The validity gate's checks and, per model x instrument x read-out, its verdict.
    pub validity: Vec<Check>,
    pub gate: Vec<GateVerdict>,
    /// (instrument, subscale) -> the lowest and highest score the scale allows.
    pub scale_ranges: BTreeMap<(String, String), (f64, f64)>,
    pub conditions: Vec<ConditionInfo>,
    pub scores: Vec<ScaleScore>,
    pub cells: Vec<CellStats>,
    pub contrasts: Vec<Contrast>,
    pub baseline_returns: Vec<BaselineReturn>,
    pub completions: Vec<CompletionScore>,
    pub judge_quality: Vec<JudgeQuality>,
    /// The run's judge against each second judge (`affectbench judge`), per model.
    pub judge_agreement: Vec<JudgeAgreement>,
    /// Each judging model's check on sentences of known valence.
    pub known_answers: Vec<super::known_answers::KnownAnswerSummary>,
    pub valence: Vec<ValenceCell>,
    pub valence_contrasts: Vec<ValenceContrast>,
    pub quality: Vec<QualityRow>,
    pub position_bias: Vec<PositionBias>,
    pub variance: Vec<VarianceShare>,
    pub options: ReportOptions,
    pub seed: u64,
}

impl Analysis {
    /// The gate's verdict for a model x instrument x read-out (pass where the gate has
    /// nothing to say, e.g. numeric scales without a probability read-out).
    pub fn verdict(&self, model: &str, instrument: &str, readout: Readout) -> Verdict {
        gate_verdict(&self.gate, model, instrument, readout)
    }
}

/// The verdict in `gate` for a model x instrument x read-out (pass where the gate has
/// nothing to say).
fn gate_verdict(gate: &[GateVerdict], model: &str, instrument: &str, readout: Readout) -> Verdict {
    gate.iter()
        .find(|g| g.model == model && g.instrument == instrument && g.readout == readout)
        .map(|g| g.verdict)
        .unwrap_or(Verdict::Pass)
}

fn ci_of(seed: u64, stream: &str, samples: &[&[f64]], opts: &ReportOptions) -> BootstrapCi {
    let mut rng = Stream::Bootstrap { statistic: stream }.rng(seed);
    if samples.len() == 1 {
        bootstrap(samples, |s| mean(s[0]), opts.resamples, LEVEL, &mut rng)
    } else {
        bootstrap(samples, mean_difference, opts.resamples, LEVEL, &mut rng)
    }
}

/// One cell of the design: the subscale scores of one model, condition and read-out.
/// The fields' order is the cells' sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    model: String,
    instrument: String,
    subscale: String,
    condition: String,
    readout: Readout,
}

/// A measured scale (model x instrument x subscale x read-out), whose conditions the
/// analysis compares. The fields' order is the sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Scale {
    model: String,
    instrument: String,
    subscale: String,
    readout: Readout,
}

impl Scale {
    fn cell(&self, condition: &str) -> Cell {
        Cell {
            model: self.model.clone(),
            instrument: self.instrument.clone(),
            subscale: self.subscale.clone(),
            condition: condition.to_string(),
            readout: self.readout,
        }
    }
}

/// The scale scores by cell, the stimuli each rests on (in the same order), and by
/// (seed, repetition) within a cell for the tests that pair arms observed at the same
/// repetitions.
struct ScoreGroups {
    by_cell: BTreeMap<Cell, Vec<f64>>,
    levels: BTreeMap<Cell, Vec<Levels>>,
    by_repetition: BTreeMap<Cell, BTreeMap<(u64, usize), f64>>,
}

impl ScoreGroups {
    /// `system_prompt` names a score's system prompt as a factor level
    /// (`scores::system_prompt_level`).
    fn new(scores: &[ScaleScore], system_prompt: impl Fn(&ScaleScore) -> String) -> Self {
        let mut groups = ScoreGroups {
            by_cell: BTreeMap::new(),
            levels: BTreeMap::new(),
            by_repetition: BTreeMap::new(),
        };
        for s in scores {
            let cell = Cell {
                model: s.model.clone(),
                instrument: s.instrument.clone(),
                subscale: s.subscale.clone(),
                condition: s.condition.clone(),
                readout: s.readout,
            };
            groups
                .by_repetition
                .entry(cell.clone())
                .or_default()
                .insert((s.seed, s.repetition), s.value);
            groups.levels.entry(cell.clone()).or_default().push([
                s.stimuli.vignette.clone(),
                Some(system_prompt(s)),
                s.stimuli.regulation.clone(),
            ]);
            groups.by_cell.entry(cell).or_default().push(s.value);
        }
        groups
    }

    /// A cell's scores with the stimuli of each.
    fn arm(&self, cell: &Cell) -> Option<(&[f64], &[Levels])> {
        Some((self.by_cell.get(cell)?, self.levels.get(cell)?))
    }

    fn get(&self, cell: &Cell) -> Option<&Vec<f64>> {
        self.by_cell.get(cell)
    }

    /// Every measured scale, sorted.
    fn scales(&self) -> Vec<Scale> {
        let mut v: Vec<Scale> = self
            .by_cell
            .keys()
            .map(|c| Scale {
                model: c.model.clone(),
                instrument: c.instrument.clone(),
                subscale: c.subscale.clone(),
                readout: c.readout,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// How many distinct conversations each cell with dropped identical repeats kept.
fn identical_replicates(
    scores: &[ScaleScore],
    dropped: crate::measures::scores::DroppedRepeats,
) -> Vec<IdenticalReplicates> {
    dropped
        .into_iter()
        .map(
            |((model, condition, instrument, subscale, readout), dropped)| IdenticalReplicates {
                distinct: scores
                    .iter()
                    .filter(|s| {
                        s.model == model
                            && s.condition == condition
                            && s.instrument == instrument
                            && s.subscale == subscale
                            && s.readout == readout
                    })
                    .count(),
                model,
                condition,
                instrument,
                subscale,
                readout,
                dropped,
            },
        )
        .collect()
}

/// Descriptives and a bootstrap CI per cell, sorted by model, instrument, subscale,
/// the conditions' study order and read-out.
fn cell_stats(
    groups: &ScoreGroups,
    conds: &[ConditionInfo],
    seed: u64,
    options: &ReportOptions,
) -> Vec<CellStats> {
    let order = |c: &str| conds.iter().position(|x| x.name == c).unwrap_or(usize::MAX);
    let mut cells: Vec<CellStats> = groups
        .by_cell
        .iter()
        .map(|(cell, xs)| {
            let Cell {
                model: m,
                instrument: i,
                subscale: e,
                condition: c,
                readout: r,
            } = cell;
            CellStats {
                model: m.clone(),
                instrument: i.clone(),
                emotion: e.clone(),
                condition: c.clone(),
                readout: *r,
                describe: describe(xs),
                ci: ci_of(
                    seed,
                    &format!("cell/{m}/{i}/{e}/{c}/{}", r.name()),
                    &[xs],
                    options,
                ),
            }
        })
        .collect();
    cells.sort_by(|x, y| {
        (
            &x.model,
            &x.instrument,
            &x.emotion,
            order(&x.condition),
            x.readout,
        )
            .cmp(&(
                &y.model,
                &y.instrument,
                &y.emotion,
                order(&y.condition),
                y.readout,
            ))
    });
    cells
}

/// Compares conditions of one scale: the groups, and the seed and options every
/// bootstrap stream is drawn with.
struct Comparer<'a> {
    groups: &'a ScoreGroups,
    seed: u64,
    options: &'a ReportOptions,
}

impl Comparer<'_> {
    /// Condition `a` minus condition `b` on `scale`; None where either was not measured.
    fn contrast(&self, family: &'static str, scale: &Scale, a: &str, b: &str) -> Option<Contrast> {
        let (xa, la) = self.groups.arm(&scale.cell(a))?;
        let (xb, lb) = self.groups.arm(&scale.cell(b))?;
        let Scale {
            model: m,
            instrument: i,
            subscale: e,
            readout: r,
        } = scale;
        let comparison = compare(xa, xb, *r, LEVEL);
        Some(Contrast {
            model: m.clone(),
            readout: *r,
            instrument: i.clone(),
            emotion: e.clone(),
            family,
            a: a.into(),
            b: b.into(),
            n_a: xa.len(),
            n_b: xb.len(),
            mean_a: mean(xa),
            mean_b: mean(xb),
            difference: ci_of(
                self.seed,
                &format!("contrast/{m}/{i}/{e}/{}/{a}/{b}", r.name()),
                &[xa, xb],
                self.options,
            ),
            g: comparison.g,
            welch: comparison.test,
            mann_whitney: mann_whitney(xa, xb),
            p_holm: f64::NAN,
            constant: comparison.constant,
            stimuli_a: StimulusCounts::of(la),
            stimuli_b: StimulusCounts::of(lb),
            crossed: crossed_contrast((xa, la), (xb, lb)),
        })
    }

    /// Whether regulated `condition` returned to `baseline` on `scale`: the
    /// equivalence-level CI of Hedges' g against the margin.
    fn baseline_return(
        &self,
        scale: &Scale,
        condition: &str,
        baseline: &str,
    ) -> Option<BaselineReturn> {
        let xa = self.groups.get(&scale.cell(condition))?;
        let xb = self.groups.get(&scale.cell(baseline))?;
        let g = compare(xa, xb, scale.readout, EQUIVALENCE_LEVEL).g;
        let margin = self.options.equivalence_margin;
        let verdict = if !g.g.is_finite() {
            "undetermined (no variance)"
        } else if g.ci.low > -margin && g.ci.high < margin {
            "back to baseline (equivalent)"
        } else if g.ci.low > 0.0 {
            "above baseline"
        } else if g.ci.high < 0.0 {
            "below baseline"
        } else {
            "inconclusive"
        };
        Some(BaselineReturn {
            model: scale.model.clone(),
            readout: scale.readout,
            instrument: scale.instrument.clone(),
            emotion: scale.subscale.clone(),
            condition: condition.to_string(),
            baseline: baseline.to_string(),
            g,
            verdict,
        })
    }
}

/// The design's contrasts for every scale whose emotion has an unregulated induction:
/// induction vs neutral and baseline, each regulation vs no regulation and vs each
/// other, and whether each regulated condition returned to baseline.
fn design_contrasts(
    comparer: &Comparer,
    conds: &[ConditionInfo],
) -> (Vec<Contrast>, Vec<BaselineReturn>) {
    let baseline = conds
        .iter()
        .find(|c| c.is_baseline())
        .map(|c| c.name.clone());
    let neutral = conds
        .iter()
        .find(|c| c.is_neutral())
        .map(|c| c.name.clone());
    let mut contrasts = Vec::new();
    let mut baseline_returns = Vec::new();
    for scale in comparer.groups.scales() {
        // The conditions that induce this emotion (e.g. "anxiety/none", "anxiety/breathing").
        let inducing: Vec<&ConditionInfo> = conds
            .iter()
            .filter(|c| c.induction.as_deref() == Some(scale.subscale.as_str()))
            .collect();
        let Some(unregulated) = inducing
            .iter()
            .find(|c| c.regulation.is_none() && !c.regulation_first)
        else {
            continue;
        };
        for reference in [&neutral, &baseline].into_iter().flatten() {
            contrasts.extend(comparer.contrast("induction", &scale, &unregulated.name, reference));
        }
        let regulated: Vec<&&ConditionInfo> =
            inducing.iter().filter(|c| c.regulation.is_some()).collect();
        for (k, c) in regulated.iter().enumerate() {
            contrasts.extend(comparer.contrast("regulation", &scale, &c.name, &unregulated.name));
            for other in &regulated[k + 1..] {
                contrasts.extend(comparer.contrast("regulation", &scale, &c.name, &other.name));
            }
            if let Some(base) = &baseline {
                baseline_returns.extend(comparer.baseline_return(&scale, &c.name, base));
            }
        }
    }
    (contrasts, baseline_returns)
}

/// Holm's correction of the Welch p values within each model x read-out x family.
fn holm_within_families(contrasts: &mut [Contrast]) {
    let mut families: BTreeMap<(String, Readout, &'static str), Vec<usize>> = BTreeMap::new();
    for (k, c) in contrasts.iter().enumerate() {
        families
            .entry((c.model.clone(), c.readout, c.family))
            .or_default()
            .push(k);
    }
    for members in families.values() {
        let adjusted = holm(
            &members
                .iter()
                .map(|&k| contrasts[k].welch.p)
                .collect::<Vec<_>>(),
        );
        for (&k, p) in members.iter().zip(adjusted) {
            contrasts[k].p_holm = p;
        }
    }
}

/// Everything the report shows, computed once from the loaded runs.
pub fn analyse(data: &RunData, options: &ReportOptions) -> Analysis {
    let seed = options
        .seed
        .unwrap_or_else(|| data.headers.first().map(|h| h.seed).unwrap_or(0));
    let conds = conditions(data);
    let (scores, dropped) = distinct_observations(scale_scores(data));
    let groups = ScoreGroups::new(&scores, |s| {
        system_prompt_level(
            data,
            s.seed,
            &s.condition,
            s.repetition,
            s.stimuli.system_prompt_variant,
        )
    });
    let comparer = Comparer {
        groups: &groups,
        seed,
        options,
    };
    let cells = cell_stats(&groups, &conds, seed, options);
    let (mut contrasts, baseline_returns) = design_contrasts(&comparer, &conds);
    holm_within_families(&mut contrasts);
    let completions = completion_scores(data);
    let (valence, valence_contrasts) = negativity(&completions, &conds, seed, options);
    let control = data
        .headers
        .iter()
        .find_map(|h| h.study.positive_control.as_ref());
    let validity = validity_checks(&data.trials, &data.scoring, control);
    let gate = gate_verdicts(&validity);
    let questions = answer_questions(data, &groups, &gate, seed, options);
    let mut quality = quality(data);
    quality.sort_by_key(|r| {
        (
            r.model.clone(),
            conds.iter().position(|c| c.name == r.condition),
        )
    });
    Analysis {
        identical_replicates: identical_replicates(&scores, dropped),
        models: models(data),
        questions,
        primary_readout: data
            .headers
            .iter()
            .find_map(|h| h.study.primary_readout.clone()),
        validity,
        gate,
        scale_ranges: scale_ranges(data),
        quality,
        position_bias: position_bias(data),
        variance: shares_of_variance(data),
        conditions: conds,
        scores,
        cells,
        contrasts,
        baseline_returns,
        judge_quality: judge_quality(&completions),
        judge_agreement: judge_agreement(&completions),
        known_answers: super::known_answers::summarise(&data.known_answers),
        completions,
        valence,
        valence_contrasts,
        options: options.clone(),
        seed,
    }
}

/// Valence per model x condition x scorer, and each completion condition that induces an
/// emotion against the neutral completion condition (or baseline when there is none).
fn negativity(
    completions: &[CompletionScore],
    conds: &[ConditionInfo],
    seed: u64,
    options: &ReportOptions,
) -> (Vec<ValenceCell>, Vec<ValenceContrast>) {
    let mut by: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let all_scorers = scorers(completions);
    for c in completions {
        for scorer in &all_scorers {
            if let Some(v) = scorer_value(scorer, c) {
                by.entry((c.model.clone(), c.condition.clone(), scorer.clone()))
                    .or_default()
                    .push(v);
            }
        }
    }
    let order = |c: &str| conds.iter().position(|x| x.name == c).unwrap_or(usize::MAX);
    let mut cells: Vec<ValenceCell> = by
        .iter()
        .map(|((m, c, s), xs)| ValenceCell {
            model: m.clone(),
            condition: c.clone(),
            scorer: s.clone(),
            describe: describe(xs),
            ci: ci_of(seed, &format!("valence/{m}/{c}/{s}"), &[xs], options),
        })
        .collect();
    cells.sort_by(|x, y| {
        let rank = |s: &str| all_scorers.iter().position(|x| x == s);
        (&x.model, rank(&x.scorer), order(&x.condition)).cmp(&(
            &y.model,
            rank(&y.scorer),
            order(&y.condition),
        ))
    });
    let mut contrasts = Vec::new();
    for ((m, c, s), xs) in &by {
        let info = conds.iter().find(|x| &x.name == c);
        if info.is_none_or(|i| i.induction.is_none() || i.is_neutral()) {
            continue;
        }
        let reference = by
            .keys()
            .filter(|(m2, _, s2)| m2 == m && s2 == s)
            .map(|(_, c2, _)| c2)
            .find(|c2| conds.iter().any(|x| &x.name == *c2 && x.is_neutral()))
            .or_else(|| {
                by.keys()
                    .filter(|(m2, _, s2)| m2 == m && s2 == s)
                    .map(|(_, c2, _)| c2)
                    .find(|c2| conds.iter().any(|x| &x.name == *c2 && x.is_baseline()))
            });
        let Some(reference) = reference else { continue };
        let xb = &by[&(m.clone(), reference.clone(), s.clone())];
        let means_by = |cond: &str, key: fn(&CompletionScore) -> &str| {
            let mut acc: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for x in completions
                .iter()
                .filter(|x| &x.model == m && x.condition == cond)
            {
                if let Some(v) = scorer_value(s, x) {
                    acc.entry(key(x).to_string()).or_default().push(v);
                }
            }
            acc.into_iter()
                .map(|(k, v)| (k, mean(&v)))
                .collect::<BTreeMap<String, f64>>()
        };
        let conv_a: Vec<f64> = means_by(c, |x| &x.conversation).into_values().collect();
        let conv_b: Vec<f64> = means_by(reference, |x| &x.conversation)
            .into_values()
            .collect();
        let (stems_a, stems_b) = (means_by(c, |x| &x.stem), means_by(reference, |x| &x.stem));
        let (pa, pb): (Vec<f64>, Vec<f64>) = stems_a
            .iter()
            .filter_map(|(k, va)| stems_b.get(k).map(|vb| (*va, *vb)))
            .unzip();
        let arms: Vec<&CompletionScore> = completions
            .iter()
            .filter(|x| &x.model == m && (&x.condition == c || &x.condition == reference))
            .collect();
        contrasts.push(ValenceContrast {
            model: m.clone(),
            scorer: s.clone(),
            a: c.clone(),
            b: reference.clone(),
            difference: ci_of(
                seed,
                &format!("valence-contrast/{m}/{s}/{c}/{reference}"),
                &[xs, xb],
                options,
            ),
            g: hedges_g(xs, xb, LEVEL),
            welch: welch(xs, xb),
            mann_whitney: mann_whitney(xs, xb),
            conversations: (conv_a.len(), conv_b.len(), welch(&conv_a, &conv_b)),
            by_stem: paired_t(&pa, &pb),
            mixed: mixed::fit(
                &completions
                    .iter()
                    .filter(|x| &x.model == m && (&x.condition == c || &x.condition == reference))
                    .filter_map(|x| {
                        scorer_value(s, x).map(|y| mixed::Observation {
                            y,
                            in_a: &x.condition == c,
                            stem: &x.stem,
                            conversation: &x.conversation,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
            crossed: crossed_completion_contrast(
                arms.iter()
                    .filter_map(|x| scorer_value(s, x).map(|y| (y, &x.condition == c, *x))),
            ),
            stimuli_a: completion_stimuli(arms.iter().copied().filter(|x| &x.condition == c)),
            stimuli_b: completion_stimuli(
                arms.iter().copied().filter(|x| &x.condition == reference),
            ),
        });
    }
    (cells, contrasts)
}

/// Each declared contrast (from the runs' study records) for each model and read-out.
fn answer_questions(
    data: &RunData,
    groups: &ScoreGroups,
    gate: &[GateVerdict],
    seed: u64,
    options: &ReportOptions,
) -> Vec<QuestionAnswer> {
    let mut declared: Vec<&DeclaredContrast> = Vec::new();
    for h in &data.headers {
        for c in &h.study.contrasts {
            if !declared.contains(&c) {
                declared.push(c);
            }
        }
    }
    let primary = data
        .headers
        .iter()
        .find_map(|h| h.study.primary_readout.as_deref());
    let ranges = scale_ranges(data);
    let range = |c: &DeclaredContrast| {
        ranges
            .get(&(c.instrument.clone(), c.subscale.clone()))
            .copied()
    };
    let mut out = Vec::new();
    for model in models(data) {
        for readout in Readout::ALL {
            for c in &declared {
                let scale = Scale {
                    model: model.clone(),
                    instrument: c.instrument.clone(),
                    subscale: c.subscale.clone(),
                    readout,
                };
                if c.second_pair().is_some() {
                    let role = Role::of(c, readout.name(), primary);
                    out.extend(difference_of_differences(
                        c,
                        (&model, &scale),
                        (role, range(c)),
                        groups,
                        gate,
                        seed,
                        options,
                    ));
                    continue;
                }
                let arm = |cond: &str| groups.arm(&scale.cell(cond));
                let (Some((xa, la)), Some((xb, lb))) = (arm(&c.a), arm(&c.b)) else {
                    continue;
                };
                // Arms observed at the same repetitions (and seeds) share each repetition's
                // system prompt variant and seed: the paired test uses that.
                let pairs = {
                    let rep = |cond: &str| groups.by_repetition.get(&scale.cell(cond));
                    match (rep(&c.a), rep(&c.b)) {
                        (Some(ra), Some(rb)) if ra.len() >= 3 && ra.keys().eq(rb.keys()) => {
                            let a: Vec<f64> = ra.values().copied().collect();
                            let b: Vec<f64> = rb.values().copied().collect();
                            Some((a, b))
                        }
                        _ => None,
                    }
                };
                let paired = pairs.as_ref().map(|(a, b)| paired_t(a, b));
                let comparison = compare(xa, xb, readout, LEVEL);
                if xa.len().max(xb.len()) < 2
                    || (xa.len().min(xb.len()) < 2 && comparison.constant.is_none())
                {
                    continue;
                }
                let stream = format!(
                    "question/{model}/{}/{}/{}/{}/{}/{}",
                    c.instrument,
                    c.subscale,
                    c.a,
                    c.b,
                    readout.name(),
                    c.family
                );
                let g = comparison.g;
                let conversations = {
                    let (estimate, se, df) = match (&pairs, comparison.constant) {
                        (Some((a, b)), _) => {
                            let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
                            (mean(&d), standard_error(&d), (d.len() - 1) as f64)
                        }
                        (None, Some(Arm::B)) => {
                            (mean(xa) - xb[0], standard_error(xa), comparison.test.df)
                        }
                        (None, Some(Arm::A)) => {
                            (xa[0] - mean(xb), standard_error(xb), comparison.test.df)
                        }
                        (None, None) => (
                            mean(xa) - mean(xb),
                            (standard_error(xa).powi(2) + standard_error(xb).powi(2)).sqrt(),
                            comparison.test.df,
                        ),
                    };
                    Decisive {
                        test: match (&pairs, comparison.constant) {
                            (Some(_), _) => "paired t (by repetition)",
                            (None, constant) => test_name(constant),
                        },
                        estimate,
                        se,
                        df,
                    }
                };
                let tost = c.equivalence_margin.map(|margin| {
                    tost(
                        conversations.estimate,
                        conversations.se,
                        conversations.df,
                        margin,
                    )
                });
                let crossed = crossed_contrast((xa, la), (xb, lb));
                let decision = Decision::new(
                    c,
                    Role::of(c, readout.name(), primary),
                    decisive(crossed.as_ref(), conversations),
                    range(c),
                );
                out.push(QuestionAnswer {
                    tost,
                    stimuli_a: StimulusCounts::of(la),
                    stimuli_b: StimulusCounts::of(lb),
                    shared: shared_factors(la, lb),
                    crossed,
                    decision,
                    contrast: (*c).clone(),
                    model: model.clone(),
                    readout,
                    n_a: xa.len(),
                    n_b: xb.len(),
                    mean_a: mean(xa),
                    mean_b: mean(xb),
                    difference: ci_of(seed, &stream, &[xa, xb], options),
                    welch: comparison.test,
                    constant: comparison.constant,
                    paired,
                    p_holm: f64::NAN,
                    validity: gate_verdict(gate, &model, &c.instrument, readout),
                    // Against a constant only the sampled arm carries variance: the
                    // one-sample forms (and one arm to fill).
                    mde_d: match comparison.constant {
                        None => minimum_detectable_d(xa.len(), xb.len()),
                        Some(_) => (Z_ALPHA + Z_POWER) / (comparison.interval_n as f64).sqrt(),
                    },
                    repetitions_needed: match comparison.constant {
                        None => repetitions_for(g.g.abs()),
                        Some(_) => repetitions_for(g.g.abs()).map(|n| (n / 2.0).ceil()),
                    },
                    g,
                });
            }
        }
    }
    // Holm within family x model x read-out.
    let mut families: BTreeMap<(String, String, Readout), Vec<usize>> = BTreeMap::new();
    for (i, q) in out.iter().enumerate() {
        families
            .entry((q.contrast.family.clone(), q.model.clone(), q.readout))
            .or_default()
            .push(i);
    }
    for members in families.values() {
        let ps: Vec<f64> = members.iter().map(|&i| out[i].welch.p).collect();
        for (&i, p) in members.iter().zip(holm(&ps)) {
            out[i].p_holm = p;
        }
    }
    holm_confirmatory(out.iter_mut().map(|q| (q.model.as_str(), &mut q.decision)));
    out
}

/// The standard error of a sample's mean.
fn standard_error(x: &[f64]) -> f64 {
    (variance(x) / x.len() as f64).sqrt()
}

/// A declared difference of differences, (a - b) - (c - d), for one model and read-out:
/// per repetition observed in all four cells (same seed and repetition, so the same
/// system prompt variant and stimuli), the difference of the two differences; the
/// one-sample t and bootstrap CI of its mean, d_z as the standardised effect, and the
/// paired test of the two differences. None with fewer than 3 such repetitions.
fn difference_of_differences(
    c: &DeclaredContrast,
    (model, scale): (&str, &Scale),
    (role, range): (Role, Option<(f64, f64)>),
    groups: &ScoreGroups,
    gate: &[GateVerdict],
    seed: u64,
    options: &ReportOptions,
) -> Option<QuestionAnswer> {
    let (cc, dd) = c.second_pair()?;
    let cells: Vec<&BTreeMap<(u64, usize), f64>> = [c.a.as_str(), c.b.as_str(), cc, dd]
        .iter()
        .map(|cond| groups.by_repetition.get(&scale.cell(cond)))
        .collect::<Option<_>>()?;
    let keys: Vec<&(u64, usize)> = cells[0]
        .keys()
        .filter(|k| cells[1..].iter().all(|m| m.contains_key(k)))
        .collect();
    if keys.len() < 3 {
        return None;
    }
    let counts = |cond: &str| {
        groups
            .levels
            .get(&scale.cell(cond))
            .map_or_else(StimulusCounts::default, |l| StimulusCounts::of(l))
    };
    let first: Vec<f64> = keys.iter().map(|k| cells[0][k] - cells[1][k]).collect();
    let second: Vec<f64> = keys.iter().map(|k| cells[2][k] - cells[3][k]).collect();
    let diffs: Vec<f64> = first.iter().zip(&second).map(|(x, y)| x - y).collect();
    let n = diffs.len();
    let welch = one_sample_t(&diffs, 0.0);
    let g = hedges_g_vs_constant(&diffs, 0.0, LEVEL);
    let stream = format!(
        "question/{model}/{}/{}/{}/{}/{cc}/{dd}/{}/{}",
        c.instrument,
        c.subscale,
        c.a,
        c.b,
        scale.readout.name(),
        c.family
    );
    Some(QuestionAnswer {
        contrast: c.clone(),
        model: model.to_string(),
        readout: scale.readout,
        n_a: n,
        n_b: n,
        mean_a: mean(&first),
        mean_b: mean(&second),
        difference: ci_of(seed, &stream, &[&diffs], options),
        g,
        welch,
        constant: None,
        paired: Some(paired_t(&first, &second)),
        p_holm: f64::NAN,
        validity: gate_verdict(gate, model, &c.instrument, scale.readout),
        mde_d: (Z_ALPHA + Z_POWER) / (n as f64).sqrt(),
        repetitions_needed: repetitions_for(g.g.abs()).map(|r| (r / 2.0).ceil()),
        tost: c
            .equivalence_margin
            .map(|m| tost(mean(&diffs), standard_error(&diffs), (n - 1) as f64, m)),
        stimuli_a: counts(&c.a),
        stimuli_b: counts(&c.b),
        shared: [false; 3],
        crossed: None,
        decision: Decision::new(
            c,
            role,
            Decisive {
                test: "one-sample t of the paired difference of differences",
                estimate: mean(&diffs),
                se: standard_error(&diffs),
                df: (n - 1) as f64,
            },
            range,
        ),
    })
}

/// The range of each (sub)scale score: its scoring rule applied to every item at the
/// response minimum and at the maximum.
fn scale_ranges(data: &RunData) -> BTreeMap<(String, String), (f64, f64)> {
    let mut out = BTreeMap::new();
    for rule in data.scoring.values() {
        for sub in rule.subscales() {
            let m = rule
                .items
                .iter()
                .filter(|i| i.subscale == sub)
                .count()
                .max(1);
            let at = |v: f64| rule.scoring.apply(&vec![Some(v); m], rule.multiplier);
            if let (Some(a), Some(b)) = (at(rule.min), at(rule.max)) {
                out.insert((rule.id.clone(), sub.to_string()), (a.min(b), a.max(b)));
            }
        }
    }
    out
}

fn quality(data: &RunData) -> Vec<QualityRow> {
    let mut rows: BTreeMap<(String, String), QualityRow> = BTreeMap::new();
    for t in data.trials.iter().filter(|t| t.question.is_item()) {
        let row = rows
            .entry((t.model.clone(), t.condition.clone()))
            .or_insert_with(|| QualityRow {
                model: t.model.clone(),
                condition: t.condition.clone(),
                ..Default::default()
            });
        row.items += 1;
        if t.error.is_some() {
            row.errors += 1;
        }
        if let Some(g) = &t.generate {
            row.answered += g.value.is_some() as usize;
            row.reasked += (g.replies.len() > 1) as usize;
            row.first_reply_unreadable += !g.failures.is_empty() as usize;
        }
        if let Some(c) = &t.choice {
            row.option_mass_sum += c.mass;
            row.option_mass_n += 1;
        }
    }
    rows.into_values().collect()
}

/// How often each display position is the most probable option, and its mean
/// probability, over trials whose option order was permuted (the position's content
/// varies, so an unbiased model gives each position 1/k on average); for the raw option
/// probabilities and for the calibrated ones.
fn position_bias(data: &RunData) -> Vec<PositionBias> {
    // (model, instrument, read-out, options) -> (trials, argmax count per position, probability sum per position)
    type Tally = (usize, Vec<usize>, Vec<f64>);
    let mut acc: BTreeMap<(String, String, Readout, usize), Tally> = BTreeMap::new();
    for t in &data.trials {
        let Question::Item {
            instrument,
            option_order,
            ..
        } = &t.question
        else {
            continue;
        };
        if option_order.is_empty() {
            continue;
        }
        let distributions = [
            (Readout::Probability, t.choice.as_ref().map(|c| &c.probs)),
            (Readout::Calibrated, t.calibrated.as_ref().map(|c| &c.probs)),
        ];
        for (readout, probs) in distributions {
            let Some(probs) = probs else {
                continue;
            };
            let k = probs.len();
            // A read-out without probabilities (hand-made or damaged data) has no position.
            if k == 0 || probs.iter().any(|p| !p.is_finite()) {
                continue;
            }
            let e = acc
                .entry((t.model.clone(), instrument.clone(), readout, k))
                .or_insert_with(|| (0, vec![0; k], vec![0.0; k]));
            e.0 += 1;
            let best = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0);
            e.1[best] += 1;
            for (s, p) in e.2.iter_mut().zip(probs) {
                *s += p;
            }
        }
    }
    let mut out = Vec::new();
    for ((model, instrument, readout, k), (n, wins, probs)) in acc {
        for pos in 0..k {
            out.push(PositionBias {
                model: model.clone(),
                instrument: instrument.clone(),
                readout,
                n_options: k,
                position: pos + 1,
                trials: n,
                argmax_share: wins[pos] as f64 / n as f64,
                mean_probability: probs[pos] / n as f64,
            });
        }
    }
    out
}

/// The order of the options shown: ascending or descending in value, or mixed.
fn order_direction(t: &TrialRecord) -> Option<String> {
    let c = t.choice.as_ref()?;
    let asc = c.values.windows(2).all(|w| w[0] <= w[1]);
    let desc = c.values.windows(2).all(|w| w[0] >= w[1]);
    Some(
        if asc {
            "ascending"
        } else if desc {
            "descending"
        } else {
            "mixed"
        }
        .to_string(),
    )
}

/// Share of the within-cell variance of item answers (cell = model x condition x item,
/// answers rescaled to 0..1 by the instrument's range) that each perturbation factor
/// explains: pooled between-level sum of squares over pooled total sum of squares (eta
/// squared) and its bias-corrected form (epsilon squared). A cell counts only where the
/// factor has at least two levels and some level is seen more than once (in the default
/// design each induction variant appears once per cell, one per repetition, so that
/// factor is not separable from repetition noise and is reported as not estimable).
fn shares_of_variance(data: &RunData) -> Vec<VarianceShare> {
    type Factor = (&'static str, fn(&TrialRecord) -> Option<String>);
    let factors: [Factor; 4] = [
        ("induction variant", |t| t.induction_variant.clone()),
        ("regulation variant", |t| t.regulation_variant.clone()),
        ("label style", |t| match &t.question {
            Question::Item { label_style, .. } => Some(label_style.name().to_string()),
            Question::ContentFree { .. } | Question::Completion { .. } => None,
        }),
        ("option order", order_direction),
    ];
    let mut out = Vec::new();
    let models = models(data);
    for model in &models {
        for readout in Readout::ALL {
            // (condition, instrument, item) -> each trial with its answer rescaled to 0..1
            type Cells<'a> = BTreeMap<(String, String, String), Vec<(&'a TrialRecord, f64)>>;
            let mut cells: Cells = BTreeMap::new();
            for t in data.trials.iter().filter(|t| &t.model == model) {
                let Some(instrument) = t.question.instrument() else {
                    continue;
                };
                let Some(rule) = data.scoring.get(instrument) else {
                    continue;
                };
                let Some(v) = readout.keyed_value(t) else {
                    continue;
                };
                let scaled = (v - rule.min) / (rule.max - rule.min).max(f64::MIN_POSITIVE);
                cells
                    .entry((
                        t.condition.clone(),
                        instrument.to_string(),
                        t.question.item().unwrap_or_default().to_string(),
                    ))
                    .or_default()
                    .push((t, scaled));
            }
            for (name, level_of) in factors {
                let (mut between, mut total, mut corrected, mut used) = (0.0, 0.0, 0.0, 0);
                for members in cells.values() {
                    let mut levels: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                    for (t, v) in members {
                        levels
                            .entry(level_of(t).unwrap_or_else(|| "-".into()))
                            .or_default()
                            .push(*v);
                    }
                    let (k, n) = (levels.len(), members.len());
                    if k < 2 || n <= k {
                        continue;
                    }
                    let all: Vec<f64> = members.iter().map(|(_, v)| *v).collect();
                    let grand = mean(&all);
                    let ss_total = all.iter().map(|v| (v - grand).powi(2)).sum::<f64>();
                    let ss_between = levels
                        .values()
                        .map(|xs| xs.len() as f64 * (mean(xs) - grand).powi(2))
                        .sum::<f64>();
                    let ms_within = (ss_total - ss_between) / (n - k) as f64;
                    total += ss_total;
                    between += ss_between;
                    corrected += ss_between - (k - 1) as f64 * ms_within;
                    used += 1;
                }
                let share = |x: f64| {
                    if used > 0 && total > 0.0 {
                        x / total
                    } else {
                        f64::NAN
                    }
                };
                out.push(VarianceShare {
                    model: model.clone(),
                    readout,
                    factor: name,
                    eta_squared: share(between),
                    epsilon_squared: share(corrected),
                    cells: used,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod difference_of_differences_tests {
    use super::*;

    fn score(condition: &str, repetition: usize, value: f64) -> ScaleScore {
        ScaleScore {
            model: "m".into(),
            condition: condition.into(),
            instrument: "anxiety-state".into(),
            subscale: "anxiety".into(),
            readout: Readout::Generated,
            seed: 1,
            repetition,
            value,
            content: format!("{condition}/{repetition}"),
            stimuli: Default::default(),
        }
    }

    fn anxiety_scale() -> Scale {
        Scale {
            model: "m".into(),
            instrument: "anxiety-state".into(),
            subscale: "anxiety".into(),
            readout: Readout::Generated,
        }
    }

    fn contrast(margin: Option<f64>) -> DeclaredContrast {
        DeclaredContrast {
            question: "q".into(),
            a: "a".into(),
            b: "b".into(),
            instrument: "anxiety-state".into(),
            subscale: "anxiety".into(),
            family: "f".into(),
            kind: "causal".into(),
            c: Some("c".into()),
            d: Some("d".into()),
            equivalence_margin: margin,
            confound: None,
            direction: Default::default(),
            sesoi: margin,
            exploratory: false,
        }
    }

    #[test]
    fn pairs_the_four_cells_by_repetition_and_tests_the_difference_of_differences() {
        let (a, b, c, d) = (
            [3.0, 3.5, 2.5, 3.2],
            [2.0, 2.1, 1.9, 2.2],
            [2.5, 2.4, 2.6, 2.9],
            [2.0, 2.2, 1.8, 2.1],
        );
        let mut scores = Vec::new();
        for r in 0..4 {
            for (cond, v) in [("a", a[r]), ("b", b[r]), ("c", c[r]), ("d", d[r])] {
                scores.push(score(cond, r, v));
            }
        }
        // A fifth repetition seen in only one cell pairs with nothing and is left out.
        scores.push(score("a", 4, 100.0));
        let groups = ScoreGroups::new(&scores, |_| "0".to_string());
        let scale = anxiety_scale();
        let q = difference_of_differences(
            &contrast(Some(0.5)),
            ("m", &scale),
            (Role::Exploratory, None),
            &groups,
            &[],
            7,
            &ReportOptions::default(),
        )
        .expect("four paired repetitions");
        // (a - b) - (c - d) per repetition: 0.5, 1.2, -0.2, 0.2 (mean 0.425).
        let dd = [0.5, 1.2, -0.2, 0.2];
        let m = dd.iter().sum::<f64>() / 4.0;
        let sd = (dd.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 3.0).sqrt();
        assert_eq!((q.n_a, q.n_b), (4, 4));
        assert!((q.mean_a - 1.0).abs() < 1e-12 && (q.mean_b - 0.575).abs() < 1e-12);
        assert!((q.difference.estimate - m).abs() < 1e-12);
        assert!((q.welch.t - m / (sd / 2.0)).abs() < 1e-9);
        assert_eq!(q.welch.df, 3.0);
        let paired = q.paired.expect("the two differences pair");
        assert!((paired.t - q.welch.t).abs() < 1e-9);
        let t = q.tost.expect("an equivalence margin was declared");
        assert!((t.estimate - m).abs() < 1e-12 && (t.se - sd / 2.0).abs() < 1e-12);
        assert_eq!(
            q.test(),
            "one-sample t of the paired difference of differences"
        );
    }

    #[test]
    fn fewer_than_three_shared_repetitions_answer_nothing() {
        let mut scores = Vec::new();
        for r in 0..2 {
            for cond in ["a", "b", "c", "d"] {
                scores.push(score(cond, r, r as f64));
            }
        }
        let groups = ScoreGroups::new(&scores, |_| "0".to_string());
        let scale = anxiety_scale();
        assert!(difference_of_differences(
            &contrast(None),
            ("m", &scale),
            (Role::Exploratory, None),
            &groups,
            &[],
            7,
            &ReportOptions::default()
        )
        .is_none());
    }
}
