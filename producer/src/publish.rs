//! `fetch-bars` and `status-check`: publish one job per symbol with
//! publisher confirms, and optionally wait for every job's outcome.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use tracing::Instrument;

use signal9_shared::alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_shared::broker::{self, set_str, Publisher, HEADER_ROUTING_KEY};
use signal9_shared::config::{BrokerSettings, StoreSettings};
use signal9_shared::job::{FetchBars, Job, Payload, Priority, StatusCheck};
use signal9_shared::store::active_equity_symbols;

/// Options every publishing command shares.
#[derive(Debug, Args)]
pub struct PublishOptions {
    #[command(flatten)]
    broker: BrokerSettings,
    /// `bulk` (the daily pipeline's lane; the default, except for
    /// `backfill`), `interactive` (served ahead of any bulk backlog, with a
    /// reserved share of the budget) or `backfill` (served after bulk work;
    /// the default of `backfill`).
    #[arg(long, value_parser = parse_priority)]
    priority: Option<Priority>,
    /// Wait for every job's outcome and print it; exit non-zero if any job was dead-lettered or did not answer.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_timeout_secs: u64,
    /// How long to keep reconnecting to RabbitMQ and publishing the jobs it
    /// has not confirmed, in seconds (a broker restart); 0: fail at once.
    #[arg(long, env = "SIGNAL9_PUBLISH_RECONNECT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    reconnect_secs: u64,
}

impl PublishOptions {
    /// The namespace jobs go to.
    pub fn namespace(&self) -> &str {
        &self.broker.namespace
    }

    /// The priority asked for, or the command's default.
    pub fn priority_or(&self, default: Priority) -> Priority {
        self.priority.unwrap_or(default)
    }

    /// How long to wait for outcomes, when `--wait` was given.
    pub fn wait(&self) -> Option<Duration> {
        self.wait.then(|| Duration::from_secs(self.wait_timeout_secs))
    }
}

/// A delay between 50 % and 100 % of `base`.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.5..=1.0))
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    Priority::parse(text).ok_or_else(|| "expected bulk, interactive or backfill".into())
}

/// `fetch-bars`: bars of one or more symbols over an inclusive range.
#[derive(Debug, Args)]
pub struct FetchBarsArgs {
    #[command(flatten)]
    bars: BarsSelection,
    #[command(flatten)]
    options: PublishOptions,
}

/// Which bars: the symbols, the timeframe, the range, adjustment and feed.
#[derive(Debug, Args)]
pub struct BarsSelection {
    /// Comma-separated symbols (case is ignored): AAPL,BRK.B,BTC/USD.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["symbols_file", "all_active"])]
    pub symbols: Vec<String>,
    /// Every active, tradable US equity in the store (after a sync).
    #[arg(long)]
    pub all_active: bool,
    #[command(flatten)]
    pub store: StoreSettings,
    /// A file with one symbol per line (blank lines and `#` comments skipped).
    #[arg(long)]
    pub symbols_file: Option<PathBuf>,
    /// Bar length: 1-59Min, 1-23Hour, 1Day, 1Week, 1/2/3/4/6/12Month (or T/H/D/W/M).
    #[arg(long)]
    pub timeframe: Timeframe,
    /// Inclusive start: RFC 3339, or a date (its 00:00 UTC).
    #[arg(long, value_parser = parse_start)]
    pub start: DateTime<Utc>,
    /// Inclusive end: RFC 3339, or a date (its 23:59:59 UTC).
    #[arg(long, value_parser = parse_end)]
    pub end: DateTime<Utc>,
    /// raw, split, dividend, spin-off, all, or a comma combination (stocks only).
    #[arg(long, default_value = "raw")]
    pub adjustment: Adjustment,
    /// sip, iex, otc or boats (stocks only; the API's default when absent).
    #[arg(long)]
    pub feed: Option<Feed>,
}

