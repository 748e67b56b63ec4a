//! `alpaca-sim`: serves the simulated Alpaca API (on 127.0.0.1 unless told otherwise).
//!
//! The first line on stdout is `LISTENING <port>`, so a harness that passes
//! `--port 0` learns which port it got.

use anyhow::{Context, Result};
use clap::Parser;
use std::io::Write;
use std::time::Duration;

use alpaca_sim::{Faults, SimConfig};

/// A faithful simulator of the Alpaca trading and market-data APIs that
/// signal9 uses, for demos, tests and benchmarks.
///
/// Control endpoints (no auth): GET /_sim/stats, POST /_sim/stats/reset,
/// GET|PUT /_sim/faults (JSON: error_rate, latency_ms, malformed_rate,
/// truncate_assets, outage_secs, rate_limit_secs, duplicate_crypto_bars,
/// repeat_page_boundary).
/// A flag given twice takes its last value (a test harness's defaults
/// come first, a test's own flags after them).
#[derive(Debug, Parser)]
#[command(version, args_override_self = true)]
struct Args {
    /// Port to listen on; 0 picks a free one (printed as `LISTENING <port>`).
    #[arg(long, env = "ALPACA_SIM_PORT", default_value_t = 0)]
    port: u16,
    /// Address to listen on; 0.0.0.0 inside a container.
    #[arg(long, env = "ALPACA_SIM_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Seed of the generated universe and bars.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of assets in the universe (crypto pairs included).
    #[arg(long, default_value_t = 12_000)]
    assets: usize,
    /// The accepted APCA-API-KEY-ID.
    #[arg(long, default_value = "sim-key")]
    key: String,
    /// The accepted APCA-API-SECRET-KEY.
    #[arg(long, default_value = "sim-secret")]
    secret: String,
    /// Accepted calls per window, per key and per API; 0 turns the limit off.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    /// Window length in seconds (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 60.0)]
    window: f64,
    /// Freeze the data horizon at this RFC 3339 time (default: the wall clock).
    #[arg(long)]
    now: Option<chrono::DateTime<chrono::Utc>>,
    /// Behave as a free plan: recent `sip` data is refused with 403.
    #[arg(long)]
    free_plan: bool,
    /// List about 15 % of the equities without `easy_to_borrow` and
    /// `borrow_status`, 10 % without `maintenance_margin_requirement`
    /// (deprecated fields the real API still sends; strict clients such as
    /// alpaca-py reject such a listing).
    #[arg(long, env = "ALPACA_SIM_HOSTILE_ASSETS")]
    hostile_assets: bool,
    /// Probability (0-1) that a request fails with 500/502/503/504.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Milliseconds added to every request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0-1) that a 200 body is cut short.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Keep only this fraction (0-1) of every asset listing.
    #[arg(long)]
    truncate_assets: Option<f64>,
    /// Answer every request with a gateway 503 for this many seconds after start.
    #[arg(long)]
    outage_secs: Option<f64>,
}

fn probability(name: &str, value: f64) -> Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&value),
        "--{name} must be between 0 and 1, got {value}"
    );
    Ok(value)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.window > 0.0 && args.window.is_finite(),
        "--window must be a positive number of seconds"
    );
    let faults = Faults {
        error_rate: probability("error-rate", args.error_rate)?,
        latency_ms: args.latency_ms,
        malformed_rate: probability("malformed-rate", args.malformed_rate)?,
        truncate_assets: args
            .truncate_assets
            .map(|t| probability("truncate-assets", t))
            .transpose()?,
        outage_secs: args.outage_secs,
        rate_limit_secs: None,
        duplicate_crypto_bars: false,
        repeat_page_boundary: false,
        truncate_class: Default::default(),
        fail_class: Default::default(),
        mismatch_rate: 0.0,
    };
    let config = SimConfig {
        seed: args.seed,
        assets: args.assets,
        key: args.key,
        secret: args.secret,
        limit: args.limit,
        window: Duration::from_secs_f64(args.window),
        now: args.now,
        free_plan: args.free_plan,
        hostile_assets: args.hostile_assets,
        faults,
    };
    let running = alpaca_sim::spawn_on(config, args.host, args.port)
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "LISTENING {}", running.addr.port())?;
    stdout.flush()?;
    tracing::info!(addr = %running.addr, assets = args.assets, seed = args.seed, "Simulator listening");
    shutdown_signal().await;
    tracing::info!("Simulator stopping");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
