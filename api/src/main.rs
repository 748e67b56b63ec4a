//! `signal9-api`: parses settings, wires signals to a graceful stop, and
//! serves the read API and the console.

use clap::Parser;

/// Serves bars and assets from signal9's store on Alpaca's routes (what the
/// store lacks is fetched through the job queue, under the shared budget),
/// and the operator console at /console.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: signal9_api::ApiSettings,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the last spans.
    let _telemetry = signal9_shared::telemetry::init("info");
    let (_trigger, shutdown) = signal9_shared::shutdown::on_signals();
    match signal9_api::run(cli.settings, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
