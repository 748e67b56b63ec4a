//! Property tests of the dead-letter reader: anyone may publish to the
//! dead-letter exchange, so a letter's headers may be missing, of any AMQP
//! type or huge, and its body anything. `dlq list`, `show` and the console
//! read it into a bounded row, never a panic. `FUZZ_CASES` cases (10,000 in CI).

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use proptest::prelude::*;

use signal9_shared::broker::{
    HEADER_ATTEMPT, HEADER_ERROR_CLASS, HEADER_FIRST_FAILURE, HEADER_LAST_ERROR, HEADER_LAST_FAILURE,
    HEADER_ROUTING_KEY,
};
use signal9_shared::ops::dead_letters::DeadLetter;

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

fn value() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        ".{0,64}".prop_map(|s| AMQPValue::LongString(LongString::from(s))),
        prop::collection::vec(any::<u8>(), 0..5000).prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        "[a-z]{0,20}".prop_map(|s| AMQPValue::ShortString(ShortString::from(s))),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<f64>().prop_map(AMQPValue::Double),
        Just(AMQPValue::Void),
    ]
}

fn headers() -> impl Strategy<Value = Option<FieldTable>> {
    let names = prop::sample::select(vec![
        HEADER_ATTEMPT,
        HEADER_ERROR_CLASS,
        HEADER_FIRST_FAILURE,
        HEADER_LAST_ERROR,
        HEADER_LAST_FAILURE,
        HEADER_ROUTING_KEY,
        "x-death",
        "other",
    ]);
    prop::option::of(prop::collection::vec((names, value()), 0..8).prop_map(|pairs| {
        let mut table = FieldTable::default();
        for (name, value) in pairs {
            table.insert(ShortString::from(name), value);
        }
        table
    }))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_letter_reads_into_a_bounded_row(
        headers in headers(),
        key in ".{0,80}",
        message_id in prop::option::of(".{0,300}"),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            ".{0,300}".prop_map(|s| serde_json::json!({"id": s, "payload": {"symbol": s}}).to_string().into_bytes()),
        ],
    ) {
        let letter = DeadLetter::from_parts(headers.as_ref(), &key, message_id.as_deref(), &body);
        prop_assert!(letter.id.chars().count() <= signal9_shared::job::MAX_ID_LEN);
        prop_assert!(letter.symbol.chars().count() <= 24);
        prop_assert!(letter.last_error.chars().count() <= 2_000);
        prop_assert!(letter.error_class.chars().count() <= 32);
        prop_assert!(letter.routing_key.chars().count() <= 255);
        prop_assert!(!letter.last_error.chars().any(char::is_control));
    }
}
