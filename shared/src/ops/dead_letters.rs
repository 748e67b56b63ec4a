//! The dead-letter queue as a library: browse, find, replay and purge,
//! used by the producer's `dlq` commands and the console's pages.
//!
//! Browsing is a bounded [`Scan`]: it takes letters one at a time without
//! acking them, at most as many as the queue held when it began (or
//! `max` matches), keeps only the highest delivery tag of what it holds,
//! and hands every letter it did not act on back in one nack at the end. So
//! listing changes nothing, a scan ends even while letters keep arriving,
//! and its memory does not grow with the queue. Replay publishes each job
//! back with a broker confirm before it acks the dead letter: a crash in
//! the middle can duplicate a job (jobs are idempotent) but never lose one.

use anyhow::{bail, Context, Result};
use clap::Args;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::Value;
use std::time::Duration;

use crate::broker::{
    self, header_str, header_u32, set_str, set_u32, BrokerError, HEADER_ATTEMPT, HEADER_ERROR_CLASS, HEADER_LAST_ERROR,
    HEADER_LAST_FAILURE, HEADER_REPLAYS, HEADER_ROUTING_KEY,
};
use crate::job::{is_routing_key, Job};

/// Which dead letters a command acts on.
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only the letter of this job id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only this kind: sync-page, status-check, fetch-bars.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this symbol.
    #[arg(long)]
    pub symbol: Option<String>,
    /// Only this error class: transient, permanent (or poison, for messages the broker gave up on).
    #[arg(long)]
    pub error_class: Option<String>,
    /// At most this many (`dlq list` shows the first 100 unless told).
    #[arg(long)]
    pub max: Option<usize>,
}

/// What a dead letter says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// The job id (message id, or the body's `id`).
    pub id: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The job kind, from the routing key.
    pub kind: String,
    /// The symbol, when the body names one.
    pub symbol: String,
    /// `transient`, `permanent`, or `poison` when the broker dead-lettered it.
    pub error_class: String,
    /// Failures so far.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
    /// When it last failed.
    pub last_failure: String,
}

impl DeadLetter {
    fn read(message: &BasicGetMessage) -> Self {
        let d = &message.delivery;
        let message_id = d.properties.message_id().as_ref().map(|m| m.to_string());
        DeadLetter::from_parts(
            d.properties.headers().as_ref(),
            d.routing_key.as_str(),
            message_id.as_deref(),
            &d.data,
        )
    }

    /// Reads a dead letter from its headers, routing key, message id and
    /// body: anyone may publish to the dead-letter exchange, so every part
    /// may be missing, of the wrong type or huge; each field is cut to a
    /// size a listing can show.
    pub fn from_parts(
        headers: Option<&lapin::types::FieldTable>,
        delivered_key: &str,
        message_id: Option<&str>,
        data: &[u8],
    ) -> Self {
        let body: Option<Value> = serde_json::from_slice(data).ok();
        let short = |text: String, n: usize| -> String { text.chars().filter(|c| !c.is_control()).take(n).collect() };
        let routing_key = short(
            header_str(headers, HEADER_ROUTING_KEY).unwrap_or_else(|| delivered_key.to_owned()),
            255,
        );
        let id = message_id
            .map(str::to_owned)
            .or_else(|| body.as_ref().and_then(|b| b["id"].as_str().map(str::to_owned)))
            .unwrap_or_else(|| "(none)".into());
        let symbol = body
            .as_ref()
            .and_then(|b| b["payload"]["symbol"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let ours = header_str(headers, HEADER_ERROR_CLASS);
        DeadLetter {
            // Ids are up to 128 characters; `dlq show` finds a letter by the
            // id `dlq list` printed, so both see the same, whole id.
            id: id
                .chars()
                .filter(|c| !c.is_control())
                .take(crate::job::MAX_ID_LEN)
                .collect(),
            kind: routing_key
                .trim_end_matches(".interactive")
                .trim_end_matches(".backfill")
                .to_owned(),
            routing_key,
            symbol: symbol.chars().take(24).collect(),
            error_class: short(ours.clone().unwrap_or_else(|| "poison".into()), 32),
            attempts: header_u32(headers, HEADER_ATTEMPT).unwrap_or(0),
            last_error: short(
                header_str(headers, HEADER_LAST_ERROR)
                    .unwrap_or_else(|| "redelivered too many times without finishing (delivery limit)".into()),
                2_000,
            ),
            last_failure: short(header_str(headers, HEADER_LAST_FAILURE).unwrap_or_default(), 64),
        }
    }

    pub fn matches(&self, filter: &Filter) -> bool {
        filter.id.as_ref().is_none_or(|id| *id == self.id)
            && filter.kind.as_ref().is_none_or(|k| *k == self.kind)
            && filter
                .symbol
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&self.symbol))
            && filter.error_class.as_ref().is_none_or(|c| *c == self.error_class)
    }
}

