//! A job on its way through the worker: the parsed job, the delivery it
//! came in (acked, retried or dead-lettered at its end) and its span.

use lapin::message::Delivery;

use signal9_shared::broker::{header_u32, HEADER_ATTEMPT};
use signal9_shared::job::Job;

/// A parsed job and the delivery it came in.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The job.
    pub(crate) job: Job,
    /// Its delivery, to ack or republish.
    pub(crate) delivery: Delivery,
    /// The job's span, a child of the producer's trace when the message
    /// carries one; stable fields job_id, kind, symbol, attempt, run_id.
    pub(crate) span: tracing::Span,
    /// When it was delivered, for its duration.
    pub(crate) received: std::time::Instant,
}

impl Pending {
    /// Wraps a delivered job with its span.
    pub(crate) fn new(job: Job, delivery: Delivery) -> Self {
        let kind = job.payload.kind();
        let symbol = job.payload.symbol().map(ToString::to_string).unwrap_or_default();
        let attempt = attempts(&delivery);
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            %kind,
            %symbol,
            attempt,
            run_id = job.run_id.as_deref().unwrap_or("")
        );
        signal9_shared::telemetry::continue_trace(&span, delivery.properties.headers().as_ref());
        Pending {
            job,
            delivery,
            span,
            received: std::time::Instant::now(),
        }
    }
}

/// The failures a job has had so far, from our own header.
pub(crate) fn attempts(delivery: &Delivery) -> u32 {
    header_u32(delivery.properties.headers().as_ref(), HEADER_ATTEMPT).unwrap_or(0)
}
