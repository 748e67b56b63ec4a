//! `signal9-producer`: parses the command line and runs the command; the
//! commands live in the library (`src/lib.rs`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = signal9_producer::Cli::parse();
    // Held to the end: dropping it flushes the last spans.
    let _telemetry = signal9_shared::telemetry::init("warn,lapin::channel=off");
    match signal9_producer::run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
