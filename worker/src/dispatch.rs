//! From a delivery to a running job: parse it, hold fetch-bars jobs for a
//! batch, run each job or batch in its priority lane, contain a panic.

use crate::batch::{BatchKey, Batcher};
use crate::outcome::{finish, Failure};
use crate::pending::Pending;
use crate::settings::WorkerSettings;
use crate::{handlers, outcome, Shared};
use signal9_shared::broker::Publisher;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use anyhow::{Context as _, Result};
use signal9_shared::job::{Job, Payload, Priority};
use signal9_shared::telemetry::events::{Emit, MalformedJob, Outcome};

/// A delivery from one of the job queues, with the priority lane of its queue.
pub(crate) type Incoming = (Priority, Result<lapin::message::Delivery, lapin::Error>);

#[derive(Debug, Clone)]
pub(crate) struct Lanes {
    pub(crate) bulk: Arc<Semaphore>,
    pub(crate) interactive: Arc<Semaphore>,
    pub(crate) backfill: Arc<Semaphore>,
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

pub(crate) fn dispatch(
    shared: &Shared,
    publisher: &Publisher,
    lanes: &Lanes,
    tasks: &mut JoinSet<()>,
    batcher: &mut Batcher<Pending>,
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
            if let Some((key, items)) = batcher.add(key, Pending::new(job, delivery), tokio::time::Instant::now()) {
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

pub(crate) fn spawn_batch(
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
pub(crate) async fn contain<T>(work: impl std::future::Future<Output = T>, on_panic: impl FnOnce(String) -> T) -> T {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => on_panic(panic_message(panic.as_ref())),
    }
}

/// The failure of work that panicked.
pub(crate) fn panicked(message: &str) -> Failure {
    Failure::permanent(format!("the job's handler panicked: {message}"))
}

/// The text a panic carried, if it carried text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The test-only fault switch (`SIGNAL9_FAULT_PANIC_SYMBOL`): panics when
/// a job of `items` is about that symbol.
pub(crate) fn fault(settings: &WorkerSettings, items: &[Pending]) {
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
