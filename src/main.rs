//! The `affectbench` command: parse arguments, run, exit with a status code.

mod cli;

fn main() -> std::process::ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // A run stopped by a signal exits as the signal's conventional code (so
            // schedulers and shells see why), after saying how to continue.
            if let Some(affectbench::Error::Interrupted { signal, .. }) = err.downcast_ref() {
                affectbench::say!("{}", affectbench::secrets::redact(&err.to_string()));
                return std::process::ExitCode::from((128 + signal) as u8);
            }
            // A key a server repeated may sit anywhere in the chain of causes.
            affectbench::say!(
                "error: {}",
                affectbench::secrets::redact(&format!("{err:#}"))
            );
            std::process::ExitCode::FAILURE
        }
    }
}