/// One bounded pass over the dead-letter queue. [`Scan::next`] takes the
/// next letter unacked; the caller acks what it acts on and the rest stay
/// held by the broker for this channel. [`Scan::finish`] hands them all
/// back with one `basic.nack(multiple, requeue)` on the highest held tag.
/// Only that tag is kept here, so a scan of a million letters uses the
/// memory of one. Letters that arrive after the scan began are not taken.
struct Scan {
    channel: Channel,
    queue: String,
    /// How many the queue held (ready) when the scan began.
    at_start: u64,
    taken: u64,
    held: Option<u64>,
}

impl Scan {
    async fn start(connection: &Connection, queue: &str) -> Result<Scan> {
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .with_context(|| format!("reading the length of {queue}"))?;
        Ok(Scan {
            channel,
            queue: queue.to_owned(),
            at_start: u64::from(declared.message_count()),
            taken: 0,
            held: None,
        })
    }

    /// The next letter, or `None` once as many as the queue held at the
    /// start have been taken (or the queue is empty).
    async fn next(&mut self) -> Result<Option<BasicGetMessage>> {
        if self.taken >= self.at_start {
            return Ok(None);
        }
        let message = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?;
        if message.is_some() {
            self.taken += 1;
        }
        Ok(message)
    }

    /// Keeps `message` unacked, to be handed back by [`Scan::finish`].
    fn hold(&mut self, message: &BasicGetMessage) {
        let tag = message.delivery.delivery_tag;
        self.held = Some(self.held.map_or(tag, |h| h.max(tag)));
    }

    /// Hands back every held letter, in one frame.
    async fn finish(self) -> Result<()> {
        if let Some(tag) = self.held {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        // Closing the channel would hand them back too; the explicit nack
        // makes the hand-back confirmed before the command exits.
        let _ = self.channel.close(200, "scan done".into()).await;
        Ok(())
    }
}

/// A bounded browse of the dead-letter queue: what matched, in queue order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    /// The letters that matched (at most the page asked for).
    pub letters: Vec<DeadLetter>,
    /// Letters read to find them.
    pub read: u64,
    /// Letters the queue held when the browse began.
    pub total: u64,
}

/// Up to `page` letters matching `filter`, changing nothing: each letter
/// is handed to `each` as it is read (the CLI prints it and keeps nothing),
/// and kept in the listing only when `keep`.
pub async fn browse(
    connection: &Connection,
    queue: &str,
    filter: &Filter,
    page: usize,
    keep: bool,
    mut each: impl FnMut(&DeadLetter),
) -> Result<Listing> {
    let mut scan = Scan::start(connection, queue).await?;
    let mut letters = Vec::new();
    let mut shown = 0usize;
    while shown < page {
        let Some(message) = scan.next().await? else { break };
        let letter = DeadLetter::read(&message);
        scan.hold(&message);
        if !letter.matches(filter) {
            continue;
        }
        shown += 1;
        each(&letter);
        if keep {
            letters.push(letter);
        }
    }
    let (read, total) = (scan.taken, scan.at_start);
    scan.finish().await?;
    Ok(Listing { letters, read, total })
}

/// One dead letter in full.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shown {
    /// What it says about itself.
    pub letter: DeadLetter,
    /// Every header, as text.
    pub headers: Vec<(String, String)>,
    /// The body: pretty JSON, or the first 4,096 characters of what is not JSON.
    pub body: String,
    /// True when the body is JSON.
    pub body_is_json: bool,
    /// The body's size in bytes.
    pub body_bytes: usize,
}

/// The dead letter of job `id`, if the queue holds it (changing nothing),
/// and how many letters were read to look.
pub async fn find(connection: &Connection, queue: &str, id: &str) -> Result<(Option<Shown>, u64)> {
    let mut scan = Scan::start(connection, queue).await?;
    let mut found = None;
    while let Some(message) = scan.next().await? {
        scan.hold(&message);
        let letter = DeadLetter::read(&message);
        if letter.id != id {
            continue;
        }
        let d = &message.delivery;
        let headers = d
            .properties
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .map(|(name, value)| (name.as_str().to_owned(), broker::header_display(value)))
                    .collect()
            })
            .unwrap_or_default();
        let (body, body_is_json) = match serde_json::from_slice::<Value>(&d.data) {
            Ok(json) => (serde_json::to_string_pretty(&json).unwrap_or_default(), true),
            Err(_) => (String::from_utf8_lossy(&d.data).chars().take(4096).collect(), false),
        };
        found = Some(Shown {
            letter,
            headers,
            body,
            body_is_json,
            body_bytes: d.data.len(),
        });
        break;
    }
    let read = scan.taken;
    scan.finish().await?;
    Ok((found, read))
}

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Replayed {
    /// Letters published back (or, in a dry run, that would be).
    pub replayed: usize,
    /// The ids (and kinds, symbols) of those, the first 100.
    pub ids: Vec<String>,
    /// The job ids published back, the first 1,000.
    pub job_ids: Vec<String>,
    /// Letters no job queue would take, kept in the queue (the first 20).
    pub kept: Vec<String>,
    /// Why the replay stopped early, if it did.
    pub failure: Option<String>,
}

