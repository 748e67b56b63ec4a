//! Corporate actions: the splits, dividends and spin-offs of the simulated
//! market, what `GET /v1/corporate-actions` reports, and what each does to
//! prices.
//!
//! **Seeded actions** are a pure function of (seed, symbol, date), for
//! stocks only: in any year about 1 % of stocks split (2:1, 3:1, 4:1, or a
//! 1:10 reverse split), and 40 % of stocks pay a quarterly cash dividend of
//! about 0.4 % of the price. Tests add more with `POST /_sim/actions`
//! (**injected** actions).
//!
//! **Raw prices contain the splits**: a bar on or after a split's ex-date is
//! divided by the split ratio (its volume multiplied), so raw history before
//! a split never changes. **Adjusted prices** (`adjustment=split`,
//! `dividend`, `spin-off`, a combination, or `all`) multiply every bar
//! before an action's ex-date, for each action of the named components whose
//! ex-date is on or before today, by the action's factor:
//!
//! - split: `old_rate / new_rate` (volume `new_rate / old_rate`);
//! - cash dividend: `1 − rate / price` (the price level the day before the ex-date);
//! - spin-off: `1 − min(0.5, 0.1 × new_rate / source_rate)`.
//!
//! So an action that takes effect changes the adjusted history of its
//! symbol, as Alpaca's does, and nothing else.

use chrono::{Datelike, Duration, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::calendar::{is_trading_day, ny_instant};
use crate::prices::{hash, level, mix, unit, Market};

/// The kinds of action the simulator models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// More shares, lower price.
    ForwardSplit,
    /// Fewer shares, higher price.
    ReverseSplit,
    /// Cash paid per share.
    CashDividend,
    /// A subsidiary distributed as a new security.
    SpinOff,
}

impl Kind {
    /// The name the `types` parameter takes.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::ForwardSplit => "forward_split",
            Kind::ReverseSplit => "reverse_split",
            Kind::CashDividend => "cash_dividend",
            Kind::SpinOff => "spin_off",
        }
    }

    /// The key of the kind's array in a response.
    pub fn group(self) -> &'static str {
        match self {
            Kind::ForwardSplit => "forward_splits",
            Kind::ReverseSplit => "reverse_splits",
            Kind::CashDividend => "cash_dividends",
            Kind::SpinOff => "spin_offs",
        }
    }

    /// The adjustment component that accounts for the kind.
    pub fn component(self) -> &'static str {
        match self {
            Kind::ForwardSplit | Kind::ReverseSplit => "split",
            Kind::CashDividend => "dividend",
            Kind::SpinOff => "spin-off",
        }
    }

    fn is_split(self) -> bool {
        matches!(self, Kind::ForwardSplit | Kind::ReverseSplit)
    }
}

/// Every `types` value the real endpoint accepts; the ones the simulator
/// does not model are accepted and return nothing.
pub const KNOWN_TYPES: [&str; 13] = [
    "forward_split",
    "reverse_split",
    "unit_split",
    "stock_dividend",
    "cash_dividend",
    "spin_off",
    "cash_merger",
    "stock_merger",
    "stock_and_cash_merger",
    "redemption",
    "name_change",
    "worthless_removal",
    "rights_distribution",
];

/// One corporate action.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAction {
    /// A UUID, stable for a seeded action.
    pub id: String,
    /// The kind.
    pub kind: Kind,
    /// The symbol it adjusts (the source of a spin-off).
    pub symbol: String,
    /// The ex-date: bars before it are adjusted for the action.
    pub ex_date: NaiveDate,
    /// Splits: shares after; spin-offs: new shares per `old_rate` source shares.
    pub new_rate: f64,
    /// Splits: shares before; spin-offs: source shares.
    pub old_rate: f64,
    /// Cash dividends: cash per share.
    pub rate: f64,
    /// Spin-offs: the new security's symbol.
    pub new_symbol: Option<String>,
}

fn cusip(seed: u64, symbol: &str) -> String {
    format!("{:09X}", mix(hash(seed ^ 0xC051, symbol)) % 0xF_FFFF_FFFF)
}

