//! `affectbench plan`: the repetitions and distinct vignettes per arm each declared
//! question needs, by simulation from a pilot run's variance components. Every
//! simulated study draws new vignettes, system prompts and regulation texts from the
//! pilot's components (the stimuli are a sample, as in the report's decisive test),
//! fits the crossed model the report decides the question by, and counts how often the
//! declared hypothesis is supported at alpha (power) and how often the 95% interval's
//! half-width falls below the SESOI (precision). A deterministic read-out gives each
//! conversation one value, so repetitions beyond every cell and option direction add
//! nothing there: only more stimuli do, and the plan says so.

use super::analysis::{analyse, QuestionAnswer, ReportOptions};
use super::confirmatory::{decisive, Decision, Decisive, Role};
use super::load::RunData;
use super::scores::Readout;
use super::stimuli::{crossed_contrast, Levels};
use crate::error::Result;
use crate::results::csv_table::{self, Num};
use crate::rng::Stream;
use crate::scenario::study::{DeclaredContrast, Direction};
use crate::scenario::study::{OptionOrder, Study};
use crate::stats::crossed::CrossedFit;
use rand::Rng;
use std::path::Path;

/// What a plan aims for and how hard it looks.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// The power each question should reach.
    pub power: f64,
    /// The test's alpha (one-sided for a directional question, each side of TOST).
    pub alpha: f64,
    /// Simulated studies per candidate design.
    pub simulations: usize,
    /// The most repetitions per arm a plan may ask for.
    pub max_repetitions: usize,
    /// Multiples of the pilot's distinct vignettes to try (1 = the pilot's).
    pub vignette_multiples: Vec<usize>,
    pub seed: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            power: 0.8,
            alpha: 0.05,
            simulations: 500,
            max_repetitions: 2000,
            vignette_multiples: vec![1, 2, 4, 8],
            seed: 1,
        }
    }
}

/// Variance components in squared raw scale units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Components {
    pub vignette: f64,
    pub system_prompt: f64,
    pub regulation_text: f64,
    pub residual: f64,
}

impl Components {
    /// A pilot's crossed fit (a factor that did not enter took 0).
    pub fn of(fit: &CrossedFit) -> Components {
        Components {
            vignette: fit.variance_of("vignette"),
            system_prompt: fit.variance_of("system prompt"),
            regulation_text: fit.variance_of("regulation text"),
            residual: fit.var_residual,
        }
    }

    fn sd(&self, factor: usize) -> f64 {
        [self.vignette, self.system_prompt, self.regulation_text][factor]
            .max(0.0)
            .sqrt()
    }
}

/// What the two arms of a question vary: distinct levels per factor (vignette, system
/// prompt, regulation text; 0 where the arm has none), which factors the arms share,
/// how many option directions a cell shows, and whether the read-out is deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub a: [usize; 3],
    pub b: [usize; 3],
    pub shared: [bool; 3],
    pub directions: usize,
    pub deterministic: bool,
}

impl Shape {
    fn cells(arm: [usize; 3]) -> usize {
        arm.iter().map(|&n| n.max(1)).product()
    }

    /// The same design with `v` distinct vignettes in every arm that has vignettes.
    fn with_vignettes(self, v: usize) -> Shape {
        let scale = |mut arm: [usize; 3]| {
            if arm[0] > 0 {
                arm[0] = v;
            }
            arm
        };
        Shape {
            a: scale(self.a),
            b: scale(self.b),
            ..self
        }
    }

