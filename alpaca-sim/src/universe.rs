//! The simulated asset universe, generated deterministically from a seed.
//!
//! It has what the real listing has: every exchange the API returns, share
//! classes (`BRK.B`), warrants and units, crypto pairs, inactive and
//! non-tradable assets, recycled tickers (one symbol, two ids), names that
//! are empty, absent or non-ASCII, and deprecated fields that are sometimes
//! missing. The same seed and size always give the same universe.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// Crypto pairs listed first, in the API's spelling.
const CRYPTO_PAIRS: [&str; 24] = [
    "BTC/USD",
    "ETH/USD",
    "LTC/USD",
    "BCH/USD",
    "LINK/USD",
    "UNI/USD",
    "AAVE/USD",
    "AVAX/USD",
    "DOGE/USD",
    "SHIB/USD",
    "SOL/USD",
    "DOT/USD",
    "MKR/USD",
    "XTZ/USD",
    "YFI/USD",
    "GRT/USD",
    "SUSHI/USD",
    "BAT/USD",
    "CRV/USD",
    "USDT/USD",
    "USDC/USD",
    "ETH/BTC",
    "LTC/BTC",
    "BCH/BTC",
];

/// Well-known symbols that always exist (as active), so demos and tests can name them.
pub const FIXED_EQUITIES: [(&str, &str, &str); 8] = [
    ("AAPL", "NASDAQ", "Apple Inc. Common Stock"),
    ("MSFT", "NASDAQ", "Microsoft Corporation Common Stock"),
    ("BRK.B", "NYSE", "Berkshire Hathaway Inc. Class B"),
    ("BF.B", "NYSE", "Brown-Forman Corporation Class B"),
    ("SPY", "ARCA", "SPDR S&P 500 ETF Trust"),
    ("GOOGL", "NASDAQ", "Alphabet Inc. Class A Common Stock"),
    ("TSLA", "NASDAQ", "Tesla, Inc. Common Stock"),
    ("NESN", "OTC", "Nestlé S.A."),
];

const EXCHANGES: [(&str, u32); 8] = [
    ("NASDAQ", 34),
    ("NYSE", 22),
    ("ARCA", 4),
    ("NYSEARCA", 4),
    ("AMEX", 5),
    ("BATS", 5),
    ("OTC", 25),
    ("NASDAQ", 1),
];

const ATTRIBUTES: [&str; 6] = [
    "ptp_no_exception",
    "ptp_with_exception",
    "ipo",
    "has_options",
    "fractional_eh_enabled",
    "overnight_tradable",
];

/// One simulated asset.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAsset {
    /// UUID.
    pub id: String,
    /// `us_equity` or `crypto`.
    pub class: &'static str,
    /// Exchange string.
    pub exchange: String,
    /// Ticker.
    pub symbol: String,
    /// `Some("")` and `None` both occur.
    pub name: Option<String>,
    /// `active` or `inactive`.
    pub active: bool,
    /// Whether orders are accepted.
    pub tradable: bool,
    /// Margin, shorting and fractional flags.
    pub marginable: bool,
    /// Whether it can be shorted.
    pub shortable: bool,
    /// Deprecated, yet always sent by the real API (alpaca-py requires it);
    /// absent only for assets [`roughen`] picks, or when set so.
    pub easy_to_borrow: Option<bool>,
    /// Fractional orders.
    pub fractionable: bool,
    /// Deprecated; always sent unless [`roughen`] picks the asset.
    pub maintenance_margin: Option<u32>,
    /// Present for most equities.
    pub margin_long_short: Option<(u32, u32)>,
    /// Attribute flags.
    pub attributes: Vec<&'static str>,
    /// CUSIP, for most equities.
    pub cusip: Option<String>,
    /// Fields this asset's listing leaves out, as the real API sometimes
    /// does (set through `POST /_sim/assets`; empty in the generated universe).
    pub omit: Vec<String>,
}

impl SimAsset {
    /// The asset as the real API spells it.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("class".into(), json!(self.class));
        m.insert("exchange".into(), json!(self.exchange));
        m.insert("symbol".into(), json!(self.symbol));
        if let Some(name) = &self.name {
            m.insert("name".into(), json!(name));
        }
        m.insert("status".into(), json!(if self.active { "active" } else { "inactive" }));
        m.insert("tradable".into(), json!(self.tradable));
        m.insert("marginable".into(), json!(self.marginable));
        if let Some(mm) = self.maintenance_margin {
            m.insert("maintenance_margin_requirement".into(), json!(mm));
        }
        if let Some((long, short)) = self.margin_long_short {
            m.insert("margin_requirement_long".into(), json!(long.to_string()));
            m.insert("margin_requirement_short".into(), json!(short.to_string()));
        }
        m.insert("shortable".into(), json!(self.shortable));
        if let Some(etb) = self.easy_to_borrow {
            m.insert("easy_to_borrow".into(), json!(etb));
            m.insert(
                "borrow_status".into(),
                json!(if etb { "easy_to_borrow" } else { "hard_to_borrow" }),
            );
        }
        m.insert("fractionable".into(), json!(self.fractionable));
        m.insert("attributes".into(), json!(self.attributes));
        if self.class == "crypto" {
            m.insert("min_order_size".into(), json!("0.000000002"));
            m.insert("min_trade_increment".into(), json!("0.000000001"));
            m.insert("price_increment".into(), json!("0.1"));
        }
        if let Some(cusip) = &self.cusip {
            m.insert("cusip".into(), json!(cusip));
        }
        for field in &self.omit {
            m.remove(field);
        }
        Value::Object(m)
    }

    /// `active` or `inactive`.
    pub fn status(&self) -> &'static str {
        if self.active {
            "active"
        } else {
            "inactive"
        }
    }
}