impl SimAction {
    /// The entry as the endpoint returns it, in its kind's array.
    pub fn to_json(&self, seed: u64) -> Value {
        let date = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
        let (ex, record, payable) = (
            date(self.ex_date),
            date(self.ex_date + Duration::days(1)),
            date(self.ex_date + Duration::days(14)),
        );
        let cusip = cusip(seed, &self.symbol);
        match self.kind {
            Kind::ForwardSplit => json!({
                "id": self.id, "symbol": self.symbol, "cusip": cusip, "new_rate": self.new_rate,
                "old_rate": self.old_rate, "process_date": ex, "ex_date": ex, "record_date": record,
                "payable_date": payable,
            }),
            Kind::ReverseSplit => json!({
                "id": self.id, "symbol": self.symbol, "old_cusip": cusip, "new_cusip": format!("{}R", &cusip[..8]),
                "new_rate": self.new_rate, "old_rate": self.old_rate, "process_date": ex, "ex_date": ex,
                "record_date": record, "payable_date": payable,
            }),
            Kind::CashDividend => json!({
                "id": self.id, "symbol": self.symbol, "cusip": cusip, "rate": self.rate, "special": false,
                "foreign": false, "process_date": ex, "ex_date": ex, "record_date": record,
                "payable_date": payable,
            }),
            Kind::SpinOff => {
                let new_symbol = self.new_symbol.clone().unwrap_or_default();
                json!({
                    "id": self.id, "source_symbol": self.symbol, "source_cusip": cusip,
                    "source_rate": self.old_rate, "new_symbol": new_symbol, "new_cusip": self::cusip(seed, &new_symbol),
                    "new_rate": self.new_rate, "process_date": ex, "ex_date": ex, "record_date": record,
                    "payable_date": payable,
                })
            }
        }
    }

    /// What the action does to the price and volume of a bar before its
    /// ex-date in an adjusted series.
    fn adjusted_factor(&self, seed: u64) -> (f64, f64) {
        match self.kind {
            Kind::ForwardSplit | Kind::ReverseSplit => (self.old_rate / self.new_rate, self.new_rate / self.old_rate),
            Kind::CashDividend => {
                let price = reference_price(seed, &self.symbol, self.ex_date);
                ((1.0 - self.rate / price).clamp(0.5, 1.0), 1.0)
            }
            Kind::SpinOff => (1.0 - (0.1 * self.new_rate / self.old_rate).min(0.5), 1.0),
        }
    }
}

fn stable_id(seed: u64, symbol: &str, salt: u64) -> String {
    let hi = mix(hash(seed ^ 0x1D, symbol) ^ salt);
    let lo = mix(hi ^ 0xA5A5);
    uuid::Uuid::from_u128((u128::from(hi) << 64) | u128::from(lo)).to_string()
}

/// The first trading day on or after `day`.
fn trading_on_or_after(mut day: NaiveDate) -> NaiveDate {
    while !is_trading_day(day) {
        day += Duration::days(1);
    }
    day
}

/// Seeded splits start in this year.
const FIRST_YEAR: i32 = 1990;

/// The seeded split of a stock in a year, if it has one.
fn seeded_split(seed: u64, symbol: &str, year: i32) -> Option<SimAction> {
    let h = mix(hash(seed ^ 0x5971, symbol) ^ (year as u64));
    if h % 1000 >= 10 {
        return None;
    }
    let jan1 = NaiveDate::from_ymd_opt(year, 1, 1)?;
    let ex_date = trading_on_or_after(jan1 + Duration::days(((h >> 12) % 360) as i64));
    let (kind, new_rate, old_rate) = match (h >> 24) % 10 {
        0..=4 => (Kind::ForwardSplit, 2.0, 1.0),
        5 | 6 => (Kind::ForwardSplit, 3.0, 1.0),
        7 => (Kind::ForwardSplit, 4.0, 1.0),
        _ => (Kind::ReverseSplit, 1.0, 10.0),
    };
    Some(SimAction {
        id: stable_id(seed, symbol, year as u64),
        kind,
        symbol: symbol.to_owned(),
        ex_date,
        new_rate,
        old_rate,
        rate: 0.0,
        new_symbol: None,
    })
}

/// What a stock's seeded splits up to `day` did to its raw price: the
/// product of `old_rate / new_rate` of each split with ex-date ≤ `day`.
pub(crate) fn seeded_split_scale(seed: u64, symbol: &str, day: NaiveDate) -> f64 {
    (FIRST_YEAR..=day.year())
        .filter_map(|year| seeded_split(seed, symbol, year))
        .filter(|split| split.ex_date <= day)
        .map(|split| split.old_rate / split.new_rate)
        .product()
}

/// A stock's raw price level the day before `ex_date`: what a dividend is
/// a share of.
fn reference_price(seed: u64, symbol: &str, ex_date: NaiveDate) -> f64 {
    let before = ex_date - Duration::days(1);
    level(seed, symbol, Market::Stocks, ny_instant(before, 0)) * seeded_split_scale(seed, symbol, before)
}