    /// Repetitions per arm that show every cell and direction of both arms equally
    /// often: the least common multiple of their cells, times the directions.
    pub fn balanced(&self) -> usize {
        fn gcd(a: usize, b: usize) -> usize {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let (x, y) = (Shape::cells(self.a), Shape::cells(self.b));
        x / gcd(x, y) * y * self.directions.max(1)
    }

    /// Distinct observations an arm gives at `repetitions`: a deterministic read-out
    /// repeats itself after every cell and direction was shown once.
    fn distinct(&self, arm: [usize; 3], repetitions: usize) -> usize {
        if self.deterministic {
            repetitions.min(Shape::cells(arm) * self.directions.max(1))
        } else {
            repetitions
        }
    }
}

/// What a simulated study shows, over the simulations at one design.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulated {
    /// Share of simulations supporting the declared hypothesis at alpha.
    pub power: f64,
    /// Its Monte Carlo standard error.
    pub power_se: f64,
    /// Median half-width of the decisive 95% interval, raw units.
    pub median_half_width: f64,
    /// Share of simulations whose half-width is below the SESOI (NaN without one).
    pub precise: f64,
}

/// The hypothesis a question tests, and the true difference the simulation assumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Assumption {
    pub effect: f64,
    /// Where the assumed effect comes from, in words.
    pub source: String,
    /// The precision target: the SESOI (or equivalence margin), if declared.
    pub sesoi: Option<f64>,
}

impl Assumption {
    /// A difference question assumes the SESOI in the declared direction (the pilot's
    /// |estimate| without one); an equivalence question assumes no difference.
    pub fn of(contrast: &DeclaredContrast, pilot_estimate: f64) -> Assumption {
        let sign = match contrast.direction {
            Direction::Less => -1.0,
            _ => 1.0,
        };
        let sesoi = contrast.sesoi.or(contrast.equivalence_margin);
        if contrast.equivalence_margin.is_some() {
            return Assumption {
                effect: 0.0,
                source: "no true difference (equivalence question)".into(),
                sesoi,
            };
        }
        match contrast.sesoi {
            Some(s) => Assumption {
                effect: sign * s,
                source: "the declared SESOI".into(),
                sesoi,
            },
            None => Assumption {
                effect: sign * pilot_estimate.abs(),
                source: "the pilot's |estimate| (no SESOI declared)".into(),
                sesoi,
            },
        }
    }
}

/// One standard normal draw (Box-Muller; `rand` alone has no normal distribution).
fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// One arm's simulated observations and their stimulus levels. Each stimulus's effect
/// is drawn the first time it is shown and kept in `drawn`, so every observation of
/// either arm that shows it shares it.
fn simulate_arm(
    (arm, tag): ([usize; 3], &str),
    shape: &Shape,
    (distinct, effect): (usize, f64),
    components: &Components,
    drawn: &mut std::collections::BTreeMap<String, f64>,
    rng: &mut impl Rng,
) -> (Vec<f64>, Vec<Levels>) {
    let residual_sd = components.residual.max(0.0).sqrt();
    let mut ys = Vec::with_capacity(distinct);
    let mut levels = Vec::with_capacity(distinct);
    for i in 0..distinct {
        let mut cell = i;
        let mut y = effect + residual_sd * normal(rng);
        let mut l: Levels = [None, None, None];
        for f in 0..3 {
            if arm[f] == 0 {
                continue;
            }
            let level = cell % arm[f];
            cell /= arm[f];
            let id = if shape.shared[f] {
                format!("{f}:{level}")
            } else {
                format!("{f}:{tag}:{level}")
            };
            let u = match drawn.get(&id) {
                Some(&u) => u,
                None => {
                    let u = components.sd(f) * normal(rng);
                    drawn.insert(id.clone(), u);
                    u
                }
            };
            y += u;
            l[f] = Some(id);
        }
        ys.push(y);
        levels.push(l);
    }
    (ys, levels)
}

