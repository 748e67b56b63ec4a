//! signal9's worker: consumes jobs from RabbitMQ, runs their handlers, and
//! acks, retries or dead-letters each one.
//!
//! In-flight work is bounded twice: each queue's prefetch (`basic_qos`)
//! bounds the messages held, and a semaphore per priority lane bounds the
//! jobs (or coalesced batches) running at once. Interactive queues are read
//! first, then bulk, then backfill, each with its own lane, so a request
//! never waits behind a bulk backlog and the daily pipeline never waits
//! behind a backfill (the budget ranks their calls the same way). The worker reconnects with capped, jittered back-off when the
//! broker goes away, and on shutdown stops consuming, lets in-flight jobs
//! finish within a deadline and hands everything else back to the queue.

mod batch;
mod dependencies;
mod handlers;
mod health;
mod outcome;
mod relay;
mod settings;

pub use settings::WorkerSettings;

use anyhow::{Context as _, Result};
use futures::stream::{select_all, BoxStream, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use signal9_shared::backoff::Backoff;
use signal9_shared::broker::{self, Publisher, Topology};
use signal9_shared::job::{Job, JobKind, Payload, Priority};
use signal9_shared::services::Services;
use signal9_shared::shutdown::Shutdown;
use signal9_shared::telemetry::events::{Emit, JobEnd, JobFinished, MalformedJob, Outcome};

use batch::{BatchKey, Batcher, Pending};
use handlers::Context;
use outcome::Failure;

/// Everything a session needs, built once per process.
#[derive(Debug, Clone)]
struct Shared {
    settings: WorkerSettings,
    /// The EventBridge bus every relayed event also goes to, if set.
    event_sink: Option<Arc<dyn signal9_shared::outbox::EventSink>>,
    topology: Topology,
    ctx: Context,
    health: Arc<health::Health>,
    /// This process's breakers of its store and Redis.
    deps: Arc<dependencies::Dependencies>,
}

/// Runs the worker until `shutdown` fires. Returns after a graceful stop.
pub async fn run(settings: WorkerSettings, mut shutdown: Shutdown) -> Result<()> {
    let services = Services::open(&settings.store, &settings.budget, &settings.broker.namespace).await?;
    let client = services.client(&settings.alpaca).await?;
    let Services { store, gate } = services;
    if settings.check_credentials {
        // One GET /v2/account through the budget: a refused key or a
        // blocked account stops the worker here, before it takes any job.
        let check = signal9_alpaca::check_credentials(&client)
            .await
            .context("checking the Alpaca credentials (--check-credentials)")?;
        anyhow::ensure!(
            check.is_active(),
            "checking the Alpaca credentials (--check-credentials): the account is not usable: {check}"
        );
        tracing::info!(%check, "Alpaca credentials checked");
    }
    let health = Arc::new(health::Health::new(gate));
    let metrics_addr = match settings.metrics_addr {
        settings::MetricsAddr::At(addr) => health::serve(addr, Arc::clone(&health), shutdown.clone())
            .await
            .map(|a| a.to_string()),
        settings::MetricsAddr::Off => None,
    };
    let heartbeat = tokio::spawn(health::keep_heartbeat(
        Arc::clone(&health),
        settings.broker.namespace.clone(),
        settings.concurrency,
        metrics_addr,
        shutdown.clone(),
    ));
    let ctx = Context {
        client,
        store,
        packing: settings.packing.packing(),
        reconcile: settings.reconcile(),
        outbox_written: Arc::new(tokio::sync::Notify::new()),
    };
    let sync_watch = tokio::spawn(relay::watch_sync_runs(
        Arc::clone(&ctx.store),
        health.gate.budget(signal9_alpaca::Api::Data).pool().clone(),
        settings.broker.namespace.clone(),
        shutdown.clone(),
    ));
    let event_sink: Option<Arc<dyn signal9_shared::outbox::EventSink>> = match &settings.eventbridge_bus {
        Some(bus) if !bus.is_empty() => {
            let aws = signal9_shared::aws::AwsTarget::default().load().await;
            Some(Arc::new(signal9_shared::eventbridge::EventBridgeSink::new(
                &aws,
                bus.clone(),
            )))
        }
        _ => None,
    };
    let deps = Arc::new(dependencies::Dependencies::new());
    // Redis is pinged every second by this process: three failures in a row
    // open its breaker and stop the consuming.
    let redis_watch = tokio::spawn({
        let (deps, pool, mut shutdown) = (
            Arc::clone(&deps),
            health.gate.budget(signal9_alpaca::Api::Data).pool().clone(),
            shutdown.clone(),
        );
        async move {
            while shutdown.sleep(Duration::from_secs(1)).await {
                deps.record_redis(signal9_shared::workers::ping(&pool).await.is_ok());
            }
        }
    });
    let shared = Shared {
        event_sink,
        topology: settings.broker.topology(),
        settings,
        ctx,
        health,
        deps,
    };
    let result = sessions(&shared, &mut shutdown).await;
    let _ = heartbeat.await;
    sync_watch.abort();
    redis_watch.abort();
    result
}

/// Broker sessions, one after another, until a graceful stop.
async fn sessions(shared: &Shared, shutdown: &mut Shutdown) -> Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        // Nothing is consumed (nothing spent) until the store and Redis
        // can take the results.
        let health = Arc::clone(&shared.health);
        let pool = health.gate.budget(signal9_alpaca::Api::Data).pool().clone();
        let up = shared
            .deps
            .wait_until_up(&shared.ctx.store, &pool, shutdown, |held| {
                health.set_held_by(held.map(dependencies::Dependency::as_str));
            })
            .await;
        if !up {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let ended = session(shared, shutdown).await;
        shared.health.set_broker_up(false);
        match ended {
            Ok(()) => return Ok(()),
            Err(error) => warn!(error = %format!("{error:#}"), "Broker session ended; reconnecting"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        if !shutdown.sleep(backoff.next_delay()).await {
            return Ok(());
        }
    }
}

type Incoming = (Priority, Result<lapin::message::Delivery, lapin::Error>);

/// How often a session checks that the broker has not closed one of its
/// channels.
const CHANNEL_CHECK: Duration = Duration::from_millis(500);

async fn session(shared: &Shared, shutdown: &mut Shutdown) -> Result<()> {
    let settings = &shared.settings;
    let connection = broker::connect(&settings.broker.amqp_url, "signal9-worker").await?;
    let publisher = Publisher::open(&connection).await?;
    shared
        .topology
        .declare_on(&connection)
        .await
        .context("declaring the topology")?;

    let concurrency = usize::from(settings.concurrency);
    let coalesce = usize::from(settings.coalesce_max);
    let mut consumers = Vec::new();
    let mut interactive: Vec<BoxStream<'static, Incoming>> = Vec::new();
    let mut bulk: Vec<BoxStream<'static, Incoming>> = Vec::new();
    let mut backfill: Vec<BoxStream<'static, Incoming>> = Vec::new();
    for kind in JobKind::ALL {
        for priority in Priority::ALL {
            let channel = connection.create_channel().await?;
            // Prefetch: a lane runs `concurrency` jobs at once; a fetch-bars
            // batch holds up to `coalesce_max` messages, so that queue may
            // hold `concurrency × coalesce_max` unacked messages.
            let prefetch = if kind == JobKind::FetchBars {
                concurrency * coalesce
            } else {
                concurrency
            };
            channel
                .basic_qos(u16::try_from(prefetch).unwrap_or(u16::MAX), BasicQosOptions::default())
                .await?;
            let queue = shared.topology.job_queue(kind, priority);
            let tag = format!("signal9-worker-{}-{}", queue, uuid::Uuid::new_v4());
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let stream = consumer.map(move |d| (priority, d)).boxed();
            match priority {
                Priority::Interactive => interactive.push(stream),
                Priority::Bulk => bulk.push(stream),
                Priority::Backfill => backfill.push(stream),
            }
            consumers.push((channel, tag));
        }
    }
    shared.health.set_broker_up(true);
    // The relay publishes on its own channel: a failed event publish must
    // not close the channel the jobs' retries and replies go through.
    let mut watched: Vec<(&'static str, lapin::Channel)> = vec![("publisher", publisher.channel().clone())];
    watched.extend(consumers.iter().map(|(channel, _)| ("consumer", channel.clone())));
    let relay = if settings.outbox_relay {
        let relay_publisher = Publisher::open(&connection).await?;
        watched.push(("outbox relay", relay_publisher.channel().clone()));
        Some(tokio::spawn(relay::run(
            relay::RelayContext {
                store: Arc::clone(&shared.ctx.store),
                publisher: relay_publisher,
                topology: shared.topology.clone(),
                redis_url: settings.budget.redis_url.clone(),
                written: Arc::clone(&shared.ctx.outbox_written),
                sink: shared.event_sink.clone(),
            },
            shutdown.clone(),
        )))
    } else {
        None
    };
    let mut interactive = select_all(interactive);
    let mut bulk = select_all(bulk);
    let mut backfill = select_all(backfill);
    info!(namespace = %shared.topology.namespace(), concurrency, coalesce, "Worker consuming");

    let lanes = Lanes {
        bulk: Arc::new(Semaphore::new(concurrency)),
        interactive: Arc::new(Semaphore::new(concurrency)),
        backfill: Arc::new(Semaphore::new(concurrency)),
    };
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut batcher = Batcher::new(
        coalesce,
        Duration::from_millis(settings.coalesce_wait_ms),
        settings.packing.packing(),
    );
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    // A channel the broker closed (a channel-level error, such as a publish
    // to an exchange someone deleted) while the connection lives: every
    // finish on it would fail and every job it held would stay unacked.
    let mut channel_check = tokio::time::interval(CHANNEL_CHECK);
    channel_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A connection can stay open and carry nothing (a node that lost its
    // cluster, a consumer the broker forgot): with nothing in flight and
    // no delivery for STALL_AFTER while a queue holds ready jobs, the
    // session starts again, on whichever node answers.
    let mut stall_check = tokio::time::interval(STALL_CHECK);
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_delivery = tokio::time::Instant::now();

    let outcome: Result<()> = loop {
        let deadline = batcher.next_deadline().unwrap_or_else(far);
        tokio::select! {
            biased;
            () = shutdown.recv() => break Ok(()),
            Some(item) = interactive.next() => {
                last_delivery = tokio::time::Instant::now();
                if let Err(e) = dispatch(shared, &publisher, &lanes, &mut tasks, &mut batcher, item) { break Err(e) }
            }
            Some(item) = bulk.next() => {
                last_delivery = tokio::time::Instant::now();
                if let Err(e) = dispatch(shared, &publisher, &lanes, &mut tasks, &mut batcher, item) { break Err(e) }
            }
            Some(item) = backfill.next() => {
                last_delivery = tokio::time::Instant::now();
                if let Err(e) = dispatch(shared, &publisher, &lanes, &mut tasks, &mut batcher, item) { break Err(e) }
            }
            _ = tokio::time::sleep_until(deadline) => {
                for (key, items) in batcher.due(tokio::time::Instant::now()) {
                    spawn_batch(shared, &publisher, &lanes, &mut tasks, key, items);
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(error) = joined {
                    warn!(%error, "A job task panicked; its message returns to the queue");
                }
            }
            _ = stall_check.tick(), if last_delivery.elapsed() > STALL_AFTER && tasks.is_empty() && batcher.next_deadline().is_none() => {
                if let Some((queue, ready)) = ready_jobs(&connection, &shared.topology).await {
                    break Err(anyhow::anyhow!(
                        "no delivery for {} s while {queue} holds {ready} ready jobs: the session is stalled",
                        STALL_AFTER.as_secs()
                    ));
                }
                last_delivery = tokio::time::Instant::now();
            }
            _ = channel_check.tick() => {
                if let Some(dependency) = shared.deps.open() {
                    // Stop consuming: the session ends, every message it
                    // held returns to its queue, and the next one waits for
                    // the dependency to answer.
                    shared.health.set_held_by(Some(dependency.as_str()));
                    break Err(anyhow::anyhow!(
                        "the {} keeps failing: consuming stops until it answers",
                        dependency.as_str()
                    ));
                }
                if let Some((which, channel)) = watched.iter().find(|(_, c)| !c.status().connected()) {
                    break Err(anyhow::anyhow!(
                        "the broker closed the {which} channel {} while the connection lived",
                        channel.id()
                    ));
                }
            }
            else => break Err(anyhow::anyhow!("every consumer ended")),
        }
    };
    if let Err(error) = outcome {
        // Not ready from now until a new session consumes. The jobs in
        // flight stop unfinished; closing the connection hands every
        // message this session held back to its queue, to be redelivered
        // (jobs are idempotent) on the new session.
        shared.health.set_broker_up(false);
        tasks.abort_all();
        if let Some(relay) = relay {
            relay.abort();
        }
        while tasks.join_next().await.is_some() {}
        drop(batcher);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            connection.close(200, "signal9 worker: reconnecting after a channel failure".into()),
        )
        .await;
        return Err(error);
    }
    drain(shared, &connection, consumers, &mut batcher, &mut tasks).await;
    if let Some(relay) = relay {
        // It has seen the shutdown and makes a last pass; what it cannot
        // send in time stays in the outbox for the next relay.
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
    }
    Ok(())
}

/// How long a session may receive nothing, with nothing in flight, before
/// it asks the broker whether jobs are waiting.
const STALL_AFTER: Duration = Duration::from_secs(60);
/// How often that is looked at.
const STALL_CHECK: Duration = Duration::from_secs(15);

/// A job queue holding ready messages, and how many, if any does (asked on
/// a channel of its own: a failed passive declare closes its channel).
async fn ready_jobs(connection: &Connection, topology: &Topology) -> Option<(String, u32)> {
    let channel = connection.create_channel().await.ok()?;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    let mut found = None;
    'kinds: for kind in JobKind::ALL {
        for priority in Priority::ALL {
            let queue = topology.job_queue(kind, priority);
            match channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(q) if q.message_count() > 0 => {
                    found = Some((queue, q.message_count()));
                    break 'kinds;
                }
                Ok(_) => {}
                Err(_) => break 'kinds,
            }
        }
    }
    let _ = channel.close(200, "stall check".into()).await;
    found
}

/// Graceful stop: no new deliveries, waiting jobs back to the queue, running
/// jobs given until the deadline.
async fn drain(
    shared: &Shared,
    connection: &Connection,
    consumers: Vec<(lapin::Channel, String)>,
    batcher: &mut Batcher,
    tasks: &mut JoinSet<()>,
) {
    info!(
        in_flight = tasks.len(),
        "Shutting down: consumers cancelled, finishing in-flight jobs"
    );
    for (channel, tag) in &consumers {
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
    for pending in batcher.drain() {
        let _ = pending
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await;
    }
    let deadline = Duration::from_secs(shared.settings.shutdown_secs);
    if tokio::time::timeout(deadline, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            left = tasks.len(),
            "Shutdown deadline passed; unfinished jobs return to the queue"
        );
        tasks.abort_all();
    }
    // Closing the connection returns every unacked message to its queue.
    let _ = connection.close(200, "worker shutdown".into()).await;
    info!("Worker stopped");
}

#[derive(Debug, Clone)]
struct Lanes {
    bulk: Arc<Semaphore>,
    interactive: Arc<Semaphore>,
    backfill: Arc<Semaphore>,
}

impl Lanes {
    fn of(&self, priority: Priority) -> Arc<Semaphore> {
        match priority {
            Priority::Bulk => Arc::clone(&self.bulk),
            Priority::Interactive => Arc::clone(&self.interactive),
            Priority::Backfill => Arc::clone(&self.backfill),
        }
    }
}

fn dispatch(
    shared: &Shared,
    publisher: &Publisher,
    lanes: &Lanes,
    tasks: &mut JoinSet<()>,
    batcher: &mut Batcher,
    (priority, delivery): Incoming,
) -> Result<()> {
    let delivery = delivery.context("delivery failed")?;
    // Parsing and keying run on this (the consuming) task: a panic here
    // would end the session, so it is caught and the message refused.
    let parsed = std::panic::catch_unwind(|| {
        Job::parse(&delivery.data).map(|job| {
            let key = match &job.payload {
                Payload::FetchBars(payload) => Some(BatchKey::of(payload, priority)),
                _ => None,
            };
            (job, key)
        })
    })
    .unwrap_or_else(|panic| {
        Err(signal9_shared::job::JobError(format!(
            "reading the job panicked: {}",
            panic_message(panic.as_ref())
        )))
    });
    let (job, key) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            // A poison message: dead-letter it at once with the reason.
            let (publisher, topology) = (publisher.clone(), shared.topology.clone());
            tasks.spawn(async move {
                MalformedJob {
                    routing_key: delivery.routing_key.as_str(),
                    error: &error.to_string(),
                }
                .emit();
                if let Err(e) =
                    outcome::fail(&publisher, &topology, &delivery, None, &Failure::from_error(&error)).await
                {
                    warn!(error = %e, "Could not dead-letter a malformed job; it returns to the queue");
                }
            });
            return Ok(());
        }
    };
    match key {
        Some(key) => {
            if let Some((key, items)) = batcher.add(key, Pending::new(job, delivery)) {
                spawn_batch(shared, publisher, lanes, tasks, key, items);
            }
        }
        None => {
            let (shared, publisher, lane) = (shared.clone(), publisher.clone(), lanes.of(priority));
            tasks.spawn(async move {
                let Ok(_permit) = lane.acquire_owned().await else {
                    return;
                };
                let pending = Pending::new(job, delivery);
                let span = pending.span.clone();
                let ctx = shared.ctx.at(priority);
                let work = async {
                    fault(&shared.settings, std::slice::from_ref(&pending));
                    match &pending.job.payload {
                        Payload::StatusCheck(p) => handlers::status_check::run(&ctx, p).await,
                        Payload::SyncPage(p) => handlers::sync_page::run(&ctx, &pending.job, p).await,
                        Payload::FetchBars(_) => Err(Failure::permanent("fetch-bars jobs go through the batcher")),
                    }
                };
                let result = contain(work, |message| Err(panicked(&message))).instrument(span).await;
                finish(&shared, &publisher, pending, result).await;
            });
        }
    }
    Ok(())
}

