//! The `affectbench` binary as a user runs it: models, generate, tokenize, errors.

use crate::common;

use std::process::Output;

use common::affectbench;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn models_list_names_every_registry_model_and_the_default() {
    let list = affectbench(&["models", "list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    for name in [
        "smollm2-135m-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "gemma3-270m",
        "(default)",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn models_path_prints_the_cached_file() {
    common::real_model("smollm2-135m-instruct");
    let path = affectbench(&["models", "path", "smollm2-135m-instruct"]);
    assert!(path.status.success());
    let p = stdout(&path).trim().to_string();
    assert!(
        std::path::Path::new(&p).is_absolute() && p.ends_with(".gguf"),
        "{p}"
    );
}

#[test]
fn models_verify_accepts_a_cached_file_with_its_sha256() {
    common::real_model("smollm2-135m-instruct");
    let verify = affectbench(&["models", "verify", "smollm2-135m-instruct"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn generate_is_reproducible_by_seed_and_varies_across_seeds() {
    common::real_model("smollm2-135m-instruct");
    let run = |seed: &str| {
        let o = affectbench(&[
            "generate",
            "--prompt",
            "Describe a rainy afternoon.",
            "-t",
            "0.9",
            "-s",
            seed,
            "-n",
            "24",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(err.contains("tok/s"), "speed goes to stderr: {err}");
        stdout(&o)
    };
    let (a, b, c) = (run("7"), run("7"), run("8"));
    assert!(!a.trim().is_empty());
    assert_eq!(a, b, "same seed, same text");
    assert_ne!(a, c, "different seeds, different text");
}

#[test]
fn raw_generation_at_temperature_zero_is_greedy() {
    common::real_model("smollm2-135m-instruct");
    let o = affectbench(&[
        "generate",
        "--raw",
        "--prompt",
        "The capital of France is",
        "-t",
        "0",
        "-n",
        "5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("greedy"));
}

#[test]
fn tokenize_prints_the_ids_as_json() {
    common::real_model("smollm2-135m-instruct");
    let o = affectbench(&["tokenize", "Hello, world!"]);
    assert!(o.status.success());
    let ids: Vec<u32> = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(!ids.is_empty());
}

#[test]
fn tokenize_chat_prints_the_rendered_prompt() {
    common::real_model("smollm2-135m-instruct");
    let chat = affectbench(&["tokenize", "--chat", "Hi"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&chat).trim()).unwrap();
    assert!(v["prompt"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>user\nHi<|im_end|>"));
}

#[test]
fn an_unknown_model_is_refused_pointing_to_models_list() {
    let o = affectbench(&["generate", "--model", "no-such-model", "--prompt", "x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no-such-model") && err.contains("models list"),
        "{err}"
    );
}

#[test]
fn a_negative_temperature_is_refused_naming_it() {
    let o = affectbench(&["generate", "--prompt", "x", "--temperature=-1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("temperature"));
}

#[test]
fn impossible_repetitions_on_the_command_line_are_refused() {
    // Regression: --repetitions 0 was accepted from the CLI (the study file rejects 0).
    for bad in ["0", "100000000000", "many"] {
        let o = affectbench(&["run", "scenarios/studies/smoke.toml", "--repetitions", bad]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && stderr.contains("from 1 to 100000"),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn concurrent_fetches_into_one_cache_download_once() {
    // Regression: N array tasks on an empty shared cache downloaded N copies.
    let cache = tempfile::tempdir().unwrap();
    let spawn = || {
        common::affectbench_command()
            .env("AFFECTBENCH_CACHE", cache.path())
            .env("AFFECTBENCH_NO_HUB", "1")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("AFFECTBENCH_OFFLINE")
            .args(["models", "fetch", "smollm2-135m-instruct"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).trim().ends_with(".gguf"));
    }
    let downloads = outputs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("pip download"))
        .count();
    assert_eq!(
        downloads,
        1,
        "{:?}",
        outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn validate_instrument_prints_the_gate_and_writes_validity_csv() {
    // SmolLM2-135M answers by position (the option shown first wins), so the gate must
    // fail its 4-option state scale on position dominance, and the instructed controls
    // must be run and judged.
    common::real_model("smollm2-135m-instruct");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vi");
    let o = affectbench(&[
        "validate-instrument",
        "--model",
        "smollm2-135m-instruct",
        "sadness-state",
        "--repetitions",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.starts_with("Validity gate:"), "{text}");
    assert!(
        text.contains("sadness-state / probability: position_dominance fail"),
        "{text}"
    );
    let csv = std::fs::read_to_string(out.join("tables/validity.csv")).unwrap();
    let control: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(",probability,positive_control:sadness,"))
        .collect();
    assert_eq!(control.len(), 1, "{csv}");
    // 3 repetitions x 2 instructed conditions = 6 scale scores behind the check.
    assert!(control[0].contains(",6,"), "{}", control[0]);
    let trials = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    for condition in ["baseline", "control-low", "control-high"] {
        assert!(trials.contains(&format!("\"condition\":\"{condition}\"")));
    }
}

#[test]
fn models_inspect_names_every_tensor_that_does_not_pack_or_is_not_read() {
    use candle_core::quantized::{gguf_file::Value, GgmlDType};
    let dir = tempfile::tempdir().unwrap();
    // A clean file: everything packs and is read.
    let clean = dir.path().join("clean.gguf");
    common::write_tiny_gguf(&clean, &common::Tiny::qwen3(), 1);
    let o = affectbench(&["models", "inspect", clean.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("architecture  qwen3"), "{text}");
    assert!(
        text.contains("every matrix runs on the packed int8 kernels"),
        "{text}"
    );

    // F16 matrices (dense path) and a pre-tokenizer we do not know: each said by name.
    let odd = dir.path().join("odd.gguf");
    common::write_tiny_gguf_with_meta(
        &odd,
        &common::Tiny {
            dtype: GgmlDType::F16,
            ..common::Tiny::llama()
        },
        1,
        |meta| {
            for (k, v) in meta.iter_mut() {
                if k == "tokenizer.ggml.pre" {
                    *v = Value::String("made-up-pre".into());
                }
            }
        },
    );
    let o = affectbench(&["models", "inspect", odd.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["tokenizer"]["Err"]
        .as_str()
        .is_some_and(|e| e.contains("made-up-pre")));
    let tensors = v["tensors"].as_array().unwrap();
    let q = tensors
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q["ggml_type"], "F16");
    assert!(q["kernel"].as_str().unwrap().starts_with("dense"), "{q}");
    let o = affectbench(&["models", "inspect", odd.to_str().unwrap()]);
    let text = stdout(&o);
    assert!(text.contains("TOKENIZER     cannot be built"), "{text}");
    assert!(text.contains("blk.0.attn_q.weight"), "{text}");

    // Gemma 3's tensors under a llama header: its q/k and post norms are not read.
    let relabelled = dir.path().join("relabelled.gguf");
    common::write_tiny_gguf_with_meta(&relabelled, &common::Tiny::gemma3(), 1, |meta| {
        for (k, v) in meta.iter_mut() {
            if k == "general.architecture" {
                *v = Value::String("llama".into());
            } else if let Some(rest) = k.strip_prefix("gemma3.") {
                *k = format!("llama.{rest}");
            }
        }
    });
    let o = affectbench(&["models", "inspect", relabelled.to_str().unwrap()]);
    let text = stdout(&o);
    assert!(
        text.contains("blk.1.attn_k_norm.weight [16] F32: not read by affectbench"),
        "{text}"
    );
}

#[test]
fn an_int8_kernel_the_cpu_lacks_is_refused_naming_the_feature_and_each_path_runs() {
    use affectbench::kernels::int8_matmul::KernelPath;
    common::real_model("smollm2-135m-instruct");
    for path in KernelPath::ALL {
        let o = affectbench(&[
            "generate",
            "--prompt",
            "Hi",
            "-n",
            "2",
            "--int8-kernel",
            path.name(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        if path.supported() {
            assert!(o.status.success(), "{path}: {err}");
            // The reference (and portable, where a SIMD path exists) warn before running.
            assert_eq!(
                err.contains("warning: the"),
                path.slow_here(),
                "{path}: {err}"
            );
        } else {
            assert!(!o.status.success(), "{path} ran on a CPU without it");
            for f in path.missing_features() {
                assert!(err.contains(f), "{path}: {err}");
            }
            assert!(err.contains("--int8-kernel auto"), "{err}");
        }
    }
}

/// cargo reran the build script, and so recompiled the crate, whenever `.git/index`
/// changed, which `git status` or `git describe --dirty` alone can do: `cargo run` right
/// after `cargo build` in a fresh clone rebuilt everything. The script this binary was
/// built with must watch the commit and the sources, not the index.
#[test]
fn the_build_script_watches_the_commit_and_sources_not_the_git_index() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_affectbench"));
    let build = exe.parent().unwrap().join("build");
    let newest = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("affectbench-"))
        .map(|e| e.path().join("output"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().unwrap().modified().unwrap())
        .expect("the build script's output");
    let output = std::fs::read_to_string(&newest).unwrap();
    let watched: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
        .collect();
    assert!(!watched.contains(&".git/index"), "{output}");
    for path in [".git/HEAD", "src"] {
        assert!(watched.contains(&path), "{path} not watched: {output}");
    }
}

/// Every relative link in README.md and docs/ points at a file inside the repository
/// (links to the web are not checked: CI has no network).
#[test]
fn relative_links_in_the_docs_resolve_inside_the_repository() {
    let root = std::fs::canonicalize(".").unwrap();
    let mut pages = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "md") {
                pages.push(path);
            }
        }
    }
    assert!(pages.len() > 10, "the docs pages were not found: {pages:?}");
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (i, line) in text.lines().enumerate() {
            for part in line.split("](").skip(1) {
                let Some(target) = part.split(')').next() else {
                    continue;
                };
                let target = target.split('#').next().unwrap_or("");
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let resolved = page.parent().unwrap().join(target);
                let inside = std::fs::canonicalize(&resolved).is_ok_and(|p| p.starts_with(&root));
                if !inside {
                    broken.push(format!("{}:{}: {target}", page.display(), i + 1));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that do not resolve inside the repository:\n{}",
        broken.join("\n")
    );
}
