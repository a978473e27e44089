//! What a declared question's answer rests on: which rows are confirmatory (the study's
//! `primary_readout`, questions not marked exploratory), the one test each is decided by
//! (stimuli as a sample where the design varies them), its p in the predicted direction,
//! the two one-sided tests against the smallest effect of interest, the effect as a
//! percentage of the scale's range (POMP), and Holm's correction over the one declared
//! family per model.

use crate::scenario::study::{DeclaredContrast, Direction};
use crate::stats::crossed::CrossedFit;
use crate::stats::{holm, tost, Equivalence, Interval, Tost};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Whether a row belongs to the declared confirmatory family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Confirmatory,
    Exploratory,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Confirmatory => "confirmatory",
            Role::Exploratory => "exploratory",
        }
    }

    /// Confirmatory: the study declares a primary read-out, this is it, and the
    /// question is not marked exploratory.
    pub fn of(contrast: &DeclaredContrast, readout: &str, primary: Option<&str>) -> Role {
        if primary == Some(readout) && !contrast.exploratory {
            Role::Confirmatory
        } else {
            Role::Exploratory
        }
    }
}

/// The estimate a question is decided on, with its standard error and df, and the test
/// they come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decisive {
    pub test: &'static str,
    pub estimate: f64,
    pub se: f64,
    pub df: f64,
}

/// The crossed random-effects model where one of the stimulus factors varied (then a
/// new vignette or prompt is part of the error), else the conversation-level test.
pub fn decisive(crossed: Option<&CrossedFit>, conversations: Decisive) -> Decisive {
    match crossed {
        Some(f) if !f.components.is_empty() && f.se.is_finite() && f.se > 0.0 => Decisive {
            test: "crossed random effects (stimuli as a sample), Satterthwaite t",
            estimate: f.estimate,
            se: f.se,
            df: f.df,
        },
        _ => conversations,
    }
}

/// A question's confirmatory reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub role: Role,
    pub decisive: Decisive,
    /// The 95% t interval of the estimate.
    pub ci95: Interval,
    /// The p value of the question's hypothesis: for a difference question one-sided in
    /// the predicted direction (two-sided for "either"); for an equivalence question the
    /// TOST p.
    pub p: f64,
    /// The two-sided p of the estimate (what an equivalence verdict weighs against TOST).
    pub p_two_sided: f64,
    /// Holm-adjusted within the model's confirmatory family (NaN for exploratory rows).
    pub p_holm: f64,
    /// Two one-sided tests against +-SESOI (None without one).
    pub sesoi: Option<Tost>,
    /// The estimate and its 95% interval as a percentage of the scale's range.
    pub pomp: Option<(f64, Interval)>,
}

pub const ALPHA: f64 = 0.05;

impl Decision {
    pub fn new(
        contrast: &DeclaredContrast,
        role: Role,
        decisive: Decisive,
        range: Option<(f64, f64)>,
    ) -> Decision {
        let Decisive {
            estimate, se, df, ..
        } = decisive;
        let dist = StudentsT::new(0.0, 1.0, df).ok();
        let usable = dist.is_some() && estimate.is_finite() && se.is_finite() && se > 0.0;
        let (ci95, p_two, p_greater) = match dist.filter(|_| usable) {
            Some(d) => {
                let q = d.inverse_cdf(0.975);
                let t = estimate / se;
                (
                    Interval {
                        low: estimate - q * se,
                        high: estimate + q * se,
                    },
                    2.0 * (1.0 - d.cdf(t.abs())),
                    1.0 - d.cdf(t),
                )
            }
            None => (Interval::NAN, f64::NAN, f64::NAN),
        };
        let sesoi = contrast.sesoi.map(|m| tost(estimate, se, df, m));
        let p = if contrast.equivalence_margin.is_some() {
            sesoi.map_or(f64::NAN, |t| t.p)
        } else {
            match contrast.direction {
                Direction::Either => p_two,
                Direction::Greater => p_greater,
                Direction::Less => 1.0 - p_greater,
            }
        };
        let pomp = range.filter(|(lo, hi)| hi > lo).map(|(lo, hi)| {
            let pct = |x: f64| 100.0 * x / (hi - lo);
            (
                pct(estimate),
                Interval {
                    low: pct(ci95.low),
                    high: pct(ci95.high),
                },
            )
        });
        Decision {
            role,
            decisive,
            ci95,
            p,
            p_two_sided: p_two,
            p_holm: f64::NAN,
            sesoi,
            pomp,
        }
    }

    /// The p the verdict reads: Holm-adjusted for confirmatory rows, raw otherwise.
    pub fn p_for_verdict(&self) -> f64 {
        match self.role {
            Role::Confirmatory => self.p_holm,
            Role::Exploratory => self.p,
        }
    }

    /// The answer in words, at alpha 0.05.
    pub fn verdict(&self, contrast: &DeclaredContrast) -> &'static str {
        let p = self.p_for_verdict();
        if !p.is_finite() {
            return "undetermined";
        }
        if contrast.equivalence_margin.is_some() {
            return match self.sesoi.map(|t| t.verdict(self.p_two_sided)) {
                Some(Equivalence::Equivalent) if p < ALPHA => "equivalent",
                _ if self.p_two_sided < ALPHA => "different",
                _ => "inconclusive",
            };
        }
        let within_sesoi = self.sesoi.is_some_and(|t| t.p < ALPHA);
        match (p < ALPHA, within_sesoi) {
            (true, true) => "different, but smaller than the SESOI",
            (true, false) if contrast.direction.is_either() => "different",
            (true, false) => "as predicted",
            (false, true) => "equivalent (within ±SESOI)",
            (false, false) => "inconclusive",
        }
    }
}