/// Power and precision of `contrast` at `repetitions` per arm, over `options`'
/// simulations (the same random numbers for every design of one question).
pub fn simulate(
    contrast: &DeclaredContrast,
    shape: &Shape,
    components: &Components,
    assumption: &Assumption,
    repetitions: usize,
    options: &PlanOptions,
) -> Simulated {
    let mut supported = 0usize;
    let mut precise = 0usize;
    let mut half_widths = Vec::with_capacity(options.simulations);
    for s in 0..options.simulations {
        let mut rng = Stream::PlanSimulation {
            question: &contrast.question,
            simulation: s,
        }
        .rng(options.seed);
        let mut drawn = std::collections::BTreeMap::new();
        let (ya, la) = simulate_arm(
            (shape.a, "a"),
            shape,
            (shape.distinct(shape.a, repetitions), assumption.effect),
            components,
            &mut drawn,
            &mut rng,
        );
        let (yb, lb) = simulate_arm(
            (shape.b, "b"),
            shape,
            (shape.distinct(shape.b, repetitions), 0.0),
            components,
            &mut drawn,
            &mut rng,
        );
        let Some(fit) = crossed_contrast((&ya, &la), (&yb, &lb)) else {
            continue;
        };
        let pooled = Decisive {
            test: "pooled t",
            estimate: fit.estimate,
            se: fit.se,
            df: fit.df,
        };
        let d = Decision::new(
            contrast,
            Role::Confirmatory,
            decisive(Some(&fit), pooled),
            None,
        );
        if d.p < options.alpha {
            supported += 1;
        }
        let half = (d.ci95.high - d.ci95.low) / 2.0;
        if assumption.sesoi.is_some_and(|m| half < m) {
            precise += 1;
        }
        half_widths.push(half);
    }
    let n = options.simulations.max(1) as f64;
    let power = supported as f64 / n;
    half_widths.sort_by(|a, b| a.total_cmp(b));
    Simulated {
        power,
        power_se: (power * (1.0 - power) / n).sqrt(),
        median_half_width: half_widths
            .get(half_widths.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        precise: if assumption.sesoi.is_some() {
            precise as f64 / n
        } else {
            f64::NAN
        },
    }
}

/// One candidate design for one question: the fewest repetitions per arm reaching the
/// power with this many vignettes (None: not within `max_repetitions`, or never, for a
/// deterministic read-out whose cells are all shown).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    pub question: String,
    pub model: String,
    pub readout: String,
    pub role: String,
    pub hypothesis: String,
    pub assumption: Assumption,
    pub components: Components,
    /// The vignettes as a multiple of the pilot's (1: the study's own).
    pub vignette_multiple: usize,
    pub vignettes_a: usize,
    pub vignettes_b: usize,
    pub system_prompts: usize,
    pub regulation_texts: usize,
    /// The repetitions per arm the row's figures are for.
    pub repetitions: usize,
    pub reached: bool,
    pub distinct_a: usize,
    pub distinct_b: usize,
    pub simulated: Simulated,
    pub note: String,
}

/// The shape of a pilot question's arms.
pub fn shape_of(q: &QuestionAnswer, directions: usize) -> Shape {
    let counts =
        |s: &super::stimuli::StimulusCounts| [s.vignettes, s.system_prompts, s.regulation_texts];
    Shape {
        a: counts(&q.stimuli_a),
        b: counts(&q.stimuli_b),
        shared: q.shared,
        directions,
        deterministic: q.readout.is_deterministic(),
    }
}

/// The fewest repetitions reaching the power at `shape` (doubling from the balanced
/// count, then bisecting on its multiples), with the figures at that count; or the
/// figures at the most tried where none reaches it.
pub fn search(
    contrast: &DeclaredContrast,
    shape: &Shape,
    components: &Components,
    assumption: &Assumption,
    options: &PlanOptions,
) -> (usize, bool, Simulated) {
    let block = shape.balanced();
    let at = |m: usize| simulate(contrast, shape, components, assumption, m * block, options);
    // A deterministic read-out shows everything at one balanced block.
    let most = if shape.deterministic {
        1
    } else {
        (options.max_repetitions / block).max(1)
    };
    let mut low = 0usize;
    let mut m = 1usize;
    let mut last = at(1);
    while last.power < options.power {
        if m >= most {
            return (m * block, false, last);
        }
        low = m;
        m = (m * 2).min(most);
        last = at(m);
    }
    // Power reached at m, not at low: bisect on multiples in between.
    let (mut high, mut best) = (m, last);
    while high - low > 1 {
        let mid = (low + high) / 2;
        let s = at(mid);
        if s.power >= options.power {
            high = mid;
            best = s;
        } else {
            low = mid;
        }
    }
    (high * block, true, best)
}