/// The seeded dividend of a stock in quarter `quarter` (`year * 4 + q`).
fn seeded_dividend(seed: u64, symbol: &str, quarter: i32) -> Option<SimAction> {
    let payer = hash(seed ^ 0xD1D, symbol);
    if unit(mix(payer)) >= 0.4 {
        return None;
    }
    let h = mix(payer ^ (quarter as u64));
    let start = NaiveDate::from_ymd_opt(quarter.div_euclid(4), (quarter.rem_euclid(4) * 3 + 1) as u32, 1)?;
    let ex_date = trading_on_or_after(start + Duration::days(14 + (h % 45) as i64));
    let rate = (0.004 * reference_price(seed, symbol, ex_date) * 10_000.0).round() / 10_000.0;
    Some(SimAction {
        id: stable_id(seed, symbol, 0xD000_0000 ^ (quarter as u64)),
        kind: Kind::CashDividend,
        symbol: symbol.to_owned(),
        ex_date,
        new_rate: 0.0,
        old_rate: 0.0,
        rate: rate.max(0.0001),
        new_symbol: None,
    })
}

/// A stock's seeded actions with `from <= ex_date <= to`, by ex-date.
pub fn seeded(seed: u64, symbol: &str, from: NaiveDate, to: NaiveDate) -> Vec<SimAction> {
    if to < from {
        return Vec::new();
    }
    let mut out: Vec<SimAction> = (from.year().max(FIRST_YEAR)..=to.year())
        .filter_map(|year| seeded_split(seed, symbol, year))
        .collect();
    // A quarter's dividend may fall in the next quarter's first days; look one back.
    let first = from.year() * 4 + (from.month0() / 3) as i32 - 1;
    let last = to.year() * 4 + (to.month0() / 3) as i32;
    out.extend((first..=last).filter_map(|q| seeded_dividend(seed, symbol, q)));
    out.retain(|a| (from..=to).contains(&a.ex_date));
    out.sort_by(|a, b| (a.ex_date, &a.id).cmp(&(b.ex_date, &b.id)));
    out
}