fn spawn_batch(
    shared: &Shared,
    publisher: &Publisher,
    lanes: &Lanes,
    tasks: &mut JoinSet<()>,
    key: BatchKey,
    items: Vec<Pending>,
) {
    let (shared, publisher, lane) = (shared.clone(), publisher.clone(), lanes.of(key.priority));
    tasks.spawn(
        async move {
            let Ok(_permit) = lane.acquire_owned().await else {
                return;
            };
            // One batch serves jobs of several traces: it continues the first
            // job's trace and links to the others.
            let span = tracing::info_span!("batch", jobs = items.len());
            if let Some(first) = items.first() {
                signal9_shared::telemetry::continue_trace(&span, first.delivery.properties.headers().as_ref());
            }
            for other in items.iter().skip(1) {
                signal9_shared::telemetry::link_trace(&span, other.delivery.properties.headers().as_ref());
            }
            let started = std::time::Instant::now();
            let ctx = shared.ctx.at(key.priority);
            let work = async {
                fault(&shared.settings, &items);
                handlers::fetch_bars::run(&ctx, &items).await
            };
            let results = contain(work, |message| items.iter().map(|_| Err(panicked(&message))).collect())
                .instrument(span.clone())
                .await;
            let jobs = items.len();
            let mut succeeded = 0;
            for (pending, result) in items.into_iter().zip(results) {
                succeeded += usize::from(finish(&shared, &publisher, pending, result).await == Outcome::Succeeded);
            }
            span.in_scope(|| {
                info!(
                    jobs,
                    succeeded,
                    ms = started.elapsed().as_millis() as u64,
                    "Batch finished"
                )
            });
        }
        .in_current_span(),
    );
}

