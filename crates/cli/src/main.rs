//! `duet`: the command-line app. Argument parsing and glue over the engine's
//! [`duet::Home`]; everything else lives in the library crates.

mod args;
mod net;
mod render;
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
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
