//! How a finished job leaves the queue: acked on success (after the store
//! write), or republished to a retry tier or the dead-letter exchange with
//! its failure recorded in headers, and then acked. The republish is
//! confirmed before the ack, so a crash in between duplicates a job (which
//! is idempotent) and never loses one.

use crate::pending::{attempts, Pending};
use crate::Shared;
use anyhow::Result;
use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use signal9_alpaca::class::ErrorClass;
use signal9_shared::reply::{Detail, JobReply};
use signal9_shared::telemetry::events::FailureRouted;
use tracing::Instrument;

use signal9_shared::broker::{
    header_str, set_str, set_u32, BrokerError, Publisher, Topology, HEADER_ATTEMPT, HEADER_ERROR_CLASS,
    HEADER_FIRST_FAILURE, HEADER_LAST_ERROR, HEADER_LAST_FAILURE, HEADER_ROUTING_KEY,
};
use signal9_shared::job::{is_routing_key, Job, JobKind};
use signal9_shared::telemetry::events::{Emit, JobEnd, JobFinished, Outcome};

/// Why a job failed, as the queue needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Retry or give up.
    pub(crate) class: ErrorClass,
    /// What went wrong, for the dead letter and the logs.
    pub(crate) message: String,
    /// The job was never tried (budget or breaker), or a dependency
    /// failed under it: delay it, count nothing, dead-letter nothing.
    pub(crate) deferred: bool,
    /// The dependency that failed (`store`, `redis`), if one did.
    pub(crate) dependency: Option<&'static str>,
}

impl Failure {
    /// A failure from any classified error.
    pub(crate) fn from_error<E: signal9_alpaca::class::Classify + std::fmt::Display>(error: &E) -> Self {
        let dependency = error.dependency();
        Failure {
            class: error.class(),
            message: error.to_string(),
            deferred: error.defers() || dependency.is_some(),
            dependency,
        }
    }

    /// A permanent failure.
    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Failure {
            class: ErrorClass::Permanent,
            message: message.into(),
            deferred: false,
            dependency: None,
        }
    }
}

/// Where a failed job went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Back through the first delay tier, without counting an attempt.
    Defer,
    /// To retry tier `n` (0-based).
    Retry(usize),
    /// To the dead-letter queue.
    Dead,
}

/// Decides a failed job's route from its class and the attempts so far.
pub(crate) fn route(class: ErrorClass, attempt: u32, tiers: usize) -> Route {
    match class {
        ErrorClass::Permanent => Route::Dead,
        ErrorClass::Transient if (attempt as usize) < tiers => Route::Retry(attempt as usize),
        ErrorClass::Transient => Route::Dead,
    }
}

/// Acks a succeeded job and sends its reply, if it asked for one.
pub(crate) async fn succeed(
    publisher: &Publisher,
    delivery: &Delivery,
    job_id: &str,
    detail: Detail,
) -> Result<(), BrokerError> {
    reply(publisher, delivery, &JobReply::succeeded(job_id, detail)).await?;
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Sends a failed job to its next tier or to the dead-letter queue, then acks it.
/// `job` is the parsed job (`None` for a malformed message): its own routing
/// key replaces one that `{ns}.jobs` does not bind (a job published straight
/// to its queue), so the job finds its queue again when its delay expires.
pub(crate) async fn fail(
    publisher: &Publisher,
    topology: &Topology,
    delivery: &Delivery,
    job: Option<&Job>,
    failure: &Failure,
) -> Result<Route, BrokerError> {
    let job_id = job.map(|j| j.id.as_str());
    let (attempt, next) = if failure.deferred {
        (attempts(delivery), Route::Defer)
    } else {
        let attempt = attempts(delivery) + 1;
        (attempt, route(failure.class, attempt - 1, topology.retry_tiers().len()))
    };
    let now = Utc::now().to_rfc3339();
    let old = delivery.properties.headers().clone();
    let mut headers: FieldTable = old.clone().unwrap_or_default();
    let recorded =
        header_str(old.as_ref(), HEADER_ROUTING_KEY).unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    let original_key = match job {
        Some(job) if !is_routing_key(&recorded) => job.routing_key(),
        _ => recorded,
    };
    set_u32(&mut headers, HEADER_ATTEMPT, attempt);
    set_str(&mut headers, HEADER_ERROR_CLASS, failure.class.as_str());
    set_str(&mut headers, HEADER_LAST_ERROR, &cut(&failure.message));
    set_str(&mut headers, HEADER_LAST_FAILURE, &now);
    set_str(&mut headers, HEADER_ROUTING_KEY, &original_key);
    if header_str(old.as_ref(), HEADER_FIRST_FAILURE).is_none() {
        set_str(&mut headers, HEADER_FIRST_FAILURE, &now);
    }
    let properties: BasicProperties = delivery.properties.clone().with_headers(headers);
    let exchange = match next {
        Route::Defer => topology.retry_exchange(0).unwrap_or_else(|| topology.dead_exchange()),
        Route::Retry(tier) => topology
            .retry_exchange(tier)
            .unwrap_or_else(|| topology.dead_exchange()),
        Route::Dead => topology.dead_exchange(),
    };
    publisher
        .publish_routed(&exchange, &original_key, &delivery.data, properties)
        .await?;
    if next != Route::Defer {
        FailureRouted {
            class: failure.class,
            dead: next == Route::Dead,
        }
        .emit();
    }
    if next == Route::Dead {
        let id = job_id
            .map(str::to_owned)
            .or_else(|| delivery.properties.message_id().as_ref().map(|m| m.to_string()));
        let body = JobReply::dead_lettered(id, failure.class.as_str(), cut(&failure.message));
        reply(publisher, delivery, &body).await?;
    }
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(next)
}

async fn reply(publisher: &Publisher, delivery: &Delivery, body: &JobReply) -> Result<(), BrokerError> {
    let Some(reply_to) = delivery.properties.reply_to().as_ref() else {
        return Ok(());
    };
    let mut properties = BasicProperties::default().with_content_type("application/json".into());
    if let Some(correlation) = delivery.properties.correlation_id() {
        properties = properties.with_correlation_id(correlation.clone());
    }
    match publisher
        .publish_routed("", reply_to.as_str(), body.to_json().as_bytes(), properties)
        .await
    {
        // The caller stopped waiting (its reply queue is gone): the job's
        // outcome stands, and nobody is left to tell.
        Err(BrokerError::Unroutable { .. }) => {
            tracing::warn!(reply_to = %reply_to, "Reply queue gone; the reply was not delivered");
            Ok(())
        }
        other => other,
    }
}

fn cut(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(500).collect()
}

/// Acks, retries or dead-letters one finished job, and tells of it.
pub(crate) async fn finish(
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
            Ok(detail) => match succeed(publisher, &pending.delivery, &job.id, detail).await {
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
                match fail(publisher, &shared.topology, &pending.delivery, Some(job), &failure).await {
                    Ok(Route::Defer) => JobEnd::Deferred {
                        reason: &failure.message,
                    },
                    Ok(route) => JobEnd::Failed {
                        class: failure.class,
                        error: &failure.message,
                        dead: route == Route::Dead,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_climb_the_tiers_then_die() {
        assert_eq!(route(ErrorClass::Transient, 0, 4), Route::Retry(0));
        assert_eq!(route(ErrorClass::Transient, 3, 4), Route::Retry(3));
        assert_eq!(route(ErrorClass::Transient, 4, 4), Route::Dead);
        assert_eq!(route(ErrorClass::Permanent, 0, 4), Route::Dead);
    }
}
