//! The API's settings: flags and the same-named environment variables. The
//! broker, budget, store and packing settings are the worker's own.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

use signal9_shared::config::{BrokerSettings, BudgetSettings, PackingSettings, StoreSettings};

/// Everything `signal9-api` needs to know.
#[derive(Debug, Clone, Args)]
pub struct ApiSettings {
    /// Where to listen. Port 0 picks a free port and prints `LISTENING
    /// <port>` as the first line on stdout.
    #[arg(long, env = "SIGNAL9_API_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The tokens file: one `ROLE SHA256_HEX_OF_TOKEN` per line (`read`
    /// for the data routes, `operate` for the console's actions too; `#`
    /// starts a comment). Required: without it nobody could be let in.
    /// Make a line with `printf %s "$TOKEN" | sha256sum`.
    #[arg(long, env = "SIGNAL9_API_TOKENS_FILE")]
    pub tokens_file: PathBuf,
    /// How long a bars request waits for the jobs that fetch what the
    /// store lacks, in seconds; then it answers 504 (the jobs go on, and a
    /// later request finds their bars stored).
    #[arg(long, env = "SIGNAL9_API_FETCH_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub fetch_timeout_secs: u64,
    /// An unsettled range (recent bars, never recorded as covered) that
    /// this process fetched is answered from the store for this many
    /// seconds before it is fetched again: the pages of one request, and
    /// clients polling, cost one call, not one each. 0: fetch every time.
    #[arg(long, env = "SIGNAL9_API_FRESH_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub fresh_secs: u64,
    /// Covered ranges kept decoded in memory (the most recently used), for
    /// repeated requests of the same range; 0 turns the cache off. See
    /// BENCHMARKS.md, "Read API", for what it saves.
    #[arg(long, env = "SIGNAL9_API_CACHE_ENTRIES", default_value_t = 256)]
    pub cache_entries: usize,
    /// Most dead letters the console replays a second.
    #[arg(long, env = "SIGNAL9_API_REPLAY_RATE", default_value_t = 10.0)]
    pub replay_rate: f64,
    /// Most dead letters one console replay or purge acts on.
    #[arg(long, env = "SIGNAL9_API_ACTION_MAX", default_value_t = 1000)]
    pub action_max: usize,
    /// RabbitMQ and the topology.
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// The API budgets (the console reads them; jobs spend them).
    #[command(flatten)]
    pub budget: BudgetSettings,
    /// The store the bars are read from.
    #[command(flatten)]
    pub store: StoreSettings,
    /// The largest job and the settle time, as the workers use them.
    #[command(flatten)]
    pub packing: PackingSettings,
}
