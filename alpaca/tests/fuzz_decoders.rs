//! Property tests of the decoders that read what the Alpaca API (or
//! something pretending to be it) sends: an asset listing element and a
//! bars page, as any bytes and as real shapes with hostile values. A
//! lying response is a rejection with a reason, never a panic, and
//! nothing that passes validation breaks the rules validation states.
//! `FUZZ_CASES` cases each (10,000 in CI).

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use signal9_alpaca::validate::{self, Duplicates};
use signal9_alpaca::MultiBarsPage;

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A JSON value of any kind, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn time_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-200_000_000_000i64..200_000_000_000i64)
            .prop_map(|s| Value::from(DateTime::from_timestamp(s, 0).unwrap_or_default().to_rfc3339())),
        Just(Value::from("-0002-01-01T00:00:00Z")),
        Just(Value::from("+262142-01-01T00:00:00Z")),
        any::<i64>().prop_map(Value::from),
        ".{0,30}".prop_map(Value::from),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(Value::from),
        Just(json!(0)),
        Just(json!(-1)),
        ".{0,6}".prop_map(Value::from),
    ]
}

fn bar() -> impl Strategy<Value = Value> {
    (
        time_text(),
        number(),
        number(),
        number(),
        number(),
        number(),
        number(),
        number(),
    )
        .prop_map(|(t, o, h, l, c, v, n, vw)| json!({"t": t, "o": o, "h": h, "l": l, "c": c, "v": v, "n": n, "vw": vw}))
}

fn asset() -> impl Strategy<Value = Value> {
    (
        prop_oneof!["[0-9a-f-]{36}", ".{0,40}"],
        prop_oneof![Just("us_equity".to_owned()), Just("crypto".to_owned()), ".{0,10}"],
        prop_oneof!["[A-Z./]{1,12}", ".{0,30}"],
        prop_oneof![Just("active".to_owned()), Just("inactive".to_owned()), ".{0,10}"],
        ".{0,60}",
        any_json(),
    )
        .prop_map(|(id, class, symbol, status, name, extra)| {
            json!({"id": id, "class": class, "exchange": "NASDAQ", "symbol": symbol, "name": name,
                   "status": status, "tradable": true, "marginable": true, "shortable": false,
                   "easy_to_borrow": false, "fractionable": true, "attributes": extra})
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_json_is_an_asset_or_a_rejection(raw in prop_oneof![any_json(), asset()]) {
        if let Err(rejection) = validate::asset(&raw) {
            prop_assert!(rejection.to_string().len() < 1_000, "{}", rejection);
        }
    }

    #[test]
    fn any_bytes_are_a_bars_page_or_a_decode_error(body in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = serde_json::from_slice::<MultiBarsPage>(&body);
    }

    /// A page of hostile bars: what validation accepts lies in the range
    /// asked for, in time order, with finite prices.
    #[test]
    fn validated_bars_are_in_range_ordered_and_finite(
        bars in prop::collection::vec(bar(), 0..12),
        crypto in any::<bool>(),
    ) {
        let page = json!({"bars": {"AAPL": bars}, "next_page_token": null}).to_string();
        let Ok(page) = serde_json::from_str::<MultiBarsPage>(&page) else { return Ok(()) };
        let start: DateTime<Utc> = "2020-01-01T00:00:00Z".parse().map_err(|_| TestCaseError::fail("start"))?;
        let end: DateTime<Utc> = "2026-12-31T00:00:00Z".parse().map_err(|_| TestCaseError::fail("end"))?;
        let duplicates = if crypto { Duplicates::LastWins } else { Duplicates::Reject };
        for (_, bars) in page.bars.unwrap_or_default() {
            if let Ok(valid) = validate::bars(bars, start, end, duplicates) {
                for pair in valid.windows(2) {
                    prop_assert!(pair[0].time < pair[1].time);
                }
                for bar in &valid {
                    prop_assert!(bar.time >= start && bar.time <= end);
                    prop_assert!([bar.open, bar.high, bar.low, bar.close, bar.volume, bar.vwap].iter().all(|x| x.is_finite()));
                }
            }
        }
    }
}
