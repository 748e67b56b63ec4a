//! `dlq list|show|replay|purge`: the operator's view of the dead-letter queue.
//!
//! Browsing is a bounded [`Scan`]: it takes letters one at a time without
//! acking them, at most as many as the queue held when it began (or
//! `--max` matches), keeps only the highest delivery tag of what it holds,
//! and hands every letter it did not act on back in one nack at the end. So
//! listing changes nothing, a scan ends even while letters keep arriving,
//! and its memory does not grow with the queue. Replay publishes each job
//! back with a broker confirm before it acks the dead letter: a crash in
//! the middle can duplicate a job (jobs are idempotent) but never lose one.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::Value;
use std::time::Duration;

use crate::session::Session;
use signal9_shared::broker::{
    self, header_str, header_u32, set_str, set_u32, BrokerError, HEADER_ATTEMPT, HEADER_ERROR_CLASS, HEADER_LAST_ERROR,
    HEADER_LAST_FAILURE, HEADER_REPLAYS, HEADER_ROUTING_KEY,
};
use signal9_shared::config::BrokerSettings;
use signal9_shared::job::{is_routing_key, Job};

/// The dead-letter commands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// A table of dead letters: id, kind, symbol, error class, attempts, last failure.
    List(ListArgs),
    /// One dead letter's body and headers.
    Show(ShowArgs),
    /// Publish matching dead letters back to their queues (attempts reset, id kept).
    Replay(ReplayArgs),
    /// Delete matching dead letters (needs --yes).
    Purge(PurgeArgs),
}

/// Which dead letters a command acts on.
#[derive(Debug, Clone, Args)]
pub struct Filter {
    /// Only this kind: sync-page, status-check, fetch-bars.
    #[arg(long)]
    kind: Option<String>,
    /// Only this symbol.
    #[arg(long)]
    symbol: Option<String>,
    /// Only this error class: transient, permanent (or poison, for messages the broker gave up on).
    #[arg(long)]
    error_class: Option<String>,
    /// At most this many (`dlq list` shows the first 100 unless told).
    #[arg(long)]
    max: Option<usize>,
}

/// The page `dlq list` shows without `--max`.
const LIST_PAGE: usize = 100;

/// `dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    filter: Filter,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// `dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    /// The job id.
    id: String,
}

/// `dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    filter: Filter,
    /// At most this many replays per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Show what would be replayed and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `dlq purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    filter: Filter,
    /// Confirm the deletion.
    #[arg(long)]
    yes: bool,
}

