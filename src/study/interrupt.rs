//! Stopping a run cleanly on SIGINT, SIGTERM or SIGHUP (Ctrl-C, a batch scheduler's
//! warning before it kills, a closed terminal): the handler only records the signal; the
//! runner sees it after the trial in progress, flushes, marks the run `interrupted` and
//! returns, and the binary prints the resume command and exits with 128 + the signal.
//! A second signal while stopping ends the process at once (records already written are
//! whole lines, so `--resume` still continues exactly).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The signals that stop a run.
pub const SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// The signal received (0: none).
fn received() -> &'static Arc<AtomicUsize> {
    static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Installs the handlers (once per process; later calls do nothing).
pub fn install() -> std::io::Result<()> {
    static INSTALLED: OnceLock<std::io::Result<()>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let stopping = Arc::new(AtomicBool::new(false));
        for sig in SIGNALS {
            // Order matters: the conditional shutdown runs first, so the first signal
            // only sets the flags and a second one exits.
            signal_hook::flag::register_conditional_shutdown(
                sig,
                128 + sig,
                Arc::clone(&stopping),
            )?;
            signal_hook::flag::register(sig, Arc::clone(&stopping))?;
            signal_hook::flag::register_usize(sig, Arc::clone(received()), sig as usize)?;
        }
        Ok(())
    });
    result
        .as_ref()
        .map(|_| ())
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
}

/// The signal that asked the run to stop, if any.
pub fn requested() -> Option<i32> {
    match received().load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig as i32),
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
