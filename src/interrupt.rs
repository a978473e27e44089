//! Stopping a run cleanly on SIGINT, SIGTERM or SIGHUP (Ctrl-C, a batch scheduler's
//! warning before it kills, a closed terminal).
//!
//! A thread of ours receives the signals, so it can say at once what happens: the
//! first signal is acknowledged on stderr and recorded; the model checks the record
//! between layers (`stop_point`), so the unit of work in progress is abandoned within
//! about a second, its records not written; the runner then flushes, marks the run
//! `interrupted` and returns, and the binary prints the resume command and exits with
//! 128 + the signal. A second signal ends the process at once, after the hook the
//! runner registered (`on_forced_exit`) has marked run.json `interrupted` too. Records
//! already written are whole lines, so `--resume` still continues exactly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The signals that stop a run.
pub const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// The signal received (0: none).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// What to do before a forced exit (see `on_forced_exit`).
type ForcedExitHook = Box<dyn FnOnce(i32) + Send>;

fn forced_exit_hook() -> &'static Mutex<Option<ForcedExitHook>> {
    static HOOK: OnceLock<Mutex<Option<ForcedExitHook>>> = OnceLock::new();
    HOOK.get_or_init(|| Mutex::new(None))
}

/// Installs the handlers (once per process; later calls do nothing).
pub fn install() -> std::io::Result<()> {
    static INSTALLED: OnceLock<std::io::Result<()>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let mut signals = signal_hook::iterator::Signals::new(SIGNALS)?;
        std::thread::Builder::new()
            .name("affectbench-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    received(sig);
                }
            })?;
        Ok(())
    });
    result
        .as_ref()
        .map(|_| ())
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
}

/// Handles one signal on the signal thread: the first is recorded and acknowledged, a
/// second one runs the forced-exit hook and exits.
fn received(sig: i32) {
    let first = RECEIVED
        .compare_exchange(0, sig as usize, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first {
        crate::say!(
            "\naffectbench: {} received: abandoning the work in progress and saving what is done; send it again to stop at once",
            name(sig)
        );
        return;
    }
    let hook = forced_exit_hook()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(hook) = hook {
        hook(sig);
    }
    crate::say!(
        "affectbench: {}, a second stop signal: stopping at once",
        name(sig)
    );
    std::process::exit(128 + sig);
}

/// Registers what a forced exit (a second signal) does before the process ends, such
/// as marking run.json `interrupted`; replaces any earlier hook.
pub fn on_forced_exit(hook: impl FnOnce(i32) + Send + 'static) {
    *forced_exit_hook().lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
}

/// Removes the forced-exit hook (the work it guarded is done).
pub fn clear_forced_exit() {
    forced_exit_hook()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
}

/// The signal that asked the run to stop, if any.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig as i32),
    }
}

/// A point where long computations (a model's layers, decode steps) give up once a stop
/// was asked for: an error naming the signal. Callers that catch errors per trial check
/// `requested()` before recording one, so this error is never written as a result.
pub fn stop_point() -> candle_core::Result<()> {
    match requested() {
        None => Ok(()),
        Some(sig) => Err(candle_core::Error::Msg(format!(
            "interrupted by {}",
            name(sig)
        ))),
    }
}

/// The conventional name of a stopping signal.
pub fn name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
