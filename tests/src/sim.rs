//! The simulator in tests: in the test process or as its own process,
//! clients wired to it, and the ground truth computed from its seed.

use signal9_alpaca::{AlpacaClient, ClientConfig, Credentials, Gate, Unmetered};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::*;

/// The frozen data horizon every test simulator uses.
pub const SIM_NOW: &str = "2026-11-24T00:00:00Z";

/// A client for a simulator at `base`, with the simulator's default key and
/// no budget (the simulator's own limit is what these tests exercise).
pub fn sim_client(base: &str, timeout: Duration) -> AlpacaClient {
    client_with(
        base,
        timeout,
        Credentials::new("sim-key", "sim-secret"),
        Arc::new(Unmetered),
    )
}

/// A client for a simulator at `base` with the given credentials and gate.
pub fn client_with(base: &str, timeout: Duration, credentials: Credentials, gate: Arc<dyn Gate>) -> AlpacaClient {
    let config = ClientConfig {
        trading_url: base.to_owned(),
        data_url: base.to_owned(),
        timeout,
    };
    match AlpacaClient::new(&config, credentials, gate) {
        Ok(client) => client,
        Err(e) => panic!("client: {e}"),
    }
}

/// The port of a process that prints `LISTENING <port>` as its first line
/// on stdout (piped); `log` says what it logged, for the error.
pub(crate) fn listening_port(child: &mut Child, log: impl FnOnce() -> String) -> anyhow::Result<u16> {
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    line.strip_prefix("LISTENING ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}; log: {}", log()))
}

/// An `alpaca-sim` process, killed when dropped.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl SimProcess {
    /// Starts the built `alpaca-sim` binary with `--port 0` and extra flags,
    /// and waits for its `LISTENING <port>` line.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin_dir().join("alpaca-sim"))
            .args(["--port", "0", "--now", SIM_NOW])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let port = listening_port(&mut child, String::new)?;
        Ok(SimProcess { child, port })
    }

    /// `http://127.0.0.1:PORT`.
    /// The simulator's process id (for its CPU time in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Changes the key pair the simulator accepts, as a rotation does.
pub async fn rotate_sim_keys(base_url: &str, key: &str, secret: &str) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .put(format!("{base_url}/_sim/keys"))
        .json(&serde_json::json!({"key": key, "secret": secret}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "keys refused: {}", r.status());
    Ok(())
}

/// The first `n` active, tradable US-equity symbols of the simulator's
/// universe for `seed` and `assets`, sorted.
pub fn active_symbols(seed: u64, assets: usize, n: usize) -> Vec<String> {
    let mut symbols: Vec<String> = alpaca_sim::universe::generate(seed, assets)
        .into_iter()
        .filter(|a| a.class == "us_equity" && a.active && a.tradable)
        .map(|a| a.symbol)
        .collect();
    symbols.sort();
    symbols.dedup();
    symbols.truncate(n);
    symbols
}

/// How many bars the simulator (seed 42, frozen at [`SIM_NOW`]) has for
/// the stock `symbols` at `frame` with `from <= t <= to`.
pub fn sim_bar_count(
    symbols: &[String],
    frame: alpaca_sim::bars::Frame,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> usize {
    let now = SIM_NOW.parse().unwrap_or_default();
    symbols
        .iter()
        .map(|symbol| {
            let series = alpaca_sim::bars::Series {
                seed: 42,
                symbol,
                market: alpaca_sim::bars::Market::Stocks,
                frame,
            };
            alpaca_sim::bars::bar_times(series, from, to, now).len()
        })
        .sum()
}

/// The simulator's bars (seed 42, frozen at [`SIM_NOW`]) of the stock
/// `symbols` at `frame` over `[start, end]`, as the store keeps them: raw,
/// iex, keyed by series. The ground truth of the store benchmarks.
pub fn sim_truth(
    symbols: &[String],
    frame: alpaca_sim::bars::Frame,
    timeframe: signal9_alpaca::Timeframe,
    start: &str,
    end: &str,
) -> anyhow::Result<Vec<(signal9_shared::store::SeriesKey, Vec<signal9_alpaca::Bar>)>> {
    use anyhow::Context;
    let time = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().context("time");
    let mut sets = Vec::new();
    for symbol in symbols {
        let series = alpaca_sim::bars::Series {
            seed: 42,
            symbol,
            market: alpaca_sim::bars::Market::Stocks,
            frame,
        };
        let bars = alpaca_sim::bars::bar_times(series, time(start)?, time(end)?, time(SIM_NOW)?)
            .into_iter()
            .map(|t| serde_json::from_value(alpaca_sim::bars::bar_json(series, t)).context("bar"))
            .collect::<anyhow::Result<Vec<signal9_alpaca::Bar>>>()?;
        let key = signal9_shared::store::SeriesKey {
            symbol: signal9_alpaca::Symbol::parse(symbol)?,
            timeframe,
            adjustment: signal9_alpaca::Adjustment::raw(),
            feed: Some(signal9_alpaca::Feed::Iex),
        };
        sets.push((key, bars));
    }
    Ok(sets)
}
