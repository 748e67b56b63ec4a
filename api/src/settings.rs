//! The API's settings: flags and the same-named environment variables. The
//! broker, budget, store and packing settings are the worker's own.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

use signal9_shared::settings::{BrokerSettings, BudgetSettings, PackingSettings, StoreSettings};

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
    /// Most bytes of decoded bars the range cache keeps (about 64 bytes a
    /// bar); the least recently used ranges go first.
    #[arg(long, env = "SIGNAL9_API_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: usize,
    /// Start even though the tokens file holds one of the example tokens
    /// of `compose/api-tokens`, whose plaintexts are public (demos and
    /// tests only).
    #[arg(long, env = "SIGNAL9_API_ALLOW_EXAMPLE_TOKENS", default_value = "0", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub allow_example_tokens: bool,
    /// Most symbols one bars request may name (400 beyond).
    #[arg(long, env = "SIGNAL9_API_MAX_SYMBOLS", default_value_t = signal9_shared::bounds::MAX_SYMBOLS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub max_symbols: usize,
    /// Most fetch jobs one bars request may cause; beyond it the request is
    /// refused with 422, its estimate and this cap, and pointed at
    /// `signal9-producer backfill` for bulk history.
    #[arg(long, env = "SIGNAL9_API_MAX_JOBS_PER_REQUEST", default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub max_jobs_per_request: usize,
    /// Most fetch jobs the whole API keeps in flight at once (503 with
    /// Retry-After beyond).
    #[arg(long, env = "SIGNAL9_API_MAX_INFLIGHT_JOBS", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_inflight_jobs: usize,
    /// Each token's quota: Alpaca calls its requests may cause per quota
    /// window (a token bucket in Redis, shared by every API replica). A
    /// token's line in the tokens file may set its own with `calls=N`.
    #[arg(long, env = "SIGNAL9_API_TOKEN_CALLS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub token_calls: u32,
    /// The calls every token together may cause per quota window: the
    /// share of the data budget interactive reads may take (default half
    /// of the default 200-a-minute budget), so the daily pipeline keeps the rest.
    #[arg(long, env = "SIGNAL9_API_CALLS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub api_calls: u32,
    /// The quota window, in seconds.
    #[arg(long, env = "SIGNAL9_API_QUOTA_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub quota_window_secs: u64,
    /// A client has this long to send its request's headers, in seconds;
    /// then the connection is closed (slow or idle clients hold nothing).
    #[arg(long, env = "SIGNAL9_API_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub header_timeout_secs: u64,
    /// A request is answered within this many seconds, or gets 408
    /// (must exceed --fetch-timeout-secs).
    #[arg(long, env = "SIGNAL9_API_REQUEST_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub request_timeout_secs: u64,
    /// Requests served at once; beyond, the API answers 503 with
    /// Retry-After at once (load shedding) instead of queueing. /healthz
    /// and /metrics are outside this limit.
    #[arg(long, env = "SIGNAL9_API_MAX_CONCURRENT", default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_concurrent: usize,
    /// The console cookie: `on` marks it `Secure` with the `__Host-` name
    /// (served over TLS), `off` never, `auto` when the login request came
    /// through a proxy that says `X-Forwarded-Proto: https`.
    #[arg(long, env = "SIGNAL9_API_SECURE_COOKIE", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub secure_cookie: String,
    /// Failed console logins one address may make a minute (429 beyond).
    #[arg(long, env = "SIGNAL9_API_LOGIN_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_attempts: u32,
    /// Most console sessions held at once (the oldest ends first).
    #[arg(long, env = "SIGNAL9_API_MAX_SESSIONS", default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_sessions: usize,
    /// Fault injection for tests: a bars request naming this symbol
    /// panics in its handler (the API must answer 500 and go on). Never
    /// set in production.
    #[arg(long, env = "SIGNAL9_FAULT_PANIC_SYMBOL", hide = true)]
    pub fault_panic_symbol: Option<String>,
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

fn parse_flag(text: &str) -> Result<bool, String> {
    match text {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" | "" => Ok(false),
        other => Err(format!("expected 1 or 0, not {other:?}")),
    }
}
