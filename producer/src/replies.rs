//! Reply collection for `--wait`: the workers answer each job on the
//! session's reply queue; this gathers the answers until every job has one
//! or the wait runs out, prints them, and sums what fetch-bars jobs did.

use anyhow::{bail, Result};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use signal9_shared::job::Job;
use signal9_shared::ops::Replies;
use signal9_shared::reply::{Detail, JobReply, ReplyOutcome};

/// What the replies of fetch-bars jobs said, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcomes {
    /// Jobs that succeeded.
    pub succeeded: usize,
    /// Bars they stored or found stored.
    pub bars: u64,
    /// API calls their batches spent (each batch counted once).
    pub calls: u64,
    /// Jobs that went on from a checkpoint.
    pub resumed: usize,
}

/// Waits up to `wait` for the replies of `jobs` (but those in `orphaned`,
/// whose replies cannot arrive), then prints a summary. An error names how
/// many jobs did not succeed.
pub(crate) async fn collect(
    replies: Replies,
    jobs: &[Job],
    orphaned: &HashSet<String>,
    wait: Duration,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Outcomes> {
    let mut consumer = replies.consumer;
    if !orphaned.is_empty() {
        println!(
            "{} jobs were published before the broker connection was lost; their replies cannot arrive",
            orphaned.len()
        );
    }

    let mut waiting: BTreeMap<String, String> = jobs
        .iter()
        .filter(|j| !orphaned.contains(&j.id))
        .map(|j| {
            (
                j.id.clone(),
                j.payload.symbol().map(ToString::to_string).unwrap_or_default(),
            )
        })
        .collect();
    let (mut succeeded, mut failed) = (0usize, Vec::new());
    let mut outcomes = Outcomes::default();
    let mut batches: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + wait;
    while !waiting.is_empty() {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else { break };
        let Some(reply) = JobReply::parse(&delivery.data) else {
            continue;
        };
        let id = reply.job_id().to_owned();
        let Some(symbol) = waiting.remove(&id) else { continue };
        if let Some(bar) = progress {
            bar.inc(1);
        }
        match reply.outcome {
            ReplyOutcome::Succeeded { detail } => {
                succeeded += 1;
                match detail {
                    Detail::FetchBars(d) => {
                        outcomes.bars += d.bars;
                        outcomes.resumed += usize::from(d.resumed.unwrap_or(false));
                        if let Some(batch) = d.batch {
                            if batches.insert(batch) {
                                outcomes.calls += d.calls.unwrap_or(0);
                            }
                        }
                    }
                    Detail::SyncPage(d) => println!(
                        "  {id}: listed {}, new {}, updated {}, unchanged {}, status changes {}, rejected {}",
                        d.listed,
                        d.new,
                        d.updated,
                        d.unchanged,
                        d.status_changes.len(),
                        d.rejected
                    ),
                    Detail::StatusCheck(_) => {}
                }
                if let Some(bar) = progress {
                    bar.set_message(format!("{} bars, {} calls", outcomes.bars, outcomes.calls));
                }
            }
            ReplyOutcome::DeadLettered { error_class, error } => {
                failed.push(format!("{symbol} ({id}): {error_class} {error}"));
            }
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    outcomes.succeeded = succeeded;
    println!(
        "succeeded {succeeded}, dead-lettered {}, no answer {}",
        failed.len(),
        waiting.len() + orphaned.len()
    );
    for line in failed.iter().take(20) {
        println!("  dead-lettered: {line}");
    }
    if !failed.is_empty() || !waiting.is_empty() || !orphaned.is_empty() {
        bail!("{} jobs did not succeed", failed.len() + waiting.len() + orphaned.len());
    }
    Ok(outcomes)
}
