//! signal9's shared library: the system the producer, the worker and the
//! tests have in common, built on `signal9-alpaca` (the client, its models,
//! error classes and validation rules).
//!
//! - [`broker`]: the RabbitMQ topology, confirms and headers;
//! - [`limiter`], [`breaker`], [`gate`]: the global API budget in Redis, the
//!   circuit breaker per API, and the gate that puts both before every call;
//! - [`store`]: the store's traits by domain (`Store` is all of them), the
//!   embedded SQLite and the DynamoDB backends, a folder each;
//! - [`secrets`]: the Alpaca key pair from AWS Secrets Manager;
//! - [`aws`]: the AWS SDK configuration;
//! - [`telemetry`]: logs, OpenTelemetry traces across the queue, Prometheus
//!   metrics, and the internal events that write a log line and its counters together;
//! - [`backoff`], [`shutdown`], [`lease`]: the one back-off of every retry
//!   loop, the one shutdown signal of every long-running part, a lease in Redis;
//! - [`services`]: the store, the gate and the client, opened one way by every process;
//! - [`settings`]: the settings every binary reads from flags and environment;
//! - [`ingest`]: fetch, validate and store one set of bars;
//! - [`corporate`]: corporate actions drop the adjusted series they change;
//! - [`sync`]: list one slice of assets, the delisting guard, reconcile a run;
//! - [`ops`]: operations (the dead-letter queue, a status snapshot, an AMQP
//!   session) that the producer's commands and the console share;
//! - [`outbox`]: the relay that publishes the events the store wrote beside their changes;
//! - [`eventbridge`]: the optional EventBridge bus every event is also put on;
//! - [`job`]: the job envelope and its checks; [`reply`]: the typed reply to a job;
//! - [`bounds`]: what every door accepts (dates, ranges, symbol counts);
//! - [`events`]: events for the downstream pipeline;
//! - [`calendar`]: the US equity market calendar;
//! - [`workers`]: the live workers' heartbeats in Redis;
//! - [`redis_conn`], [`keys`]: the Redis pool (one server or a cluster) and every key name.

pub mod aws;
pub mod backoff;
pub mod bounds;
pub mod breaker;
pub mod broker;
pub mod calendar;
pub mod corporate;
pub mod eventbridge;
pub mod events;
pub mod gate;
pub mod ingest;
pub mod job;
pub mod keys;
pub mod lease;
pub mod limiter;
pub mod ops;
pub mod outbox;
pub mod plan;
pub mod redis_conn;
pub mod reply;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod workers;
