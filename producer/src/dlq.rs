//! `dlq list|show|replay|purge`: the operator's view of the dead-letter queue.
//!
//! Browsing takes messages without acking them and hands back every one it
//! does not act on, so listing changes nothing. Replay publishes each job
//! back with a broker confirm before it acks the dead letter: a crash in the
//! middle can duplicate a job (jobs are idempotent) but never lose one.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use serde_json::Value;
use std::time::Duration;

use signal9_shared::broker::{
    self, header_str, header_u32, set_str, set_u32, BrokerError, Publisher, Topology, HEADER_ATTEMPT,
    HEADER_ERROR_CLASS, HEADER_LAST_ERROR, HEADER_LAST_FAILURE, HEADER_REPLAYS, HEADER_ROUTING_KEY,
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
    /// At most this many.
    #[arg(long)]
    max: Option<usize>,
}

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

/// Takes every message of the DLQ (unacked) so the caller can act on some
/// and hand the rest back.
async fn browse(channel: &lapin::Channel, queue: &str) -> Result<Vec<BasicGetMessage>> {
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        messages.push(message);
    }
    Ok(messages)
}

async fn give_back(messages: Vec<BasicGetMessage>) -> Result<()> {
    for message in messages {
        message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await?;
    }
    Ok(())
}

async fn open(settings: &BrokerSettings) -> Result<(Connection, Publisher, Topology)> {
    let connection = broker::connect(&settings.amqp_url, "signal9-producer-dlq")
        .await
        .context("connecting to RabbitMQ")?;
    let publisher = Publisher::open(&connection).await?;
    let topology = settings.topology();
    topology
        .declare(publisher.channel())
        .await
        .context("declaring the topology")?;
    Ok((connection, publisher, topology))
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
    let (connection, _publisher, topology) = open(&args.broker).await?;
    let channel = connection.create_channel().await?;
    let messages = browse(&channel, &topology.dead_letter_queue()).await?;
    let letters: Vec<DeadLetter> = messages.iter().map(DeadLetter::read).collect();
    let shown: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| l.matches(&args.filter))
        .take(args.filter.max.unwrap_or(usize::MAX))
        .collect();
    if args.json {
        for l in &shown {
            let line = serde_json::json!({"id": l.id, "kind": l.kind, "symbol": l.symbol, "error_class": l.error_class,
                "attempts": l.attempts, "last_failure": l.last_failure, "last_error": l.last_error});
            println!("{line}");
        }
    } else {
        println!(
            "{:<38} {:<13} {:<12} {:<10} {:>8}  {:<27} LAST ERROR",
            "ID", "KIND", "SYMBOL", "CLASS", "ATTEMPTS", "LAST FAILURE"
        );
        for l in &shown {
            let error: String = l.last_error.chars().take(80).collect();
            println!(
                "{:<38} {:<13} {:<12} {:<10} {:>8}  {:<27} {}",
                l.id, l.kind, l.symbol, l.error_class, l.attempts, l.last_failure, error
            );
        }
        println!(
            "{} shown of {} dead letters in {}",
            shown.len(),
            letters.len(),
            topology.dead_letter_queue()
        );
    }
    give_back(messages).await?;
    Ok(())
}

async fn show(args: ShowArgs) -> Result<()> {
    let (connection, _publisher, topology) = open(&args.broker).await?;
    let channel = connection.create_channel().await?;
    let messages = browse(&channel, &topology.dead_letter_queue()).await?;
    let found = messages.iter().find(|m| DeadLetter::read(m).id == args.id);
    let result = match found {
        Some(message) => {
            let d = &message.delivery;
            println!("routing key: {}", DeadLetter::read(message).routing_key);
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
            Ok(())
        }
        None => Err(anyhow::anyhow!(
            "no dead letter with id {:?} in {}",
            args.id,
            topology.dead_letter_queue()
        )),
    };
    give_back(messages).await?;
    result
}

async fn replay(args: ReplayArgs) -> Result<()> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of replays per second");
        }
    }
    let (connection, publisher, topology) = open(&args.broker).await?;
    let channel = connection.create_channel().await?;
    let messages = browse(&channel, &topology.dead_letter_queue()).await?;
    let (mut chosen, mut rest): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for message in messages {
        let letter = DeadLetter::read(&message);
        if letter.matches(&args.filter) && chosen.len() < args.filter.max.unwrap_or(usize::MAX) {
            chosen.push((letter, message));
        } else {
            rest.push(message);
        }
    }
    if args.dry_run {
        for (letter, _) in &chosen {
            println!(
                "would replay {} ({} {}) to {}",
                letter.id, letter.kind, letter.symbol, letter.routing_key
            );
        }
        println!("dry run: {} would be replayed; nothing changed", chosen.len());
        rest.extend(chosen.into_iter().map(|(_, m)| m));
        return give_back(rest).await;
    }
    let bar = ProgressBar::new(chosen.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} replayed {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let pause = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut replayed = 0usize;
    let mut failure = None;
    // Letters no queue would take: kept, and named at the end.
    let mut kept: Vec<String> = Vec::new();
    let mut chosen = chosen.into_iter();
    for (letter, message) in chosen.by_ref() {
        let d = &message.delivery;
        // A letter whose recorded key `{ns}.jobs` does not bind (a job once
        // published straight to its queue) goes back by its own kind and
        // priority; one that is not a job at all cannot go back.
        let key = if is_routing_key(&letter.routing_key) {
            letter.routing_key.clone()
        } else if let Ok(job) = Job::parse(&d.data) {
            job.routing_key()
        } else {
            kept.push(format!(
                "{} (not a job; routing key {:?})",
                letter.id, letter.routing_key
            ));
            rest.push(message);
            continue;
        };
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
                kept.push(format!("{} (no queue takes routing key {key:?})", letter.id));
                rest.push(message);
                continue;
            }
            Err(error) => {
                failure = Some(error);
                rest.push(message);
                break;
            }
        }
        // Only once the broker holds the replayed job does the dead letter go.
        d.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        bar.inc(1);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    rest.extend(chosen.map(|(_, m)| m));
    bar.finish_with_message(format!("({replayed})"));
    give_back(rest).await?;
    println!("replayed {replayed} dead letters");
    if let Some(error) = failure {
        bail!("replay stopped: {error}");
    }
    if !kept.is_empty() {
        for line in kept.iter().take(20) {
            println!("  kept: {line}");
        }
        bail!(
            "{} dead letters were kept: no job queue would take them (see `dlq show ID`)",
            kept.len()
        );
    }
    Ok(())
}

async fn purge(args: PurgeArgs) -> Result<()> {
    if !args.yes {
        bail!("purge deletes dead letters for good; add --yes to confirm (try `dlq list` with the same filters first)");
    }
    let (connection, _publisher, topology) = open(&args.broker).await?;
    let channel = connection.create_channel().await?;
    let messages = browse(&channel, &topology.dead_letter_queue()).await?;
    let mut rest = Vec::new();
    let mut purged = 0usize;
    for message in messages {
        if DeadLetter::read(&message).matches(&args.filter) && purged < args.filter.max.unwrap_or(usize::MAX) {
            message.delivery.ack(BasicAckOptions::default()).await?;
            purged += 1;
        } else {
            rest.push(message);
        }
    }
    give_back(rest).await?;
    println!("purged {purged} dead letters");
    Ok(())
}