/// The plan rows of one pilot question: one per vignette multiple (one row where the
/// arms have no vignettes). `shuffled`: the option order is shuffled per trial, so a
/// deterministic read-out still gives every trial a value of its own.
pub fn plan_question(
    q: &QuestionAnswer,
    directions: usize,
    shuffled: bool,
    options: &PlanOptions,
) -> Vec<PlanRow> {
    let Some(fit) = q.crossed.as_ref() else {
        return Vec::new();
    };
    let components = Components::of(fit);
    let mut base = shape_of(q, directions);
    if shuffled {
        base.deterministic = false;
    }
    let assumption = Assumption::of(&q.contrast, q.decision.decisive.estimate);
    let pilot_vignettes = base.a[0].max(base.b[0]);
    let multiples: Vec<usize> = if pilot_vignettes == 0 {
        vec![1]
    } else {
        options.vignette_multiples.clone()
    };
    let hypothesis = match q.contrast.equivalence_margin {
        Some(m) => format!("equivalent within ±{m}"),
        None => q.contrast.direction.name().to_string(),
    };
    multiples
        .into_iter()
        .map(|k| {
            let shape = base.with_vignettes(pilot_vignettes * k);
            let (repetitions, reached, simulated) =
                search(&q.contrast, &shape, &components, &assumption, options);
            let mut notes = Vec::new();
            if shape.deterministic && !reached {
                notes.push(
                    "the read-out is deterministic: more repetitions repeat the same \
                     conversations, only more stimuli add information"
                        .to_string(),
                );
            } else if !reached {
                notes.push(format!(
                    "not reached within {} repetitions per arm",
                    options.max_repetitions
                ));
            }
            if q.validity == crate::measures::Verdict::Fail {
                notes.push(
                    "the pilot's instrument failed the validity gate: these components \
                     describe a read-out that measured nothing"
                        .to_string(),
                );
            }
            PlanRow {
                question: q.contrast.question.clone(),
                model: q.model.clone(),
                readout: q.readout.name().to_string(),
                role: q.decision.role.name().to_string(),
                hypothesis: hypothesis.clone(),
                assumption: assumption.clone(),
                components,
                vignette_multiple: k,
                vignettes_a: shape.a[0],
                vignettes_b: shape.b[0],
                system_prompts: shape.a[1].max(shape.b[1]),
                regulation_texts: shape.a[2].max(shape.b[2]),
                repetitions,
                reached,
                distinct_a: shape.distinct(shape.a, repetitions),
                distinct_b: shape.distinct(shape.b, repetitions),
                simulated,
                note: notes.join("; "),
            }
        })
        .collect()
}

/// One confirmatory question's precision: its 95% CI half-width against its target.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionCheck {
    pub question: String,
    pub model: String,
    pub half_width: f64,
    /// The SESOI, else the equivalence margin.
    pub target: f64,
    pub met: bool,
}

/// Whether a run's confirmatory questions are precise enough to stop: each one's 95%
/// interval half-width below its SESOI (or equivalence margin), per confirmatory
/// question that has a target.
pub fn precision_reached(questions: &[QuestionAnswer]) -> Vec<PrecisionCheck> {
    questions
        .iter()
        .filter(|q| q.decision.role == Role::Confirmatory)
        .filter_map(|q| {
            let target = q.contrast.sesoi.or(q.contrast.equivalence_margin)?;
            let half = (q.decision.ci95.high - q.decision.ci95.low) / 2.0;
            Some(PrecisionCheck {
                question: q.contrast.question.clone(),
                model: q.model.clone(),
                half_width: half,
                target,
                met: half < target,
            })
        })
        .collect()
}

