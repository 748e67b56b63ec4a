//! Helpers for signal9's end-to-end tests, one file per part: `sim` (the
//! simulator and its truth), `stack` (the system as processes), `queues`
//! (RabbitMQ), `aws` (moto), `bars` (what is stored, and fetches); all
//! re-exported here.

mod aws;
mod bars;
mod queues;
mod sim;
mod stack;

pub use aws::*;
pub use bars::*;
pub use queues::*;
pub use sim::*;
pub use stack::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The folder the workspace's binaries are built into.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    // Tests run from target/<profile>/deps; binaries from target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// Waits until `check` is true, polling, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        // A check that hangs (a connection the broker never answers) ends
        // with the limit instead of holding the test forever.
        if let Ok(true) = tokio::time::timeout_at(deadline, check()).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Starts the local Redis as the machine starts it (no persistence).
pub fn start_redis() {
    let _ = std::fs::create_dir_all("/var/lib/redis");
    let _ = std::fs::create_dir_all("/var/log/redis");
    let status = Command::new("redis-server")
        .args(["--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "redis-server did not start");
}
