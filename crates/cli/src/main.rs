//! `duet`: the command-line app. Argument parsing and glue over the engine's
//! [`duet::Home`]; everything else lives in the library crates.

mod args;
mod files;
mod net;
mod render;
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// `RUST_LOG`, or warnings only. automerge's own spans stay at warnings
/// unless `RUST_LOG` names automerge: at info they format its whole change
/// graph for every change applied (about 70 ms per message on five years of
/// history, which made live sync 15x slower with `RUST_LOG=info`).
fn log_filter() -> tracing_subscriber::EnvFilter {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let names_automerge = from_env.as_deref().is_some_and(|v| v.contains("automerge"));
    let filter = from_env
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    match "automerge=warn".parse() {
        Ok(quiet) if !names_automerge => filter.add_directive(quiet),
        _ => filter,
    }
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .init();
    match run::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole chain of causes.
            let _ = writeln!(
                anstream::stderr(),
                "{}error:{} {err:#}",
                render::ERROR.render(),
                render::ERROR.render_reset()
            );
            ExitCode::FAILURE
        }
    }
}