/// A study's declared questions planned from pilot runs: the pilot is analysed under
/// the study file's questions, primary read-out and SESOIs (they may have been added
/// after the pilot), and every question on `readout` (default: the primary read-out,
/// else probability) gets its rows. Also returns the read-out planned.
pub struct StudyPlan {
    pub readout: Readout,
    pub rows: Vec<PlanRow>,
    /// Questions of the pilot with no crossed fit (a difference of differences, an
    /// empty arm), with the reason.
    pub skipped: Vec<(String, String)>,
}

pub fn plan_study(
    study: &Study,
    pilot: RunData,
    readout: Option<Readout>,
    options: &PlanOptions,
) -> StudyPlan {
    let readout = readout
        .or_else(|| {
            let primary = study.primary_readout.as_deref()?;
            Readout::ALL.into_iter().find(|r| r.name() == primary)
        })
        .unwrap_or(Readout::Probability);
    let analysis = analyse_under(study, pilot);
    let (directions, shuffled) = match study.option_order {
        OptionOrder::Fixed => (1, false),
        OptionOrder::Counterbalanced => (2, false),
        OptionOrder::ShuffleBound | OptionOrder::ShufflePositional => (1, true),
    };
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for q in analysis.questions.iter().filter(|q| q.readout == readout) {
        if q.crossed.is_none() {
            let why = if q.contrast.second_pair().is_some() {
                "a difference of differences is tested on paired repetitions, not planned here"
            } else {
                "the crossed model could not be fitted to the pilot's arms"
            };
            skipped.push((q.contrast.question.clone(), why.to_string()));
            continue;
        }
        let mut q_rows = plan_question(q, directions, shuffled, options);
        rows.append(&mut q_rows);
    }
    StudyPlan {
        readout,
        rows,
        skipped,
    }
}

/// One row of plan.csv.
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    question: &'a str,
    model: &'a str,
    readout: &'a str,
    role: &'a str,
    hypothesis: &'a str,
    assumed_difference: Num,
    assumed_from: &'a str,
    sesoi: Num,
    var_vignette: Num,
    var_system_prompt: Num,
    var_regulation_text: Num,
    var_residual: Num,
    vignettes_a: usize,
    vignettes_b: usize,
    system_prompts: usize,
    regulation_texts: usize,
    repetitions_per_arm: usize,
    power_reached: bool,
    distinct_observations_a: usize,
    distinct_observations_b: usize,
    power: Num,
    power_mc_se: Num,
    median_ci95_half_width: Num,
    share_half_width_below_sesoi: Num,
    alpha: Num,
    target_power: Num,
    simulations: usize,
    note: &'a str,
}

/// Writes the plan's rows as CSV to `path`.
pub fn write_csv(path: &Path, rows: &[PlanRow], options: &PlanOptions) -> Result<()> {
    csv_table::write_rows(
        path,
        rows.iter().map(|r| CsvRow {
            question: &r.question,
            model: &r.model,
            readout: &r.readout,
            role: &r.role,
            hypothesis: &r.hypothesis,
            assumed_difference: Num(r.assumption.effect),
            assumed_from: &r.assumption.source,
            sesoi: Num::or_na(r.assumption.sesoi),
            var_vignette: Num(r.components.vignette),
            var_system_prompt: Num(r.components.system_prompt),
            var_regulation_text: Num(r.components.regulation_text),
            var_residual: Num(r.components.residual),
            vignettes_a: r.vignettes_a,
            vignettes_b: r.vignettes_b,
            system_prompts: r.system_prompts,
            regulation_texts: r.regulation_texts,
            repetitions_per_arm: r.repetitions,
            power_reached: r.reached,
            distinct_observations_a: r.distinct_a,
            distinct_observations_b: r.distinct_b,
            power: Num(r.simulated.power),
            power_mc_se: Num(r.simulated.power_se),
            median_ci95_half_width: Num(r.simulated.median_half_width),
            share_half_width_below_sesoi: Num(r.simulated.precise),
            alpha: Num(options.alpha),
            target_power: Num(options.power),
            simulations: options.simulations,
            note: &r.note,
        }),
    )
}

