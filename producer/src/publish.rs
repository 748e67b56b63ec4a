//! Publishing jobs with publisher confirms, the one way every producer
//! command enqueues (`fetch-bars`, `status-check`, `sync`, `schedule`,
//! `backfill`): publish a batch, collect its confirms, and on a refusal or
//! a lost connection publish what is unconfirmed again, reconnecting with
//! capped, jittered back-off, for up to `--reconnect-secs`. [`Ledger`]
//! keeps the books of which jobs are confirmed, pending or orphaned.

use anyhow::{bail, Result};
use lapin::options::BasicPublishOptions;
use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument;

use signal9_shared::backoff::Backoff;
use signal9_shared::job::Job;
use signal9_shared::ops::{job_properties, Session};

use crate::args::PublishOptions;
use crate::replies::{self, Outcomes};

/// The books of one publication: the jobs not yet confirmed, those
/// confirmed on the current session, and those confirmed on a session that
/// was lost since (with `--wait`, their replies went to that session's
/// reply queue, which the broker deleted with the connection).
#[derive(Debug)]
pub(crate) struct Ledger<'a> {
    pending: Vec<&'a Job>,
    confirmed_here: Vec<&'a str>,
    orphaned: HashSet<&'a str>,
}

impl<'a> Ledger<'a> {
    /// Every job pending.
    pub(crate) fn new(jobs: &'a [Job]) -> Self {
        Ledger {
            pending: jobs.iter().collect(),
            confirmed_here: Vec::new(),
            orphaned: HashSet::new(),
        }
    }

    /// The jobs the broker has not confirmed yet.
    pub(crate) fn pending(&self) -> &[&'a Job] {
        &self.pending
    }

    /// Records a batch: every pending job not in `unconfirmed` is confirmed
    /// on the current session; `unconfirmed` stays pending.
    pub(crate) fn settle(&mut self, unconfirmed: Vec<&'a Job>) {
        let failed: HashSet<&str> = unconfirmed.iter().map(|j| j.id.as_str()).collect();
        self.confirmed_here.extend(
            self.pending
                .iter()
                .map(|j| j.id.as_str())
                .filter(|id| !failed.contains(id)),
        );
        self.pending = unconfirmed;
    }

    /// The session was lost: what it confirmed can no longer be answered
    /// on it.
    pub(crate) fn session_lost(&mut self) {
        self.orphaned.extend(self.confirmed_here.drain(..));
    }

    /// Jobs whose replies cannot arrive.
    pub(crate) fn orphaned(&self) -> &HashSet<&'a str> {
        &self.orphaned
    }
}

/// Publishes `jobs` on one session, then collects the confirms (one round
/// trip per batch, not per job). Returns the jobs the broker did not confirm.
async fn publish_batch<'a>(session: &Session, exchange: &str, jobs: &[&'a Job]) -> Vec<&'a Job> {
    let reply_to = session.replies.as_ref().map(|r| r.queue.as_str());
    let mut confirms = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Each job starts its own trace, as a job is what an operator follows.
        let span = tracing::info_span!(
            parent: None,
            "publish",
            job_id = %job.id,
            kind = %job.payload.kind(),
            symbol = %job.payload.symbol().map(ToString::to_string).unwrap_or_default()
        );
        let confirm = session
            .publisher
            .channel()
            .basic_publish(
                exchange.into(),
                job.routing_key().as_str().into(),
                BasicPublishOptions::default(),
                &job.to_bytes(),
                job_properties(job, reply_to, &span),
            )
            .instrument(span.clone())
            .await;
        confirms.push(confirm);
    }
    let mut unconfirmed = Vec::new();
    for (job, confirm) in jobs.iter().zip(confirms) {
        let ok = match confirm {
            Ok(pending) => matches!(pending.await, Ok(c) if c.is_ack()),
            Err(_) => false,
        };
        if !ok {
            unconfirmed.push(*job);
        }
    }
    unconfirmed
}

/// Publishes jobs with confirms and, with `--wait`, prints their outcomes.
///
/// A lost connection or an unconfirmed job is not the end: the producer
/// reconnects with capped, jittered back-off and publishes again every job
/// the broker has not confirmed, for up to `--reconnect-secs`. A job that
/// was delivered but whose confirm was lost may so be published twice; the
/// worker's writes are idempotent upserts, so that costs a call, not data.
pub async fn publish_jobs(options: &PublishOptions, jobs: Vec<Job>) -> Result<()> {
    publish_and_watch(options, jobs, None).await.map(|_| ())
}