/// Runs a job's (or a batch's) work so that a panic in it is that work's
/// failure, not the worker's: the panic is caught at this boundary and
/// `on_panic` turns its message into the work's result, which is then
/// dead-lettered like any permanent failure, its deliveries settled.
async fn contain<T>(work: impl std::future::Future<Output = T>, on_panic: impl FnOnce(String) -> T) -> T {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => on_panic(panic_message(panic.as_ref())),
    }
}

/// The failure of work that panicked.
fn panicked(message: &str) -> Failure {
    Failure::permanent(format!("the job's handler panicked: {message}"))
}

/// The text a panic carried, if it carried text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The test-only fault switch (`SIGNAL9_FAULT_PANIC_SYMBOL`): panics when
/// a job of `items` is about that symbol.
fn fault(settings: &WorkerSettings, items: &[Pending]) {
    let Some(symbol) = settings.fault_panic_symbol.as_deref().filter(|s| !s.is_empty()) else {
        return;
    };
    if items
        .iter()
        .any(|p| p.job.payload.symbol().is_some_and(|s| s.as_str() == symbol))
    {
        panic!("fault injected for {symbol} (SIGNAL9_FAULT_PANIC_SYMBOL)");
    }
}

/// Acks, retries or dead-letters one finished job, and tells of it.
async fn finish(
    shared: &Shared,
    publisher: &Publisher,
    pending: Pending,
    result: Result<signal9_shared::reply::Detail, Failure>,
) -> Outcome {
    let job = &pending.job;
    let kind = job.payload.kind();
    async {
        // What the end's log line borrows from.
        let (broker_error, failure): (String, Failure);
        shared
            .deps
            .record_job(result.as_ref().err().and_then(|f| f.dependency), result.is_ok());
        let end = match result {
            Ok(detail) => match outcome::succeed(publisher, &pending.delivery, &job.id, detail).await {
                // Bar jobs come by the thousand: one line per batch at info,
                // each job at debug and in its trace.
                Ok(()) => JobEnd::Succeeded {
                    quiet: kind == JobKind::FetchBars,
                },
                Err(error) => {
                    broker_error = error.to_string();
                    JobEnd::AckFailed { error: &broker_error }
                }
            },
            Err(failed) => {
                failure = failed;
                match outcome::fail(publisher, &shared.topology, &pending.delivery, Some(job), &failure).await {
                    Ok(outcome::Route::Defer) => JobEnd::Deferred {
                        reason: &failure.message,
                    },
                    Ok(route) => JobEnd::Failed {
                        class: failure.class,
                        error: &failure.message,
                        dead: route == outcome::Route::Dead,
                    },
                    Err(error) => {
                        broker_error = error.to_string();
                        JobEnd::RouteFailed { error: &broker_error }
                    }
                }
            }
        };
        let outcome = end.outcome();
        JobFinished {
            kind,
            end,
            elapsed: pending.received.elapsed(),
        }
        .emit();
        shared
            .health
            .jobs_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        outcome
    }
    .instrument(pending.span.clone())
    .await
}