/// The pilot analysed under `study`'s questions and primary read-out (they may have
/// been declared after the pilot ran).
fn analyse_under(study: &Study, mut pilot: RunData) -> super::analysis::Analysis {
    for h in &mut pilot.headers {
        h.study.contrasts = study.contrasts.clone();
        h.study.primary_readout = study.primary_readout.clone();
    }
    analyse(&pilot, &ReportOptions::default())
}

/// `precision_reached` for runs under `study`'s questions, without simulating a plan.
pub fn study_precision(study: &Study, pilot: RunData) -> Vec<PrecisionCheck> {
    precision_reached(&analyse_under(study, pilot).questions)
}

/// `precision_reached` for a run directory as it stands (finished or not), under the
/// questions it recorded.
pub fn run_precision(dir: &Path) -> Result<Vec<PrecisionCheck>> {
    let data = super::load::load_runs(&[dir.to_path_buf()])?;
    Ok(precision_reached(
        &analyse(&data, &ReportOptions::default()).questions,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contrast(direction: Direction, sesoi: Option<f64>) -> DeclaredContrast {
        super::super::confirmatory::tests::contrast(direction, sesoi, None)
    }

    fn options(simulations: usize) -> PlanOptions {
        PlanOptions {
            simulations,
            max_repetitions: 400,
            ..PlanOptions::default()
        }
    }

    /// Vignettes in arm a only (an induction against a control text), prompts shared.
    const SHAPE: Shape = Shape {
        a: [3, 2, 0],
        b: [0, 2, 0],
        shared: [false, true, false],
        directions: 1,
        deterministic: false,
    };

    #[test]
    fn the_balanced_count_is_the_lcm_of_the_arms_cells_times_the_directions() {
        assert_eq!(SHAPE.balanced(), 6);
        let s = Shape {
            a: [3, 4, 3],
            b: [3, 4, 0],
            shared: [true, true, false],
            directions: 2,
            deterministic: true,
        };
        assert_eq!(s.balanced(), 72);
        assert_eq!(s.distinct(s.b, 1000), 24);
    }

    #[test]
    fn with_only_residual_noise_the_power_matches_the_t_test() {
        // No stimulus varies: the crossed model is the pooled t test. Effect 1 SD,
        // n = 18 per arm, one-sided alpha 0.05 on 34 df: power about 0.90 (normal
        // approximation Phi(3 - 1.645) = 0.912; the t's heavier tail takes a little).
        let comps = Components {
            vignette: 0.0,
            system_prompt: 0.0,
            regulation_text: 0.0,
            residual: 1.0,
        };
        let c = contrast(Direction::Greater, Some(1.0));
        let a = Assumption::of(&c, 0.0);
        let plain = Shape {
            a: [0; 3],
            b: [0; 3],
            shared: [false; 3],
            directions: 1,
            deterministic: false,
        };
        let s = simulate(&c, &plain, &comps, &a, 18, &options(400));
        assert!((s.power - 0.90).abs() < 0.04, "{s:?}");
        // The same data with two prompts entering the model cost a little power: the
        // prompt variance is estimated, not known to be 0.
        let with_prompts = simulate(&c, &SHAPE, &comps, &a, 18, &options(400));
        assert!(with_prompts.power <= s.power + 0.02, "{with_prompts:?}");
    }

    #[test]
    fn vignette_variance_caps_the_power_whatever_the_repetitions() {
        // Three vignettes in one arm with an SD of 1 against an effect of 0.5: the
        // difference rests on 3 vignette draws, so adding conversations cannot reach
        // 80%; more vignettes can.
        let comps = Components {
            vignette: 1.0,
            system_prompt: 0.0,
            regulation_text: 0.0,
            residual: 0.05,
        };
        let c = contrast(Direction::Greater, Some(0.5));
        let a = Assumption::of(&c, 0.0);
        let opts = options(100);
        let (_, reached, s) = search(&c, &SHAPE, &comps, &a, &opts);
        assert!(!reached, "{s:?}");
        assert!(s.power < 0.6, "{s:?}");
        let (_, reached_more, more) = search(&c, &SHAPE.with_vignettes(48), &comps, &a, &opts);
        assert!(reached_more && more.power >= 0.8, "{more:?}");
    }

    #[test]
    fn a_deterministic_read_out_gains_nothing_from_repetitions_past_its_cells() {
        let s = Shape {
            deterministic: true,
            ..SHAPE
        };
        assert_eq!(s.distinct(s.a, 6), 6);
        assert_eq!(s.distinct(s.a, 600), 6);
    }

    #[test]
    fn a_study_planned_from_a_simulated_pilot_reaches_the_promised_power_and_precision() {
        // A simulated model whose true components are known: 6 vignettes in arm a, 4
        // system prompts shared by both arms, a sampled read-out.
        let truth = Components {
            vignette: 0.04,
            system_prompt: 0.01,
            regulation_text: 0.0,
            residual: 0.25,
        };
        let shape = Shape {
            a: [6, 4, 0],
            b: [0, 4, 0],
            shared: [false, true, false],
            directions: 1,
            deterministic: false,
        };
        // The pilot: 48 repetitions per arm, fitted as the report fits it.
        let mut rng = Stream::Named("pilot").rng(5);
        let mut drawn = std::collections::BTreeMap::new();
        let (ya, la) = simulate_arm(
            (shape.a, "a"),
            &shape,
            (48, 0.1),
            &truth,
            &mut drawn,
            &mut rng,
        );
        let (yb, lb) = simulate_arm(
            (shape.b, "b"),
            &shape,
            (48, 0.0),
            &truth,
            &mut drawn,
            &mut rng,
        );
        let fit = crossed_contrast((&ya, &la), (&yb, &lb)).expect("the pilot fits");
        let estimated = Components::of(&fit);
        let c = contrast(Direction::Greater, Some(0.3));
        let assumption = Assumption::of(&c, fit.estimate);
        let opts = options(500);
        let (n, reached, promised) = search(&c, &shape, &estimated, &assumption, &opts);
        assert!(reached, "{promised:?}");
        // Studies of that size on the true model, with draws the plan never saw.
        let check = simulate(
            &c,
            &shape,
            &truth,
            &assumption,
            n,
            &PlanOptions {
                seed: 99,
                simulations: 400,
                ..opts.clone()
            },
        );
        crate::say!("planned {n} per arm: promised {promised:?}; on the true model {check:?}");
        // Planned from the true components themselves, the promise is kept within
        // Monte Carlo error: the planner is calibrated, and what is left above is the
        // pilot's estimation error.
        let (n_true, _, promised_true) = search(&c, &shape, &truth, &assumption, &opts);
        let kept = simulate(
            &c,
            &shape,
            &truth,
            &assumption,
            n_true,
            &PlanOptions {
                seed: 99,
                simulations: 400,
                ..opts.clone()
            },
        );
        crate::say!(
            "planned from the truth: {n_true} per arm, promised {promised_true:?}, kept {kept:?}"
        );
        assert!(
            kept.power >= opts.power - 0.06,
            "planned {n_true} from the true components; power {:.2}",
            kept.power
        );
        assert!(
            check.power >= opts.power - 0.08,
            "planned {n} per arm for power {:.2}; on the true model {:.2}",
            promised.power,
            check.power
        );
        assert!(
            (check.median_half_width / promised.median_half_width - 1.0).abs() < 0.25,
            "half-width promised {:.3}, reached {:.3}",
            promised.median_half_width,
            check.median_half_width
        );
    }
}