/// [`publish_jobs`], moving `progress` on as each job's outcome arrives.
pub async fn publish_and_watch(
    options: &PublishOptions,
    jobs: Vec<Job>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Outcomes> {
    let (session, orphaned) = publish_confirmed(options, &jobs).await?;
    let Some(replies) = session.and_then(|s| s.replies) else {
        return Ok(Outcomes::default());
    };
    let wait = Duration::from_secs(options.wait_timeout_secs);
    replies::collect(replies, &jobs, &orphaned, wait, progress).await
}

/// Publishes every job until the broker has confirmed it all, or gives up
/// after `--reconnect-secs`. Returns the last session (for its replies) and
/// the ids of jobs whose replies cannot arrive.
async fn publish_confirmed(options: &PublishOptions, jobs: &[Job]) -> Result<(Option<Session>, HashSet<String>)> {
    let exchange = options.broker.topology().jobs_exchange();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(options.reconnect_secs);
    let mut ledger = Ledger::new(jobs);
    let mut session: Option<Session> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last_error = String::new();
    while !ledger.pending().is_empty() {
        let current = match session.take() {
            Some(current) => current,
            None => match Session::open(&options.broker, "signal9-producer", options.wait).await {
                Ok(fresh) => fresh,
                Err(error) if options.reconnect_secs == 0 => return Err(error),
                Err(error) => {
                    last_error = format!("{error:#}");
                    if tokio::time::Instant::now() >= give_up {
                        break;
                    }
                    eprintln!(
                        "warning: {last_error}; connecting again in {} ms",
                        backoff.peek().as_millis()
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        let unconfirmed = publish_batch(&current, &exchange, ledger.pending()).await;
        ledger.settle(unconfirmed);
        if ledger.pending().is_empty() {
            session = Some(current);
            break;
        }
        if current.is_alive() {
            // Refused (nacked) on a live channel: again on this session.
            last_error = format!("the broker refused {} jobs", ledger.pending().len());
            session = Some(current);
        } else {
            last_error = format!(
                "the connection was lost with {} jobs unconfirmed",
                ledger.pending().len()
            );
            ledger.session_lost();
        }
        if options.reconnect_secs == 0 || tokio::time::Instant::now() >= give_up {
            break;
        }
        eprintln!(
            "warning: {last_error}; publishing them again in {} ms",
            backoff.peek().as_millis()
        );
        tokio::time::sleep(backoff.next_delay()).await;
    }
    let pending = ledger.pending();
    println!(
        "published {} of {} jobs to {} (confirmed by the broker)",
        jobs.len() - pending.len(),
        jobs.len(),
        exchange
    );
    if !pending.is_empty() {
        let listed: Vec<String> = pending
            .iter()
            .take(20)
            .map(|j| {
                format!(
                    "{} ({})",
                    j.id,
                    j.payload.symbol().map(ToString::to_string).unwrap_or_default()
                )
            })
            .collect();
        bail!(
            "the broker did not confirm {} jobs within {} s ({last_error}): {}",
            pending.len(),
            options.reconnect_secs,
            listed.join(", ")
        );
    }
    let orphaned = ledger.orphaned().iter().map(|id| (*id).to_owned()).collect();
    Ok((session, orphaned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal9_shared::job::{Payload, Priority, StatusCheck};

    fn jobs(n: usize) -> Vec<Job> {
        (0..n)
            .map(|i| {
                let symbol = signal9_alpaca::Symbol::parse(&format!("S{i}")).unwrap_or_else(|_| unreachable!());
                Job::new(
                    format!("job-{i}"),
                    Payload::StatusCheck(StatusCheck { symbol }),
                    Priority::Bulk,
                    None,
                )
            })
            .collect()
    }

    fn ids(list: &[&Job]) -> Vec<String> {
        list.iter().map(|j| j.id.clone()).collect()
    }

    #[test]
    fn a_batch_leaves_pending_exactly_what_the_broker_did_not_confirm() {
        let all = jobs(4);
        let mut ledger = Ledger::new(&all);
        assert_eq!(ledger.pending().len(), 4);
        ledger.settle(vec![&all[1], &all[3]]);
        assert_eq!(ids(ledger.pending()), ["job-1", "job-3"]);
        ledger.settle(Vec::new());
        assert!(ledger.pending().is_empty());
        assert!(ledger.orphaned().is_empty(), "nothing was lost");
    }

    #[test]
    fn jobs_confirmed_on_a_lost_session_are_orphaned_and_later_ones_are_not() {
        let all = jobs(4);
        let mut ledger = Ledger::new(&all);
        // First session: two confirmed, then the connection dies.
        ledger.settle(vec![&all[2], &all[3]]);
        ledger.session_lost();
        // Second session confirms the rest.
        ledger.settle(Vec::new());
        let mut orphaned: Vec<&str> = ledger.orphaned().iter().copied().collect();
        orphaned.sort_unstable();
        assert_eq!(orphaned, ["job-0", "job-1"]);
        assert!(!ledger.orphaned().contains("job-2"), "confirmed on the live session");
        // Should the second session die too, its confirms are orphaned as well.
        ledger.session_lost();
        assert_eq!(ledger.orphaned().len(), 4);
    }
}
