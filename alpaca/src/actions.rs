//! Corporate actions: `GET /v1/corporate-actions` on the market-data API.
//!
//! The endpoint groups actions by kind, one array per kind under
//! `corporate_actions` (`forward_splits`, `reverse_splits`,
//! `cash_dividends`, `spin_offs`, …), and pages with `next_page_token` like
//! the bars endpoints. `start` and `end` are dates (`YYYY-MM-DD`, inclusive);
//! without `symbols` the answer covers the whole market.
//!
//! signal9 reads the kinds that change adjusted prices: splits (forward,
//! reverse, unit), stock dividends, cash dividends and spin-offs. Each entry
//! is decoded on its own ([`decode`]), so one malformed action is rejected
//! with its reason and the others are kept. The **ex-date** is the action's
//! effective date: the first session whose prices are not adjusted for it.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

use crate::client::{AlpacaClient, Api, ApiResponse};
use crate::error::AlpacaError;
use crate::pages::PageCursor;
use crate::query::Adjustment;
use crate::symbol::Symbol;

/// The kinds of corporate action signal9 reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    /// More shares, lower price (`forward_splits`).
    ForwardSplit,
    /// Fewer shares, higher price (`reverse_splits`).
    ReverseSplit,
    /// A unit separating into its parts (`unit_splits`).
    UnitSplit,
    /// A dividend paid in shares (`stock_dividends`).
    StockDividend,
    /// A dividend paid in cash (`cash_dividends`).
    CashDividend,
    /// A subsidiary distributed as a new security (`spin_offs`).
    SpinOff,
}

impl ActionKind {
    /// Every kind, in the API's order.
    pub const ALL: [ActionKind; 6] = [
        ActionKind::ForwardSplit,
        ActionKind::ReverseSplit,
        ActionKind::UnitSplit,
        ActionKind::StockDividend,
        ActionKind::CashDividend,
        ActionKind::SpinOff,
    ];

    /// The name the `types` parameter takes, e.g. `forward_split`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::ForwardSplit => "forward_split",
            ActionKind::ReverseSplit => "reverse_split",
            ActionKind::UnitSplit => "unit_split",
            ActionKind::StockDividend => "stock_dividend",
            ActionKind::CashDividend => "cash_dividend",
            ActionKind::SpinOff => "spin_off",
        }
    }

    /// The key of the kind's array in the response, e.g. `forward_splits`.
    pub fn group(self) -> &'static str {
        match self {
            ActionKind::ForwardSplit => "forward_splits",
            ActionKind::ReverseSplit => "reverse_splits",
            ActionKind::UnitSplit => "unit_splits",
            ActionKind::StockDividend => "stock_dividends",
            ActionKind::CashDividend => "cash_dividends",
            ActionKind::SpinOff => "spin_offs",
        }
    }

    fn from_group(group: &str) -> Option<Self> {
        ActionKind::ALL.into_iter().find(|k| k.group() == group)
    }

    /// The adjustment component that accounts for this kind: `split` for
    /// splits and stock dividends (share-count changes), `dividend` for
    /// cash dividends, `spin-off` for spin-offs.
    pub fn component(self) -> &'static str {
        match self {
            ActionKind::ForwardSplit | ActionKind::ReverseSplit | ActionKind::UnitSplit | ActionKind::StockDividend => {
                "split"
            }
            ActionKind::CashDividend => "dividend",
            ActionKind::SpinOff => "spin-off",
        }
    }

    /// True when prices stored with `adjustment` change after an action of
    /// this kind: the adjustment names this kind's component, or is `all`.
    /// Raw prices never change.
    pub fn changes(self, adjustment: &Adjustment) -> bool {
        adjustment
            .as_str()
            .split(',')
            .any(|part| part == "all" || part == self.component())
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One corporate action, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CorporateAction {
    /// Alpaca's id of the action (derived from kind, symbol and ex-date when
    /// the API sends none).
    pub id: String,
    /// Its kind.
    pub kind: ActionKind,
    /// The symbol whose prices it adjusts (the source of a spin-off, the
    /// unit of a unit split).
    pub symbol: Symbol,
    /// The effective date: sessions before it are adjusted for the action.
    pub ex_date: NaiveDate,
    /// What it does, e.g. `4:1` for a split or `0.24` per share for a
    /// dividend, for logs and events.
    pub terms: String,
}

/// Which actions to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionsQuery {
    /// Only these symbols; empty reads the whole market.
    pub symbols: Vec<Symbol>,
    /// Only these kinds; empty reads every kind signal9 knows ([`ActionKind::ALL`]).
    pub kinds: Vec<ActionKind>,
    /// First date, inclusive.
    pub start: NaiveDate,
    /// Last date, inclusive.
    pub end: NaiveDate,
    /// Actions per page, 1–1000.
    pub limit: u32,
}

impl ActionsQuery {
    /// Every kind signal9 knows, for the whole market, between two dates,
    /// 1000 a page.
    pub fn market(start: NaiveDate, end: NaiveDate) -> Self {
        ActionsQuery {
            symbols: Vec::new(),
            kinds: Vec::new(),
            start,
            end,
            limit: 1000,
        }
    }

