//! Bars in tests: what the store holds against the truth, and the
//! producer arguments and API queries of a fetch.

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
