//! The arguments the publishing commands share, and how their text becomes
//! typed values: times (a bare date is 00:00:00 UTC as a start and
//! 23:59:59 UTC as an end), symbols from the command line and from files
//! (deduplicated, `#` comments skipped), priorities.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use signal9_alpaca::BarRange;
use signal9_alpaca::{Adjustment, Feed, Symbol, Timeframe};
use signal9_shared::job::{FetchBars, Priority};
use signal9_shared::settings::{AlpacaSettings, BrokerSettings, BudgetSettings, StoreSettings};
use signal9_shared::store::active_equity_symbols;

/// What a command that calls Alpaca itself needs: the key, the budget
/// every call goes through, and the namespace of the budget's Redis keys
/// (the queue settings are unused).
#[derive(Debug, Args)]
pub struct ApiAccess {
    #[command(flatten)]
    pub(crate) alpaca: AlpacaSettings,
    #[command(flatten)]
    pub(crate) budget: BudgetSettings,
    #[command(flatten)]
    pub(crate) broker: BrokerSettings,
}

impl ApiAccess {
    /// The client, every call through the shared budget and breaker.
    pub(crate) async fn client(&self) -> Result<signal9_alpaca::AlpacaClient> {
        let gate = signal9_shared::services::gate(&self.budget, &self.broker.namespace)?;
        signal9_shared::services::client(&self.alpaca, gate).await
    }
}

/// Options every publishing command shares.
#[derive(Debug, Args)]
pub struct PublishOptions {
    #[command(flatten)]
    pub(crate) broker: BrokerSettings,
    /// `bulk` (the daily pipeline's lane; the default, except for
    /// `backfill`), `interactive` (served ahead of any bulk backlog, and first
    /// to the next free token of the budget) or `backfill` (served after bulk work;
    /// the default of `backfill`).
    #[arg(long, value_parser = parse_priority)]
    pub(crate) priority: Option<Priority>,
    /// Wait for every job's outcome and print it; exit non-zero if any job was dead-lettered or did not answer.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) wait_timeout_secs: u64,
    /// How long to keep reconnecting to RabbitMQ and publishing the jobs it
    /// has not confirmed, in seconds (a broker restart); 0: fail at once.
    #[arg(long, env = "SIGNAL9_PUBLISH_RECONNECT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub(crate) reconnect_secs: u64,
}

impl PublishOptions {
    /// The namespace jobs go to.
    pub fn namespace(&self) -> &str {
        &self.broker.namespace
    }

    /// The priority asked for, or the command's default.
    pub fn priority_or(&self, default: Priority) -> Priority {
        self.priority.unwrap_or(default)
    }

    /// How long to wait for outcomes, when `--wait` was given.
    pub fn wait(&self) -> Option<Duration> {
        self.wait.then(|| Duration::from_secs(self.wait_timeout_secs))
    }
}

pub(crate) fn parse_priority(text: &str) -> Result<Priority, String> {
    Priority::parse(text).ok_or_else(|| "expected bulk, interactive or backfill".into())
}

/// `fetch-bars`: bars of one or more symbols over an inclusive range.
#[derive(Debug, Args)]
pub struct FetchBarsArgs {
    #[command(flatten)]
    pub(crate) bars: BarsSelection,
    #[command(flatten)]
    pub(crate) options: PublishOptions,
}