fn uuid_from(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string()
}

fn random_ticker(rng: &mut ChaCha8Rng) -> String {
    let len = *[1usize, 2, 3, 3, 4, 4, 4, 5].choose(rng).unwrap_or(&4);
    (0..len).map(|_| char::from(b'A' + rng.random_range(0..26u8))).collect()
}

fn company_name(rng: &mut ChaCha8Rng, symbol: &str) -> Option<String> {
    match rng.random_range(0..100) {
        0..=1 => None,
        2..=3 => Some(String::new()),
        4..=6 => Some(format!("{} Société Générale d'Ingénierie", symbol)),
        7 => Some(format!("{symbol} 株式会社")),
        _ => {
            let kind = [
                "Inc. Common Stock",
                "Corp.",
                "Holdings Ltd",
                "ETF Trust",
                "Class A Ordinary Shares",
                "Warrants",
            ];
            Some(format!("{} {}", symbol, kind.choose(rng).unwrap_or(&"Inc.")))
        }
    }
}

fn pick_exchange(rng: &mut ChaCha8Rng) -> &'static str {
    let total: u32 = EXCHANGES.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (name, weight) in EXCHANGES {
        if roll < weight {
            return name;
        }
        roll -= weight;
    }
    "NASDAQ"
}

fn equity(rng: &mut ChaCha8Rng, symbol: String, exchange: &str, name: Option<String>, active: bool) -> SimAsset {
    let otc = exchange == "OTC";
    let tradable_share = if otc { 40 } else { 96 };
    let tradable = active && rng.random_range(0..100) < tradable_share;
    let marginable = tradable && rng.random_bool(0.8);
    let attributes = ATTRIBUTES
        .iter()
        .copied()
        .filter(|_| rng.random_range(0..100) < 12)
        .collect();
    SimAsset {
        id: uuid_from(rng),
        class: "us_equity",
        exchange: exchange.to_owned(),
        symbol,
        name,
        active,
        tradable,
        marginable,
        shortable: marginable && rng.random_bool(0.7),
        // The draws stay those of the older generator (the second only when
        // the first holds), so a seed gives the same universe it always did.
        easy_to_borrow: Some(rng.random_bool(0.85) && rng.random_bool(0.7)),
        fractionable: tradable && rng.random_bool(0.6),
        maintenance_margin: Some(if rng.random_bool(0.9) {
            *[25u32, 30, 50, 100].choose(rng).unwrap_or(&30)
        } else {
            100
        }),
        margin_long_short: rng
            .random_bool(0.75)
            .then(|| (*[30u32, 50, 100].choose(rng).unwrap_or(&30), 100)),
        attributes,
        cusip: rng
            .random_bool(0.8)
            .then(|| format!("{:09}", rng.random_range(0..1_000_000_000u64))),
        omit: Vec::new(),
    }
}

/// Generates `n` assets from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<SimAsset> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut used: HashSet<String> = HashSet::new();
    let mut assets = Vec::with_capacity(n);

    let crypto = if n >= 200 { CRYPTO_PAIRS.len() } else { n / 10 };
    for pair in CRYPTO_PAIRS.iter().take(crypto) {
        used.insert((*pair).to_owned());
        assets.push(SimAsset {
            id: uuid_from(&mut rng),
            class: "crypto",
            exchange: "CRYPTO".into(),
            symbol: (*pair).to_owned(),
            name: Some(format!("{pair} pair")),
            active: true,
            tradable: true,
            marginable: false,
            shortable: false,
            easy_to_borrow: Some(false),
            fractionable: true,
            maintenance_margin: Some(100),
            margin_long_short: None,
            attributes: vec![],
            cusip: None,
            omit: Vec::new(),
        });
    }
    for (symbol, exchange, name) in FIXED_EQUITIES.iter().take(n.saturating_sub(assets.len())) {
        used.insert((*symbol).to_owned());
        let mut asset = equity(&mut rng, (*symbol).to_owned(), exchange, Some((*name).to_owned()), true);
        asset.tradable = true;
        asset.attributes = vec!["has_options", "fractional_eh_enabled"];
        assets.push(asset);
    }

    while assets.len() < n {
        let roll = rng.random_range(0..1000);
        let active = rng.random_range(0..100) < 82;
        // A recycled ticker: an inactive old listing sharing an active symbol.
        if roll < 5 && !assets.is_empty() {
            let donor = assets[rng.random_range(0..assets.len())].clone();
            if donor.class == "us_equity" && donor.active {
                let name = company_name(&mut rng, &donor.symbol);
                let old = equity(&mut rng, donor.symbol.clone(), &donor.exchange, name, false);
                assets.push(old);
                continue;
            }
        }
        let mut symbol = random_ticker(&mut rng);
        if symbol.len() <= 4 {
            symbol = match roll {
                5..=34 => format!("{symbol}.{}", ['A', 'B', 'C'].choose(&mut rng).unwrap_or(&'A')),
                35..=54 => format!("{symbol}W"),
                55..=64 => format!("{symbol}U"),
                65..=69 => format!("{symbol}.WS"),
                _ => symbol,
            };
        }
        if !used.insert(symbol.clone()) {
            continue;
        }
        let exchange = pick_exchange(&mut rng);
        let name = company_name(&mut rng, &symbol);
        assets.push(equity(&mut rng, symbol, exchange, name, active));
    }
    assets
}

