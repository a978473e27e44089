//! The report's vocabulary: a `Section` is a title and `Block`s (prose, a `Table` of
//! formatted cells, a figure, a list), and the cell formatters every section uses (numbers,
//! p values, intervals, verdicts). `document` builds sections from an analysis and renders
//! them; `internal_states` builds its own sections from the same parts.

use crate::measures::Verdict;
use crate::stats::{BootstrapCi, Interval, MIN_N_INTERVAL};

/// A table of already formatted cells.
pub struct Table {
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A part of the report.
pub enum Block {
    Text(String),
    Table(Table),
    Figure(usize),
    List(Vec<String>),
}

pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
}

pub fn f(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

pub fn p(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x < 0.001 {
        "<0.001".into()
    } else {
        format!("{x:.3}")
    }
}

pub fn interval(i: Interval, digits: usize) -> String {
    format!("[{}, {}]", f(i.low, digits), f(i.high, digits))
}

/// The 95% interval shown for `n` observations (the smaller arm for a difference):
/// BCa from n = 10, percentile below (BCa's corrections are unstable on so few), none
/// below n = 3; the method is named beside it.
pub fn shown_ci(ci: &BootstrapCi, n: usize, digits: usize) -> String {
    match ci.shown(n) {
        Some((i, method)) => format!("{} {method}", interval(i, digits)),
        None => format!("– (n < {MIN_N_INTERVAL})"),
    }
}

pub fn estimate(ci: &BootstrapCi, n: usize, digits: usize) -> String {
    format!("{} {}", f(ci.estimate, digits), shown_ci(ci, n, digits))
}

pub fn table(caption: &str, headers: &[&str], rows: Vec<Vec<String>>) -> Block {
    Block::Table(Table {
        caption: caption.into(),
        headers: headers.iter().map(|s| s.to_string()).collect(),
        rows,
    })
}

/// What a results table shows in its `validity` column; rows with `FAILED` are greyed
/// in the HTML report.
pub const FAILED: &str = "FAIL: not evidence";

/// A verdict as a report table shows it: a failed read-out says it is not evidence (and
/// its row is greyed); CSV files carry `Verdict::name` instead.
pub fn validity_mark(v: Verdict) -> String {
    match v {
        Verdict::Fail => FAILED.into(),
        Verdict::Warn | Verdict::Pass => v.name().into(),
    }
}