/// Which bars: the symbols, the timeframe, the range, adjustment and feed.
#[derive(Debug, Args)]
pub struct BarsSelection {
    /// Comma-separated symbols (case is ignored): AAPL,BRK.B,BTC/USD.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["symbols_file", "all_active"])]
    pub symbols: Vec<String>,
    /// Every active, tradable US equity in the store (after a sync).
    #[arg(long)]
    pub all_active: bool,
    #[command(flatten)]
    pub store: StoreSettings,
    /// A file with one symbol per line (blank lines and `#` comments skipped).
    #[arg(long)]
    pub symbols_file: Option<PathBuf>,
    /// Bar length: 1-59Min, 1-23Hour, 1Day, 1Week, 1/2/3/4/6/12Month (or T/H/D/W/M).
    #[arg(long)]
    pub timeframe: Timeframe,
    /// Inclusive start: RFC 3339, or a date (its 00:00 UTC).
    #[arg(long, value_parser = parse_start)]
    pub start: DateTime<Utc>,
    /// Inclusive end: RFC 3339, or a date (its 23:59:59 UTC).
    #[arg(long, value_parser = parse_end)]
    pub end: DateTime<Utc>,
    /// raw, split, dividend, spin-off, all, or a comma combination (stocks only).
    #[arg(long, default_value = "raw")]
    pub adjustment: Adjustment,
    /// sip, iex, otc or boats (stocks only; the API's default when absent).
    #[arg(long)]
    pub feed: Option<Feed>,
}

impl BarsSelection {
    /// The symbols asked for (the store's active equities with
    /// --all-active), deduplicated, in the order given.
    pub async fn symbols(&self) -> Result<Vec<Symbol>> {
        if self.end < self.start {
            bail!("--end {} is before --start {}", self.end, self.start);
        }
        let mut symbols = if self.symbols.is_empty() && self.symbols_file.is_none() {
            Vec::new()
        } else {
            parse_symbols(&self.symbols, self.symbols_file.as_deref())?
        };
        if self.all_active {
            let store = self.store.open().await.context("opening the store")?;
            let mut active = active_equity_symbols(store.as_ref()).await?;
            active.retain(|s| !symbols.contains(s));
            symbols.extend(active);
            if symbols.is_empty() {
                bail!("the store holds no active, tradable US equity; run `signal9-producer sync` first");
            }
        }
        Ok(symbols)
    }

    /// The store named by the store settings.
    pub async fn open_store(&self) -> Result<std::sync::Arc<dyn signal9_shared::store::Store>> {
        self.store.open().await.context("opening the store")
    }

    /// What these flags select, without the symbols.
    pub(crate) fn scope(&self) -> Scope {
        Scope {
            timeframe: self.timeframe,
            start: self.start,
            end: self.end,
            adjustment: self.adjustment.clone(),
            feed: self.feed,
        }
    }

    /// The fetch-bars payload of one symbol over `[start, end]` (see
    /// [`Scope::payload`]).
    pub fn payload(&self, symbol: Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> FetchBars {
        self.scope().payload(symbol, start, end)
    }
}

/// Which bars, without the symbols: one timeframe, adjustment and feed
/// over `[start, end]` (what `gaps`, `backfill` and the scheduler plan over).
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) timeframe: Timeframe,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) adjustment: Adjustment,
    pub(crate) feed: Option<Feed>,
}

impl Scope {
    /// The fetch-bars payload of one symbol over `[start, end]` (crypto
    /// pairs take no adjustment and no feed).
    pub(crate) fn payload(&self, symbol: Symbol, start: DateTime<Utc>, end: DateTime<Utc>) -> FetchBars {
        let crypto = symbol.is_crypto_pair();
        FetchBars {
            symbol,
            range: BarRange {
                timeframe: self.timeframe,
                start,
                end,
                adjustment: if crypto {
                    Adjustment::raw()
                } else {
                    self.adjustment.clone()
                },
                feed: if crypto { None } else { self.feed },
            },
        }
    }
}

/// `status-check`: one job per symbol.
#[derive(Debug, Args)]
pub struct StatusCheckArgs {
    /// Symbols to check.
    #[arg(required = true)]
    pub(crate) symbols: Vec<String>,
    #[command(flatten)]
    pub(crate) options: PublishOptions,
}

fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text, false)
}

fn parse_end(text: &str) -> Result<DateTime<Utc>, String> {
    parse_time(text, true)
}

/// A time from the command line: RFC 3339, or a date (its first or last
/// second, as `end_of_day` says), inside the window every door accepts
/// ([`signal9_shared::bounds`]), so nothing out of bounds is published.
pub(crate) fn parse_time(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    let t = parse_any_time(text, end_of_day)?;
    signal9_shared::bounds::check_instant("time", t, Utc::now()).map_err(|e| e.to_string())?;
    Ok(t)
}

