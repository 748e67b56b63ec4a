//! `signal9-producer`: enqueues signal9 jobs, runs the scheduler, and
//! carries the operator commands. This binary only parses flags and wires
//! the library's parts together.

mod direct;

use clap::{Parser, Subcommand};

/// signal9's producer and operator tool.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest assets and recent daily bars in this one process, without the
    /// queue (a single process must own the API key's budget while it runs).
    IngestDirect(direct::DirectArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::IngestDirect(args) => direct::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
