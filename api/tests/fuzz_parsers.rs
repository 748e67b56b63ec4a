//! Property tests of what the read API parses from its clients: the bars
//! query string (every parameter, hostile values), the page token, and
//! the tokens file an operator writes. Each: a 400 (or an error) with a
//! reason, never a panic; what is accepted lies within the bounds.
//! `FUZZ_CASES` cases each (10,000 in CI).

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use std::collections::HashMap;

use signal9_api::{decode_token, encode_token, BarsQuery, Market, Tokens};
use signal9_shared::bounds;

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

fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (-300_000_000_000i64..300_000_000_000i64)
            .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default().to_rfc3339()),
        (1980i32..2035, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        prop::sample::select(vec![
            "-0002-01-01",
            "0000-01-01",
            "-262143-01-01",
            "+262142-01-01",
            "9999-12-31"
        ])
        .prop_map(str::to_owned),
        ".{0,30}",
    ]
}

fn symbols_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec("[A-Z]{1,5}", 1..300).prop_map(|v| v.join(",")),
        prop::collection::vec("[A-Z]{3}/[A-Z]{3}", 1..5).prop_map(|v| v.join(",")),
        ".{0,60}",
        Just("€AB,%E2%82%AC".to_owned()),
    ]
}

fn params() -> impl Strategy<Value = HashMap<String, String>> {
    (
        prop::option::of(symbols_text()),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["1Min", "1Day", "1Hour", "12Month", "0Min", "60Min", "1Fortnight"])
                .prop_map(str::to_owned),
            ".{0,12}",
        ]),
        prop::option::of(date_text()),
        prop::option::of(date_text()),
        prop::option::of(prop_oneof![any::<i64>().prop_map(|n| n.to_string()), ".{0,8}"]),
        prop::option::of(prop_oneof![Just("asc".to_owned()), Just("desc".to_owned()), ".{0,6}"]),
        prop::option::of(prop_oneof![Just("split".to_owned()), ".{0,12}"]),
        prop::option::of(prop_oneof![Just("iex".to_owned()), ".{0,6}"]),
        prop::option::of(".{0,200}"),
    )
        .prop_map(
            |(symbols, timeframe, start, end, limit, sort, adjustment, feed, token)| {
                let mut map = HashMap::new();
                for (key, value) in [
                    ("symbols", symbols),
                    ("timeframe", timeframe),
                    ("start", start),
                    ("end", end),
                    ("limit", limit),
                    ("sort", sort),
                    ("adjustment", adjustment),
                    ("feed", feed),
                    ("page_token", token),
                ] {
                    if let Some(value) = value {
                        map.insert(key.to_owned(), value);
                    }
                }
                map
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// Any query is a checked query or a 400 with a reason; a checked one
    /// names at most the cap of symbols and a range inside the bounds.
    #[test]
    fn any_query_is_checked_or_refused_with_a_reason(
        params in params(),
        single in prop::option::of(".{0,20}"),
        crypto in any::<bool>(),
    ) {
        let now = Utc::now();
        let market = if crypto { Market::Crypto } else { Market::Stocks };
        match BarsQuery::parse(market, single.as_deref(), &params, now, 200) {
            Ok(query) => {
                prop_assert!(!query.symbols.is_empty() && query.symbols.len() <= 200);
                prop_assert!(query.range.start >= bounds::EARLIEST && query.range.end <= now);
                prop_assert!((1..=10_000).contains(&query.limit));
            }
            Err(error) => {
                prop_assert_eq!(error.status.as_u16(), 400);
                prop_assert!(!error.message.is_empty() && error.message.len() < 400, "{}", error.message);
            }
        }
    }

    #[test]
    fn any_page_token_is_read_or_refused(token in prop_oneof![".{0,300}", "[A-Za-z0-9_-]{0,120}"]) {
        let _ = decode_token(&token);
    }

    #[test]
    fn a_page_token_round_trips(symbol in "[A-Z]{1,5}", secs in 0i64..4_000_000_000) {
        let t = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        prop_assert_eq!(decode_token(&encode_token(&symbol, t)), Some((symbol, t)));
    }

    /// Any tokens file parses or is refused naming a line, and the
    /// refusal never echoes the file's content (a raw token written by
    /// mistake must not reach the log).
    #[test]
    fn any_tokens_file_parses_or_names_a_line_without_echoing_it(
        lines in prop::collection::vec(prop_oneof![
            "(read|operate) [0-9a-f]{64}( calls=[0-9]{1,6})?",
            "(read|operate|admin) [A-Za-z0-9]{8,70}",
            "# .{0,20}",
            ".{0,80}",
        ], 0..12),
    ) {
        let secret = "s3cr3t-token-written-by-mistake";
        let mut text = lines.join("\n");
        text.push_str(&format!("\nread {secret}\n"));
        let error = Tokens::parse(&text).err().unwrap_or_default();
        prop_assert!(error.starts_with("line "), "{}", error);
        prop_assert!(!error.contains(secret), "{}", error);
        let _ = Tokens::parse(&lines.join("\n"));
    }
}
