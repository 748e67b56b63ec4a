//! The worker's settings: flags and the same-named environment variables.

use clap::Args;

use signal9_shared::settings::{AlpacaSettings, BrokerSettings, BudgetSettings, PackingSettings, StoreSettings};

/// Everything a worker needs to know.
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// RabbitMQ and the topology.
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Jobs (or coalesced batches) worked on at once, per priority lane.
    #[arg(long, env = "SIGNAL9_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Most fetch-bars jobs coalesced into one batch. A batch is packed into
    /// multi-symbol requests whose pages come out full (see
    /// --symbols-per-request), so a batch is also closed early when it holds
    /// as many symbols as one well-packed request.
    #[arg(long, env = "SIGNAL9_COALESCE_MAX", default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub coalesce_max: u16,
    /// Request packing and the largest job.
    #[command(flatten)]
    pub packing: PackingSettings,
    /// How long a bulk fetch-bars job may wait for compatible jobs to join
    /// it, in milliseconds (interactive jobs never wait). Long enough that a
    /// backlog still being published fills whole requests: API calls, not
    /// seconds, are what a bulk backfill runs short of.
    #[arg(long, env = "SIGNAL9_COALESCE_WAIT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub coalesce_wait_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish, in seconds.
    #[arg(long, env = "SIGNAL9_SHUTDOWN_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_secs: u64,
    /// A sync run refuses to delist more than this share of an asset class's
    /// known active assets (a truncated listing must not empty the store);
    /// judged per class, so a small class is not hidden by a large one.
    #[arg(long, env = "SIGNAL9_MAX_DELIST_FRACTION", default_value_t = 0.05, value_parser = parse_fraction)]
    pub max_delist_fraction: f64,
    /// Per-class shares that override --max-delist-fraction, as
    /// CLASS=FRACTION pairs: `crypto=0.2,us_equity=0.05`. A class whose
    /// listing comes back empty while active assets are known always makes
    /// the run suspect, whatever its share.
    #[arg(long, env = "SIGNAL9_DELIST_GUARD", default_value = "", value_parser = parse_guard)]
    pub delist_guard: GuardOverrides,
    /// Pages of one run listed more than this many seconds before its
    /// reconcile are listed again first, so a run never compares a fresh
    /// listing with an old one (a page replayed from the dead-letter queue
    /// hours later).
    #[arg(long, env = "SIGNAL9_SYNC_SNAPSHOT_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600))]
    pub sync_snapshot_secs: u64,
    /// Publish events from the store's outbox (`on`), or leave that to
    /// other workers (`off`). Every change's event is written to the outbox
    /// with the change; one relay at a time (a lease in Redis) publishes it.
    #[arg(long, env = "SIGNAL9_OUTBOX_RELAY", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub outbox_relay: bool,
    /// Also put every event on this Amazon EventBridge bus (name or ARN),
    /// with source `signal9` and detail-type the event type; unset: none.
    /// The AWS SDK's own settings (`AWS_REGION`, `AWS_ENDPOINT_URL`, ...) apply.
    #[arg(long, env = "SIGNAL9_EVENTBRIDGE_BUS")]
    pub eventbridge_bus: Option<String>,
    /// Where /metrics (Prometheus), /healthz and /readyz are served; port 0
    /// picks a free port (the heartbeat and `signal9-producer status` show
    /// it), `off` serves nothing. A port already taken is logged and skipped.
    #[arg(long, env = "SIGNAL9_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// At start, call `GET /v2/account` once (through the budget) and stop
    /// with a clear error if the key is refused or the account is not
    /// active, before any job is taken.
    #[arg(long, env = "SIGNAL9_CHECK_CREDENTIALS", default_value = "off", value_parser = parse_on_off, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub check_credentials: bool,
    /// Fault injection for tests: a job about this symbol panics in its
    /// handler (the worker must dead-letter it and go on). Never set in
    /// production.
    #[arg(long, env = "SIGNAL9_FAULT_PANIC_SYMBOL", hide = true)]
    pub fault_panic_symbol: Option<String>,
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

/// Per-class delisting shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardOverrides(pub Vec<(signal9_alpaca::AssetClass, f64)>);

fn parse_guard(text: &str) -> Result<GuardOverrides, String> {
    signal9_shared::sync::DelistGuard::parse_overrides(text).map(GuardOverrides)
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

impl WorkerSettings {
    /// How this worker closes sync runs.
    pub fn reconcile(&self) -> signal9_shared::sync::ReconcileSettings {
        let guard = self.delist_guard.0.iter().fold(
            signal9_shared::sync::DelistGuard::new(self.max_delist_fraction),
            |g, (class, f)| g.with_class(*class, *f),
        );
        signal9_shared::sync::ReconcileSettings {
            guard,
            snapshot_window: std::time::Duration::from_secs(self.sync_snapshot_secs),
        }
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("expected a fraction between 0 and 1, e.g. 0.05".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        settings: WorkerSettings,
    }

    #[test]
    fn the_outbox_relay_is_on_unless_turned_off() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["signal9-worker"], args].concat()).map(|c| c.settings);
        assert!(parse(&[]).unwrap().outbox_relay);
        assert!(!parse(&["--outbox-relay", "off"]).unwrap().outbox_relay);
        assert!(parse(&["--outbox-relay", "on"]).unwrap().outbox_relay);
        let err = parse(&["--outbox-relay", "maybe"]).unwrap_err().to_string();
        assert!(err.contains("expected on or off"), "{err}");
    }

    #[test]
    fn the_snapshot_window_reaches_the_reconcile_settings_and_zero_is_refused() {
        let settings = Cli::try_parse_from([
            "signal9-worker",
            "--sync-snapshot-secs",
            "3",
            "--delist-guard",
            "crypto=0.2",
        ])
        .unwrap()
        .settings;
        let reconcile = settings.reconcile();
        assert_eq!(reconcile.snapshot_window, std::time::Duration::from_secs(3));
        assert!(Cli::try_parse_from(["signal9-worker", "--sync-snapshot-secs", "0"]).is_err());
    }
}
