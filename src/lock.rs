//! Advisory file locks that the OS releases when the process dies, so a crash never
//! leaves a directory locked: one writer per run directory, per second-judge file and
//! per model download.

use crate::error::{IoContext, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The outcome of trying to take a lock.
pub enum Attempt {
    /// This process holds the lock while the file lives.
    Held(File),
    /// Another process holds it; `lock()` on the file waits for it.
    Busy(File),
}

/// Opens (creating) the lock file at `path` and tries to take its lock.
pub fn try_lock(path: &Path) -> Result<Attempt> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_path(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Attempt::Held(file)),
        Err(TryLockError::WouldBlock) => Ok(Attempt::Busy(file)),
        Err(TryLockError::Error(e)) => Err(e).with_path(path),
    }
}