fn parse_any_time(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| "expected RFC 3339 (2026-11-20T00:00:00Z) or a date (2026-11-20)".to_string())?;
    let time = if end_of_day {
        date.and_hms_opt(23, 59, 59)
    } else {
        date.and_hms_opt(0, 0, 0)
    };
    time.map(|t| t.and_utc()).ok_or_else(|| "invalid date".into())
}

pub(crate) fn parse_symbols(list: &[String], file: Option<&Path>) -> Result<Vec<Symbol>> {
    let mut raw: Vec<String> = list.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        raw.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    let mut seen = HashSet::new();
    let mut symbols = Vec::new();
    for item in raw {
        let symbol = Symbol::parse(&item.trim().to_ascii_uppercase()).map_err(anyhow::Error::from)?;
        if seen.insert(symbol.clone()) {
            symbols.push(symbol);
        }
    }
    if symbols.is_empty() {
        bail!("no symbols given");
    }
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_starts_at_midnight_and_ends_one_second_before_the_next() {
        assert_eq!(
            parse_time("2026-11-20", false).unwrap_or_default().to_rfc3339(),
            "2026-11-20T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-20", true).unwrap_or_default().to_rfc3339(),
            "2026-11-20T23:59:59+00:00"
        );
        // A full time is taken as given, offsets converted to UTC, whichever end it is.
        for end in [false, true] {
            let t = parse_time("2026-11-20T09:30:00-05:00", end).unwrap_or_default();
            assert_eq!(t.to_rfc3339(), "2026-11-20T14:30:00+00:00");
        }
        for bad in ["2026-13-01", "20/11/2026", "", "2026-11-20T25:00:00Z"] {
            assert!(parse_time(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_outside_the_window_are_refused_before_anything_is_published() {
        for text in ["-0002-01-01", "1989-12-31", "2999-01-01", "1989-12-31T23:59:59Z"] {
            let error = parse_time(text, false).unwrap_err();
            assert!(error.contains("outside the accepted window"), "{text}: {error}");
        }
        assert!(parse_time("+262142-01-01T00:00:00Z", true).is_err());
        assert!(parse_time("-0002-01-01T00:00:00Z", true).is_err());
        assert!(parse_time("1990-01-01", false).is_ok());
    }

    #[test]
    fn symbols_from_a_file_skip_comments_and_blanks_and_are_deduplicated() {
        let dir = std::env::temp_dir().join(format!("signal9-symbols-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("symbols.txt");
        std::fs::write(
            &file,
            "# the watch list\naapl\n\n  BRK.B  # Berkshire\nmsft\nAAPL\nbtc/usd\n",
        )
        .unwrap_or_default();
        let symbols = parse_symbols(&["MSFT".into(), "tsla".into()], Some(&file)).unwrap_or_default();
        let names: Vec<&str> = symbols.iter().map(Symbol::as_str).collect();
        assert_eq!(names, ["MSFT", "TSLA", "AAPL", "BRK.B", "BTC/USD"]);
        std::fs::write(&file, "AAPL\nnot a symbol!\n").unwrap_or_default();
        assert!(
            parse_symbols(&[], Some(&file)).is_err(),
            "a bad line fails the whole list"
        );
        std::fs::write(&file, "# only comments\n\n").unwrap_or_default();
        let empty = parse_symbols(&[], Some(&file)).map(|_| ()).unwrap_err().to_string();
        assert!(empty.contains("no symbols"), "{empty}");
        let missing = parse_symbols(&[], Some(&dir.join("absent.txt")))
            .map(|_| ())
            .unwrap_err();
        assert!(format!("{missing:#}").contains("absent.txt"), "{missing:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn priorities_parse_by_their_wire_names() {
        assert_eq!(parse_priority("interactive"), Ok(Priority::Interactive));
        assert_eq!(parse_priority("backfill"), Ok(Priority::Backfill));
        assert!(parse_priority("urgent").is_err());
    }
}
