//! The worker's settings: flags and the same-named environment variables.

use clap::Args;

use signal9_shared::config::{AlpacaSettings, BrokerSettings, BudgetSettings, StoreSettings};

/// Everything a worker needs to know.
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// RabbitMQ and the topology.
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Jobs (or coalesced batches) worked on at once, per priority lane.
    #[arg(long, env = "SIGNAL9_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Most fetch-bars jobs coalesced into one multi-symbol request.
    #[arg(long, env = "SIGNAL9_COALESCE_MAX", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub coalesce_max: u16,
    /// How long a bulk fetch-bars job may wait for compatible jobs to join
    /// it, in milliseconds (interactive jobs never wait). Long enough that a
    /// backlog still being published fills whole requests: API calls, not
    /// seconds, are what a bulk backfill runs short of.
    #[arg(long, env = "SIGNAL9_COALESCE_WAIT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub coalesce_wait_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish, in seconds.
    #[arg(long, env = "SIGNAL9_SHUTDOWN_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_secs: u64,
    /// A sync run refuses to delist more than this share of the known active
    /// assets (a truncated or empty listing must not empty the store).
    #[arg(long, env = "SIGNAL9_MAX_DELIST_FRACTION", default_value_t = 0.05, value_parser = parse_fraction)]
    pub max_delist_fraction: f64,
    /// Where /metrics (Prometheus), /healthz and /readyz are served; port 0
    /// picks a free port (the heartbeat and `signal9-producer status` show
    /// it), `off` serves nothing. A port already taken is logged and skipped.
    #[arg(long, env = "SIGNAL9_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// The API budgets, shared by every process through Redis.
    #[command(flatten)]
    pub budget: BudgetSettings,
    /// Alpaca endpoints and key.
    #[command(flatten)]
    pub alpaca: AlpacaSettings,
    /// Store selection.
    #[command(flatten)]
    pub store: StoreSettings,
}

/// Where the metrics are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    /// Nowhere.
    Off,
    /// On this address.
    At(std::net::SocketAddr),
}

fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr::Off);
    }
    text.parse()
        .map(MetricsAddr::At)
        .map_err(|_| "expected HOST:PORT (e.g. 0.0.0.0:9464) or off".into())
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("expected a fraction between 0 and 1, e.g. 0.05".into()),
    }
}
