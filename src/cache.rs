//! The local model cache: where fetched files live and how they are checked.
//!
//! Layout: `$AFFECTBENCH_CACHE/models/<name>/<file_name>` (default cache root: the user's
//! cache directory + `affectbench`). A file only ever appears there by an atomic rename
//! after its sha256 matched, so an interrupted download is never mistaken for a finished one.

use crate::error::{Error, IoContext, Result};
use crate::registry::ModelEntry;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The cache root: `$AFFECTBENCH_CACHE`, else `<user cache dir>/affectbench`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("AFFECTBENCH_CACHE") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("affectbench")
}

/// Where a registry model's file lives once fetched.
pub fn model_path(entry: &ModelEntry) -> PathBuf {
    cache_root()
        .join("models")
        .join(&entry.name)
        .join(&entry.file_name)
}

/// The cached file if present with the expected size. (A full hash is `verify`'s job;
/// the size check catches the common corruption, truncation, on every use.)
pub fn cached_file(entry: &ModelEntry) -> Result<PathBuf> {
    let path = model_path(entry);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == entry.size => Ok(path),
        Ok(meta) => Err(Error::Checksum {
            name: entry.name.clone(),
            path,
            expected: format!("{} ({} bytes)", entry.sha256, entry.size),
            actual: format!("a file of {} bytes", meta.len()),
        }),
        Err(_) => Err(Error::NotFetched {
            name: entry.name.clone(),
        }),
    }
}

/// sha256 of a file, hex-encoded, calling `progress` with bytes read so far.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<String> {
    let mut file = std::fs::File::open(path).with_path(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf).with_path(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks a file against the entry's sha256; `Ok(())` or a `Checksum` error.
pub fn verify_file(entry: &ModelEntry, path: &Path, progress: impl FnMut(u64)) -> Result<()> {
    let actual = sha256_file(path, progress)?;
    if actual == entry.sha256 {
        Ok(())
    } else {
        Err(Error::Checksum {
            name: entry.name.clone(),
            path: path.to_path_buf(),
            expected: entry.sha256.clone(),
            actual,
        })
    }
}