/// The adjustment components an `adjustment` parameter names (`raw`: none).
pub fn components(adjustment: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for part in adjustment.split(',') {
        match part {
            "all" => out.extend(["split", "dividend", "spin-off"]),
            "split" => out.push("split"),
            "dividend" => out.push("dividend"),
            "spin-off" => out.push("spin-off"),
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What a stock's bars are multiplied by, day by day, in one request.
#[derive(Debug, Clone, Default)]
pub struct Factors {
    /// (ex-date, price, volume) of each action the adjustment applies.
    adjusted: Vec<(NaiveDate, f64, f64)>,
    /// (ex-date, price, volume) of each injected split, which raw prices contain.
    raw: Vec<(NaiveDate, f64, f64)>,
}

impl Factors {
    /// The factors of `symbol`'s bars from `since` on, as of `today`, for
    /// the adjustment `components`, given the injected actions.
    pub fn new(
        seed: u64,
        symbol: &str,
        injected: &[SimAction],
        components: &[&str],
        since: NaiveDate,
        today: NaiveDate,
    ) -> Self {
        let mine = injected.iter().filter(|a| a.symbol == symbol);
        let raw = mine
            .clone()
            .filter(|a| a.kind.is_split())
            .map(|a| (a.ex_date, a.old_rate / a.new_rate, a.new_rate / a.old_rate))
            .collect();
        let mut adjusted = Vec::new();
        if !components.is_empty() {
            let applies = |a: &&SimAction| components.contains(&a.kind.component()) && a.ex_date <= today;
            let seeded = seeded(seed, symbol, since + Duration::days(1), today);
            for action in seeded.iter().chain(mine).filter(applies) {
                let (price, volume) = action.adjusted_factor(seed);
                adjusted.push((action.ex_date, price, volume));
            }
        }
        Factors { adjusted, raw }
    }

    /// True when no bar changes.
    pub fn is_identity(&self) -> bool {
        self.adjusted.is_empty() && self.raw.is_empty()
    }

    /// (price, volume) multipliers of a bar on `day`.
    pub fn at(&self, day: NaiveDate) -> (f64, f64) {
        let before = self.adjusted.iter().filter(|(ex, _, _)| day < *ex);
        let after = self.raw.iter().filter(|(ex, _, _)| *ex <= day);
        before
            .chain(after)
            .fold((1.0, 1.0), |(p, v), (_, price, volume)| (p * price, v * volume))
    }
}

/// Actions a test adds (`POST /_sim/actions`), in the endpoint's grouping;
/// ids, CUSIPs and the other dates are filled in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewActions {
    #[serde(default)]
    forward_splits: Vec<NewSplit>,
    #[serde(default)]
    reverse_splits: Vec<NewSplit>,
    #[serde(default)]
    cash_dividends: Vec<NewDividend>,
    #[serde(default)]
    spin_offs: Vec<NewSpinOff>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSplit {
    symbol: String,
    new_rate: f64,
    old_rate: f64,
    ex_date: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDividend {
    symbol: String,
    rate: f64,
    ex_date: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSpinOff {
    source_symbol: String,
    new_symbol: String,
    source_rate: f64,
    new_rate: f64,
    ex_date: NaiveDate,
}

impl NewActions {
    /// The actions, with fresh ids; an error names the first bad one.
    pub fn into_actions(self) -> Result<Vec<SimAction>, String> {
        let positive = |x: f64, what: &str| {
            if x.is_finite() && x > 0.0 {
                Ok(x)
            } else {
                Err(format!("{what} must be a positive number"))
            }
        };
        let mut out = Vec::new();
        let fresh = |kind, symbol: String, ex_date, new_rate, old_rate, rate, new_symbol| SimAction {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            symbol,
            ex_date,
            new_rate,
            old_rate,
            rate,
            new_symbol,
        };
        for (kind, list) in [
            (Kind::ForwardSplit, self.forward_splits),
            (Kind::ReverseSplit, self.reverse_splits),
        ] {
            for s in list {
                let (new, old) = (positive(s.new_rate, "new_rate")?, positive(s.old_rate, "old_rate")?);
                out.push(fresh(kind, s.symbol, s.ex_date, new, old, 0.0, None));
            }
        }
        for d in self.cash_dividends {
            let rate = positive(d.rate, "rate")?;
            out.push(fresh(Kind::CashDividend, d.symbol, d.ex_date, 0.0, 0.0, rate, None));
        }
        for s in self.spin_offs {
            let (new, old) = (
                positive(s.new_rate, "new_rate")?,
                positive(s.source_rate, "source_rate")?,
            );
            out.push(fresh(
                Kind::SpinOff,
                s.source_symbol,
                s.ex_date,
                new,
                old,
                0.0,
                Some(s.new_symbol),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn seeded_actions_are_stable_and_land_on_trading_days() {
        let mut splits = 0;
        let mut dividends = 0;
        for i in 0..2000 {
            let symbol = format!("S{i}");
            let a = seeded(7, &symbol, day("2020-01-01"), day("2024-12-31"));
            assert_eq!(a, seeded(7, &symbol, day("2020-01-01"), day("2024-12-31")));
            for action in &a {
                assert!(is_trading_day(action.ex_date), "{action:?}");
                match action.kind {
                    Kind::CashDividend => dividends += 1,
                    _ => splits += 1,
                }
            }
        }
        // 1 % of stocks a year split; 40 % pay four dividends a year.
        assert!((50..=150).contains(&splits), "{splits} splits");
        assert!((12_000..=20_000).contains(&dividends), "{dividends} dividends");
    }

    #[test]
    fn a_split_scales_raw_prices_from_its_ex_date_and_adjusted_prices_before_it() {
        let split = SimAction {
            id: "x".into(),
            kind: Kind::ForwardSplit,
            symbol: "AAPL".into(),
            ex_date: day("2026-12-03"),
            new_rate: 4.0,
            old_rate: 1.0,
            rate: 0.0,
            new_symbol: None,
        };
        let injected = [split];
        let raw = Factors::new(1, "AAPL", &injected, &[], day("2026-11-01"), day("2026-12-04"));
        assert_eq!(raw.at(day("2026-12-02")), (1.0, 1.0));
        assert_eq!(raw.at(day("2026-12-03")), (0.25, 4.0));
        let adjusted = Factors::new(1, "AAPL", &injected, &["split"], day("2026-11-01"), day("2026-12-04"));
        assert!(
            seeded(1, "AAPL", day("2026-11-02"), day("2026-12-04"))
                .iter()
                .all(|a| !a.kind.is_split()),
            "no seeded split in the window"
        );
        // Before the ex-date: adjusted down; from it on: raw already split. Same scale both ways.
        assert_eq!(adjusted.at(day("2026-12-02")), (0.25, 4.0));
        assert_eq!(adjusted.at(day("2026-12-03")), (0.25, 4.0));
        // Before its ex-date the split is not known to adjusted prices.
        let earlier = Factors::new(1, "AAPL", &injected, &["split"], day("2026-11-01"), day("2026-12-02"));
        assert_eq!(earlier.at(day("2026-12-01")), (1.0, 1.0));
    }

    #[test]
    fn components_read_the_adjustment_parameter() {
        assert!(components("raw").is_empty());
        assert_eq!(components("all"), vec!["dividend", "spin-off", "split"]);
        assert_eq!(components("split,dividend"), vec!["dividend", "split"]);
    }
}
