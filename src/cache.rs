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

/// The cached file if present with the expected size (`verified_file` also checks the
/// hash). A file of another size is refused with the fix, never silently replaced.
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

/// The cached file, its sha256 verified. The size is checked on every use; the full
/// hash once per version of the file on disk: a marker beside it (`<file>.verified`)
/// remembers the (sha256, size, modification time, inode) that hashed correctly, and any
/// change to the file invalidates it. A wrong file is refused (never used, never
/// recorded as the model's provenance) with the command that fixes it.
pub fn verified_file(entry: &ModelEntry) -> Result<PathBuf> {
    let path = cached_file(entry)?;
    if verification_stamp(entry, &path)? == std::fs::read_to_string(marker_path(&path)).ok() {
        return Ok(path);
    }
    verify_file(entry, &path, |_| {})?;
    remember_verified(entry, &path);
    Ok(path)
}

/// Records that `path` matched `entry`'s sha256 (best effort: a read-only cache only
/// means hashing again next time).
pub fn remember_verified(entry: &ModelEntry, path: &Path) {
    if let Ok(Some(stamp)) = verification_stamp(entry, path) {
        let _ = std::fs::write(marker_path(path), stamp);
    }
}

fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

/// What identifies this version of the file on disk, with the hash it must have.
fn verification_stamp(entry: &ModelEntry, path: &Path) -> Result<Option<String>> {
    let meta = std::fs::metadata(path).with_path(path)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    Ok(modified.map(|m| format!("{} {} {m} {inode}\n", entry.sha256, meta.len())))
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
