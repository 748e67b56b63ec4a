//! `signal9-worker`: parses settings, wires signals to a graceful stop, and
//! runs the worker library.

use clap::Parser;

/// Consumes signal9 jobs from RabbitMQ, calls Alpaca within the API budget,
/// validates and stores the results, and retries or dead-letters failures.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: signal9_worker::WorkerSettings,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the last spans.
    let _telemetry = signal9_shared::telemetry::init("info");
    // SIGINT or SIGTERM: stop consuming, finish what is in flight, exit.
    let (_trigger, shutdown) = signal9_shared::shutdown::on_signals();
    match signal9_worker::run(cli.settings, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
