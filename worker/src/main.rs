//! `signal9-worker`: parses settings, wires signals to a graceful stop, and
//! runs the worker library.

use clap::Parser;
use tokio::sync::watch;

/// Consumes signal9 jobs from RabbitMQ, calls Alpaca within the API budget,
/// validates and stores the results, and retries or dead-letters failures.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: signal9_worker::settings::WorkerSettings,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the last spans.
    let _telemetry = signal9_shared::telemetry::init("info");
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    match signal9_worker::run(cli.settings, stopped).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