    fn params(&self) -> Result<Vec<(&'static str, String)>, AlpacaError> {
        if self.end < self.start {
            return Err(AlpacaError::InvalidRequest(format!(
                "corporate actions: end {} is before start {}",
                self.end, self.start
            )));
        }
        if !(1..=1000).contains(&self.limit) {
            return Err(AlpacaError::InvalidRequest(format!(
                "corporate actions: limit {} is not within 1–1000",
                self.limit
            )));
        }
        let kinds = if self.kinds.is_empty() {
            ActionKind::ALL.to_vec()
        } else {
            self.kinds.clone()
        };
        let mut params = vec![
            ("types", kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")),
            ("start", self.start.to_string()),
            ("end", self.end.to_string()),
            ("limit", self.limit.to_string()),
        ];
        if !self.symbols.is_empty() {
            let symbols: Vec<&str> = self.symbols.iter().map(Symbol::as_str).collect();
            params.push(("symbols", symbols.join(",")));
        }
        Ok(params)
    }
}

/// A page of `GET /v1/corporate-actions`: raw entries by kind, so one bad
/// entry cannot fail the page.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ActionsPage {
    /// Entries by the kind's array key; kinds with none may be absent.
    #[serde(default)]
    pub corporate_actions: Option<BTreeMap<String, Value>>,
    /// The token for the next page; `null` (or absent) on the last one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// Every action of a query, every page followed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionsFetch {
    /// The valid actions of the kinds asked for, in the API's order.
    pub actions: Vec<CorporateAction>,
    /// Entries refused, each with its reason.
    pub rejected: Vec<String>,
    /// API calls spent.
    pub calls: u32,
}

/// Decodes one entry of a kind's array.
pub fn decode(kind: ActionKind, entry: &Value) -> Result<CorporateAction, String> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    let rate = |name: &str| -> Result<f64, String> {
        let value = entry.get(name).ok_or_else(|| format!("{} without {name}", kind))?;
        // Rates come as numbers, some deployments send strings.
        let number = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse::<f64>().ok(),
            _ => None,
        };
        match number {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(format!("{kind}: {name} is not a positive number: {}", short(value))),
        }
    };
    let symbol_field = match kind {
        ActionKind::SpinOff => "source_symbol",
        ActionKind::UnitSplit => "old_symbol",
        _ => "symbol",
    };
    let symbol = text(symbol_field).ok_or_else(|| format!("{kind} without {symbol_field}"))?;
    let symbol = Symbol::parse(symbol).map_err(|e| format!("{kind}: {e}"))?;
    let date_field = if kind == ActionKind::UnitSplit {
        "effective_date"
    } else {
        "ex_date"
    };
    let ex_date = text(date_field)
        .ok_or_else(|| format!("{kind} of {symbol} without {date_field}"))?
        .parse::<NaiveDate>()
        .map_err(|e| format!("{kind} of {symbol}: {date_field}: {e}"))?;
    let terms = match kind {
        ActionKind::ForwardSplit | ActionKind::ReverseSplit | ActionKind::UnitSplit => {
            format!("{}:{}", rate("new_rate")?, rate("old_rate")?)
        }
        ActionKind::StockDividend | ActionKind::CashDividend => format!("{} per share", rate("rate")?),
        ActionKind::SpinOff => {
            let new_symbol = text("new_symbol").unwrap_or("?");
            format!(
                "{} {new_symbol} per {} {symbol}",
                rate("new_rate")?,
                rate("source_rate")?
            )
        }
    };
    let id = match text("id").filter(|id| !id.is_empty()) {
        Some(id) if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
            id.to_owned()
        }
        Some(id) => return Err(format!("{kind} of {symbol}: invalid id {}", short(&Value::from(id)))),
        None => format!("{kind}-{symbol}-{ex_date}"),
    };
    Ok(CorporateAction {
        id,
        kind,
        symbol,
        ex_date,
        terms,
    })
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

impl AlpacaClient {
    /// One page of `GET /v1/corporate-actions`.
    pub async fn corporate_actions_page(
        &self,
        query: &ActionsQuery,
        page_token: Option<&str>,
    ) -> Result<ApiResponse<ActionsPage>, AlpacaError> {
        let mut params = query.params()?;
        if let Some(token) = page_token {
            params.push(("page_token", token.to_owned()));
        }
        let url = format!("{}/v1/corporate-actions", self.data_url());
        self.get(Api::Data, "GET /v1/corporate-actions", &url, &params).await
    }

