//! Progress of a run: a bar on a terminal; in a batch job's log (no terminal) a line
//! every so often with trials done of total, rate, ETA and the condition in progress,
//! so a job's output file says how far it is.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

pub struct Progress {
    bar: ProgressBar,
    /// Without a terminal: how often to print a line.
    every: Option<Duration>,
    started: Instant,
    last_line: Instant,
    total: usize,
    done: usize,
    now: String,
}

impl Progress {
    /// A bar when `bar` is set, else progress lines every `every`.
    pub fn new(bar: bool, every: Duration, total: usize) -> Self {
        let progress_bar = if bar {
            ProgressBar::new(total as u64)
        } else {
            ProgressBar::hidden()
        };
        progress_bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} trials  {per_sec}  eta {eta}  {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        let now = Instant::now();
        Progress {
            bar: progress_bar,
            every: (!bar).then_some(every),
            started: now,
            last_line: now,
            total,
            done: 0,
            now: String::new(),
        }
    }

    /// What is being worked on (a condition and repetition).
    pub fn set_message(&mut self, message: String) {
        self.bar.set_message(message.clone());
        self.now = message;
    }

    pub fn inc(&mut self) {
        self.done += 1;
        self.bar.inc(1);
        if let Some(every) = self.every {
            if self.last_line.elapsed() >= every {
                self.last_line = Instant::now();
                crate::say!("{}", self.line());
            }
        }
    }

    /// The progress line of a batch log.
    pub fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / elapsed.max(1e-9);
        let left = self.total.saturating_sub(self.done);
        let eta = if rate > 0.0 {
            humantime::format_duration(Duration::from_secs((left as f64 / rate).round() as u64))
                .to_string()
        } else {
            "unknown".into()
        };
        let share = 100.0 * self.done as f64 / self.total.max(1) as f64;
        format!(
            "progress: {}/{} trials ({share:.1}%), {rate:.2} trials/s, ETA {eta}, now {}",
            self.done, self.total, self.now
        )
    }

    /// A line for the log (above the bar on a terminal).
    pub fn note(&self, text: &str) {
        self.bar.suspend(|| crate::say!("{text}"));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
