//! The API's answers: the account, assets, and bars with Alpaca's
//! paging.

use super::answer::*;
use super::*;

/// `GET /v2/account`: a paper account in good standing, with every field
/// the real API always sends (numbers as strings, as it sends them).
pub(super) fn account() -> Answer {
    Answer {
        status: StatusCode::OK,
        body: json!({
            "id": "8b5e2f0a-3c1d-4e6f-9a7b-51de0c2a9e10",
            "admin_configurations": {},
            "user_configurations": null,
            "account_number": "PA3SIM0042",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "options_approved_level": 0,
            "options_trading_level": 0,
            "currency": "USD",
            "buying_power": "200000",
            "regt_buying_power": "200000",
            "daytrading_buying_power": "0",
            "effective_buying_power": "200000",
            "non_marginable_buying_power": "100000",
            "options_buying_power": "100000",
            "bod_dtbp": "0",
            "cash": "100000",
            "accrued_fees": "0",
            "portfolio_value": "100000",
            "pattern_day_trader": false,
            "trading_blocked": false,
            "transfers_blocked": false,
            "account_blocked": false,
            "created_at": "2024-01-02T15:04:05.123456Z",
            "trade_suspended_by_user": false,
            "multiplier": "2",
            "shorting_enabled": true,
            "equity": "100000",
            "last_equity": "100000",
            "long_market_value": "0",
            "short_market_value": "0",
            "position_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "balance_asof": "2026-11-19",
            "crypto_tier": 1,
            "intraday_adjustments": "0",
            "pending_reg_taf_fees": "0"
        }),
    }
}

pub(super) fn list_assets(sim: &Sim, params: &HashMap<String, String>) -> Answer {
    let status = params.get("status").map(String::as_str).filter(|s| !s.is_empty());
    if let Some(s) = status.filter(|s| !matches!(*s, "active" | "inactive")) {
        return trading_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            format!("invalid status: {}", short(s)),
        );
    }
    let class = params
        .get("asset_class")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("us_equity");
    if !matches!(class, "us_equity" | "crypto" | "us_option") {
        return trading_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            format!("invalid asset_class: {}", short(class)),
        );
    }
    let exchange = params.get("exchange").filter(|s| !s.is_empty());
    let attributes: Vec<&str> = params
        .get("attributes")
        .map(|a| a.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let Ok(universe) = sim.universe.read() else {
        return trading_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50010000,
            "internal server error occurred",
        );
    };
    let mut list: Vec<Value> = universe
        .iter()
        .filter(|a| a.class == class)
        .filter(|a| status.is_none_or(|s| a.status() == s))
        .filter(|a| exchange.is_none_or(|e| a.exchange == *e))
        .filter(|a| attributes.is_empty() || a.attributes.iter().any(|x| attributes.contains(x)))
        .map(SimAsset::to_json)
        .collect();
    let faults = lock(&sim.faults).faults.clone();
    if let Some(status) = faults.fail_class.get(class) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return trading_error(status, u32::from(status.as_u16()) * 100_000, "injected failure");
    }
    if let Some(keep) = faults.truncate_assets {
        list.truncate((list.len() as f64 * keep.clamp(0.0, 1.0)).ceil() as usize);
    }
    if let Some(keep) = faults.truncate_class.get(class) {
        list.truncate((list.len() as f64 * keep.clamp(0.0, 1.0)).ceil() as usize);
    }
    Answer {
        status: StatusCode::OK,
        body: Value::Array(list),
    }
}

pub(super) fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(super) fn one_asset(sim: &Sim, path: &str) -> Answer {
    let raw = path.trim_start_matches("/v2/assets/");
    let wanted = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    let Ok(universe) = sim.universe.read() else {
        return trading_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50010000,
            "internal server error occurred",
        );
    };
    let by_id = universe.iter().find(|a| a.id.eq_ignore_ascii_case(&wanted));
    // A recycled ticker resolves to its active listing; `BTCUSD` to `BTC/USD`.
    let by_symbol = || {
        let matches = |a: &&SimAsset| a.symbol == wanted || a.symbol.replace('/', "") == wanted;
        universe.iter().filter(matches).max_by_key(|a| a.active)
    };
    match by_id.or_else(by_symbol) {
        Some(asset) => Answer {
            status: StatusCode::OK,
            body: asset.to_json(),
        },
        None => trading_error(
            StatusCode::NOT_FOUND,
            40410000,
            format!("asset not found for {}", short(&wanted)),
        ),
    }
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

pub(super) fn valid_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 21
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'/' | b'-'))
}

pub(super) fn encode_token(symbol: &str, t: DateTime<Utc>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{symbol}\u{1f}{}", t.timestamp()))
}

pub(super) fn decode_token(token: &str) -> Option<(String, DateTime<Utc>)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (symbol, secs) = text.split_once('\u{1f}')?;
    Some((symbol.to_owned(), DateTime::from_timestamp(secs.parse().ok()?, 0)?))
}