impl BarsSelection {
    /// The symbols asked for (the store's active equities with
    /// --all-active), deduplicated, in the order given.
    pub async fn symbols(&self) -> Result<Vec<Symbol>> {
        if self.end < self.start {
            bail!("--end {} is before --start {}", self.end, self.start);
        }
        let mut symbols = if self.symbols.is_empty() && self.symbols_file.is_none() {
            Vec::new()
        } else {
            parse_symbols(&self.symbols, self.symbols_file.as_ref())?
        };
        if self.all_active {
            let store = self.store.open().await.context("opening the store")?;
            let mut active = active_equity_symbols(store.as_ref()).await?;
            active.retain(|s| !symbols.contains(s));
            symbols.extend(active);
            if symbols.is_empty() {
                bail!("the store holds no active, tradable US equity; run `signal9-producer sync` first");
            }
        }
        Ok(symbols)
    }

    /// The store named by the store settings.
    pub async fn open_store(&self) -> Result<std::sync::Arc<dyn signal9_shared::store::Store>> {
        self.store.open().await.context("opening the store")
    }

    /// The fetch-bars payload of one symbol over `[start, end]` (crypto
    /// pairs take no adjustment and no feed).
    pub fn payload(&self, symbol: Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> FetchBars {
        let crypto = symbol.is_crypto_pair();
        FetchBars {
            symbol,
            timeframe: self.timeframe,
            start,
            end,
            adjustment: if crypto {
                Adjustment::raw()
            } else {
                self.adjustment.clone()
            },
            feed: if crypto { None } else { self.feed },
        }
    }
}

/// `status-check`: one job per symbol.
#[derive(Debug, Args)]
pub struct StatusCheckArgs {
    /// Symbols to check.
    #[arg(required = true)]
    symbols: Vec<String>,
    #[command(flatten)]
    options: PublishOptions,
}

fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text, false)
}

fn parse_end(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text, true)
}

fn parse_time(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| "expected RFC 3339 (2026-11-20T00:00:00Z) or a date (2026-11-20)".to_string())?;
    let time = if end_of_day {
        date.and_hms_opt(23, 59, 59)
    } else {
        date.and_hms_opt(0, 0, 0)
    };
    time.map(|t| t.and_utc()).ok_or_else(|| "invalid date".into())
}

fn parse_symbols(list: &[String], file: Option<&PathBuf>) -> Result<Vec<Symbol>> {
    let mut raw: Vec<String> = list.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        raw.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    let mut seen = HashSet::new();
    let mut symbols = Vec::new();
    for item in raw {
        let symbol = Symbol::parse(&item.trim().to_ascii_uppercase()).map_err(anyhow::Error::from)?;
        if seen.insert(symbol.clone()) {
            symbols.push(symbol);
        }
    }
    if symbols.is_empty() {
        bail!("no symbols given");
    }
    Ok(symbols)
}

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

/// The properties of a job message.
pub fn job_properties(job: &Job, reply_to: Option<&str>, span: &tracing::Span) -> BasicProperties {
    let mut headers = FieldTable::default();
    set_str(&mut headers, HEADER_ROUTING_KEY, &job.routing_key());
    // The job's trace continues in the worker (W3C traceparent header).
    signal9_shared::telemetry::inject(span, &mut headers);
    let mut properties = BasicProperties::default()
        .with_message_id(job.id.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(queue) = reply_to {
        properties = properties
            .with_reply_to(queue.into())
            .with_correlation_id(job.id.as_str().into());
    }
    properties
}

/// One connection to the broker with what publishing needs on it.
struct Session {
    // Kept open for the publisher's and the reply consumer's channels.
    _connection: lapin::Connection,
    publisher: Publisher,
    /// With `--wait`: the reply queue's channel, name and consumer.
    replies: Option<(lapin::Channel, String, lapin::Consumer)>,
}

async fn open_session(options: &PublishOptions, topology: &broker::Topology) -> Result<Session> {
    let connection = broker::connect(&options.broker.amqp_url, "signal9-producer")
        .await
        .context("connecting to RabbitMQ")?;
    let publisher = Publisher::open(&connection).await?;
    topology
        .declare(publisher.channel())
        .await
        .context("declaring the topology")?;
    let mut replies = None;
    if options.wait {
        let channel = connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        replies = Some((channel, queue.name().to_string(), consumer));
    }
    Ok(Session {
        _connection: connection,
        publisher,
        replies,
    })
}

/// Publishes `jobs` on one session, then collects the confirms (one round
/// trip per batch, not per job). Returns the jobs the broker did not confirm.
async fn publish_batch<'a>(session: &Session, exchange: &str, jobs: &[&'a Job]) -> Vec<&'a Job> {
    let reply_to = session.replies.as_ref().map(|(_, name, _)| name.as_str());
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

