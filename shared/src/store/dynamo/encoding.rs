//! Items to and from the store's types: assets (with their outbox
//! attributes), bars, page records, and the attribute helpers.

use super::*;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(other) => Err(StoreError::Corrupt(format!("{name} is not a string: {other:?}"))),
    }
}

pub(super) fn req_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("{name} is missing")))
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{name} is not a number: {v:?}"))),
        Some(other) => Err(StoreError::Corrupt(format!("{name} is not a number: {other:?}"))),
    }
}

pub(super) fn req_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    get_n(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("{name} is missing")))
}

pub(super) fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

pub(super) fn opt_ts(item: &Item, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_s(item, name)?.map(parse_ts).transpose()
}

pub(super) fn asset_item(stored: &StoredAsset) -> Result<Item, StoreError> {
    let asset = &stored.asset;
    let body = serde_json::to_string(asset).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut item: Item = HashMap::from([
        ("id".into(), s(&asset.id)),
        ("symbol".into(), s(asset.symbol.as_str())),
        ("class".into(), s(asset.class.as_str())),
        ("status".into(), s(asset.status.as_str())),
        ("body".into(), s(body)),
        ("first_seen".into(), s(ts(stored.first_seen))),
        ("updated_at".into(), s(ts(stored.updated_at))),
    ]);
    if let Some(at) = stored.delisted_at {
        item.insert("delisted_at".into(), s(ts(at)));
    }
    if let Some(status) = stored.previous_status {
        item.insert("previous_status".into(), s(status.as_str()));
    }
    if let Some(tradable) = stored.previous_tradable {
        item.insert("previous_tradable".into(), AttributeValue::Bool(tradable));
    }
    if let Some(at) = stored.status_changed_at {
        item.insert("status_changed_at".into(), s(ts(at)));
    }
    if let Some(at) = stored.seen_at {
        item.insert("seen_at".into(), s(ts(at)));
    }
    Ok(item)
}

/// The outbox partition of an item, by its key.
pub(super) fn outbox_shard(key: &str) -> String {
    let hash = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (hash % OUTBOX_SHARDS).to_string()
}

pub(super) fn outbox_key(event: &Event) -> String {
    format!("{}|{}", ts(event.occurred_at), event.id)
}

/// The events waiting in an item, as JSON, oldest first.
pub(super) fn pending_in(item: &Item) -> Vec<String> {
    match item.get("outbox") {
        Some(AttributeValue::L(list)) => list.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => Vec::new(),
    }
}

/// Adds events to an item about to be written whole, keeping those already
/// waiting in it (`waiting`, read before).
pub(super) fn attach_events(item: &mut Item, key: &str, waiting: Vec<String>, events: &[Event]) {
    let mut first_key = None;
    let mut list: Vec<AttributeValue> = waiting.into_iter().map(AttributeValue::S).collect();
    if let (Some(event), true) = (events.first(), list.is_empty()) {
        first_key = Some(outbox_key(event));
    }
    list.extend(events.iter().map(|e| AttributeValue::S(e.to_json())));
    if list.is_empty() {
        return;
    }
    item.insert("outbox_n".into(), n(list.len()));
    item.insert("outbox".into(), AttributeValue::L(list));
    item.insert("outbox_shard".into(), s(outbox_shard(key)));
    if let Some(k) = first_key {
        item.insert("outbox_key".into(), s(k));
    }
}

/// The update-expression part that appends `event` to an item's outbox.
pub(super) const APPEND_EVENT: &str = "outbox = list_append(if_not_exists(outbox, :no_events), :event), \
     outbox_shard = if_not_exists(outbox_shard, :shard), outbox_key = if_not_exists(outbox_key, :okey) \
     ADD outbox_n :one";