/// One page of bars for a multi-symbol (`single = None`) or single-symbol request.
pub(super) fn bars(sim: &Sim, market: Market, single: Option<String>, params: &HashMap<String, String>) -> Answer {
    let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let mut symbols: Vec<String> = match &single {
        Some(s) => vec![s.clone()],
        None => match param("symbols") {
            Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
            None => return data_error(StatusCode::BAD_REQUEST, "missing symbols"),
        },
    };
    if let Some(bad) = symbols.iter().find(|s| !valid_symbol(s)) {
        return data_error(StatusCode::BAD_REQUEST, format!("invalid symbol: {}", short(bad)));
    }
    symbols.sort();
    symbols.dedup();
    let Some(frame) = param("timeframe").and_then(Frame::parse) else {
        return data_error(StatusCode::BAD_REQUEST, "invalid timeframe");
    };
    let now = sim.now();
    let day_start = match market {
        Market::Stocks => crate::calendar::ny_instant(crate::calendar::ny_date(now), 0),
        Market::Crypto => now.date_naive().and_hms_opt(0, 0, 0).map_or(now, |t| t.and_utc()),
    };
    let start = match param("start") {
        Some(s) => match parse_time(s) {
            Some(t) => t,
            None => return data_error(StatusCode::BAD_REQUEST, "invalid start"),
        },
        None => day_start,
    };
    let end = match param("end") {
        Some(s) => match parse_time(s) {
            Some(t) => t,
            None => return data_error(StatusCode::BAD_REQUEST, "invalid end"),
        },
        None => now,
    };
    if end < start {
        return data_error(StatusCode::BAD_REQUEST, "end should not be before start");
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 1000,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid limit: must be between 1 and 10000"),
    };
    let desc = match param("sort") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid sort: must be asc or desc"),
    };
    let mut components = Vec::new();
    if market == Market::Stocks {
        if let Some(adj) = param("adjustment") {
            let known = ["raw", "split", "dividend", "spin-off", "all"];
            if !adj.split(',').all(|a| known.contains(&a)) {
                return data_error(StatusCode::BAD_REQUEST, format!("invalid adjustment: {}", short(adj)));
            }
            components = actions::components(adj);
        }
        match param("feed") {
            None | Some("iex") | Some("otc") | Some("boats") => {}
            Some("sip") if sim.config.free_plan && end > now - chrono::Duration::minutes(15) => {
                return data_error(
                    StatusCode::FORBIDDEN,
                    "subscription does not permit querying recent SIP data",
                );
            }
            Some("sip") => {}
            Some(other) => return data_error(StatusCode::BAD_REQUEST, format!("invalid feed: {}", short(other))),
        }
    }
    let after = match param("page_token") {
        Some(token) => match decode_token(token) {
            Some(position) => Some(position),
            None => return data_error(StatusCode::BAD_REQUEST, "invalid page token"),
        },
        None => None,
    };
    let known: Vec<String> = match sim.universe.read() {
        Ok(u) => symbols
            .iter()
            .filter(|s| {
                u.iter()
                    .any(|a| a.symbol == **s && (a.class == "crypto") == (market == Market::Crypto))
            })
            .cloned()
            .collect(),
        Err(_) => return data_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
    };
    let duplicates = market == Market::Crypto && lock(&sim.faults).faults.duplicate_crypto_bars;
    let overlap = if lock(&sim.faults).faults.repeat_page_boundary {
        chrono::Duration::zero()
    } else {
        chrono::Duration::seconds(1)
    };
    let seed = sim.config.seed;
    fn series_of(seed: u64, market: Market, frame: Frame, symbol: &str) -> Series<'_> {
        Series {
            seed,
            symbol,
            market,
            frame,
        }
    }
    let series = |symbol| series_of(seed, market, frame, symbol);
    let injected: Vec<SimAction> = sim.actions.read().map(|a| a.clone()).unwrap_or_default();
    let (since, today) = (crate::calendar::ny_date(start), crate::calendar::ny_date(now));

    let mut page: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut count = 0usize;
    let mut last: Option<(String, DateTime<Utc>)> = None;
    for symbol in known.iter().filter(|s| after.as_ref().is_none_or(|(sym, _)| *s >= sym)) {
        let resume = after.as_ref().filter(|(sym, _)| sym == symbol).map(|(_, t)| *t);
        let mut times = Vec::new();
        if desc {
            for_each_bar_time(series(symbol), start, end, now, |t| {
                times.push(t);
                ControlFlow::Continue(())
            });
            times.reverse();
            times.retain(|t| resume.is_none_or(|r| *t < r));
            times.truncate(limit - count);
        } else {
            let from = resume.map_or(start, |r| r + overlap).max(start);
            for_each_bar_time(series(symbol), from, end, now, |t| {
                times.push(t);
                if times.len() + count >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        }
        let factors = match market {
            Market::Stocks => Factors::new(seed, symbol, &injected, &components, since, today),
            Market::Crypto => Factors::default(),
        };
        let list = page.entry(symbol.clone()).or_default();
        for t in &times {
            let mut bar = bar_json(series(symbol), *t);
            if !factors.is_identity() {
                let (price, volume) = factors.at(crate::calendar::ny_date(*t));
                scale(&mut bar, price, volume);
            }
            list.push(bar);
            if duplicates && t.timestamp() % 7 == 0 {
                let mut twin = bar_json(
                    Series {
                        seed: seed ^ 1,
                        ..series(symbol)
                    },
                    *t,
                );
                twin["t"] = list.last().map_or(Value::Null, |b| b["t"].clone());
                list.push(twin);
            }
        }
        count += times.len();
        if let Some(t) = times.last() {
            last = Some((symbol.clone(), *t));
        }
        if count >= limit {
            break;
        }
    }
    page.retain(|_, bars| !bars.is_empty());
    // Like the real API, a full page carries a token even when nothing follows.
    let token = (count >= limit)
        .then(|| last.map(|(s, t)| encode_token(&s, t)))
        .flatten();
    let body = match single {
        Some(symbol) => {
            let bars = page.remove(&symbol).map_or(Value::Null, Value::from);
            json!({"bars": bars, "symbol": symbol, "next_page_token": token})
        }
        None => json!({"bars": page, "next_page_token": token}),
    };
    Answer {
        status: StatusCode::OK,
        body,
    }
}

/// `GET /v1/corporate-actions`: the seeded and injected actions whose
/// ex-date lies in `[start, end]` (dates; today by default), of the given
/// symbols (every stock when absent) and types, ordered by ex-date then id,
/// `limit` a page (1–1000, default 100), grouped by kind.
pub(super) fn corporate_actions(sim: &Sim, params: &HashMap<String, String>) -> Answer {
    let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let today = crate::calendar::ny_date(sim.now());
    let date = |k: &str| match param(k) {
        None => Ok(today),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("invalid {k}: {}", short(s))),
    };
    let (start, end) = match (date("start"), date("end")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(m), _) | (_, Err(m)) => return data_error(StatusCode::BAD_REQUEST, m),
    };
    if end < start {
        return data_error(StatusCode::BAD_REQUEST, "end should not be before start");
    }
    let types: Vec<&str> = match param("types") {
        Some(list) => list.split(',').collect(),
        None => actions::KNOWN_TYPES.to_vec(),
    };
    if let Some(bad) = types.iter().find(|t| !actions::KNOWN_TYPES.contains(t)) {
        return data_error(StatusCode::BAD_REQUEST, format!("invalid types: {}", short(bad)));
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid limit: must be between 1 and 1000"),
    };
    let desc = match param("sort") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return data_error(StatusCode::BAD_REQUEST, "invalid sort: must be asc or desc"),
    };
    let after = match param("page_token") {
        None => None,
        Some(token) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
        {
            Some(position) => Some(position),
            None => return data_error(StatusCode::BAD_REQUEST, "invalid page token"),
        },
    };
    let symbols: Vec<String> = match param("symbols") {
        Some(list) => {
            let list: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            if let Some(bad) = list.iter().find(|s| !valid_symbol(s)) {
                return data_error(StatusCode::BAD_REQUEST, format!("invalid symbol: {}", short(bad)));
            }
            list
        }
        None => match sim.universe.read() {
            Ok(u) => u
                .iter()
                .filter(|a| a.class == "us_equity")
                .map(|a| a.symbol.clone())
                .collect(),
            Err(_) => return data_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
        },
    };
    let seed = sim.config.seed;
    let mut found: Vec<SimAction> = symbols
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .flat_map(|symbol| actions::seeded(seed, symbol, start, end))
        .collect();
    if let Ok(injected) = sim.actions.read() {
        found.extend(
            injected
                .iter()
                .filter(|a| (start..=end).contains(&a.ex_date))
                .filter(|a| param("symbols").is_none() || symbols.contains(&a.symbol))
                .cloned(),
        );
    }
    found.retain(|a| types.contains(&a.kind.type_name()));
    let position = |a: &SimAction| format!("{}|{}", a.ex_date, a.id);
    found.sort_by_key(position);
    if desc {
        found.reverse();
    }
    if let Some(after) = &after {
        found.retain(|a| {
            if desc {
                position(a) < *after
            } else {
                position(a) > *after
            }
        });
    }
    let more = found.len() > limit;
    found.truncate(limit);
    let token = more
        .then(|| {
            found
                .last()
                .map(|a| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position(a)))
        })
        .flatten();
    let mut groups: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for action in &found {
        groups
            .entry(action.kind.group())
            .or_default()
            .push(action.to_json(seed));
    }
    Answer {
        status: StatusCode::OK,
        body: json!({"corporate_actions": groups, "next_page_token": token}),
    }
}