/// [`publish_jobs`], moving `progress` on as each job's outcome arrives.
pub async fn publish_and_watch(
    options: &PublishOptions,
    jobs: Vec<Job>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Outcomes> {
    let topology = options.broker.topology();
    let exchange = topology.jobs_exchange();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(options.reconnect_secs);
    let mut pending: Vec<&Job> = jobs.iter().collect();
    let mut session: Option<Session> = None;
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::new();
    // Jobs confirmed on the current session, and those confirmed on a
    // session that was lost since: their replies went to its reply queue,
    // which the broker deleted with the connection.
    let mut confirmed_here: Vec<String> = Vec::new();
    let mut orphaned: HashSet<String> = HashSet::new();
    while !pending.is_empty() {
        let current = match session.take() {
            Some(current) => current,
            None => match open_session(options, &topology).await {
                Ok(fresh) => fresh,
                Err(error) if options.reconnect_secs == 0 => return Err(error),
                Err(error) => {
                    last_error = format!("{error:#}");
                    if tokio::time::Instant::now() >= give_up {
                        break;
                    }
                    eprintln!("warning: {last_error}; connecting again in {} ms", backoff.as_millis());
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let failed = publish_batch(&current, &exchange, &pending).await;
        let failed_ids: HashSet<&str> = failed.iter().map(|j| j.id.as_str()).collect();
        confirmed_here.extend(
            pending
                .iter()
                .filter(|j| !failed_ids.contains(j.id.as_str()))
                .map(|j| j.id.clone()),
        );
        pending = failed;
        if pending.is_empty() {
            session = Some(current);
            break;
        }
        if current.publisher.channel().status().connected() {
            // Refused (nacked) on a live channel: again on this session.
            last_error = format!("the broker refused {} jobs", pending.len());
            session = Some(current);
        } else {
            last_error = format!("the connection was lost with {} jobs unconfirmed", pending.len());
            if options.wait {
                orphaned.extend(confirmed_here.drain(..));
            }
        }
        if options.reconnect_secs == 0 || tokio::time::Instant::now() >= give_up {
            break;
        }
        eprintln!(
            "warning: {last_error}; publishing them again in {} ms",
            backoff.as_millis()
        );
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
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
    let replies = session.and_then(|s| s.replies);
    let Some((_channel, _, mut consumer)) = replies else {
        return Ok(Outcomes::default());
    };
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(options.wait_timeout_secs);
    while !waiting.is_empty() {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else { break };
        let Ok(reply) = serde_json::from_slice::<serde_json::Value>(&delivery.data) else {
            continue;
        };
        let id = reply["id"].as_str().unwrap_or_default().to_owned();
        let Some(symbol) = waiting.remove(&id) else { continue };
        if let Some(bar) = progress {
            bar.inc(1);
        }
        if reply["status"] == "succeeded" {
            succeeded += 1;
            let detail = &reply["detail"];
            outcomes.bars += detail["bars"].as_u64().unwrap_or(0);
            outcomes.resumed += usize::from(detail["resumed"].as_bool().unwrap_or(false));
            if let Some(batch) = detail["batch"].as_str() {
                if batches.insert(batch.to_owned()) {
                    outcomes.calls += detail["calls"].as_u64().unwrap_or(0);
                }
            }
            if let Some(bar) = progress {
                bar.set_message(format!("{} bars, {} calls", outcomes.bars, outcomes.calls));
            }
            if let Some(listed) = reply["detail"]["listed"].as_u64() {
                let d = &reply["detail"];
                println!(
                    "  {id}: listed {listed}, new {}, updated {}, unchanged {}, status changes {}, rejected {}",
                    d["new"],
                    d["updated"],
                    d["unchanged"],
                    d["status_changes"].as_array().map_or(0, Vec::len),
                    d["rejected"]
                );
            }
        } else {
            failed.push(format!(
                "{symbol} ({id}): {} {}",
                reply["error_class"].as_str().unwrap_or("?"),
                reply["error"].as_str().unwrap_or("")
            ));
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