/// What a dead letter says about itself.
#[derive(Debug, Clone)]
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
        let headers = d.properties.headers().as_ref();
        let body: Option<Value> = serde_json::from_slice(&d.data).ok();
        let routing_key = header_str(headers, HEADER_ROUTING_KEY).unwrap_or_else(|| d.routing_key.to_string());
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
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
                .take(signal9_shared::job::MAX_ID_LEN)
                .collect(),
            kind: routing_key
                .trim_end_matches(".interactive")
                .trim_end_matches(".backfill")
                .to_owned(),
            routing_key,
            symbol: symbol.chars().take(24).collect(),
            error_class: ours.clone().unwrap_or_else(|| "poison".into()),
            attempts: header_u32(headers, HEADER_ATTEMPT).unwrap_or(0),
            last_error: header_str(headers, HEADER_LAST_ERROR)
                .unwrap_or_else(|| "redelivered too many times without finishing (delivery limit)".into()),
            last_failure: header_str(headers, HEADER_LAST_FAILURE).unwrap_or_default(),
        }
    }

    fn matches(&self, filter: &Filter) -> bool {
        filter.kind.as_ref().is_none_or(|k| *k == self.kind)
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

async fn open(settings: &BrokerSettings) -> Result<Session> {
    Session::open(settings, "signal9-producer-dlq", false).await
}

/// Runs a dead-letter command.
pub async fn run(command: DlqCommand) -> Result<()> {
    match command {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Show(args) => show(args).await,
        DlqCommand::Replay(args) => replay(args).await,
        DlqCommand::Purge(args) => purge(args).await,
    }
}

async fn list(args: ListArgs) -> Result<()> {
    let Session {
        connection, topology, ..
    } = open(&args.broker).await?;
    let queue = topology.dead_letter_queue();
    let mut scan = Scan::start(&connection, &queue).await?;
    let page = args.filter.max.unwrap_or(LIST_PAGE);
    if !args.json {
        println!(
            "{:<38} {:<13} {:<12} {:<10} {:>8}  {:<27} LAST ERROR",
            "ID", "KIND", "SYMBOL", "CLASS", "ATTEMPTS", "LAST FAILURE"
        );
    }
    // Each line is printed as it is read: nothing of a letter is kept.
    let mut shown = 0usize;
    while shown < page {
        let Some(message) = scan.next().await? else { break };
        let letter = DeadLetter::read(&message);
        scan.hold(&message);
        if !letter.matches(&args.filter) {
            continue;
        }
        shown += 1;
        if args.json {
            let line = serde_json::json!({"id": letter.id, "kind": letter.kind, "symbol": letter.symbol,
                "error_class": letter.error_class, "attempts": letter.attempts,
                "last_failure": letter.last_failure, "last_error": letter.last_error});
            println!("{line}");
        } else {
            let error: String = letter.last_error.chars().take(80).collect();
            println!(
                "{:<38} {:<13} {:<12} {:<10} {:>8}  {:<27} {}",
                letter.id, letter.kind, letter.symbol, letter.error_class, letter.attempts, letter.last_failure, error
            );
        }
    }
    let (read, total) = (scan.taken, scan.at_start);
    scan.finish().await?;
    if !args.json {
        let more = if shown == page && read < total {
            format!(" (the first {page} that match; --max N for more)")
        } else {
            String::new()
        };
        println!("{shown} shown of {total} dead letters in {queue}, {read} read{more}");
    }
    Ok(())
}

async fn show(args: ShowArgs) -> Result<()> {
    let Session {
        connection, topology, ..
    } = open(&args.broker).await?;
    let queue = topology.dead_letter_queue();
    let mut scan = Scan::start(&connection, &queue).await?;
    let mut found = false;
    while let Some(message) = scan.next().await? {
        scan.hold(&message);
        let letter = DeadLetter::read(&message);
        if letter.id != args.id {
            continue;
        }
        found = true;
        let d = &message.delivery;
        println!("routing key: {}", letter.routing_key);
        if let Some(headers) = d.properties.headers() {
            for (name, value) in headers.inner() {
                println!("header {}: {}", name.as_str(), broker::header_display(value));
            }
        }
        match serde_json::from_slice::<Value>(&d.data) {
            Ok(json) => println!("body:\n{}", serde_json::to_string_pretty(&json).unwrap_or_default()),
            Err(_) => {
                let text: String = String::from_utf8_lossy(&d.data).chars().take(4096).collect();
                println!(
                    "body ({} bytes, not JSON; first 4096 characters):\n{text}",
                    d.data.len()
                );
            }
        }
        break;
    }
    let read = scan.taken;
    scan.finish().await?;
    if !found {
        bail!("no dead letter with id {:?} among the {read} in {queue}", args.id);
    }
    Ok(())
}

async fn replay(args: ReplayArgs) -> Result<()> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of replays per second");
        }
    }
    let Session {
        connection,
        publisher,
        topology,
        ..
    } = open(&args.broker).await?;
    let mut scan = Scan::start(&connection, &topology.dead_letter_queue()).await?;
    let max = args.filter.max.unwrap_or(usize::MAX);
    let bar = if args.dry_run {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(scan.at_start)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} read {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let pause = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut replayed = 0usize;
    let mut failure = None;
    // Letters no queue would take: kept, and named at the end.
    let mut kept: Vec<String> = Vec::new();
    while replayed < max {
        let Some(message) = scan.next().await? else { break };
        bar.inc(1);
        let letter = DeadLetter::read(&message);
        if !letter.matches(&args.filter) {
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
            if kept.len() < 20 {
                kept.push(format!(
                    "{} (not a job; routing key {:?})",
                    letter.id, letter.routing_key
                ));
            }
            scan.hold(&message);
            continue;
        };
        if args.dry_run {
            println!(
                "would replay {} ({} {}) to {key}",
                letter.id, letter.kind, letter.symbol
            );
            replayed += 1;
            scan.hold(&message);
            continue;
        }
        let mut headers: FieldTable = d.properties.headers().clone().unwrap_or_default();
        let replays = header_u32(Some(&headers), HEADER_REPLAYS).unwrap_or(0) + 1;
        set_u32(&mut headers, HEADER_ATTEMPT, 0);
        set_u32(&mut headers, HEADER_REPLAYS, replays);
        set_str(&mut headers, HEADER_ROUTING_KEY, &key);
        let properties = d.properties.clone().with_headers(headers);
        match publisher
            .publish_routed(&topology.jobs_exchange(), &key, &d.data, properties)
            .await
        {
            Ok(()) => {}
            Err(BrokerError::Unroutable { .. }) => {
                if kept.len() < 20 {
                    kept.push(format!("{} (no queue takes routing key {key:?})", letter.id));
                }
                scan.hold(&message);
                continue;
            }
            Err(error) => {
                failure = Some(error);
                scan.hold(&message);
                break;
            }
        }
        // Only once the broker holds the replayed job does the dead letter go.
        d.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        bar.set_message(format!("({replayed} replayed)"));
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    bar.finish();
    scan.finish().await?;
    if args.dry_run {
        println!("dry run: {replayed} would be replayed; nothing changed");
    } else {
        println!("replayed {replayed} dead letters");
    }
    if let Some(error) = failure {
        bail!("replay stopped: {error}");
    }
    if !kept.is_empty() {
        for line in &kept {
            println!("  kept: {line}");
        }
        bail!("dead letters were kept: no job queue would take them (see `dlq show ID`)");
    }
    Ok(())
}

async fn purge(args: PurgeArgs) -> Result<()> {
    if !args.yes {
        bail!("purge deletes dead letters for good; add --yes to confirm (try `dlq list` with the same filters first)");
    }
    let Session {
        connection, topology, ..
    } = open(&args.broker).await?;
    let mut scan = Scan::start(&connection, &topology.dead_letter_queue()).await?;
    let max = args.filter.max.unwrap_or(usize::MAX);
    let mut purged = 0usize;
    while purged < max {
        let Some(message) = scan.next().await? else { break };
        if DeadLetter::read(&message).matches(&args.filter) {
            message.delivery.ack(BasicAckOptions::default()).await?;
            purged += 1;
        } else {
            scan.hold(&message);
        }
    }
    scan.finish().await?;
    println!("purged {purged} dead letters");
    Ok(())
}