    /// Every action of a query: follows `next_page_token` to the end (a
    /// repeated token is a broken API, not a loop), decodes each entry of
    /// the kinds asked for, and keeps the refused ones with their reasons.
    pub async fn corporate_actions(&self, query: &ActionsQuery) -> Result<ActionsFetch, AlpacaError> {
        const ENDPOINT: &str = "GET /v1/corporate-actions";
        let wanted = if query.kinds.is_empty() {
            ActionKind::ALL.to_vec()
        } else {
            query.kinds.clone()
        };
        let mut fetch = ActionsFetch::default();
        let mut cursor = PageCursor::new(None);
        loop {
            let page = self.corporate_actions_page(query, cursor.token()).await?;
            fetch.calls += 1;
            let groups = page.body.corporate_actions.unwrap_or_default();
            for (group, entries) in &groups {
                let Some(kind) = ActionKind::from_group(group).filter(|k| wanted.contains(k)) else {
                    continue;
                };
                let Some(entries) = entries.as_array() else {
                    fetch.rejected.push(format!("{group} is not a list"));
                    continue;
                };
                for entry in entries {
                    match decode(kind, entry) {
                        Ok(action) => fetch.actions.push(action),
                        Err(reason) => fetch.rejected.push(reason),
                    }
                }
            }
            // Corporate actions page on even when a page holds none of the
            // kinds asked for: only the token ends the read.
            if cursor.advance(ENDPOINT, page.body.next_page_token, false)?.is_none() {
                return Ok(fetch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_changes_only_the_adjustments_that_name_it() {
        let adj = |s: &str| s.parse::<Adjustment>().unwrap();
        assert!(ActionKind::ForwardSplit.changes(&adj("split")));
        assert!(ActionKind::ReverseSplit.changes(&adj("all")));
        assert!(ActionKind::StockDividend.changes(&adj("dividend,split")));
        assert!(!ActionKind::ForwardSplit.changes(&adj("dividend")));
        assert!(ActionKind::CashDividend.changes(&adj("dividend")));
        assert!(!ActionKind::CashDividend.changes(&adj("spin-off")));
        assert!(ActionKind::SpinOff.changes(&adj("spin-off")));
        for kind in ActionKind::ALL {
            assert!(!kind.changes(&Adjustment::raw()), "{kind} must leave raw prices alone");
            assert_eq!(ActionKind::from_group(kind.group()), Some(kind));
        }
    }

    #[test]
    fn entries_decode_in_the_apis_shape() {
        let split = json!({"id": "a1", "symbol": "AAPL", "cusip": "037833100", "new_rate": 4, "old_rate": 1,
            "process_date": "2020-08-31", "ex_date": "2020-08-31", "record_date": "2020-08-24", "payable_date": "2020-08-28"});
        let action = decode(ActionKind::ForwardSplit, &split).unwrap();
        assert_eq!(action.symbol.as_str(), "AAPL");
        assert_eq!(action.ex_date, NaiveDate::from_ymd_opt(2020, 8, 31).unwrap());
        assert_eq!(action.terms, "4:1");
        let spin = json!({"id": "s1", "source_symbol": "IBM", "source_cusip": "x", "source_rate": 5, "new_symbol": "KD",
            "new_cusip": "y", "new_rate": 1, "process_date": "2021-11-04", "ex_date": "2021-11-04"});
        assert_eq!(decode(ActionKind::SpinOff, &spin).unwrap().symbol.as_str(), "IBM");
        let dividend = json!({"symbol": "KO", "rate": "0.46", "special": false, "foreign": false,
            "process_date": "2024-03-14", "ex_date": "2024-03-14"});
        assert_eq!(
            decode(ActionKind::CashDividend, &dividend).unwrap().id,
            "cash_dividend-KO-2024-03-14"
        );
    }

    #[test]
    fn lying_entries_are_refused_with_a_reason() {
        let cases = [
            (
                json!({"id": "a", "symbol": "AAPL", "new_rate": 0, "old_rate": 1, "ex_date": "2020-08-31"}),
                "new_rate",
            ),
            (
                json!({"id": "a", "symbol": "AAPL", "new_rate": 4, "old_rate": 1}),
                "ex_date",
            ),
            (
                json!({"id": "a", "symbol": "AAPL", "new_rate": 4, "old_rate": 1, "ex_date": "31/08/2020"}),
                "ex_date",
            ),
            (
                json!({"id": "a", "symbol": "../etc", "new_rate": 4, "old_rate": 1, "ex_date": "2020-08-31"}),
                "symbol",
            ),
            (
                json!({"id": "a b;", "symbol": "AAPL", "new_rate": 4, "old_rate": 1, "ex_date": "2020-08-31"}),
                "id",
            ),
            (
                json!({"id": "a", "new_rate": 4, "old_rate": 1, "ex_date": "2020-08-31"}),
                "symbol",
            ),
        ];
        for (entry, word) in cases {
            let error = decode(ActionKind::ForwardSplit, &entry).unwrap_err();
            assert!(error.contains(word), "{error} should name {word}");
        }
    }

    #[test]
    fn a_query_refuses_dates_out_of_order_and_names_every_kind_by_default() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert!(ActionsQuery::market(day(4), day(3)).params().is_err());
        let params = ActionsQuery::market(day(3), day(4)).params().unwrap();
        let types = &params.iter().find(|(k, _)| *k == "types").unwrap().1;
        assert_eq!(types.split(',').count(), ActionKind::ALL.len());
        assert!(
            !params.iter().any(|(k, _)| *k == "symbols"),
            "no symbols: the whole market"
        );
    }
}
