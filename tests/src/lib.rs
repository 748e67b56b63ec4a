//! Helpers for signal9's end-to-end tests: a simulator in the test process
//! or as its own process, and clients wired to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use signal9_alpaca::{AlpacaClient, ClientConfig, Credentials, Gate, Unmetered};

/// The frozen data horizon every test simulator uses.
pub const SIM_NOW: &str = "2026-11-24T00:00:00Z";

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
fn listening_port(child: &mut Child, log: impl FnOnce() -> String) -> anyhow::Result<u16> {
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

/// A test's private corner of the shared services: its own namespace (so
/// queues never mix with another test's), store file and simulator.
#[derive(Debug)]
pub struct Stack {
    /// The RabbitMQ/Redis namespace.
    pub namespace: String,
    /// The simulator.
    pub sim: SimProcess,
    /// Temporary folder holding the store.
    pub dir: tempfile::TempDir,
    /// Retry tiers given to every process.
    pub retry_tiers: String,
    /// More environment for every process (added last, so it wins).
    pub extra_env: Vec<(String, String)>,
    workers: Vec<Child>,
    /// The DynamoDB tables `store(true)` made, dropped by `cleanup`.
    dynamo: Option<signal9_shared::store::DynamoStore>,
}

/// RabbitMQ URL of the local broker.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Stack {
    /// Starts a simulator with `sim_args` and prepares a namespace.
    pub fn start(sim_args: &[&str]) -> anyhow::Result<Self> {
        let namespace = signal9_shared::testing::namespace();
        Ok(Stack {
            namespace,
            sim: SimProcess::start(sim_args)?,
            dir: tempfile::tempdir()?,
            retry_tiers: "1s,2s".into(),
            extra_env: Vec::new(),
            workers: Vec::new(),
            dynamo: None,
        })
    }

    /// Writes symbols to a new file in the stack's folder (one per line) and
    /// returns its path, for `--symbols-file`.
    pub fn symbols_file(&self, symbols: &[String]) -> String {
        let path = self
            .dir
            .path()
            .join(format!("symbols-{}.txt", uuid::Uuid::new_v4().simple()));
        if let Err(e) = std::fs::write(&path, symbols.join("\n")) {
            panic!("writing {}: {e}", path.display());
        }
        path.display().to_string()
    }

    /// The store file every process of this stack uses.
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("signal9.db")
    }

    /// The environment every signal9 process of this stack gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let base = self.sim.base_url();
        [
            ("APCA_API_KEY_ID", "sim-key".to_string()),
            ("APCA_API_SECRET_KEY", "sim-secret".to_string()),
            ("APCA_API_BASE_URL", base.clone()),
            ("APCA_API_DATA_URL", base),
            ("SIGNAL9_AMQP_URL", AMQP_URL.to_string()),
            ("SIGNAL9_NAMESPACE", self.namespace.clone()),
            ("SIGNAL9_SQLITE_PATH", self.sqlite_path().display().to_string()),
            ("SIGNAL9_RETRY_TIERS", self.retry_tiers.clone()),
            ("RUST_LOG", "warn".to_string()),
            // Several workers on one machine: each takes a free port.
            ("SIGNAL9_METRICS_ADDR", "127.0.0.1:0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.extra_env.iter().cloned())
        .collect()
    }

    /// Starts a worker process with extra flags; returns its index.
    pub fn start_worker(&mut self, args: &[&str]) -> anyhow::Result<usize> {
        let log = std::fs::File::create(self.dir.path().join(format!("worker-{}.log", self.workers.len())))?;
        let child = Command::new(bin_dir().join("signal9-worker"))
            .args(args)
            .envs(self.env())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.workers.push(child);
        Ok(self.workers.len() - 1)
    }

    /// The worker process at `index`.
    pub fn worker(&mut self, index: usize) -> &mut Child {
        &mut self.workers[index]
    }

    /// Sends a signal to worker `index`.
    pub fn signal_worker(&self, index: usize, signal: &str) -> anyhow::Result<()> {
        let pid = self.workers[index].id().to_string();
        let status = Command::new("kill").args([signal, pid.as_str()]).status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// A producer command, run to completion.
    pub async fn producer(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(tokio::process::Command::new(bin_dir().join("signal9-producer"))
            .args(args)
            .envs(self.env())
            .output()
            .await?)
    }

    /// A producer command started in the background.
    pub fn producer_spawn(&self, args: &[&str]) -> anyhow::Result<tokio::process::Child> {
        Ok(tokio::process::Command::new(bin_dir().join("signal9-producer"))
            .args(args)
            .envs(self.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// Switches every process of this stack to the DynamoDB store on the
    /// local AWS-API server, with tables named after the namespace, and
    /// returns a handle on those tables (created).
    pub async fn use_dynamodb(&mut self) -> anyhow::Result<signal9_shared::store::DynamoStore> {
        self.extra_env.extend(aws_env());
        self.extra_env.extend([
            ("SIGNAL9_STORE".to_string(), "dynamodb".to_string()),
            ("SIGNAL9_DYNAMODB_TABLE_PREFIX".to_string(), self.namespace.clone()),
        ]);
        let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
        let store = signal9_shared::store::DynamoStore::from_config(&config, self.namespace.clone());
        signal9_shared::store::Store::init(&store).await?;
        Ok(store)
    }

    /// The store every process of this stack uses: tables of its own on the
    /// local AWS-API server when `dynamodb` (dropped by `cleanup`), else its
    /// SQLite file.
    pub async fn store(&mut self, dynamodb: bool) -> anyhow::Result<Box<dyn signal9_shared::store::Store>> {
        if !dynamodb {
            return Ok(Box::new(signal9_shared::store::SqliteStore::open(self.sqlite_path())?));
        }
        let store = self.use_dynamodb().await?;
        self.dynamo = Some(store.clone());
        Ok(Box::new(store))
    }

    /// Makes every process of this stack read its Alpaca key from the
    /// Secrets Manager secret `name` (and not from the environment).
    pub fn use_secret(&mut self, name: &str) {
        self.extra_env.extend(aws_env());
        self.extra_env.extend([
            ("SIGNAL9_ALPACA_SECRET".to_string(), name.to_string()),
            ("APCA_API_KEY_ID".to_string(), String::new()),
            ("APCA_API_SECRET_KEY".to_string(), String::new()),
        ]);
    }

    /// The topology of this stack.
    pub fn topology(&self) -> signal9_shared::broker::Topology {
        let tiers = signal9_shared::broker::parse_tiers(&self.retry_tiers).unwrap_or_default();
        signal9_shared::broker::Topology::new(self.namespace.clone(), tiers)
    }

    /// The simulator's stats.
    pub async fn sim_stats(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(format!("{}/_sim/stats", self.sim.base_url()))
            .await?
            .json()
            .await?)
    }

    /// The data calls the simulator has accepted so far.
    pub async fn data_calls(&self) -> anyhow::Result<u64> {
        Ok(self.sim_stats().await?["apis"]["data"]["accepted"]
            .as_u64()
            .unwrap_or(0))
    }

    /// Waits up to `within` until the simulator has accepted at least `n`
    /// data calls; false if it has not by then.
    pub async fn await_data_calls(&self, n: u64, within: Duration) -> bool {
        eventually(within, || async { self.data_calls().await.is_ok_and(|c| c >= n) }).await
    }

    /// Replaces the simulator's faults.
    pub async fn set_faults(&self, faults: serde_json::Value) -> anyhow::Result<()> {
        let r = reqwest::Client::new()
            .put(format!("{}/_sim/faults", self.sim.base_url()))
            .json(&faults)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "faults refused: {}", r.status());
        Ok(())
    }

    /// The worker logs, for failure messages.
    pub fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// The process ids of the workers this stack started.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(Child::id).collect()
    }

    /// Every bar the stack's SQLite store holds: a count over its chunks,
    /// cheap enough to poll while workers write.
    pub fn stored_bar_count(&self) -> usize {
        let Ok(db) = rusqlite::Connection::open(self.sqlite_path()) else {
            return 0;
        };
        let _ = db.busy_timeout(Duration::from_secs(60));
        db.query_row("SELECT coalesce(sum(n), 0) FROM bar_chunks", [], |r| r.get::<_, i64>(0))
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }

    /// Deletes the namespace's queues and exchanges.
    pub async fn cleanup(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The stack's own broker: the machine's, or a cluster a test named.
        let url = self
            .extra_env
            .iter()
            .rev()
            .find(|(k, _)| k == "SIGNAL9_AMQP_URL")
            .map_or(AMQP_URL, |(_, v)| v.as_str())
            .to_owned();
        if let Ok(connection) = signal9_shared::broker::connect(&url, "signal9-tests cleanup").await {
            if let Ok(channel) = connection.create_channel().await {
                let _ = self.topology().delete(&channel).await;
            }
            let _ = connection.close(200, "cleanup".into()).await;
        }
        if let Some(dynamo) = self.dynamo.take() {
            let _ = dynamo.drop_tables().await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `signal9-api` process of a stack, killed when dropped.
#[derive(Debug)]
pub struct ApiProcess {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its log (stderr).
    pub log: PathBuf,
    /// Its tokens file.
    pub tokens_file: PathBuf,
}

impl ApiProcess {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id (for its memory, in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hex SHA-256 of a token, as a tokens file holds it.
pub fn token_hash(token: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(token.as_bytes())?;
            }
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl Stack {
    /// Starts `signal9-api` on a free port with this stack's settings, a
    /// tokens file holding `tokens` (role, token) and more environment;
    /// waits for its `LISTENING <port>` line.
    pub fn start_api(&self, tokens: &[(&str, &str)], env: &[(&str, &str)]) -> anyhow::Result<ApiProcess> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let file = self.dir.path().join(format!("tokens-{id}"));
        let lines: Vec<String> = tokens
            .iter()
            .map(|(role, token)| format!("{role} {}", token_hash(token)))
            .collect();
        std::fs::write(&file, lines.join("\n"))?;
        let log = self.dir.path().join(format!("api-{id}.log"));
        let mut child = Command::new(bin_dir().join("signal9-api"))
            .envs(self.env())
            .env("SIGNAL9_API_ADDR", "127.0.0.1:0")
            .env("SIGNAL9_API_TOKENS_FILE", file.clone())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let port = listening_port(&mut child, || std::fs::read_to_string(&log).unwrap_or_default())?;
        Ok(ApiProcess {
            child,
            port,
            log,
            tokens_file: file,
        })
    }
}

/// The local AWS-API server (moto) the tests use: `SIGNAL9_TEST_AWS_ENDPOINT`,
/// which `bash scripts/test` sets after starting it.
pub fn aws_endpoint() -> String {
    std::env::var("SIGNAL9_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// The environment that points a signal9 process at the local AWS-API server.
pub fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", aws_endpoint()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "local".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A Secrets Manager client on the local AWS-API server.
pub async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// The JSON of an Alpaca secret.
pub fn secret_json(key: &str, secret: &str, paper: bool) -> String {
    serde_json::json!({"apiKey": key, "secretKey": secret, "paper": paper}).to_string()
}

/// Creates (or overwrites) secret `name` with `value` on the local server.
pub async fn put_secret(name: &str, value: &str) -> anyhow::Result<()> {
    let client = secrets_client().await;
    let created = client.create_secret().name(name).secret_string(value).send().await;
    if let Err(error) = created {
        if !error
            .as_service_error()
            .is_some_and(|e| e.is_resource_exists_exception())
        {
            anyhow::bail!("create_secret: {}", signal9_shared::aws::describe(&error));
        }
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("put_secret_value: {}", signal9_shared::aws::describe(&e)))?;
    }
    Ok(())
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

/// Messages waiting in a queue (0 if it does not exist).
pub async fn queue_depth(queue: &str) -> anyhow::Result<u32> {
    let connection = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let depth = match channel
        .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
        .await
    {
        Ok(q) => q.message_count(),
        Err(_) => 0,
    };
    let _ = connection.close(200, "depth".into()).await;
    Ok(depth)
}

/// Waits until `check` is true, polling, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Declares a queue that receives every event of the stack's namespace and
/// returns its name: a server-named, exclusive one when `durable` is `None`,
/// or the durable queue of that name, which outlives a broker restart.
pub async fn events_queue(stack: &Stack, channel: &lapin::Channel, durable: Option<&str>) -> anyhow::Result<String> {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    stack.topology().declare(channel).await?;
    let options = match durable {
        Some(_) => QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        None => QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
    };
    let queue = channel
        .queue_declare(
            durable.unwrap_or("").into(),
            options,
            lapin::types::FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            stack.topology().events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(queue.name().to_string())
}

/// Consumes (no ack) every event of the stack's namespace from the queue
/// `events_queue` declares; keep the connection as long as the consumer.
pub async fn event_tap(stack: &Stack, durable: Option<&str>) -> anyhow::Result<(lapin::Connection, lapin::Consumer)> {
    let connection = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let queue = events_queue(stack, &channel, durable).await?;
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "tap".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}

/// Waits (up to 60 s) until the store's outbox is empty: every event the
/// workers wrote has been published. Panics if it does not empty.
pub async fn outbox_settled(store: &dyn signal9_shared::store::Store) {
    let empty = eventually(Duration::from_secs(60), || async {
        store.pending_events(1).await.map(|e| e.is_empty()).unwrap_or(false)
    })
    .await;
    assert!(empty, "the outbox did not empty within 60 s");
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

/// Reads every series of `sets` back over `[start, end]` and fails unless
/// the store holds exactly those bars.
pub async fn verify_stored(
    store: &dyn signal9_shared::store::Store,
    sets: &[(signal9_shared::store::SeriesKey, Vec<signal9_alpaca::Bar>)],
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    for (key, bars) in sets {
        let stored = store.bars(key, start, end).await?;
        anyhow::ensure!(
            stored == *bars,
            "{key}: stored {} bars, expected {}",
            stored.len(),
            bars.len()
        );
    }
    Ok(())
}

/// A benchmark program's numeric flag, `--name VALUE`, or its default.
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The producer arguments of a daily-bar fetch for every symbol in `file`
/// over `start..=end` (dates or RFC 3339), from `feed` (the API's default
/// when `None`), waiting up to `wait_secs` for the outcomes when given.
fn fetch_daily<'a>(
    file: &'a str,
    start: &'a str,
    end: &'a str,
    feed: Option<&'a str>,
    wait_secs: Option<&'a str>,
) -> Vec<&'a str> {
    fetch_bars_args(file, "1Day", (start, end), feed, wait_secs)
}

/// `fetch-bars` of the symbols in `file` at `timeframe` over `start..=end`,
/// from `feed` (the API's default when `None`), waited for up to `wait_secs`.
fn fetch_bars_args<'a>(
    file: &'a str,
    timeframe: &'a str,
    (start, end): (&'a str, &'a str),
    feed: Option<&'a str>,
    wait_secs: Option<&'a str>,
) -> Vec<&'a str> {
    let mut args = vec![
        "fetch-bars",
        "--symbols-file",
        file,
        "--timeframe",
        timeframe,
        "--start",
        start,
        "--end",
        end,
    ];
    if let Some(feed) = feed {
        args.extend_from_slice(&["--feed", feed]);
    }
    if let Some(secs) = wait_secs {
        args.extend_from_slice(&["--wait", "--wait-timeout-secs", secs]);
    }
    args
}

/// A daily-bar fetch from the IEX feed over `start..=end`.
pub fn fetch_iex_days<'a>(file: &'a str, start: &'a str, end: &'a str, wait_secs: Option<&'a str>) -> Vec<&'a str> {
    fetch_daily(file, start, end, Some("iex"), wait_secs)
}

/// A minute-bar fetch from the IEX feed over `start..=end`.
pub fn fetch_iex_minutes<'a>(file: &'a str, start: &'a str, end: &'a str, wait_secs: Option<&'a str>) -> Vec<&'a str> {
    fetch_bars_args(file, "1Min", (start, end), Some("iex"), wait_secs)
}

/// The query of one JSON page of IEX minute bars for `symbols` over
/// `start..=end`, 10,000 bars a page (the API's most), after `page_token`.
pub fn iex_minute_page_query(
    symbols: &str,
    (start, end): (&str, &str),
    sort: &str,
    page_token: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("symbols", symbols.to_owned()),
        ("timeframe", "1Min".to_owned()),
        ("start", start.to_owned()),
        ("end", end.to_owned()),
        ("feed", "iex".to_owned()),
        ("limit", "10000".to_owned()),
        ("sort", sort.to_owned()),
    ];
    query.extend(page_token.map(|t| ("page_token", t)));
    query
}

/// A daily-bar fetch of one `day` from the API's default feed.
pub fn fetch_day<'a>(file: &'a str, day: &'a str, wait_secs: Option<&'a str>) -> Vec<&'a str> {
    fetch_daily(file, day, day, None, wait_secs)
}

/// An interactive request for the daily bars of the week 2026-11-16..20,
/// waited for up to 30 s: the request another service makes while bulk or
/// backfill work holds the budget.
pub fn fetch_interactive_week(file: &str) -> Vec<&str> {
    let mut args = fetch_daily(file, "2026-11-16", "2026-11-20", None, Some("30"));
    args.extend_from_slice(&["--priority", "interactive"]);
    args
}

/// A finished command's stdout then stderr, for assertions and messages.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `rabbitmqctl ACTION` on the local broker (`stop_app`, `start_app`).
pub fn rabbitmqctl(action: &str) {
    let status = Command::new("rabbitmqctl").arg(action).status();
    assert!(status.is_ok_and(|s| s.success()), "rabbitmqctl {action} failed");
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
