//! One session on the broker: a consumer per job queue, read interactive
//! first, then bulk, then backfill; the checks that end a stalled or
//! broken session; and the drain at shutdown.

use tracing::{info, warn};

use crate::batch::Batcher;
use crate::dispatch::{dispatch, spawn_batch, Incoming, Lanes};
use crate::pending::Pending;
use crate::{relay, Shared};
use lapin::types::FieldTable;
use lapin::Connection;
use signal9_shared::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use anyhow::{Context as _, Result};
use futures::stream::{select_all, BoxStream, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use signal9_shared::broker::{self, Publisher, Topology};
use signal9_shared::job::{JobKind, Priority};

/// How often a session checks that the broker has not closed one of its
/// channels.
pub(crate) const CHANNEL_CHECK: Duration = Duration::from_millis(500);

pub(crate) async fn session(shared: &Shared, shutdown: &mut Shutdown) -> Result<()> {
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
    let Consumers {
        consumers,
        interactive,
        bulk,
        backfill,
    } = open_consumers(shared, &connection).await?;
    shared.health.set_broker_up(true);
    // The relay publishes on its own channel: a failed event publish must
    // not close the channel the jobs' retries and replies go through.
    let mut watched: Vec<(&'static str, lapin::Channel)> = vec![("publisher", publisher.channel().clone())];
    watched.extend(consumers.iter().map(|(channel, _)| ("consumer", channel.clone())));
    let relay = if settings.outbox_relay {
        let (relay, channel) = start_relay(shared, &connection, shutdown).await?;
        watched.push(("outbox relay", channel));
        Some(relay)
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
        drop(batcher);
        abandon(shared, &connection, tasks, relay).await;
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

/// Starts the outbox relay on a publisher channel of its own (a failed
/// event publish must not close the channel the jobs' retries and replies
/// go through); returns its task and that channel, to be watched.
async fn start_relay(
    shared: &Shared,
    connection: &Connection,
    shutdown: &Shutdown,
) -> Result<(tokio::task::JoinHandle<()>, lapin::Channel)> {
    let publisher = Publisher::open(connection).await?;
    let channel = publisher.channel().clone();
    let relay = tokio::spawn(relay::run(
        relay::RelayContext {
            store: Arc::clone(&shared.ctx.store),
            publisher,
            topology: shared.topology.clone(),
            redis_url: shared.settings.budget.redis_url.clone(),
            written: Arc::clone(&shared.ctx.outbox_written),
            sink: shared.event_sink.clone(),
        },
        shutdown.clone(),
    ));
    Ok((relay, channel))
}

/// Ends a broken session: not ready from now until a new session
/// consumes. The jobs in flight stop unfinished; closing the connection
/// hands every message this session held back to its queue, to be
/// redelivered (jobs are idempotent) on the new session.
async fn abandon(
    shared: &Shared,
    connection: &Connection,
    mut tasks: JoinSet<()>,
    relay: Option<tokio::task::JoinHandle<()>>,
) {
    shared.health.set_broker_up(false);
    tasks.abort_all();
    if let Some(relay) = relay {
        relay.abort();
    }
    while tasks.join_next().await.is_some() {}
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        connection.close(200, "signal9 worker: reconnecting after a channel failure".into()),
    )
    .await;
}

/// A session's consumers: one channel and consumer per job queue, and
/// their deliveries merged per priority lane.
struct Consumers {
    /// Each queue's channel and consumer tag (cancelled at the drain).
    consumers: Vec<(lapin::Channel, String)>,
    interactive: Vec<BoxStream<'static, Incoming>>,
    bulk: Vec<BoxStream<'static, Incoming>>,
    backfill: Vec<BoxStream<'static, Incoming>>,
}

/// Consumes every job queue on `connection`, each on its own channel with
/// its prefetch.
async fn open_consumers(shared: &Shared, connection: &Connection) -> Result<Consumers> {
    let settings = &shared.settings;
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
    Ok(Consumers {
        consumers,
        interactive,
        bulk,
        backfill,
    })
}

/// How long a session may receive nothing, with nothing in flight, before
/// it asks the broker whether jobs are waiting.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(60);

/// How often that is looked at.
pub(crate) const STALL_CHECK: Duration = Duration::from_secs(15);

/// A job queue holding ready messages, and how many, if any does (asked on
/// a channel of its own: a failed passive declare closes its channel).
pub(crate) async fn ready_jobs(connection: &Connection, topology: &Topology) -> Option<(String, u32)> {
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
pub(crate) async fn drain(
    shared: &Shared,
    connection: &Connection,
    consumers: Vec<(lapin::Channel, String)>,
    batcher: &mut Batcher<Pending>,
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
