//! Fetching what the store lacks through the job queue: each missing range
//! becomes an interactive `fetch-bars` job (so it spends the one shared
//! budget, ahead of bulk work, and is stored by a worker like
//! any other job), published with this process's reply queue; the request
//! waits for the replies. Two requests for the same range at once share
//! one job.

use anyhow::{Context, Result};
use futures::StreamExt;
use signal9_shared::reply::JobReply;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

use signal9_shared::broker::{Publisher, Topology};
use signal9_shared::job::{FetchBars, Job, Payload, Priority};
use signal9_shared::ops::{job_properties, Session};
use signal9_shared::settings::BrokerSettings;

/// One range of one series to fetch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Need {
    /// The job's payload.
    pub(crate) fetch: FetchBars,
}

impl Need {
    fn key(&self) -> String {
        let f = &self.fetch;
        format!(
            "{}|{}|{}|{}|{}|{}",
            f.symbol,
            f.range.timeframe,
            f.range.adjustment,
            f.range.feed.map_or("default", |x| x.as_str()),
            f.range.start.timestamp(),
            f.range.end.timestamp()
        )
    }
}

/// Why the missing ranges could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// Not every job answered in time (they go on).
    #[error("{pending} of {total} fetch jobs did not finish within {secs} s; they go on, and a later request finds their bars stored")]
    Timeout {
        /// Jobs without an answer.
        pending: usize,
        /// Jobs published.
        total: usize,
        /// The wait.
        secs: u64,
    },
    /// A job was dead-lettered.
    #[error("fetching {symbol} failed: {error}")]
    Failed {
        /// The job's symbol.
        symbol: String,
        /// The class and error the worker gave.
        error: String,
    },
    /// The broker could not take the jobs.
    #[error("the job queue is unavailable: {0}")]
    Broker(String),
    /// The API already has as many jobs in flight as it may.
    #[error("the API has {inflight} fetch jobs in flight and this request would add {adding}, past its cap of {cap} (SIGNAL9_API_MAX_INFLIGHT_JOBS); retry shortly")]
    Busy {
        /// Jobs in flight now.
        inflight: usize,
        /// Jobs this request would add.
        adding: usize,
        /// The cap.
        cap: usize,
    },
}

type Waiters = HashMap<String, Vec<oneshot::Sender<Arc<JobReply>>>>;

/// A job replayed from the console, and its outcome once a worker replied.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    /// The job id.
    pub(crate) id: String,
    /// When it was replayed.
    pub(crate) at: chrono::DateTime<chrono::Utc>,
    /// The worker's reply, once it came.
    pub(crate) outcome: Option<Arc<JobReply>>,
}

/// The console's replays remembered.
const REPLAYS_KEPT: usize = 100;

#[derive(Debug, Default)]
struct Book {
    /// Replayed jobs whose replies come here, newest last.
    replays: std::collections::VecDeque<Replay>,
    /// Job id → who waits for its reply.
    waiters: Waiters,
    /// Range key → the job fetching it now; and back.
    inflight: HashMap<String, String>,
    range_of: HashMap<String, String>,
}

/// One broker link: a confirming publisher and a reply queue.
#[derive(Debug)]
struct Link {
    publisher: Publisher,
    topology: Topology,
    reply_queue: String,
    alive: Arc<AtomicBool>,
    // Kept open for the publisher and the reply consumer.
    _connection: lapin::Connection,
}

/// Publishes fetch jobs and waits for their replies.
#[derive(Debug)]
pub(crate) struct Fetcher {
    settings: BrokerSettings,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    book: Arc<Mutex<Book>>,
}

fn check_room(book: &Book, needs: &[Need], cap: usize) -> Result<(), FetchError> {
    let adding = needs.iter().filter(|n| !book.inflight.contains_key(&n.key())).count();
    let inflight = book.inflight.len();
    if inflight.saturating_add(adding) > cap {
        return Err(FetchError::Busy { inflight, adding, cap });
    }
    Ok(())
}

fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fetcher {
    /// A fetcher on `settings`' broker; it connects at its first use.
    pub(crate) fn new(settings: BrokerSettings) -> Self {
        Fetcher {
            settings,
            link: tokio::sync::Mutex::new(None),
            book: Arc::new(Mutex::new(Book::default())),
        }
    }

    /// The open link, or a new one.
    async fn link(&self) -> Result<Arc<Link>> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref().filter(|l| l.alive.load(Ordering::Relaxed)) {
            return Ok(link.clone());
        }
        let mut session = Session::open(&self.settings, "signal9-api", true)
            .await
            .context("connecting to RabbitMQ")?;
        let replies = session.replies.take().context("no reply queue")?;
        let alive = Arc::new(AtomicBool::new(true));
        let link = Arc::new(Link {
            publisher: session.publisher,
            topology: session.topology,
            reply_queue: replies.queue.clone(),
            alive: alive.clone(),
            _connection: session.connection,
        });
        let book = self.book.clone();
        tokio::spawn(async move {
            let mut replies = replies;
            while let Some(Ok(delivery)) = replies.consumer.next().await {
                let Some(reply) = JobReply::parse(&delivery.data) else {
                    continue;
                };
                let id = reply.job_id().to_owned();
                let reply = Arc::new(reply);
                let waiting = {
                    let mut book = lock(&book);
                    if let Some(range) = book.range_of.remove(&id) {
                        book.inflight.remove(&range);
                    }
                    if let Some(replay) = book.replays.iter_mut().rev().find(|r| r.id == id) {
                        replay.outcome = Some(reply.clone());
                    }
                    book.waiters.remove(&id).unwrap_or_default()
                };
                for waiter in waiting {
                    let _ = waiter.send(reply.clone());
                }
            }
            // The connection is gone: the next request opens another. Those
            // waiting on this reply queue can no longer hear: their waits end.
            {
                let mut book = lock(&book);
                book.waiters.clear();
                book.inflight.clear();
                book.range_of.clear();
            }
            alive.store(false, Ordering::Relaxed);
            tracing::warn!("The API's reply queue closed; reconnecting at the next fetch");
        });
        *slot = Some(link.clone());
        Ok(link)
    }

    /// The reply queue (connecting if need be): the console replays jobs
    /// with it, to show their outcomes.
    pub(crate) async fn reply_queue(&self) -> Result<String> {
        Ok(self.link().await?.reply_queue.clone())
    }

    /// Remembers jobs replayed with [`Fetcher::reply_queue`] as theirs.
    pub(crate) fn watch(&self, ids: &[String]) {
        let mut book = lock(&self.book);
        let at = chrono::Utc::now();
        for id in ids {
            book.replays.push_back(Replay {
                id: id.clone(),
                at,
                outcome: None,
            });
        }
        while book.replays.len() > REPLAYS_KEPT {
            book.replays.pop_front();
        }
    }

    /// The replays remembered, newest first.
    pub(crate) fn replays(&self) -> Vec<Replay> {
        lock(&self.book).replays.iter().rev().cloned().collect()
    }

    /// Checks that `needs` fit under `cap` jobs in flight (those already
    /// in flight for the same range are shared, so they add nothing).
    pub(crate) fn room(&self, needs: &[Need], cap: usize) -> Result<(), FetchError> {
        let book = lock(&self.book);
        check_room(&book, needs, cap)
    }

    /// Fetches every range of `needs` through the queue and waits up to
    /// `wait` for all of them to be stored; refused ([`FetchError::Busy`])
    /// when that would put more than `cap` jobs in flight.
    pub(crate) async fn fetch(&self, needs: &[Need], wait: Duration, cap: usize) -> Result<(), FetchError> {
        if needs.is_empty() {
            return Ok(());
        }
        let link = self.link().await.map_err(|e| FetchError::Broker(format!("{e:#}")))?;
        let mut receivers = Vec::new();
        let mut to_publish = Vec::new();
        {
            let mut book = lock(&self.book);
            check_room(&book, needs, cap)?;
            for need in needs {
                let (tx, rx) = oneshot::channel();
                let key = need.key();
                let id = match book.inflight.get(&key) {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("api-{}", uuid::Uuid::new_v4().simple());
                        book.inflight.insert(key.clone(), id.clone());
                        book.range_of.insert(id.clone(), key);
                        to_publish.push(Job::new(
                            id.clone(),
                            Payload::FetchBars(need.fetch.clone()),
                            Priority::Interactive,
                            None,
                        ));
                        id
                    }
                };
                book.waiters.entry(id).or_default().push(tx);
                receivers.push((need.fetch.symbol.to_string(), rx));
            }
        }
        for job in &to_publish {
            let span = tracing::info_span!("fetch_job", job_id = %job.id, symbol = %job.payload.symbol().map(ToString::to_string).unwrap_or_default());
            let properties = job_properties(job, Some(&link.reply_queue), &span);
            if let Err(error) = link
                .publisher
                .publish_routed(
                    &link.topology.jobs_exchange(),
                    &job.routing_key(),
                    &job.to_bytes(),
                    properties,
                )
                .await
            {
                link.alive.store(false, Ordering::Relaxed);
                let mut book = lock(&self.book);
                for job in &to_publish {
                    book.waiters.remove(&job.id);
                    if let Some(range) = book.range_of.remove(&job.id) {
                        book.inflight.remove(&range);
                    }
                }
                return Err(FetchError::Broker(error.to_string()));
            }
        }
        let total = receivers.len();
        let deadline = tokio::time::Instant::now() + wait;
        let mut pending = total;
        for (symbol, rx) in receivers {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(reply)) => {
                    pending -= 1;
                    if let Some(error) = reply.failure() {
                        return Err(FetchError::Failed { symbol, error });
                    }
                }
                // The link closed under the wait: nobody will answer.
                Ok(Err(_)) => break,
                Err(_) => break,
            }
        }
        if pending > 0 {
            return Err(FetchError::Timeout {
                pending,
                total,
                secs: wait.as_secs(),
            });
        }
        Ok(())
    }
}
