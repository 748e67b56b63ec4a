//! Helpers for signal9's end-to-end tests: a simulator in the test process
//! or as its own process, and clients wired to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use signal9_shared::alpaca::{AlpacaClient, ClientConfig, Credentials, Gate, Unmetered};

/// The frozen data horizon every test simulator uses.
pub const SIM_NOW: &str = "2026-11-24T00:00:00Z";

/// The folder the workspace's binaries are built into.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

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
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?;
        Ok(SimProcess { child, port })
    }

    /// `http://127.0.0.1:PORT`.
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