/// How a replay goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayHow<'a> {
    /// At most this many replays a second.
    pub rate: Option<f64>,
    /// Only say what would be replayed.
    pub dry_run: bool,
    /// Where the workers should reply with each replayed job's outcome
    /// (its correlation id is the job id); `None` keeps the letter's own.
    pub reply_to: Option<&'a str>,
}

/// Publishes the letters matching `filter` back to their queues (attempts
/// reset, id kept), at most `rate` a second, each confirmed by the broker
/// before its dead letter is acked. `progress` hears of every letter read
/// (letters read, letters at the start, replayed so far).
pub async fn replay_matching(
    connection: &Connection,
    publisher: &broker::Publisher,
    topology: &broker::Topology,
    filter: &Filter,
    how: ReplayHow<'_>,
    mut progress: impl FnMut(u64, u64, usize),
) -> Result<Replayed> {
    let ReplayHow {
        rate,
        dry_run,
        reply_to,
    } = how;
    if let Some(rate) = rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("the rate must be a positive number of replays per second");
        }
    }
    let mut scan = Scan::start(connection, &topology.dead_letter_queue()).await?;
    let max = filter.max.unwrap_or(usize::MAX);
    let pause = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut report = Replayed::default();
    while report.replayed < max {
        let Some(message) = scan.next().await? else { break };
        let letter = DeadLetter::read(&message);
        progress(scan.taken, scan.at_start, report.replayed);
        if !letter.matches(filter) {
            scan.hold(&message);
            continue;
        }
        let d = &message.delivery;
        // A letter whose recorded key `{ns}.jobs` does not bind (a job once
        // published straight to its queue) goes back by its own kind and
        // priority; one that is not a job at all cannot go back.
        let key = if is_routing_key(&letter.routing_key) {
            letter.routing_key.clone()
        } else if let Ok(job) = Job::parse(&d.data) {
            job.routing_key()
        } else {
            if report.kept.len() < 20 {
                report.kept.push(format!(
                    "{} (not a job; routing key {:?})",
                    letter.id, letter.routing_key
                ));
            }
            scan.hold(&message);
            continue;
        };
        let described = format!("{} ({} {}) to {key}", letter.id, letter.kind, letter.symbol);
        if dry_run {
            report.replayed += 1;
            if report.ids.len() < 100 {
                report.ids.push(described);
            }
            scan.hold(&message);
            continue;
        }
        let mut headers: FieldTable = d.properties.headers().clone().unwrap_or_default();
        let replays = header_u32(Some(&headers), HEADER_REPLAYS).unwrap_or(0) + 1;
        set_u32(&mut headers, HEADER_ATTEMPT, 0);
        set_u32(&mut headers, HEADER_REPLAYS, replays);
        set_str(&mut headers, HEADER_ROUTING_KEY, &key);
        let mut properties = d.properties.clone().with_headers(headers);
        if let Some(queue) = reply_to {
            properties = properties
                .with_reply_to(queue.into())
                .with_correlation_id(letter.id.as_str().into());
        }
        match publisher
            .publish_routed(&topology.jobs_exchange(), &key, &d.data, properties)
            .await
        {
            Ok(()) => {}
            Err(BrokerError::Unroutable { .. }) => {
                if report.kept.len() < 20 {
                    report
                        .kept
                        .push(format!("{} (no queue takes routing key {key:?})", letter.id));
                }
                scan.hold(&message);
                continue;
            }
            Err(error) => {
                report.failure = Some(error.to_string());
                scan.hold(&message);
                break;
            }
        }
        // Only once the broker holds the replayed job does the dead letter go.
        d.ack(BasicAckOptions::default()).await?;
        report.replayed += 1;
        if report.job_ids.len() < 1000 {
            report.job_ids.push(letter.id.clone());
        }
        if report.ids.len() < 100 {
            report.ids.push(described);
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    scan.finish().await?;
    Ok(report)
}

/// Deletes the letters matching `filter` for good; returns how many.
pub async fn purge_matching(connection: &Connection, queue: &str, filter: &Filter) -> Result<usize> {
    let mut scan = Scan::start(connection, queue).await?;
    let max = filter.max.unwrap_or(usize::MAX);
    let mut purged = 0usize;
    while purged < max {
        let Some(message) = scan.next().await? else { break };
        if DeadLetter::read(&message).matches(filter) {
            message.delivery.ack(BasicAckOptions::default()).await?;
            purged += 1;
        } else {
            scan.hold(&message);
        }
    }
    scan.finish().await?;
    Ok(purged)
}
