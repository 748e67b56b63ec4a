//! A whole stack for a test: the simulator, workers, a producer and the
//! API as processes, in a namespace of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::*;

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
        let topology = self.topology();
        // Bounded: a broker that stops answering must not hold the test.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            if let Ok(connection) = signal9_shared::broker::connect(&url, "signal9-tests cleanup").await {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = topology.delete(&channel).await;
                }
                let _ = connection.close(200, "cleanup".into()).await;
            }
        })
        .await;
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
