//! Records the git revision the binary was built from (for run provenance), and with
//! the `cuda` feature the CUDA version nvcc reports (a fixed-plan run's bits depend on it).
//!
//! The script reruns when the commit changes (HEAD, the branch it names, packed refs) or
//! when a file the crate is built from changes (then the crate recompiles anyway, and
//! `-dirty` is decided afresh). It does not watch `.git/index`: git rewrites the index
//! on mere status checks (`git describe --dirty` among them), which made every build
//! recompile the crate.
use std::path::Path;

fn main() {
    let rev = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=40"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=AFFECTBENCH_GIT_REVISION={rev}");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let nvcc = std::process::Command::new("nvcc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        // "Cuda compilation tools, release 13.0, V13.0.88"
        let release = nvcc
            .split("release ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("unknown");
        println!("cargo:rustc-env=AFFECTBENCH_CUDA_VERSION={release}");
    }
    for path in [
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "models",
        "benches/workloads",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    let git = Path::new(".git");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{branch}");
        }
    }
}