/// The hostile variant of a listing (`--hostile-assets`): about 15 % of
/// the equities lose their deprecated `easy_to_borrow` and `borrow_status`,
/// about 10 % `maintenance_margin_requirement`, as a client must survive
/// even though the real API sends them. Which assets is a function of
/// `seed`.
pub fn roughen(assets: &mut [SimAsset], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_4057_11e5);
    for asset in assets.iter_mut().filter(|a| a.class == "us_equity") {
        if rng.random_bool(0.15) {
            asset.easy_to_borrow = None;
        }
        if rng.random_bool(0.10) {
            asset.maintenance_margin = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_universe_different_seed_different_universe() {
        assert_eq!(generate(7, 500), generate(7, 500));
        assert_ne!(generate(7, 500), generate(8, 500));
        assert_eq!(generate(7, 500).len(), 500);
    }

    #[test]
    fn universe_has_the_variety_of_the_real_listing() {
        let assets = generate(42, 12_000);
        assert_eq!(assets.len(), 12_000);
        for exchange in ["AMEX", "ARCA", "BATS", "NYSE", "NASDAQ", "NYSEARCA", "OTC", "CRYPTO"] {
            assert!(assets.iter().any(|a| a.exchange == exchange), "{exchange}");
        }
        assert!(assets.iter().any(|a| a.symbol == "BRK.B"));
        assert!(assets.iter().filter(|a| a.symbol.contains('.')).count() > 100);
        assert!(assets.iter().any(|a| a.symbol == "BTC/USD" && a.class == "crypto"));
        let inactive = assets.iter().filter(|a| !a.active).count();
        assert!((1_000..4_000).contains(&inactive), "{inactive}");
        assert!(assets.iter().any(|a| a.active && !a.tradable));
        assert!(assets.iter().any(|a| a.name.is_none()));
        assert!(assets.iter().any(|a| a.name.as_deref() == Some("")));
        assert!(assets.iter().any(|a| a.name.as_deref().is_some_and(|n| !n.is_ascii())));
        assert!(
            assets
                .iter()
                .all(|a| a.easy_to_borrow.is_some() && a.maintenance_margin.is_some()),
            "the default listing carries every field the real API always sends"
        );
        let json = assets[500].to_json();
        for field in ["easy_to_borrow", "borrow_status", "maintenance_margin_requirement"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        let ids: HashSet<&str> = assets.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids.len(), assets.len(), "ids are unique");
        let symbols: HashSet<&str> = assets.iter().map(|a| a.symbol.as_str()).collect();
        assert!(symbols.len() < assets.len(), "some tickers are recycled");
    }

    #[test]
    fn the_hostile_variant_drops_deprecated_fields_from_some_equities() {
        let mut assets = generate(42, 12_000);
        roughen(&mut assets, 42);
        let equities = assets.iter().filter(|a| a.class == "us_equity").count();
        let no_etb = assets.iter().filter(|a| a.easy_to_borrow.is_none()).count();
        let no_mm = assets.iter().filter(|a| a.maintenance_margin.is_none()).count();
        assert!(
            (equities / 10..equities / 5).contains(&no_etb),
            "{no_etb} of {equities}"
        );
        assert!((equities / 20..equities / 7).contains(&no_mm), "{no_mm} of {equities}");
        assert!(assets
            .iter()
            .filter(|a| a.class == "crypto")
            .all(|a| a.easy_to_borrow.is_some()));
        let bare = assets
            .iter()
            .find(|a| a.easy_to_borrow.is_none())
            .map(SimAsset::to_json);
        assert!(bare.is_some_and(|j| j.get("easy_to_borrow").is_none() && j.get("borrow_status").is_none()));
    }
}