/// Holm's correction over each model's confirmatory rows: the one declared family.
/// `rows` gives (model, decision) for every answered question.
pub fn holm_confirmatory<'a>(rows: impl Iterator<Item = (&'a str, &'a mut Decision)>) {
    let mut by_model: std::collections::BTreeMap<&str, Vec<&mut Decision>> = Default::default();
    for (model, d) in rows {
        if d.role == Role::Confirmatory {
            by_model.entry(model).or_default().push(d);
        }
    }
    for family in by_model.values_mut() {
        let ps: Vec<f64> = family.iter().map(|d| d.p).collect();
        for (d, p) in family.iter_mut().zip(holm(&ps)) {
            d.p_holm = p;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A question a - b on one scale with the given hypothesis (shared with the
    /// planner's tests).
    pub(crate) fn contrast(
        direction: Direction,
        sesoi: Option<f64>,
        margin: Option<f64>,
    ) -> DeclaredContrast {
        DeclaredContrast {
            question: "q".into(),
            a: "a".into(),
            b: "b".into(),
            instrument: "i".into(),
            subscale: "s".into(),
            family: "f".into(),
            kind: "causal".into(),
            c: None,
            d: None,
            equivalence_margin: margin,
            confound: None,
            direction,
            sesoi,
            exploratory: false,
        }
    }

    fn decisive(estimate: f64, se: f64, df: f64) -> Decisive {
        Decisive {
            test: "t",
            estimate,
            se,
            df,
        }
    }

    #[test]
    fn a_directional_question_uses_the_one_sided_p_in_its_direction() {
        // t = 2 on 10 df: upper tail 0.036694, two-sided 0.073388.
        let up = Decision::new(
            &contrast(Direction::Greater, None, None),
            Role::Exploratory,
            decisive(2.0, 1.0, 10.0),
            None,
        );
        assert!((up.p - 0.036_694).abs() < 1e-5, "{}", up.p);
        let down = Decision::new(
            &contrast(Direction::Less, None, None),
            Role::Exploratory,
            decisive(2.0, 1.0, 10.0),
            None,
        );
        assert!((down.p - (1.0 - 0.036_694)).abs() < 1e-5, "{}", down.p);
        let either = Decision::new(
            &contrast(Direction::Either, None, None),
            Role::Exploratory,
            decisive(2.0, 1.0, 10.0),
            None,
        );
        assert!((either.p - 0.073_388).abs() < 1e-5, "{}", either.p);
        assert_eq!(
            up.verdict(&contrast(Direction::Greater, None, None)),
            "as predicted"
        );
        assert_eq!(
            either.verdict(&contrast(Direction::Either, None, None)),
            "inconclusive"
        );
    }

    #[test]
    fn pomp_is_the_estimate_and_interval_over_the_scale_range() {
        let d = Decision::new(
            &contrast(Direction::Either, None, None),
            Role::Exploratory,
            decisive(3.0, 1.0, 1000.0),
            Some((20.0, 80.0)),
        );
        let (pomp, ci) = d.pomp.unwrap();
        assert!((pomp - 5.0).abs() < 1e-12);
        assert!(
            (ci.low - 100.0 * (3.0 - 1.962_339) / 60.0).abs() < 1e-4,
            "{ci:?}"
        );
    }

    #[test]
    fn an_equivalence_question_is_decided_by_tost_and_a_small_difference_by_sesoi() {
        let eq = contrast(Direction::Either, Some(2.0), Some(2.0));
        let d = Decision::new(&eq, Role::Exploratory, decisive(0.0, 0.5, 30.0), None);
        assert!(d.p < 0.001, "{}", d.p);
        assert_eq!(d.verdict(&eq), "equivalent");
        let wide = Decision::new(&eq, Role::Exploratory, decisive(0.0, 3.0, 30.0), None);
        assert_eq!(wide.verdict(&eq), "inconclusive");
        let diff = contrast(Direction::Greater, Some(2.0), None);
        let small = Decision::new(&diff, Role::Exploratory, decisive(0.5, 0.1, 30.0), None);
        assert_eq!(
            small.verdict(&diff),
            "different, but smaller than the SESOI"
        );
    }

    #[test]
    fn holm_runs_over_the_confirmatory_rows_of_each_model_only() {
        let c = contrast(Direction::Either, None, None);
        let mk = |role, est| Decision::new(&c, role, decisive(est, 1.0, 30.0), None);
        let mut rows = [
            ("m", mk(Role::Confirmatory, 2.5)),
            ("m", mk(Role::Confirmatory, 1.0)),
            ("m", mk(Role::Exploratory, 3.0)),
            ("n", mk(Role::Confirmatory, 2.5)),
        ];
        holm_confirmatory(rows.iter_mut().map(|(m, d)| (*m, d)));
        let (p1, p2) = (rows[0].1.p, rows[1].1.p);
        assert!((rows[0].1.p_holm - 2.0 * p1).abs() < 1e-12);
        assert!((rows[1].1.p_holm - p2.max(2.0 * p1)).abs() < 1e-12);
        assert!(rows[2].1.p_holm.is_nan());
        assert!((rows[3].1.p_holm - rows[3].1.p).abs() < 1e-12);
    }
}