pub(super) fn append_values(key: &str, event: &Event) -> [(&'static str, AttributeValue); 5] {
    [
        (":no_events", AttributeValue::L(vec![])),
        (":event", AttributeValue::L(vec![AttributeValue::S(event.to_json())])),
        (":shard", s(outbox_shard(key))),
        (":okey", s(outbox_key(event))),
        (":one", n(1)),
    ]
}

pub(super) fn decode_asset(item: &Item) -> Result<StoredAsset, StoreError> {
    let asset: Asset =
        serde_json::from_str(req_s(item, "body")?).map_err(|e| StoreError::Corrupt(format!("asset body: {e}")))?;
    let previous_status = get_s(item, "previous_status")?
        .map(|s| s.parse::<AssetStatus>().map_err(StoreError::Corrupt))
        .transpose()?;
    let previous_tradable = match item.get("previous_tradable") {
        Some(AttributeValue::Bool(b)) => Some(*b),
        None | Some(AttributeValue::Null(_)) => None,
        Some(other) => return Err(StoreError::Corrupt(format!("previous_tradable: {other:?}"))),
    };
    Ok(StoredAsset {
        asset,
        first_seen: parse_ts(req_s(item, "first_seen")?)?,
        updated_at: parse_ts(req_s(item, "updated_at")?)?,
        delisted_at: opt_ts(item, "delisted_at")?,
        previous_status,
        previous_tradable,
        status_changed_at: opt_ts(item, "status_changed_at")?,
        seen_at: opt_ts(item, "seen_at")?,
    })
}

#[cfg(feature = "test-support")]
pub(super) fn bar_item(series: &str, bar: &Bar) -> Item {
    HashMap::from([
        ("series".into(), s(series)),
        ("t".into(), n(bar.time.timestamp_millis())),
        ("o".into(), n(bar.open)),
        ("h".into(), n(bar.high)),
        ("l".into(), n(bar.low)),
        ("c".into(), n(bar.close)),
        ("v".into(), n(bar.volume)),
        ("n".into(), n(bar.trade_count)),
        ("vw".into(), n(bar.vwap)),
    ])
}

pub(super) fn decode_bar(item: &Item) -> Result<Bar, StoreError> {
    let t: i64 = req_n(item, "t")?;
    Ok(Bar {
        time: DateTime::from_timestamp_millis(t).ok_or_else(|| StoreError::Corrupt(format!("bar time {t}")))?,
        open: req_n(item, "o")?,
        high: req_n(item, "h")?,
        low: req_n(item, "l")?,
        close: req_n(item, "c")?,
        volume: req_n(item, "v")?,
        trade_count: req_n(item, "n")?,
        vwap: req_n(item, "vw")?,
    })
}

pub(super) fn page_item(run_id: &str, page: &PageRecord) -> Result<Item, StoreError> {
    let result = serde_json::to_string(page).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(HashMap::from([
        ("run_id".into(), s(run_id)),
        ("page_id".into(), s(&page.page_id)),
        ("result".into(), s(result)),
    ]))
}

/// A coverage item: the range `[lo, hi]` (epoch ms) of a series, with the
/// series' symbol for the `by_symbol` index.
pub(super) fn coverage_item(series: &str, lo: i64, hi: i64) -> Item {
    let symbol = series.split('|').next().unwrap_or_default();
    HashMap::from([
        ("series".to_owned(), s(series)),
        ("symbol".to_owned(), s(symbol)),
        ("start_ms".to_owned(), n(lo)),
        ("end_ms".to_owned(), n(hi)),
    ])
}

/// The series key inside a bar-fetch checkpoint id
/// (`bars|{series}|{start_ms}|{end_ms}`), if it is one.
pub(super) fn checkpoint_series(id: &str) -> Option<String> {
    let rest = id.strip_prefix("bars|")?;
    let mut parts = rest.rsplitn(3, '|');
    let (_end, _start, series) = (parts.next()?, parts.next()?, parts.next()?);
    Some(series.to_owned())
}

/// The bars of a chunk item.
pub(super) fn decode_chunk_item(key: &str, item: &Item) -> Result<Vec<Bar>, StoreError> {
    let data = match item.get("data") {
        Some(AttributeValue::B(blob)) => blob.as_ref(),
        _ => return Err(StoreError::Corrupt(format!("bar chunk of {key} without data"))),
    };
    chunk::decode(data).map_err(|e| StoreError::Corrupt(format!("bar chunk of {key}: {e}")))
}
