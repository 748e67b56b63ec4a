//! Helpers the tests and benchmarks share (feature `test-support`): one
//! unique namespace per test, so that runs on the shared RabbitMQ, Redis
//! and AWS-API server never see each other's queues, keys or tables; and
//! the limiter's saturation run.

pub mod saturation;

/// A namespace (queue prefix, Redis key prefix, table prefix) no other test
/// uses: `t` and 12 hex digits of a random UUID.
pub fn namespace() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
