//! `signal9-producer`: enqueues signal9 jobs, runs the scheduler, and
//! carries the operator commands.
//!
//! - [`args`]: the flags the publishing commands share, times and symbol files;
//! - `publish`: publishing with confirms and reconnects, the one way every
//!   command enqueues; `replies`: the outcomes `--wait` collects;
//! - the operations themselves (dead letters, status, the AMQP session) are
//!   `signal9_shared::ops`, shared with the console;
//! - one module per command: `enqueue` (fetch-bars, status-check), `sync`,
//!   `schedule`, `backfill`, `gaps`, `dlq`, `ingest_direct`, `init_store`,
//!   `status`, `check_credentials`, `corporate_actions`, `migrate`
//!   (migrate-store).

pub mod args;
mod backfill;
mod check_credentials;
mod corporate_actions;
mod dlq;
mod enqueue;
mod gaps;
mod ingest_direct;
mod init_store;
mod migrate;
mod publish;
mod replies;
mod schedule;
mod status;
mod sync;

use clap::{Parser, Subcommand};

/// signal9's producer and operator tool.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    /// The command to run.
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start (or resume) a run of the asset sync: one sync-page job per slice.
    Sync(sync::SyncArgs),
    /// Fire the sync on a cron schedule (default 04:00 UTC); safe as several replicas.
    Schedule(Box<schedule::ScheduleArgs>),
    /// Enqueue fetch-bars jobs, one per symbol (publisher confirms; --wait for outcomes).
    FetchBars(args::FetchBarsArgs),
    /// Plan and enqueue a history backfill: skips what the store holds,
    /// cuts long ranges into jobs of bounded pages, prints the jobs, calls
    /// and time at the budget (--dry-run: only that), publishes to the
    /// backfill lane (--wait: a progress bar, then a summary).
    Backfill(Box<backfill::BackfillArgs>),
    /// List the settled trading sessions of each series the store does not
    /// cover (a dead-lettered job leaves such a hole), with totals and the
    /// calls to fill them; --fill enqueues exactly those ranges (backfill
    /// lane), --json prints one object.
    Gaps(Box<gaps::GapsArgs>),
    /// Read the corporate actions of a window of ex-dates (default: the last
    /// 7 days, whole market, through the budget) and drop the stored
    /// adjusted series they change, as the scheduler does daily; --dry-run
    /// only lists them.
    CorporateActions(Box<corporate_actions::ActionsArgs>),
    /// Enqueue status-check jobs, one per symbol.
    StatusCheck(args::StatusCheckArgs),
    /// Inspect, replay or purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Ingest assets and recent daily bars in this one process, without the
    /// queue (under the same Redis budget as the workers).
    IngestDirect(ingest_direct::DirectArgs),
    /// Create the store's tables if they do not exist (SQLite file or
    /// DynamoDB tables); safe to run again.
    InitStore(init_store::InitStoreArgs),
    /// Move the bars an older version stored one per row or item into
    /// chunks: page by page, each page verified by reading it back, then
    /// the old table dropped. Resumable; workers may run meanwhile.
    MigrateStore(migrate::MigrateArgs),
    /// Check the Alpaca key pair: one GET /v2/account through the budget;
    /// prints the API base reached and the account status, never a key.
    CheckCredentials(check_credentials::CheckArgs),
    /// One screen for an operator: queues, dead letters, live workers,
    /// budgets, the last sync run (--json for scripts).
    Status(status::StatusArgs),
}

/// Runs one command to its end.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Sync(args) => sync::run(args).await,
        Command::Schedule(args) => schedule::run(*args).await,
        Command::FetchBars(args) => enqueue::fetch_bars(args).await,
        Command::Backfill(args) => backfill::run(*args).await,
        Command::StatusCheck(args) => enqueue::status_check(args).await,
        Command::Gaps(args) => gaps::run(*args).await,
        Command::CorporateActions(args) => corporate_actions::run(*args).await,
        Command::Dlq(command) => dlq::run(command).await,
        Command::IngestDirect(args) => ingest_direct::run(args).await,
        Command::InitStore(args) => init_store::run(args).await,
        Command::MigrateStore(args) => migrate::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::CheckCredentials(args) => check_credentials::run(args).await,
    }
}
