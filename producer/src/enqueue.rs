//! `fetch-bars` and `status-check`: one job per symbol, published with
//! confirms (and, with `--wait`, their outcomes printed).

use anyhow::Result;

use signal9_shared::job::{Job, Payload, Priority, StatusCheck};

use crate::args::{parse_symbols, FetchBarsArgs, StatusCheckArgs};
use crate::publish::publish_jobs;

/// Publishes fetch-bars jobs.
pub async fn fetch_bars(args: FetchBarsArgs) -> Result<()> {
    let symbols = args.bars.symbols().await?;
    let priority = args.options.priority_or(Priority::Bulk);
    let jobs: Vec<Job> = symbols
        .into_iter()
        .map(|symbol| {
            let payload = args.bars.payload(symbol, args.bars.start, args.bars.end);
            Job::new(
                uuid::Uuid::new_v4().to_string(),
                Payload::FetchBars(payload),
                priority,
                None,
            )
        })
        .collect();
    publish_jobs(&args.options, jobs).await
}

/// Publishes status-check jobs.
pub async fn status_check(args: StatusCheckArgs) -> Result<()> {
    let symbols = parse_symbols(&args.symbols, None)?;
    let jobs = symbols
        .into_iter()
        .map(|symbol| {
            Job::new(
                uuid::Uuid::new_v4().to_string(),
                Payload::StatusCheck(StatusCheck { symbol }),
                args.options.priority_or(Priority::Bulk),
                None,
            )
        })
        .collect();
    publish_jobs(&args.options, jobs).await
}
